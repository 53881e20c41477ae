//! `cargo bench --bench append`: single-event appends per second through
//! `ferry::store::append` as a command runs it (`store::in_transaction`:
//! the head lock, both logs, the projection trigger, the notification
//! announced after the commit), beside a raw baseline of `BEGIN; UPDATE
//! head; INSERT; COMMIT` on two trigger-less tables, in the same run, on the
//! same database, with the same concurrency and pool. Two references:
//! "raw + NOTIFY", the raw baseline also notifying inside its transaction (folded
//! into the head UPDATE, no extra round trip), which is what ferry did
//! before: PostgreSQL serialises the commits of notifying transactions (a
//! database-wide lock held through the commit's flush); and "raw, notify
//! after", the raw baseline then notifying in a transaction of its own, as
//! ferry now does.
//!
//! A fourth side, "http", is the same single-change command from outside:
//! `PATCH /api/projects/:id {name}` (a rename: auth, the head lock, the
//! role check, one event, the projections, the notification, the answer) over
//! real HTTP to the real server in-process, from 8 keep-alive connections
//! on 100 projects of one owner; its ratio to raw is the one the goal is
//! for (>= 0.5).
//!
//! Environment: `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) names the server; the bench
//! creates its own `ferry_bench_<random>` database there and drops it at the
//! end. `BENCH_SECONDS` (default 10) is the measured time of each side, split
//! into two alternating phases (raw, raw + NOTIFY, ferry, twice) so drift
//! hits all three.

mod common;

use std::error::Error;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry::protocol::{Actor, EventType};
use ferry::store::{self, EventMeta, NewEvent, Pool};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use uuid::Uuid;

type BoxError = Box<dyn Error + Send + Sync>;

const TASKS: usize = 8;
const PROJECTS: usize = 100;
const WARM_UP: Duration = Duration::from_secs(1);
/// The ratio ferry/raw we aim for.
const GOAL: f64 = 0.5;

const RAW_TABLES: &str = "
CREATE TABLE bench_heads (
    project_id  uuid PRIMARY KEY,
    head_seq    bigint NOT NULL DEFAULT 0
);
CREATE TABLE bench_events (
    project_id  uuid NOT NULL,
    seq         bigint NOT NULL,
    id          uuid NOT NULL,
    type        text NOT NULL,
    data        jsonb NOT NULL,
    PRIMARY KEY (project_id, seq)
);";
const RAW_HEAD: &str = "UPDATE bench_heads SET head_seq = head_seq + 1 WHERE project_id = $1 RETURNING head_seq";
/// The head UPDATE of "raw + NOTIFY": the same, and a notification with
/// the payload ferry sends (nobody listens, as in ferry's side here).
const RAW_HEAD_NOTIFY: &str = "WITH head AS (
    UPDATE bench_heads SET head_seq = head_seq + 1 WHERE project_id = $1 RETURNING project_id, head_seq)
SELECT head_seq, pg_notify('ferry_bench', json_build_object('project_id', project_id, 'head_seq', head_seq)::text)
FROM head";
/// The notification of "raw, NOTIFY after": sent once the durable commit
/// has returned, in a transaction of its own that writes nothing durable
/// (so it waits for no flush), as ferry's announce is.
const RAW_NOTIFY_AFTER: &str = "SELECT pg_notify('ferry_bench', 'x')";
const RAW_INSERT: &str = "INSERT INTO bench_events (project_id, seq, id, type, data) VALUES ($1, $2, $3, $4, $5)";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Ferry,
    Raw,
    RawNotify,
    Http,
    RawNotifyAfter,
}

/// The HTTP side's scene: the server, the owner's token, its projects.
#[derive(Clone)]
struct Http {
    app: Arc<common::App>,
    token: Arc<str>,
    projects: Arc<Vec<Uuid>>,
}

