//! `cargo bench --bench fanout`: live delivery and replay over WebSocket.
//!
//! Fan-out: 100 WebSocket subscribers of one project on the real server
//! in-process (`GET /api/ws`, subscribed at the head), while one writer
//! renames the project at a steady rate, in two ways: single-event appends
//! through `ferry::store::append` in `store::in_transaction`, each event's
//! latency from just before its COMMIT; and `PATCH /api/projects/:id`
//! over HTTP (the command as clients send it: one statement, its
//! notification announced in the same round trip), each event's latency
//! from just before its request is sent. Latency is to the event's arrival
//! at each socket, p50/p99 over every (event, socket). Beside them, a raw
//! baseline in the same run: the same writer shape on a plain table with a
//! `pg_notify` in the transaction, one LISTEN connection that reads each new
//! row once and hands it to 100 in-process channels (ferry's architecture
//! without HTTP, WebSocket or JSON), latency measured the same way.
//!
//! Replay: a subscriber from seq 0 of a project with 100,000 `file_added`
//! events, events/s until `caught_up`; beside it, raw pages of 1,000 of the
//! same rows by `SELECT ... FROM events WHERE seq > $n ORDER BY seq`.
//!
//! Environment: `DATABASE_URL` as for every bench; `FANOUT_SOCKETS` (100),
//! `FANOUT_RATE` (events/s, 100), `BENCH_SECONDS` (5 per side and phase, two
//! alternating phases), `REPLAY_EVENTS` (100000), `REPLAY_ROUNDS` (2).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BoxError, FileRow};
use ferry::protocol::{Actor, EventType};
use ferry::store::{self, EventMeta, NewEvent, Pool};
use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
/// When each event left the writer (by seq on the raw side, by the rename's
/// number on ferry's: an HTTP rename's seq is known only once it is done).
type Sent = Arc<Mutex<HashMap<i64, Instant>>>;

/// One phase's subscribers, events per second and length.
#[derive(Clone, Copy)]
struct Load {
    sockets: usize,
    rate: f64,
    seconds: f64,
}

/// How ferry's writer renames the project.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// `store::append` in `store::in_transaction`, timed from the COMMIT.
    Store,
    /// `PATCH /api/projects/:id`, timed from the request.
    Http,
}

const RAW_TABLES: &str = "
CREATE TABLE bench_heads (project_id uuid PRIMARY KEY, head_seq bigint NOT NULL DEFAULT 0);
CREATE TABLE bench_events (project_id uuid NOT NULL, seq bigint NOT NULL, type text NOT NULL, data jsonb NOT NULL,
                           PRIMARY KEY (project_id, seq));";
const RAW_HEAD: &str = "WITH head AS (
    UPDATE bench_heads SET head_seq = head_seq + 1 WHERE project_id = $1 RETURNING project_id, head_seq)
SELECT head_seq, pg_notify('ferry_bench', json_build_object('project_id', project_id, 'head_seq', head_seq)::text)
FROM head";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::with_database(run).await
}

