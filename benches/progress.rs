//! `cargo bench --bench progress`: transfer progress reports,
//! `PATCH /api/projects/:id/transfers/:tid {bytes_transferred}` over real
//! HTTP (the real server in-process) from 8 concurrent clients (the source
//! device's agent) on 100 in-progress transfers of one project, each client
//! owning ~12 of them and sending increasing bytes. Progress is coalesced to
//! one event per second per transfer (unless the bytes reach the total), so
//! two figures: requests answered per second, and events appended per
//! second. Beside them, a raw baseline in the same run, "lock+insert":
//! `BEGIN; SELECT ... FOR UPDATE` on one head row; `INSERT` an event row;
//! `COMMIT` through tokio-postgres from 8 tasks (an event every time).
//!
//! Scene: an owner, a source device, a 1 TiB file pushed, a member who
//! requests it 100 times, each transfer PATCHed to `in_progress` first.
//! Phases alternate raw, ferry, raw, ferry, so drift hits both.
//!
//! Environment: `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) names the server; the
//! bench creates its own `ferry_bench_<random>` database there and drops it
//! at the end. `BENCH_SECONDS` (default 10) is the measured time of each
//! side; `PROGRESS_CLIENTS` (default 8), `PROGRESS_TRANSFERS` (default 100);
//! `FERRY_WORKERS`, `FERRY_DB_POOL_SIZE` as for `ferryd serve`.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{App, BoxError};
use ferry::store::Pool;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

const FILE_SIZE: i64 = 1 << 40;
const WARM_UP: Duration = Duration::from_secs(1);
/// The ratio ferry/raw we aim for.
const GOAL: f64 = 0.5;

const RAW_TABLES: &str = "
CREATE TABLE bench_heads (
    project_id  uuid PRIMARY KEY,
    head_seq    bigint NOT NULL DEFAULT 0
);
CREATE TABLE bench_events (
    id           uuid PRIMARY KEY,
    project_id   uuid NOT NULL,
    transfer_id  uuid NOT NULL,
    type         text NOT NULL,
    data         jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);";
const RAW_LOCK: &str = "SELECT head_seq FROM bench_heads WHERE project_id = $1 FOR UPDATE";
const RAW_INSERT: &str =
    "INSERT INTO bench_events (id, project_id, transfer_id, type, data) VALUES ($1, $2, $3, $4, $5)";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Ferry,
    Raw,
}

/// The scene the clients work on.
struct Scene {
    app: App,
    pool: Pool,
    project: Uuid,
    device_token: String,
    transfers: Vec<Uuid>,
    /// The last bytes sent for each transfer (each has one client).
    bytes: Vec<AtomicI64>,
    clients: usize,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::with_database(run).await
}