/// The projects, with their owners (the actor of the renames).
#[derive(Clone)]
struct Projects(Arc<Vec<(Uuid, Uuid)>>);

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let admin_url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let seconds: f64 = match std::env::var("BENCH_SECONDS") {
        Ok(s) => match s.parse() {
            Ok(v) if v > 0.0 => v,
            _ => {
                eprintln!("BENCH_SECONDS must be a positive number of seconds, not {s:?}");
                return std::process::ExitCode::FAILURE;
            }
        },
        Err(_) => 10.0,
    };

    let db_name = format!("ferry_bench_{}", Uuid::new_v4().simple());
    let admin = match admin_client(&admin_url).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot connect to {}: {e}", ferry::config::redact_url(&admin_url));
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Err(e) = admin.batch_execute(&format!("CREATE DATABASE {db_name}")).await {
        eprintln!("cannot create database {db_name}: {e}");
        return std::process::ExitCode::FAILURE;
    }

    let result = run(&url_for(&admin_url, &db_name), Duration::from_secs_f64(seconds)).await;

    if let Err(e) = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")).await {
        eprintln!("could not drop database {db_name}: {e}");
    }
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench failed: {}", chain(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Sets up, measures, prints; answers whether the sequence check passed.
async fn run(url: &str, seconds: Duration) -> Result<bool, BoxError> {
    let pool = store::connect(url, TASKS)?;
    store::migrate::run(&pool).await?;
    ferry::projections::ensure_up_to_date(&pool).await?;
    let projects = create_projects(&pool).await?;
    create_raw_tables(&pool, &projects).await?;
    let http = http_scene(url).await?;

    let version: String = pool.get().await?.query_one("SHOW server_version", &[]).await?.get(0);
    println!(
        "append bench: PostgreSQL {version}, load {}, {TASKS} tasks, pool of {TASKS}, {PROJECTS} projects, \
         {:.1} s per side in 2 alternating phases; http: server in-process ({} HTTP workers, {} database connections shared out between them and the background), \
         {TASKS} connections",
        load(),
        seconds.as_secs_f64(),
        http.app.workers,
        http.app.pool_size,
    );

    // Warm-up: fills the pool and every connection's statement cache.
    let sides = [Side::Raw, Side::RawNotify, Side::Ferry, Side::Http, Side::RawNotifyAfter];
    for side in sides {
        measure(&pool, &projects, &http, side, WARM_UP).await?;
    }

    let phase = seconds / 2;
    let mut totals = [(0u64, Duration::ZERO); 5];
    // This process's context switches during the HTTP phases: the server's
    // and its client's, each a thread put to sleep and woken again.
    let mut http_switches = 0;
    for side in sides.into_iter().chain(sides) {
        let switches = common::context_switches();
        let (count, elapsed) = measure(&pool, &projects, &http, side, phase).await?;
        if side == Side::Http {
            http_switches += common::context_switches() - switches;
        }
        let total = &mut totals[side as usize];
        total.0 += count;
        total.1 += elapsed;
        let name = match side {
            Side::Ferry => "ferry",
            Side::Raw => "raw",
            Side::RawNotify => "raw+notify",
            Side::Http => "http",
            Side::RawNotifyAfter => "raw,notify-after",
        };
        println!("  phase {name:<10} {count:>8} appends in {:.2} s", elapsed.as_secs_f64());
    }
    let rate = |(count, elapsed): (u64, Duration)| count as f64 / elapsed.as_secs_f64();
    let ferry_rate = rate(totals[Side::Ferry as usize]);
    let raw_rate = rate(totals[Side::Raw as usize]);
    let notify_rate = rate(totals[Side::RawNotify as usize]);
    let http_rate = rate(totals[Side::Http as usize]);
    let after_rate = rate(totals[Side::RawNotifyAfter as usize]);
    println!("ferry append (store::append, 1 event/tx, {TASKS} tasks, {PROJECTS} projects): {ferry_rate:.0} appends/s");
    println!("raw baseline (BEGIN; UPDATE head; INSERT; COMMIT):           {raw_rate:.0} appends/s");
    println!("ratio ferry/raw: {:.2} (goal >= {GOAL})", ferry_rate / raw_rate);
    println!(
        "ferry command over HTTP (PATCH /api/projects/:id rename, {TASKS} connections, {PROJECTS} projects): \
         {http_rate:.0} commands/s"
    );
    println!("ratio http/raw: {:.2} (goal >= {GOAL})", http_rate / raw_rate);
    println!(
        "context switches of this process (server and client) per HTTP command: {:.1}",
        http_switches as f64 / totals[Side::Http as usize].0.max(1) as f64
    );
    println!(
        "reference: raw + NOTIFY in the transaction (ferry before):  {notify_rate:.0} appends/s ({:.2} of raw)",
        notify_rate / raw_rate
    );
    println!(
        "reference: raw, then NOTIFY in its own transaction:          {after_rate:.0} appends/s ({:.2} of raw)",
        after_rate / raw_rate
    );

    let ok = check_sequences(&pool).await?;
    println!("load after: {}", load());
    if let Ok(app) = Arc::try_unwrap(http.app) {
        app.stop().await;
    }
    pool.close();
    Ok(ok)
}

