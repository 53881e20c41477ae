//! `cargo bench --bench ingest`: file changes per second through
//! `POST /api/projects/:id/files/update` over real HTTP (the real server
//! in-process: auth, JSON, validation, the head lock, the current-state
//! load, one append of the whole batch with the projection triggers, the
//! NOTIFY), in batches of 1,000 and of 10,000 new paths, beside a raw
//! baseline in the same run: the same rows (project_id, path, size, hash,
//! mime_type, modified_at, chunks jsonb) inserted into a plain table keyed
//! by (project_id, path), one `INSERT ... SELECT FROM unnest(...)` per batch
//! of the same size, through tokio-postgres.
//!
//! Batches of the two sides alternate (their order too), so drift hits both.
//! The bodies and the column arrays are built before the clock starts.
//! Beside the rates it prints the CPU seconds each side cost, per 1,000
//! changes: this process (the server, and the client's sending) and the
//! PostgreSQL backends (ferry's pool, or the raw side's one connection), as
//! `/proc` counts them whatever else the machine is doing.
//!
//! Environment: `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) names the server; the
//! bench creates its own `ferry_bench_<random>` database there and drops it
//! at the end. `INGEST_CHANGES` (default 100000) changes per batch size and
//! side, `INGEST_BATCH_SIZES` (default `1000,10000`); `FERRY_WORKERS`,
//! `FERRY_DB_POOL_SIZE` as for `ferryd serve`.

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{BoxError, FileRow};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;

/// The ratio ferry/raw we aim for.
const GOAL: f64 = 0.5;

const RAW_TABLE: &str = "
CREATE TABLE bench_files (
    project_id   uuid NOT NULL,
    path         text COLLATE \"C\" NOT NULL,
    size         bigint NOT NULL,
    hash         text NOT NULL,
    mime_type    text NOT NULL,
    modified_at  timestamptz,
    chunks       jsonb,
    PRIMARY KEY (project_id, path)
)";
const RAW_INSERT: &str = "
INSERT INTO bench_files (project_id, path, size, hash, mime_type, modified_at, chunks)
SELECT $1, * FROM unnest($2::text[], $3::int8[], $4::text[], $5::text[], $6::timestamptz[], $7::jsonb[])";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::with_database(run).await
}

/// One batch for the raw side, as column arrays.
struct Columns {
    paths: Vec<String>,
    sizes: Vec<i64>,
    hashes: Vec<String>,
    mime_types: Vec<&'static str>,
    modified: Vec<DateTime<Utc>>,
    chunks: Vec<Value>,
}

impl Columns {
    fn of(files: &[FileRow]) -> Self {
        Self {
            paths: files.iter().map(|f| f.path.clone()).collect(),
            sizes: files.iter().map(|f| f.size).collect(),
            hashes: files.iter().map(|f| f.hash.clone()).collect(),
            mime_types: files.iter().map(|f| f.mime_type).collect(),
            modified: files.iter().map(|f| f.modified_at).collect(),
            chunks: files.iter().map(FileRow::chunks_json).collect(),
        }
    }
}

/// `n` new files, ~40-byte paths unique to (`tag`, `batch`).
fn batch_files(rng: &mut StdRng, tag: &str, batch: usize, n: usize) -> Vec<FileRow> {
    (0..n).map(|i| FileRow::new(rng, &format!("/photos/{tag}/batch{batch:04}/IMG_{i:05}"))).collect()
}