async fn run(url: String) -> Result<bool, BoxError> {
    let sockets: usize = common::env_num("FANOUT_SOCKETS", 100)?;
    let rate: f64 = common::env_num("FANOUT_RATE", 100.0)?;
    let seconds: f64 = common::env_num("BENCH_SECONDS", 5.0)?;
    let load = Load { sockets, rate, seconds };
    let replay_events: usize = common::env_num("REPLAY_EVENTS", 100_000)?;
    let rounds: usize = common::env_num("REPLAY_ROUNDS", 2)?;
    let load_before = common::load();

    let pool = common::prepare(&url, 4).await?;
    let app = common::App::start(&url).await?;
    let owner = app.signup("owner").await?;
    let project = app.create_project(&owner, "Fan-out").await?;
    let raw = common::connect(&url).await?;
    raw.batch_execute(RAW_TABLES).await?;
    raw.execute("INSERT INTO bench_heads (project_id) VALUES ($1)", &[&project]).await?;
    println!(
        "fanout bench: PostgreSQL {}, load {load_before}, server in-process ({} HTTP workers, {} database connections shared out between them and the background), \
         {sockets} sockets, {rate} events/s, {seconds} s per side and phase; replay of {replay_events} events",
        common::server_version(&pool).await?,
        app.workers,
        app.pool_size,
    );

    let (mut store_lat, mut http_lat, mut raw_lat) = (Vec::new(), Vec::new(), Vec::new());
    let mut ok = true;
    for _ in 0..2 {
        let (lat, delivered, expected) = fanout_raw(&url, &pool, project, load).await?;
        ok &= delivered == expected;
        raw_lat.extend(lat);
        for (writer, lats) in [(Writer::Store, &mut store_lat), (Writer::Http, &mut http_lat)] {
            let (lat, delivered, expected) = fanout_ferry(&app, &pool, &owner, project, writer, load).await?;
            ok &= delivered == expected;
            lats.extend(lat);
        }
    }
    // Prints a phase's p50 and p99; answers the p99 in ms.
    let report = |label: &str, lat: &mut Vec<Duration>| {
        lat.sort();
        let (p50, p99) = (common::quantile(lat, 0.5), common::quantile(lat, 0.99));
        println!(
            "{label:<58} p50 {:.2} ms, p99 {:.2} ms over {} deliveries",
            common::ms(p50),
            common::ms(p99),
            lat.len()
        );
        common::ms(p99)
    };
    let store_p99 = report(&format!("ferry fan-out (WebSocket, {sockets} sockets), from the COMMIT:"), &mut store_lat);
    let http_p99 = report("ferry fan-out, HTTP renames, from the request:", &mut http_lat);
    let raw_p99 = report(&format!("raw LISTEN + one read + {sockets} channels, from the COMMIT:"), &mut raw_lat);
    println!("ratio p99 ferry/raw: {:.2} (lower is better)", store_p99 / raw_p99.max(1e-9));
    println!("HTTP renames p99, request to socket: {http_p99:.2} ms (the command's own time included)");

    // Replay.
    let replayed = Uuid::now_v7();
    fill(&pool, replayed, owner.id, replay_events).await?;
    let head = replay_events as i64 + 1;
    let (mut ferry_time, mut raw_time) = (Duration::ZERO, Duration::ZERO);
    for round in 0..rounds {
        let started = Instant::now();
        let mut read = 0;
        let mut after = 0_i64;
        let client = pool.get().await?;
        loop {
            let page = store::read_after(&client, replayed, after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            read += page.len();
        }
        let took = started.elapsed();
        raw_time += took;
        ok &= read as i64 == head;
        println!("  round {} raw   {read} events in {:.2} s", round + 1, took.as_secs_f64());

        let started = Instant::now();
        let got = replay_ws(&app, &owner.token, replayed).await?;
        let took = started.elapsed();
        ferry_time += took;
        ok &= got as i64 == head;
        println!("  round {} ferry {got} events in {:.2} s", round + 1, took.as_secs_f64());
    }
    let events = (head as usize * rounds) as f64;
    let (ferry_rate, raw_rate) = (events / ferry_time.as_secs_f64(), events / raw_time.as_secs_f64());
    println!("ferry replay (WebSocket from seq 0 to caught_up): {ferry_rate:>9.0} events/s");
    println!("raw pages of 1,000 (read_after):                  {raw_rate:>9.0} events/s");
    println!("ratio ferry/raw: {:.2}", ferry_rate / raw_rate);
    println!("check: every event delivered to every socket, replays complete — {}", if ok { "OK" } else { "FAILED" });
    println!("load after: {}", common::load());
    app.stop().await;
    pool.close();
    Ok(ok)
}

fn meta(user: Uuid) -> EventMeta {
    EventMeta { actor: Actor { user_id: Some(user), device_id: None }, idempotency_key: None }
}

async fn connect(app: &common::App, token: &str) -> Result<Socket, BoxError> {
    let mut request = format!("{}/api/ws", app.address.replacen("http", "ws", 1)).into_client_request()?;
    request.headers_mut().insert("Authorization", format!("Bearer {token}").parse()?);
    Ok(tokio_tungstenite::connect_async(request).await?.0)
}

async fn next_json(socket: &mut Socket) -> Result<Value, BoxError> {
    loop {
        match socket.next().await.ok_or("socket closed")?? {
            Message::Text(text) => return Ok(serde_json::from_str(&text)?),
            Message::Close(_) => return Err("socket closed".into()),
            _ => {}
        }
    }
}

/// Subscribes after `after_seq` and waits for `caught_up`.
async fn subscribe(socket: &mut Socket, project: Uuid, after_seq: i64) -> Result<(), BoxError> {
    let msg = json!({"type": "subscribe", "project_id": project, "after_seq": after_seq});
    socket.send(Message::Text(msg.to_string().into())).await?;
    loop {
        if next_json(socket).await?["type"] == "caught_up" {
            return Ok(());
        }
    }
}

async fn head_of(pool: &Pool, project: Uuid) -> Result<i64, BoxError> {
    Ok(pool
        .get()
        .await?
        .query_one("SELECT head_seq FROM project_heads WHERE project_id = $1", &[&project])
        .await?
        .get(0))
}

/// One phase of ferry's fan-out; answers the latencies, the deliveries and
/// the deliveries expected.
async fn fanout_ferry(
    app: &common::App,
    pool: &Pool,
    owner: &common::support::User,
    project: Uuid,
    writer: Writer,
    load: Load,
) -> Result<(Vec<Duration>, usize, usize), BoxError> {
    let Load { sockets, rate, seconds } = load;
    let head = head_of(pool, project).await?;
    let mut subscribers = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        let mut socket = connect(app, &owner.token).await?;
        subscribe(&mut socket, project, head).await?;
        subscribers.push(socket);
    }
    let sent: Sent = Arc::default();
    let count = (rate * seconds) as i64;
    let last = head + count;
    let readers: Vec<_> = subscribers
        .into_iter()
        .map(|mut socket| {
            let sent = sent.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let v = next_json(&mut socket).await?;
                    let Some(seq) = v["seq"].as_i64() else { continue };
                    let at = Instant::now();
                    let number = v["data"]["name"].as_str().and_then(|n| n.strip_prefix("fan ")?.parse::<i64>().ok());
                    if let Some(t) = number.and_then(|i| sent.lock().expect("lock").get(&i).copied()) {
                        lat.push(at - t);
                    }
                    if seq >= last {
                        let _ = socket.close(None).await;
                        return Ok::<_, BoxError>(lat);
                    }
                }
            })
        })
        .collect();
    let client = pool.get().await?;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    let url = app.url(&format!("/api/projects/{project}"));
    for i in 0..count {
        tokio::time::sleep_until((started + interval * i as u32).into()).await;
        let name = format!("fan {i}");
        match writer {
            Writer::Store => {
                let rename = NewEvent::new(EventType::ProjectRenamed, json!({ "name": name }));
                // As a command: the COMMIT goes with the announce of the notification.
                let append = async {
                    store::append(&client, project, &meta(owner.id), &[rename]).await?;
                    sent.lock().expect("lock").insert(i, Instant::now());
                    Ok::<_, store::StoreError>(())
                };
                store::in_transaction(&client, append).await?;
            }
            Writer::Http => {
                sent.lock().expect("lock").insert(i, Instant::now());
                let res = app.http.patch(&url).bearer_auth(&owner.token).json(&json!({ "name": name })).send().await?;
                if res.status() != reqwest::StatusCode::OK {
                    return Err(format!("PATCH project answered {}", res.status()).into());
                }
            }
        }
    }
    let mut all = Vec::new();
    for reader in readers {
        all.extend(tokio::time::timeout(Duration::from_secs(30), reader).await???);
    }
    let delivered = all.len();
    Ok((all, delivered, count as usize * sockets))
}