async fn run(url: String) -> Result<bool, BoxError> {
    let seconds: f64 = common::env_num("BENCH_SECONDS", 10.0)?;
    let clients: usize = common::env_num("PROGRESS_CLIENTS", 8)?;
    let count: usize = common::env_num("PROGRESS_TRANSFERS", 100)?;
    let load_before = common::load();

    let pool = common::prepare(&url, clients).await?;
    let app = App::start(&url).await?;
    let owner = app.signup("owner").await?;
    let member = app.signup("member").await?;
    let project = app.create_project(&owner, "Progress").await?;
    app.join(&owner, project, &member).await?;
    let (_, device_token) = app.source_device(&owner, project).await?;
    let big = json!({"changes": [{"op": "upsert", "path": "/video/master.mov", "size": FILE_SIZE,
                                  "hash": common::hash_of("master")}]});
    let path = format!("/api/projects/{project}/files/update");
    app.expect(StatusCode::OK, Method::POST, &path, Some(&device_token), Some(&big)).await?;
    let mut transfers = Vec::with_capacity(count);
    let download = json!({"file_path": "/video/master.mov"});
    let path = format!("/api/projects/{project}/files/download");
    for _ in 0..count {
        let v = app.expect(StatusCode::CREATED, Method::POST, &path, Some(&member.token), Some(&download)).await?;
        transfers.push(v["download_id"].as_str().ok_or("no download_id")?.parse::<Uuid>()?);
    }
    for id in &transfers {
        let path = format!("/api/projects/{project}/transfers/{id}");
        let v = app
            .expect(StatusCode::OK, Method::PATCH, &path, Some(&device_token), Some(&json!({"status": "in_progress"})))
            .await?;
        if v["status"] != "in_progress" {
            return Err(format!("transfer {id} is {} after the start", v["status"]).into());
        }
    }
    let raw = pool.get().await?;
    raw.batch_execute(RAW_TABLES).await?;
    raw.execute("INSERT INTO bench_heads (project_id) VALUES ($1)", &[&project]).await?;
    raw.batch_execute("ANALYZE bench_heads, bench_events").await?;
    drop(raw);

    println!(
        "progress bench: PostgreSQL {}, load {load_before}, server in-process ({} HTTP workers, {} database connections shared out between them and the background), \
         {clients} clients, {count} in-progress transfers in one project, {seconds:.1} s per side in 2 alternating phases",
        common::server_version(&pool).await?,
        app.workers,
        app.pool_size,
    );

    let bytes = transfers.iter().map(|_| AtomicI64::new(0)).collect();
    let scene = Arc::new(Scene { app, pool, project, device_token, transfers, bytes, clients });

    for side in [Side::Raw, Side::Ferry] {
        measure(&scene, side, WARM_UP).await?;
    }
    let phase = Duration::from_secs_f64(seconds / 2.0);
    let (mut raw_count, mut raw_time) = (0u64, Duration::ZERO);
    let (mut ferry_count, mut ferry_events, mut ferry_time) = (0u64, 0i64, Duration::ZERO);
    let mut latencies = Vec::new();
    for side in [Side::Raw, Side::Ferry, Side::Raw, Side::Ferry] {
        let before = progress_events(&scene.pool, scene.project).await?;
        let m = measure(&scene, side, phase).await?;
        let events = progress_events(&scene.pool, scene.project).await? - before;
        match side {
            Side::Raw => {
                raw_count += m.count;
                raw_time += m.elapsed;
                println!("  phase raw   {:>7} transactions in {:.2} s", m.count, m.elapsed.as_secs_f64());
            }
            Side::Ferry => {
                ferry_count += m.count;
                ferry_events += events;
                ferry_time += m.elapsed;
                latencies.extend(m.latencies);
                println!(
                    "  phase ferry {:>7} requests ({events} progress events) in {:.2} s",
                    m.count,
                    m.elapsed.as_secs_f64()
                );
            }
        }
    }
    latencies.sort();
    let ferry_rate = ferry_count as f64 / ferry_time.as_secs_f64();
    let events_rate = ferry_events as f64 / ferry_time.as_secs_f64();
    let raw_rate = raw_count as f64 / raw_time.as_secs_f64();
    println!(
        "ferry PATCH transfers/:tid (HTTP, {clients} clients, {count} transfers): {ferry_rate:.0} requests/s answered \
         (p50 {:.2} ms, p99 {:.2} ms), {events_rate:.1} progress events appended/s \
         ({:.2} per transfer per second; coalescing allows 1)",
        common::ms(common::quantile(&latencies, 0.5)),
        common::ms(common::quantile(&latencies, 0.99)),
        events_rate / count as f64,
    );
    println!(
        "raw lock+insert (BEGIN; SELECT head FOR UPDATE; INSERT event; COMMIT; {clients} tasks): {raw_rate:.0} tx/s \
         (= events/s)"
    );
    println!("ratio ferry/raw (requests/s over tx/s): {:.2} (goal >= {GOAL})", ferry_rate / raw_rate);

    let ok = check(&scene).await?;
    println!("load after: {}", common::load());
    let Ok(scene) = Arc::try_unwrap(scene) else { return Err("a client task outlived the bench".into()) };
    scene.app.stop().await;
    scene.pool.close();
    Ok(ok)
}

async fn progress_events(pool: &Pool, project: Uuid) -> Result<i64, BoxError> {
    Ok(pool
        .get()
        .await?
        .query_one(
            "SELECT count(*) FROM transfer_events WHERE project_id = $1 AND type = 'file_transfer_progress'",
            &[&project],
        )
        .await?
        .get(0))
}