async fn run(url: String) -> Result<bool, BoxError> {
    let total: usize = common::env_num("INGEST_CHANGES", 100_000)?;
    let sizes = common::env_list("INGEST_BATCH_SIZES", &[1_000, 10_000])?;
    let load_before = common::load();

    let pool = common::prepare(&url, 2).await?;
    let app = common::App::start(&url).await?;
    let owner = app.signup("owner").await?;
    let project = app.create_project(&owner, "Ingest").await?;
    let (_, device) = app.source_device(&owner, project).await?;

    let raw = common::connect(&url).await?;
    raw.batch_execute(RAW_TABLE).await?;
    let raw_insert = raw.prepare(RAW_INSERT).await?;
    let raw_pid = raw.query_one("SELECT pg_backend_pid()", &[]).await?.get::<_, i32>(0) as u32;

    println!(
        "ingest bench: PostgreSQL {}, load {load_before}, server in-process ({} HTTP workers, {} database connections shared out between them and the background), \
         {total} changes per batch size and side, upserts of new paths (~40-byte path, hash, size, 1-3 chunks)",
        common::server_version(&pool).await?,
        app.workers,
        app.pool_size,
    );

    let mut rng = StdRng::from_entropy();
    // Warm-up: connections, statement caches, the first pages of the tables.
    for w in 0..2 {
        let files = batch_files(&mut rng, "warm", w, 1_000);
        common::push_body(&app, &device, project, common::update_body(&files)).await?;
        let c = Columns::of(&files);
        raw.execute(&raw_insert, &[&project, &c.paths, &c.sizes, &c.hashes, &c.mime_types, &c.modified, &c.chunks])
            .await?;
    }
    let mut sent = 2_000_i64;
    // The pool's connections are open after the warm-up.
    let pool_pids: Vec<u32> = common::backend_pids(&url).await?.into_iter().filter(|&p| p != raw_pid).collect();
    let me = std::process::id();

    let mut ok = true;
    for &size in &sizes {
        let batches = total.div_ceil(size);
        let tag = format!("b{size}");
        let (mut ferry_time, mut raw_time) = (Duration::ZERO, Duration::ZERO);
        let (mut ferry_worst, mut raw_worst) = (Duration::ZERO, Duration::ZERO);
        // CPU seconds: [this process, PostgreSQL] per side.
        let (mut ferry_cpu, mut raw_cpu) = ([0.0; 2], [0.0; 2]);
        for b in 0..batches {
            let files = batch_files(&mut rng, &tag, b, size);
            let body = common::update_body(&files);
            let columns = Columns::of(&files);
            for side in if b % 2 == 0 { [0, 1] } else { [1, 0] } {
                if side == 0 {
                    let body = body.clone();
                    let cpu = [common::cpu_seconds_of(&[me]), common::cpu_seconds_of(&pool_pids)];
                    let started = Instant::now();
                    let answer = common::push_body(&app, &device, project, body).await?;
                    let took = started.elapsed();
                    ferry_cpu[0] += common::cpu_seconds_of(&[me]) - cpu[0];
                    ferry_cpu[1] += common::cpu_seconds_of(&pool_pids) - cpu[1];
                    ferry_time += took;
                    ferry_worst = ferry_worst.max(took);
                    if answer["applied"].as_u64() != Some(size as u64) {
                        println!("  unexpected answer to a batch of {size}: {answer}");
                        ok = false;
                    }
                } else {
                    let c = &columns;
                    let cpu = [common::cpu_seconds_of(&[me]), common::cpu_seconds_of(&[raw_pid])];
                    let started = Instant::now();
                    raw.execute(
                        &raw_insert,
                        &[&project, &c.paths, &c.sizes, &c.hashes, &c.mime_types, &c.modified, &c.chunks],
                    )
                    .await?;
                    let took = started.elapsed();
                    raw_cpu[0] += common::cpu_seconds_of(&[me]) - cpu[0];
                    raw_cpu[1] += common::cpu_seconds_of(&[raw_pid]) - cpu[1];
                    raw_time += took;
                    raw_worst = raw_worst.max(took);
                }
            }
        }
        sent += (batches * size) as i64;
        let changes = (batches * size) as f64;
        let ferry_rate = changes / ferry_time.as_secs_f64();
        let raw_rate = changes / raw_time.as_secs_f64();
        println!("batches of {size} ({batches} batches, {} changes per side):", batches * size);
        println!(
            "  ferry files/update (HTTP, 1 batch per request): {ferry_rate:>8.0} changes/s \
             (mean {:.1} ms, worst {:.1} ms per batch)",
            common::ms(ferry_time) / batches as f64,
            common::ms(ferry_worst)
        );
        println!(
            "  raw INSERT ... SELECT FROM unnest (plain table):  {raw_rate:>8.0} changes/s \
             (mean {:.1} ms, worst {:.1} ms per batch)",
            common::ms(raw_time) / batches as f64,
            common::ms(raw_worst)
        );
        println!("  ratio ferry/raw: {:.2} (goal >= {GOAL})", ferry_rate / raw_rate);
        let per_1000 = |cpu: [f64; 2]| cpu.map(|s| s * 1000.0 / changes * 1000.0);
        let (f, r) = (per_1000(ferry_cpu), per_1000(raw_cpu));
        println!(
            "  CPU ms per 1,000 changes: ferry {:.1} in this process + {:.1} in PostgreSQL; \
             raw {:.1} + {:.1}",
            f[0], f[1], r[0], r[1]
        );
    }

    // Every change landed, once, on both sides.
    let client = pool.get().await?;
    let listed: i64 = client
        .query_one("SELECT count(*) FROM remote_files WHERE project_id = $1 AND NOT deleted", &[&project])
        .await?
        .get(0);
    let logged: i64 = client
        .query_one("SELECT count(*) FROM project_events WHERE project_id = $1 AND type = 'file_added'", &[&project])
        .await?
        .get(0);
    let raw_rows: i64 = raw.query_one("SELECT count(*) FROM bench_files", &[]).await?.get(0);
    let counted = listed == sent && logged == sent && raw_rows == sent;
    ok &= counted;
    println!(
        "check: {sent} changes sent per side; remote_files {listed}, file_added events {logged}, raw rows {raw_rows} — {}",
        if counted { "OK" } else { "FAILED" }
    );
    println!("load after: {}", common::load());

    app.stop().await;
    pool.close();
    Ok(ok)
}