/// 100 streams, each opened with `project_created`, as a command would.
async fn create_projects(pool: &Pool) -> Result<Projects, BoxError> {
    let mut client = pool.get().await?;
    let mut projects = Vec::with_capacity(PROJECTS);
    for i in 0..PROJECTS {
        let (id, owner) = (Uuid::now_v7(), Uuid::now_v7());
        let tx = client.transaction().await?;
        store::create_stream(&tx, id).await?;
        let created =
            NewEvent::new(EventType::ProjectCreated, json!({"name": format!("project {i}"), "owner_id": owner}));
        store::append(&tx, id, &meta(owner), &[created]).await?;
        tx.commit().await?;
        projects.push((id, owner));
    }
    Ok(Projects(Arc::new(projects)))
}

async fn create_raw_tables(pool: &Pool, projects: &Projects) -> Result<(), BoxError> {
    let client = pool.get().await?;
    client.batch_execute(RAW_TABLES).await?;
    let ids: Vec<Uuid> = projects.0.iter().map(|(id, _)| *id).collect();
    client.execute("INSERT INTO bench_heads (project_id) SELECT unnest($1::uuid[])", &[&ids]).await?;
    // Fresh tables: give the planner statistics, as the migrated ones get.
    client.batch_execute("ANALYZE bench_heads, bench_events, project_heads").await?;
    Ok(())
}

fn meta(owner: Uuid) -> EventMeta {
    EventMeta { actor: Actor { user_id: Some(owner), device_id: None }, idempotency_key: None }
}

/// Runs `TASKS` appenders on `side` for `duration`; answers the appends
/// committed and the time from start until the last task finished.
async fn measure(
    pool: &Pool,
    projects: &Projects,
    http: &Http,
    side: Side,
    duration: Duration,
) -> Result<(u64, Duration), BoxError> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| match side {
            Side::Http => tokio::spawn(commander(http.clone(), stop.clone())),
            _ => tokio::spawn(appender(pool.clone(), projects.clone(), side, stop.clone())),
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut count = 0;
    for task in tasks {
        count += task.await??;
    }
    Ok((count, started.elapsed()))
}

/// One client: a pooled connection per append, as a request handler gets.
async fn appender(pool: Pool, projects: Projects, side: Side, stop: Arc<AtomicBool>) -> Result<u64, BoxError> {
    let mut rng = StdRng::from_entropy();
    let mut count = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let (project, owner) = projects.0[rng.gen_range(0..projects.0.len())];
        let name: Value = json!({"name": format!("renamed {}", rng.gen::<u32>())});
        let mut client = pool.get().await?;
        match side {
            // As a command does: BEGIN sent with the append, the COMMIT with
            // the announce of the notification.
            Side::Ferry => {
                let renamed = [NewEvent { event_type: EventType::ProjectRenamed, data: name }];
                store::in_transaction(&client, store::append(&client, project, &meta(owner), &renamed)).await?;
            }
            Side::Http => unreachable!("the http side runs in commander"),
            Side::Raw | Side::RawNotify | Side::RawNotifyAfter => {
                let tx = client.transaction().await?;
                let head = tx.prepare_cached(if side == Side::RawNotify { RAW_HEAD_NOTIFY } else { RAW_HEAD }).await?;
                let insert = tx.prepare_cached(RAW_INSERT).await?;
                let seq: i64 = tx.query_one(&head, &[&project]).await?.get(0);
                let event_type = EventType::ProjectRenamed.as_str();
                tx.execute(&insert, &[&project, &seq, &Uuid::now_v7(), &event_type, &name]).await?;
                tx.commit().await?;
                if side == Side::RawNotifyAfter {
                    client.batch_execute(RAW_NOTIFY_AFTER).await?;
                }
            }
        }
        count += 1;
    }
    Ok(count)
}

/// The HTTP side's scene: an owner signed up over HTTP, 100 projects.
async fn http_scene(url: &str) -> Result<Http, BoxError> {
    let app = common::App::start(url).await?;
    let owner = app.signup("owner").await?;
    let mut projects = Vec::with_capacity(PROJECTS);
    for i in 0..PROJECTS {
        projects.push(app.create_project(&owner, &format!("http project {i}")).await?);
    }
    Ok(Http { app: Arc::new(app), token: owner.token.into(), projects: Arc::new(projects) })
}

