//! `cargo bench --bench rebuild`: events per second of a `remote_files`
//! rebuild (`ferry::projections::rebuild`: fresh tables in a private schema,
//! the whole log in one pass through the projection's build SQL into keyless
//! tables, then its keys and index, the catch-up and the swap) from
//! 1,000,000 `file_added` events, beside a raw baseline in the same run:
//! one `INSERT INTO <plain copy of remote_files> SELECT ... FROM
//! project_events` of the same rows, the raw cost of reading the log and
//! writing the table (with its primary key and index).
//!
//! The log is written through `ferry::store::append`, batches of 10,000
//! `file_added` events (payload `FileState`, ~40-byte paths, 1-3 chunks)
//! spread over 10 projects, then `VACUUM ANALYZE`d, as a log that has been
//! around a while would be. The sides alternate raw, ferry, raw, ferry...
//!
//! Environment: `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) names the server; the
//! bench creates its own `ferry_bench_<random>` database there and drops it
//! at the end. `REBUILD_EVENTS` (default 1000000), `REBUILD_PROJECTS`
//! (default 10), `REBUILD_ROUNDS` (default 2: each side runs that often).

mod common;

use std::time::{Duration, Instant};

use common::{BoxError, FileRow};
use ferry::protocol::{Actor, EventType};
use ferry::store::{self, EventMeta, NewEvent};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;
use uuid::Uuid;

const APPEND_BATCH: usize = 10_000;
/// Events per second we aim for.
const GOAL: f64 = 100_000.0;

const RAW_COPY: &str = "INSERT INTO bench_remote_files
    (project_id, path, size, hash, mime_type, modified_at, chunks, version, updated_seq, deleted, updated_at)
SELECT project_id, data->>'path', (data->>'size')::bigint, data->>'hash', data->>'mime_type',
       (data->>'modified_at')::timestamptz, data->'chunks', (data->>'version')::bigint, seq, false, created_at
FROM project_events
WHERE type = 'file_added'";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::with_database(run).await
}

async fn run(url: String) -> Result<bool, BoxError> {
    let events: usize = common::env_num("REBUILD_EVENTS", 1_000_000)?;
    let projects: usize = common::env_num("REBUILD_PROJECTS", 10)?;
    let rounds: usize = common::env_num("REBUILD_ROUNDS", 2)?;
    let load_before = common::load();

    let pool = common::prepare(&url, 4).await?;
    println!(
        "rebuild bench: PostgreSQL {}, load {load_before}, {events} file_added events over {projects} projects, \
         {rounds} round(s) per side",
        common::server_version(&pool).await?
    );

    // The log, through the store.
    let filling = Instant::now();
    let mut client = pool.get().await?;
    let mut ids = Vec::with_capacity(projects);
    for p in 0..projects {
        let (id, owner) = (Uuid::now_v7(), Uuid::now_v7());
        let tx = client.transaction().await?;
        store::create_stream(&tx, id).await?;
        let created =
            NewEvent::new(EventType::ProjectCreated, json!({"name": format!("project {p}"), "owner_id": owner}));
        store::append(&tx, id, &meta(owner), &[created]).await?;
        tx.commit().await?;
        ids.push((id, owner));
    }
    let mut rng = StdRng::from_entropy();
    let mut appending = Duration::ZERO;
    let mut written = 0;
    let per_project = events.div_ceil(projects);
    for (p, (id, owner)) in ids.iter().enumerate() {
        let mut i = 0;
        while i < per_project && written < events {
            let n = APPEND_BATCH.min(per_project - i).min(events - written);
            let batch: Vec<NewEvent> = (i..i + n)
                .map(|k| {
                    let file = FileRow::new(&mut rng, &format!("/archive/p{p:02}/d{:04}/scan_{k:07}", k / 1000));
                    NewEvent::new(EventType::FileAdded, file.state())
                })
                .collect();
            let started = Instant::now();
            let tx = client.transaction().await?;
            store::append(&tx, *id, &meta(*owner), &batch).await?;
            tx.commit().await?;
            appending += started.elapsed();
            i += n;
            written += n;
        }
    }
    println!(
        "fill: {written} events by store::append in batches of {APPEND_BATCH} (live projections on): {:.1} s \
         in appends ({:.0} events/s), {:.1} s in all",
        appending.as_secs_f64(),
        written as f64 / appending.as_secs_f64(),
        filling.elapsed().as_secs_f64()
    );
    let vacuuming = Instant::now();
    client.batch_execute("VACUUM ANALYZE project_events, remote_files").await?;
    println!("VACUUM ANALYZE project_events, remote_files: {:.1} s", vacuuming.elapsed().as_secs_f64());
    let log_size: String =
        client.query_one("SELECT pg_size_pretty(pg_total_relation_size('project_events'))", &[]).await?.get(0);

    let projection = ferry::projections::find("remote_files").ok_or("no remote_files projection")?;
    let (mut raw_time, mut ferry_time) = (Duration::ZERO, Duration::ZERO);
    let mut raw_rows = 0;
    let mut ferry_read = 0;
    for round in 0..rounds {
        client
            .batch_execute(
                "DROP TABLE IF EXISTS bench_remote_files;
                 CREATE TABLE bench_remote_files (LIKE remote_files INCLUDING ALL);",
            )
            .await?;
        let started = Instant::now();
        let rows = client.execute(RAW_COPY, &[]).await?;
        let took = started.elapsed();
        raw_time += took;
        raw_rows += rows;
        println!("  round {} raw   {rows:>8} rows   in {:.2} s", round + 1, took.as_secs_f64());

        let started = Instant::now();
        let report = ferry::projections::rebuild(&pool, projection).await?;
        let took = started.elapsed();
        ferry_time += took;
        ferry_read += report.events_read;
        println!(
            "  round {} ferry {:>8} events in {:.2} s (caught up {})",
            round + 1,
            report.events_read,
            took.as_secs_f64(),
            report.caught_up
        );
    }
    let ferry_rate = ferry_read as f64 / ferry_time.as_secs_f64();
    let raw_rate = raw_rows as f64 / raw_time.as_secs_f64();
    println!("log: project_events {log_size} (table, indexes, TOAST)");
    println!("ferry projections::rebuild(remote_files):             {ferry_rate:>8.0} events/s (goal >= {GOAL:.0})");
    println!("raw INSERT INTO copy SELECT ... FROM project_events:  {raw_rate:>8.0} events/s");
    println!("ratio ferry/raw: {:.2}", ferry_rate / raw_rate);

    // The rebuilt table holds what the raw copy holds.
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM remote_files), (SELECT count(*) FROM bench_remote_files),
                    (SELECT count(*) FROM remote_files r JOIN bench_remote_files b USING (project_id, path)
                     WHERE (r.size, r.hash, r.mime_type, r.modified_at, r.chunks, r.version, r.updated_seq, r.deleted)
                         = (b.size, b.hash, b.mime_type, b.modified_at, b.chunks, b.version, b.updated_seq, b.deleted))",
            &[],
        )
        .await?;
    let (rebuilt, copied, equal): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let ok = rebuilt == written as i64 && copied == written as i64 && equal == written as i64;
    println!(
        "check: {written} events; remote_files {rebuilt} rows, raw copy {copied} rows, {equal} equal — {}",
        if ok { "OK" } else { "FAILED" }
    );
    println!("load after: {}", common::load());
    drop(client);
    pool.close();
    Ok(ok)
}

fn meta(owner: Uuid) -> EventMeta {
    EventMeta { actor: Actor { user_id: Some(owner), device_id: None }, idempotency_key: None }
}