/// One phase of the raw baseline: LISTEN, one read per notification, fan
/// out to in-process channels.
async fn fanout_raw(
    url: &str,
    pool: &Pool,
    project: Uuid,
    load: Load,
) -> Result<(Vec<Duration>, usize, usize), BoxError> {
    let Load { sockets, rate, seconds } = load;
    let (listener, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let (notes_tx, mut notes) = tokio::sync::mpsc::unbounded_channel();
    let conn = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = notes_tx.send(n.payload().to_owned());
            }
        }
    });
    listener.batch_execute("LISTEN ferry_bench").await?;
    let start_head: i64 =
        listener.query_one("SELECT head_seq FROM bench_heads WHERE project_id = $1", &[&project]).await?.get(0);
    let sent: Sent = Arc::default();
    let count = (rate * seconds) as i64;
    let last = start_head + count;
    let mut channels = Vec::with_capacity(sockets);
    let mut readers = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Arc<Vec<(i64, Value)>>>();
        channels.push(tx);
        let sent = sent.clone();
        readers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while let Some(batch) = rx.recv().await {
                let at = Instant::now();
                for (seq, _) in batch.iter() {
                    if let Some(t) = sent.lock().expect("lock").get(seq) {
                        lat.push(at - *t);
                    }
                    if *seq >= last {
                        return lat;
                    }
                }
            }
            lat
        }));
    }
    let fan = tokio::spawn(async move {
        let mut delivered = start_head;
        while delivered < last {
            let Some(_) = notes.recv().await else { break };
            let rows = listener
                .query(
                    "SELECT seq, data FROM bench_events WHERE project_id = $1 AND seq > $2 ORDER BY seq",
                    &[&project, &delivered],
                )
                .await?;
            let batch: Arc<Vec<(i64, Value)>> = Arc::new(rows.iter().map(|r| (r.get(0), r.get(1))).collect());
            if let Some((seq, _)) = batch.last() {
                delivered = *seq;
            }
            for c in &channels {
                let _ = c.send(batch.clone());
            }
        }
        Ok::<_, tokio_postgres::Error>(())
    });
    let mut client = pool.get().await?;
    let head = client.prepare_cached(RAW_HEAD).await?;
    let insert =
        client.prepare_cached("INSERT INTO bench_events (project_id, seq, type, data) VALUES ($1, $2, $3, $4)").await?;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    for i in 0..count {
        tokio::time::sleep_until((started + interval * i as u32).into()).await;
        let tx = client.transaction().await?;
        let seq: i64 = tx.query_one(&head, &[&project]).await?.get(0);
        tx.execute(&insert, &[&project, &seq, &"project_renamed", &json!({"name": format!("fan {i}")})]).await?;
        sent.lock().expect("lock").insert(seq, Instant::now());
        tx.commit().await?;
    }
    tokio::time::timeout(Duration::from_secs(30), fan).await???;
    let mut all = Vec::new();
    for reader in readers {
        all.extend(reader.await?);
    }
    conn.abort();
    let delivered = all.len();
    Ok((all, delivered, count as usize * sockets))
}