struct Measured {
    count: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

/// Runs the clients of `side` for `duration`; answers what they did and the
/// time from start until the last one finished.
async fn measure(scene: &Arc<Scene>, side: Side, duration: Duration) -> Result<Measured, BoxError> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..scene.clients)
        .map(|c| {
            let (scene, stop) = (scene.clone(), stop.clone());
            tokio::spawn(async move {
                match side {
                    Side::Ferry => reporter(&scene, c, &stop).await,
                    Side::Raw => locker(&scene, c, &stop).await,
                }
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut measured = Measured { count: 0, elapsed: Duration::ZERO, latencies: Vec::new() };
    for task in tasks {
        let (count, latencies) = task.await??;
        measured.count += count;
        measured.latencies.extend(latencies);
    }
    measured.elapsed = started.elapsed();
    Ok(measured)
}

/// One agent: PATCHes its transfers in turn with growing bytes.
async fn reporter(scene: &Scene, client: usize, stop: &AtomicBool) -> Result<(u64, Vec<Duration>), BoxError> {
    let mine: Vec<usize> = (client..scene.transfers.len()).step_by(scene.clients).collect();
    let urls: Vec<String> = mine
        .iter()
        .map(|&t| scene.app.url(&format!("/api/projects/{}/transfers/{}", scene.project, scene.transfers[t])))
        .collect();
    let mut rng = StdRng::from_entropy();
    let mut latencies = Vec::new();
    let mut k = 0;
    while !stop.load(Ordering::Relaxed) && !mine.is_empty() {
        let t = mine[k % mine.len()];
        let sent = scene.bytes[t].load(Ordering::Relaxed) + rng.gen_range(256 * 1024..4 * 1024 * 1024);
        scene.bytes[t].store(sent, Ordering::Relaxed);
        let body = serde_json::to_vec(&json!({ "bytes_transferred": sent }))?;
        let started = Instant::now();
        let res = scene
            .app
            .http
            .patch(&urls[k % mine.len()])
            .bearer_auth(&scene.device_token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?;
        let status = res.status();
        let answer = res.bytes().await?;
        latencies.push(started.elapsed());
        if status != StatusCode::OK {
            return Err(format!("PATCH answered {status}: {}", String::from_utf8_lossy(&answer)).into());
        }
        k += 1;
    }
    Ok((k as u64, latencies))
}

/// One raw task: lock the head row, insert an event row, commit.
async fn locker(scene: &Scene, client: usize, stop: &AtomicBool) -> Result<(u64, Vec<Duration>), BoxError> {
    let mine: Vec<Uuid> = scene.transfers.iter().skip(client).step_by(scene.clients).copied().collect();
    let mut rng = StdRng::from_entropy();
    let mut count = 0u64;
    while !stop.load(Ordering::Relaxed) && !mine.is_empty() {
        let transfer = mine[count as usize % mine.len()];
        let data = progress_like(transfer, rng.gen_range(0..FILE_SIZE));
        let mut conn = scene.pool.get().await?;
        let tx = conn.transaction().await?;
        let lock = tx.prepare_cached(RAW_LOCK).await?;
        let insert = tx.prepare_cached(RAW_INSERT).await?;
        tx.query_one(&lock, &[&scene.project]).await?;
        tx.execute(&insert, &[&Uuid::now_v7(), &scene.project, &transfer, &"file_transfer_progress", &data]).await?;
        tx.commit().await?;
        count += 1;
    }
    Ok((count, Vec::new()))
}

/// A payload the size and shape of a progress event's.
fn progress_like(transfer: Uuid, bytes: i64) -> Value {
    let now = chrono::Utc::now();
    json!({"transfer_id": transfer, "requester_id": Uuid::nil(), "file_path": "/video/master.mov",
           "status": "in_progress", "bytes_transferred": bytes, "total_bytes": FILE_SIZE,
           "percent": 12.34, "speed_mbps": 812.5, "eta_seconds": 9000, "attempts": 1, "error_message": null,
           "started_at": now, "completed_at": null, "expires_at": now, "last_activity_at": now,
           "last_progress_at": now, "window": [[now.timestamp_millis(), bytes]]})
}

/// Every transfer is still in progress with no more bytes recorded than
/// sent, and the project's seqs are gap-free.
async fn check(scene: &Scene) -> Result<bool, BoxError> {
    let client = scene.pool.get().await?;
    let rows = client
        .query("SELECT id, status, bytes_transferred FROM file_transfers WHERE project_id = $1", &[&scene.project])
        .await?;
    let mut good = 0;
    for row in &rows {
        let (id, status, bytes): (Uuid, String, i64) = (row.get(0), row.get(1), row.get(2));
        let Some(t) = scene.transfers.iter().position(|x| *x == id) else { continue };
        if status == "in_progress" && bytes > 0 && bytes <= scene.bytes[t].load(Ordering::Relaxed) {
            good += 1;
        }
    }
    let row = client
        .query_one(
            "SELECT h.head_seq, (SELECT count(*) FROM events WHERE project_id = $1), (SELECT max(seq) FROM events WHERE project_id = $1)
             FROM project_heads h WHERE h.project_id = $1",
            &[&scene.project],
        )
        .await?;
    let (head, n, top): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let ok = good == scene.transfers.len() && head == n && n == top;
    println!(
        "check: {good}/{} transfers in progress with bytes recorded <= bytes sent; seqs gap-free (head {head}, \
         {n} events) — {}",
        scene.transfers.len(),
        if ok { "OK" } else { "FAILED" }
    );
    Ok(ok)
}
