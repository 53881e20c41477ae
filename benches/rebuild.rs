//! `cargo bench --bench rebuild`: events per second of a projection's
//! rebuild (`remote_files`, or `file_chunks` with
//! `REBUILD_PROJECTION=file_chunks`; (`ferry::projections::rebuild`: fresh tables in a private schema,
//! the whole log in one pass through the projection's build SQL into keyless
//! tables, then its keys and index, the catch-up and the swap) from
//! 1,000,000 `file_added` events, beside a raw baseline in the same run:
//! one `INSERT INTO <plain copy of the projection's table> SELECT ... FROM
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
//! (default 10), `REBUILD_ROUNDS` (default 2: each side runs that often),
//! `REBUILD_PROJECTION` (default `remote_files`).

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

/// A projection the bench rebuilds, and its raw baseline.
struct Target {
    /// The projection, and its table.
    name: &'static str,
    /// Fills `bench_<name>` (a plain copy of the table) from the log.
    raw_copy: &'static str,
    /// Rows of the table, of the copy, and rows equal in both.
    compare: &'static str,
}

const TARGETS: [Target; 2] = [
    Target {
        name: "remote_files",
        raw_copy: "INSERT INTO bench_remote_files
            (project_id, path, size, hash, mime_type, modified_at, chunks, version, updated_seq, deleted, updated_at)
        SELECT project_id, data->>'path', (data->>'size')::bigint, data->>'hash', data->>'mime_type',
               (data->>'modified_at')::timestamptz, data->'chunks', (data->>'version')::bigint, seq, false, created_at
        FROM project_events
        WHERE type = 'file_added'",
        compare: "SELECT (SELECT count(*) FROM remote_files), (SELECT count(*) FROM bench_remote_files),
            (SELECT count(*) FROM remote_files r JOIN bench_remote_files b USING (project_id, path)
             WHERE (r.size, r.hash, r.mime_type, r.modified_at, r.chunks, r.version, r.updated_seq, r.deleted)
                 = (b.size, b.hash, b.mime_type, b.modified_at, b.chunks, b.version, b.updated_seq, b.deleted))",
    },
    Target {
        name: "file_chunks",
        raw_copy: "INSERT INTO bench_file_chunks (project_id, path, idx, hash)
        SELECT e.project_id, e.data->>'path', (c.ord - 1)::integer, decode(c.value->>'hash', 'hex')
        FROM project_events e
        CROSS JOIN LATERAL jsonb_array_elements(e.data->'chunks') WITH ORDINALITY AS c(value, ord)
        WHERE e.type = 'file_added'",
        compare: "SELECT (SELECT count(*) FROM file_chunks), (SELECT count(*) FROM bench_file_chunks),
            (SELECT count(*) FROM file_chunks r JOIN bench_file_chunks b USING (project_id, path, idx)
             WHERE r.hash = b.hash)",
    },
];

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::with_database(run).await
}

async fn run(url: String) -> Result<bool, BoxError> {
    let events: usize = common::env_num("REBUILD_EVENTS", 1_000_000)?;
    let projects: usize = common::env_num("REBUILD_PROJECTS", 10)?;
    let rounds: usize = common::env_num("REBUILD_ROUNDS", 2)?;
    let name = std::env::var("REBUILD_PROJECTION").unwrap_or_else(|_| "remote_files".into());
    let target = TARGETS
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| format!("REBUILD_PROJECTION={name}: one of {}", TARGETS.map(|t| t.name).join(", ")))?;
    let load_before = common::load();

    let pool = common::prepare(&url, 4).await?;
    println!(
        "rebuild bench: {}, PostgreSQL {}, load {load_before}, {events} file_added events over {projects} projects, \
         {rounds} round(s) per side",
        target.name,
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
    client.batch_execute(&format!("VACUUM ANALYZE project_events, {}", target.name)).await?;
    println!("VACUUM ANALYZE project_events, {}: {:.1} s", target.name, vacuuming.elapsed().as_secs_f64());
    let log_size: String =
        client.query_one("SELECT pg_size_pretty(pg_total_relation_size('project_events'))", &[]).await?.get(0);

    let projection = ferry::projections::find(target.name).ok_or("no such projection")?;
    let (mut raw_time, mut ferry_time) = (Duration::ZERO, Duration::ZERO);
    let mut raw_rows = 0;
    let mut ferry_read = 0;
    for round in 0..rounds {
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS bench_{0}; CREATE TABLE bench_{0} (LIKE {0} INCLUDING ALL);",
                target.name
            ))
            .await?;
        let started = Instant::now();
        let rows = client.execute(target.raw_copy, &[]).await?;
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
    // Each raw round reads every event too (and writes `raw_rows / rounds` rows).
    let raw_rate = (written * rounds) as f64 / raw_time.as_secs_f64();
    println!("log: project_events {log_size} (table, indexes, TOAST)");
    println!("ferry projections::rebuild({}): {ferry_rate:>8.0} events/s (goal >= {GOAL:.0})", target.name);
    println!(
        "raw INSERT INTO copy SELECT ... FROM project_events: {raw_rate:>8.0} events/s ({} rows a round)",
        raw_rows as usize / rounds
    );
    println!("ratio ferry/raw: {:.2}", ferry_rate / raw_rate);

    // The rebuilt table holds what the raw copy holds.
    let row = client.query_one(target.compare, &[]).await?;
    let (rebuilt, copied, equal): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    // Every file has a row (remote_files) or at least one (file_chunks).
    let ok = rebuilt == copied && equal == copied && copied >= written as i64;
    println!(
        "check: {written} events; {} {rebuilt} rows, raw copy {copied} rows, {equal} equal — {}",
        target.name,
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