/// `events` file_added events in a new project, by the store in batches.
async fn fill(pool: &Pool, project: Uuid, owner: Uuid, events: usize) -> Result<(), BoxError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    store::create_stream(&tx, project).await?;
    let created = NewEvent::new(EventType::ProjectCreated, json!({"name": "replay", "owner_id": owner}));
    store::append(&tx, project, &meta(owner), &[created]).await?;
    tx.commit().await?;
    let mut rng = StdRng::from_entropy();
    let mut i = 0;
    while i < events {
        let n = 10_000.min(events - i);
        let batch: Vec<NewEvent> = (i..i + n)
            .map(|k| NewEvent::new(EventType::FileAdded, FileRow::new(&mut rng, &format!("/replay/{k:07}")).state()))
            .collect();
        let tx = client.transaction().await?;
        store::append(&tx, project, &meta(owner), &batch).await?;
        tx.commit().await?;
        i += n;
    }
    Ok(())
}

/// Subscribes from seq 0 and counts events until `caught_up`.
async fn replay_ws(app: &common::App, token: &str, project: Uuid) -> Result<usize, BoxError> {
    let mut socket = connect(app, token).await?;
    let msg = json!({"type": "subscribe", "project_id": project, "after_seq": 0});
    socket.send(Message::Text(msg.to_string().into())).await?;
    let mut got = 0;
    loop {
        let v = next_json(&mut socket).await?;
        match v["type"].as_str() {
            Some("caught_up") => break,
            Some("subscribed") | Some("pong") => {}
            Some("error") => return Err(format!("replay refused: {v}").into()),
            _ => got += 1,
        }
    }
    let _ = socket.close(None).await;
    Ok(got)
}