/// One HTTP client: renames random projects, one request at a time, on a
/// kept-alive connection of its own. The client is hyper's HTTP/1.1
/// connection with its requests' parts made beforehand, so the load
/// generator, which shares the server's two cores, costs as little as the
/// raw side's prepared statements do (reqwest, parsing each URL and
/// pooling, took a tenth of the machine).
async fn commander(http: Http, stop: Arc<AtomicBool>) -> Result<u64, BoxError> {
    use http_body_util::{BodyExt, Full};
    use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};

    let host = http.app.address.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&host).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Full<bytes::Bytes>>(hyper_util::rt::TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let paths: Vec<hyper::Uri> =
        http.projects.iter().map(|p| format!("/api/projects/{p}").parse()).collect::<Result<_, _>>()?;
    let host = HeaderValue::from_str(&host)?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", http.token))?;
    let json = HeaderValue::from_static("application/json");

    let mut rng = StdRng::from_entropy();
    let mut count = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let body = serde_json::to_vec(&json!({"name": format!("renamed {}", rng.gen::<u32>())}))?;
        let mut req = hyper::Request::new(Full::new(bytes::Bytes::from(body)));
        *req.method_mut() = hyper::Method::PATCH;
        *req.uri_mut() = paths[rng.gen_range(0..paths.len())].clone();
        let headers = req.headers_mut();
        headers.insert(HOST, host.clone());
        headers.insert(AUTHORIZATION, bearer.clone());
        headers.insert(CONTENT_TYPE, json.clone());
        let res = sender.send_request(req).await?;
        let status = res.status();
        let bytes = res.into_body().collect().await?.to_bytes();
        if status != hyper::StatusCode::OK {
            return Err(format!("PATCH project answered {status}: {}", String::from_utf8_lossy(&bytes)).into());
        }
        count += 1;
    }
    drop(sender);
    connection.await??;
    Ok(count)
}

/// Every project's seqs run 1..=head with no gap, on every side (the raw
/// tables hold the raw and raw + NOTIFY appends; the logs the store's and
/// the HTTP side's), and the projects projection holds each project's last
/// rename.
async fn check_sequences(pool: &Pool) -> Result<bool, BoxError> {
    let client = pool.get().await?;
    let ferry = client
        .query_one(
            "SELECT count(*) FILTER (WHERE e.n = e.top AND e.top = h.head_seq), count(*), coalesce(sum(e.n), 0)::bigint
             FROM project_heads h
             JOIN (SELECT project_id, count(*) AS n, max(seq) AS top FROM events GROUP BY project_id) e
               USING (project_id)",
            &[],
        )
        .await?;
    let raw = client
        .query_one(
            "SELECT count(*) FILTER (WHERE e.n = e.top AND e.top = h.head_seq), count(*), coalesce(sum(e.n), 0)::bigint
             FROM bench_heads h
             JOIN (SELECT project_id, count(*) AS n, max(seq) AS top FROM bench_events GROUP BY project_id) e
               USING (project_id)",
            &[],
        )
        .await?;
    let projected: i64 = client
        .query_one(
            "SELECT count(*) FROM projects p
             JOIN (SELECT DISTINCT ON (project_id) project_id, type, data->>'name' AS name
                   FROM events ORDER BY project_id, seq DESC) last
               ON last.project_id = p.id
             WHERE last.type IN ('project_renamed', 'project_created') AND last.name = p.name",
            &[],
        )
        .await?
        .get(0);
    let (ferry_ok, ferry_all, ferry_events): (i64, i64, i64) = (ferry.get(0), ferry.get(1), ferry.get(2));
    let (raw_ok, raw_all, raw_events): (i64, i64, i64) = (raw.get(0), raw.get(1), raw.get(2));
    // The store's projects and the HTTP side's.
    let logged = 2 * PROJECTS as i64;
    let ok = ferry_ok == logged
        && ferry_all == logged
        && raw_ok == PROJECTS as i64
        && raw_all == PROJECTS as i64
        && projected == logged;
    println!(
        "gap-free check (count(*) = max(seq) = head per project): ferry {ferry_ok}/{logged} projects \
         ({ferry_events} events), raw {raw_ok}/{PROJECTS} projects ({raw_events} events); \
         projects projection current: {projected}/{logged} — {}",
        if ok { "OK" } else { "FAILED" }
    );
    Ok(ok)
}

async fn admin_client(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// `url` with its database replaced by `db` (query parameters kept).
fn url_for(url: &str, db: &str) -> String {
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    };
    let base = match path.split_once("://") {
        Some((_, rest)) if rest.contains('/') => path.rsplit_once('/').map(|(b, _)| b).unwrap_or(path),
        _ => path,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// The 1/5/15-minute load averages, as `uptime` prints them.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn chain(error: &(dyn Error + 'static)) -> String {
    ferry::telemetry::error_chain(error)
}
