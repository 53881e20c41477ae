use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::helpers::{start_server, TestApp, TestUser};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket client speaking the JSON messages of `/api/ws`.
pub struct Ws {
    socket: Socket,
}

impl Ws {
    pub async fn connect(base: &str, token: &str) -> Self {
        Self::try_connect(base, token).await.expect("socket opens")
    }

    async fn try_connect(base: &str, token: &str) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let url = format!("{}/api/ws", base.replacen("http", "ws", 1));
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert("Authorization", format!("Bearer {token}").parse().unwrap());
        let (socket, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Self { socket })
    }

    /// A client whose socket takes only a few KiB before the server must wait.
    async fn connect_small_window(base: &str, token: &str) -> Self {
        let address: std::net::SocketAddr = base.trim_start_matches("http://").parse().unwrap();
        let tcp = tokio::net::TcpSocket::new_v4().unwrap();
        tcp.set_recv_buffer_size(4096).unwrap();
        let stream = tcp.connect(address).await.unwrap();
        let mut request = format!("ws://{address}/api/ws").into_client_request().unwrap();
        request.headers_mut().insert("Authorization", format!("Bearer {token}").parse().unwrap());
        let (socket, _) =
            tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream)).await.unwrap();
        Self { socket }
    }

    async fn send(&mut self, message: Value) {
        self.socket.send(Message::Text(message.to_string().into())).await.unwrap();
    }

    pub async fn subscribe(&mut self, project: Uuid, after_seq: i64) {
        self.send(json!({"type": "subscribe", "project_id": project, "after_seq": after_seq})).await;
    }

    /// The next JSON message, or None after 5 s of silence or a close.
    async fn next(&mut self) -> Option<Value> {
        self.next_within(Duration::from_secs(5)).await
    }

    async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        loop {
            match tokio::time::timeout(wait, self.socket.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => return Some(serde_json::from_str(&text).unwrap()),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                _ => return None,
            }
        }
    }

    /// Messages until one satisfies `last` (included).
    pub async fn until(&mut self, last: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut seen = Vec::new();
        while let Some(message) = self.next().await {
            let done = last(&message);
            seen.push(message);
            if done {
                return seen;
            }
        }
        panic!("the awaited message never came; got {seen:#?}");
    }

    /// The close code the server ends the socket with (None: no close frame
    /// within 5 s).
    async fn close_code(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.socket.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| f.code.into()),
                Ok(Some(Ok(_))) => continue,
                _ => return None,
            }
        }
    }

    /// Messages from `subscribed` to `caught_up` for a subscribe just sent.
    async fn subscribed(&mut self) -> Vec<Value> {
        let messages = self.until(|m| m["type"] == "caught_up" || m["type"] == "error").await;
        assert_eq!(messages[0]["type"], "subscribed", "{messages:#?}");
        assert_eq!(messages.last().unwrap()["type"], "caught_up", "{messages:#?}");
        messages
    }

    /// Event seqs until an event with `seq` arrives.
    pub async fn seqs_until(&mut self, seq: i64) -> Vec<i64> {
        let messages = self.until(|m| m["seq"].as_i64() == Some(seq) && m.get("data").is_some()).await;
        messages.iter().filter(|m| m.get("data").is_some()).map(|m| m["seq"].as_i64().unwrap()).collect()
    }
}

async fn rename(app: &TestApp, owner: &TestUser, project: Uuid, name: &str) {
    let path = format!("/api/projects/{project}");
    let (status, body) = app.call(Method::PATCH, &path, Some(&owner.token), Some(&json!({"name": name}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn head(app: &TestApp, owner: &TestUser, project: Uuid) -> i64 {
    app.get(&format!("/api/projects/{project}"), &owner.token).await.1["head_seq"].as_i64().unwrap()
}

#[tokio::test]
async fn a_socket_replays_from_a_seq_then_follows_live() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner").await;
    let project = app.create_project(&owner, "Live").await;
    for i in 0..3 {
        rename(&app, &owner, project, &format!("n{i}")).await;
    }
    let mut ws = Ws::connect(&app.address, &owner.token).await;
    ws.subscribe(project, 1).await;
    let first = ws.next().await.unwrap();
    assert_eq!(first, json!({"type": "subscribed", "project_id": project, "head_seq": 4}));
    let replay = ws.until(|m| m["type"] == "caught_up").await;
    let seqs: Vec<i64> = replay.iter().filter_map(|m| m["seq"].as_i64()).collect();
    assert_eq!(seqs, [2, 3, 4, 4], "events 2..4, then caught_up at 4");
    assert_eq!(replay[0]["type"], "project_renamed");
    assert_eq!(replay[0]["data"], json!({"name": "n0"}));
    assert_eq!(replay[0]["actor"]["user_id"], owner.id.to_string());
    assert_eq!(replay[0]["project_id"], project.to_string());
    assert!(replay[0]["created_at"].is_string());

    rename(&app, &owner, project, "live").await;
    let live = ws.next().await.unwrap();
    assert_eq!((live["type"].as_str(), live["seq"].as_i64()), (Some("project_renamed"), Some(5)));

    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.next().await.unwrap(), json!({"type": "pong"}));
    ws.send(json!({"type": "dance"})).await;
    assert_eq!(ws.next().await.unwrap()["code"], "invalid_message");

    ws.send(json!({"type": "unsubscribe", "project_id": project})).await;
    assert_eq!(ws.next().await.unwrap()["type"], "unsubscribed");
    rename(&app, &owner, project, "unheard").await;
    assert_eq!(ws.next_within(Duration::from_millis(500)).await, None, "nothing after unsubscribing");
}

#[tokio::test]
async fn bad_tokens_cannot_open_a_socket_and_query_tokens_can() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner").await;
    for token in ["nope", "fy_unknown"] {
        match Ws::try_connect(&app.address, token).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
            other => panic!("a bad token opened a socket: {:?}", other.map(|_| ())),
        }
    }
    let url = format!("{}/api/ws?access_token={}", app.address.replacen("http", "ws", 1), owner.token);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("a query token opens a socket");
    socket.send(Message::Text(json!({"type": "ping"}).to_string().into())).await.unwrap();
    let pong = loop {
        if let Some(Ok(Message::Text(t))) = socket.next().await {
            break t;
        }
    };
    assert_eq!(serde_json::from_str::<Value>(&pong).unwrap(), json!({"type": "pong"}));
}

#[tokio::test]
async fn each_caller_hears_what_they_may_see() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner").await;
    let member = app.signup("member").await;
    let other = app.signup("other").await;
    let stranger = app.signup("stranger").await;
    let project = app.create_project(&owner, "Visibility").await;
    app.join(&owner, project, &member).await;
    app.join(&owner, project, &other).await;
    let device = app.source_device(&owner, project).await;
    let file = json!([{"op": "upsert", "path": "/f", "size": 1, "hash": blake3::hash(b"f").to_hex().to_string()}]);
    app.push(&device, project, file).await;

    let mut strangers = Ws::connect(&app.address, &stranger.token).await;
    strangers.subscribe(project, 0).await;
    let refused = strangers.next().await.unwrap();
    assert_eq!((refused["type"].as_str(), refused["code"].as_str()), (Some("error"), Some("not_found")));
    assert_eq!(strangers.next_within(Duration::from_millis(300)).await, None, "and nothing else");

    let mut members = Ws::connect(&app.address, &member.token).await;
    members.subscribe(project, 0).await;
    let replay = members.until(|m| m["type"] == "caught_up").await;
    let types: Vec<&str> =
        replay.iter().filter(|m| m.get("data").is_some()).map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["project_created", "member_joined", "member_joined", "device_attached", "file_added"],
        "no invites"
    );

    // Live: the member hears their own transfer, not the other member's.
    let download = format!("/api/projects/{project}/files/download");
    app.post(&download, &other.token, json!({"file_path": "/f"})).await;
    let (_, mine) = app.post(&download, &member.token, json!({"file_path": "/f"})).await;
    let heard = members.next().await.unwrap();
    assert_eq!(
        (heard["type"].as_str(), heard["data"]["transfer_id"].as_str()),
        (Some("transfer_requested"), mine["download_id"].as_str())
    );

    // Removed: the removal, then the end of the subscription.
    app.delete(&format!("/api/projects/{project}/members/{}", member.id), &owner.token).await;
    let removed = members.until(|m| m["type"] == "error").await;
    assert_eq!(removed.first().unwrap()["type"], "member_removed");
    assert_eq!(removed.last().unwrap()["code"], "access_revoked");
    rename(&app, &owner, project, "after").await;
    assert_eq!(members.next_within(Duration::from_millis(500)).await, None);
}

#[tokio::test]
async fn concurrent_writers_reach_every_socket_once_in_order_even_a_slow_one() {
    let app = TestApp::spawn_with(|s| s.realtime.ws_queue = 1).await;
    let owner = app.signup("owner").await;
    let project = app.create_project(&owner, "Busy").await;
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let mut ws = Ws::connect(&app.address, &owner.token).await;
        ws.subscribe(project, 0).await;
        ws.until(|m| m["type"] == "caught_up").await;
        sockets.push(ws);
    }

    let writers = (0..4).map(|w| {
        let (app, owner) = (&app, &owner);
        async move {
            for i in 0..25 {
                rename(app, owner, project, &format!("w{w}-{i}")).await;
            }
        }
    });
    let slow = sockets.pop().unwrap();
    let slow_reader = tokio::spawn(async move {
        let mut slow = slow;
        tokio::time::sleep(Duration::from_millis(1500)).await; // let its queue overflow
        slow.seqs_until(101).await
    });
    futures_util::future::join_all(writers).await;
    assert_eq!(head(&app, &owner, project).await, 101);
    for ws in &mut sockets {
        assert_eq!(ws.seqs_until(101).await, (2..=101).collect::<Vec<_>>());
    }
    assert_eq!(slow_reader.await.unwrap(), (2..=101).collect::<Vec<_>>(), "the slow socket too");
}

#[tokio::test]
async fn a_stuck_socket_falls_back_to_the_log_and_loses_nothing() {
    // One batch of queue, and a client with a tiny receive window that does
    // not read: the server cannot push, the hub cannot queue, the socket
    // must catch up from the log once it reads again.
    let app = TestApp::spawn_with(|s| s.realtime.ws_queue = 1).await;
    let owner = app.signup("owner").await;
    let project = app.create_project(&owner, "Stuck").await;
    let device = app.source_device(&owner, project).await;
    let mut ws = Ws::connect_small_window(&app.address, &owner.token).await;
    ws.subscribe(project, 0).await;
    ws.until(|m| m["type"] == "caught_up").await;
    let lagged_before = app.metric("ferry_ws_lagged_total").await;

    // Events of about 3 KiB (long paths): about 9 MiB in all, well over what
    // the kernel buffers between server and client hold (4 MiB + 4 KiB here).
    const BATCHES: i64 = 12;
    let long = vec!["x".repeat(250); 11].join("/");
    for batch in 0..BATCHES {
        let changes: Vec<Value> = (0..250)
            .map(|i| {
                json!({"op": "upsert", "path": format!("/b{batch}/{i:04}/{long}"), "size": i,
                            "hash": blake3::hash(format!("{batch}-{i}").as_bytes()).to_hex().to_string()})
            })
            .collect();
        assert_eq!(app.push(&device, project, Value::Array(changes)).await.0, StatusCode::OK);
    }
    let last = head(&app, &owner, project).await;
    assert_eq!(last, 2 + 250 * BATCHES);
    assert_eq!(ws.seqs_until(last).await, (3..=last).collect::<Vec<_>>());
    assert!(app.metric("ferry_ws_lagged_total").await > lagged_before, "the lag path ran");
}

#[tokio::test]
async fn resubscribing_with_the_last_seq_misses_and_repeats_nothing_across_servers() {
    let app = TestApp::spawn().await;
    let (other_server, handle) = start_server(&app.settings).await;
    let owner = app.signup("owner").await;
    let project = app.create_project(&owner, "Resume").await;
    let mut ws = Ws::connect(&other_server, &owner.token).await;
    ws.subscribe(project, 0).await;
    ws.until(|m| m["type"] == "caught_up").await;
    // Committed through one server, heard through the other.
    rename(&app, &owner, project, "a").await;
    assert_eq!(ws.seqs_until(2).await, [2]);
    drop(ws);

    for name in ["b", "c", "d"] {
        rename(&app, &owner, project, name).await;
    }
    let mut again = Ws::connect(&app.address, &owner.token).await;
    again.subscribe(project, 2).await;
    let replay = again.until(|m| m["type"] == "caught_up").await;
    let seqs: Vec<i64> =
        replay.iter().filter(|m| m.get("data").is_some()).map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [3, 4, 5]);
    handle.stop(false).await;
}

#[tokio::test]
async fn a_lost_listener_reconnects_and_catches_up() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner").await;
    let project = app.create_project(&owner, "Reconnect").await;
    let mut ws = Ws::connect(&app.address, &owner.token).await;
    ws.subscribe(project, 0).await;
    ws.until(|m| m["type"] == "caught_up").await;

    // As when PostgreSQL restarts: the LISTEN connection dies.
    let client = app.pool.get().await.unwrap();
    let killed = client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = 'ferryd-listener' AND datname = current_database()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(killed, 1);
    // Committed while nobody listens: only the log knows.
    for name in ["x", "y", "z"] {
        rename(&app, &owner, project, name).await;
    }
    assert_eq!(ws.seqs_until(4).await, [2, 3, 4]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.call(Method::GET, "/readyz", None, None).await.0 != StatusCode::OK {
        assert!(tokio::time::Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rename(&app, &owner, project, "after").await;
    assert_eq!(ws.seqs_until(5).await, [5]);
}

/// An append whose notification is never sent (its server died between
/// the commit and the announce) still reaches the sockets: the hub looks at
/// the heads of the projects it follows.
#[tokio::test]
async fn a_commit_never_announced_is_caught_up_from_the_heads() {
    let app = TestApp::spawn_with(|s| s.realtime.ws_catch_up_ms = 200).await;
    let owner = app.signup("owner").await;
    let project = app.create_project(&owner, "Unannounced").await;
    let mut ws = Ws::connect(&app.address, &owner.token).await;
    ws.subscribe(project, 0).await;
    ws.until(|m| m["type"] == "caught_up").await;

    // Committed on a pooled session, and not announced.
    let mut client = app.pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let renamed = ferry::protocol::EventData::ProjectRenamed(ferry::protocol::events::data::ProjectRenamed {
        name: "quietly".into(),
    });
    let meta = ferry::store::EventMeta {
        actor: ferry::protocol::Actor { user_id: Some(owner.id), device_id: None },
        idempotency_key: None,
    };
    ferry::store::append(&tx, project, &meta, &[renamed]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(ws.seqs_until(2).await, [2]);
}

#[tokio::test]
async fn connected_devices_are_online_and_serve_first() {
    let app = TestApp::spawn_with(|s| s.realtime.ws_ping_seconds = 1).await;
    let owner = app.signup("owner").await;
    let member = app.signup("member").await;
    let project = app.create_project(&owner, "Presence").await;
    app.join(&owner, project, &member).await;
    let older = app.source_device(&owner, project).await;
    let _newer = app.source_device(&owner, project).await;
    let file = json!([{"op": "upsert", "path": "/f", "size": 1, "hash": blake3::hash(b"f").to_hex().to_string()}]);
    app.push(&older, project, file).await;
    let older_id = app.get("/api/me", &older).await.1["device"]["id"].as_str().unwrap().to_owned();
    let online = |devices: &Value| -> Vec<(String, bool)> {
        devices["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["device_id"].as_str().unwrap().to_owned(), d["online"].as_bool().unwrap()))
            .collect()
    };
    let devices_path = format!("/api/projects/{project}/devices");
    assert!(online(&app.get(&devices_path, &owner.token).await.1).iter().all(|(_, on)| !on));

    // The older device connects: it is online, and it now serves.
    let mut agent = Ws::connect(&app.address, &older).await;
    agent.subscribe(project, 0).await;
    agent.until(|m| m["type"] == "caught_up").await;
    let devices = app.get(&devices_path, &member.token).await.1;
    assert!(online(&devices).contains(&(older_id.clone(), true)), "{devices}");
    assert!(devices["devices"].as_array().unwrap().iter().any(|d| d["last_seen_at"].is_string()));
    let (_, requested) =
        app.post(&format!("/api/projects/{project}/files/download"), &member.token, json!({"file_path": "/f"})).await;
    assert_eq!(
        requested["transfer_info"]["source_device_id"],
        older_id.as_str(),
        "online first, though attached earlier"
    );
    // ...and hears of it live.
    let heard = agent.until(|m| m["type"] == "transfer_requested").await;
    assert_eq!(heard.last().unwrap()["data"]["transfer_id"], requested["download_id"]);
    let transfer = app
        .get(&format!("/api/projects/{project}/transfers/{}", requested["download_id"].as_str().unwrap()), &owner.token)
        .await
        .1;
    assert_eq!(transfer["source_device"]["online"], true);

    // A socket that stops answering pings is dropped, and its device goes offline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if online(&app.get(&devices_path, &owner.token).await.1).iter().all(|(_, on)| !on) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "a silent socket was kept");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(agent);
}

fn event_seqs(messages: &[Value]) -> Vec<i64> {
    messages.iter().filter(|m| m.get("data").is_some()).map(|m| m["seq"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn subscribing_again_on_a_socket_sends_no_event_twice() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner").await;
    let project = app.create_project(&owner, "Again").await;
    for i in 0..4 {
        rename(&app, &owner, project, &format!("n{i}")).await;
    }
    let mut ws = Ws::connect(&app.address, &owner.token).await;
    ws.subscribe(project, 0).await;
    assert_eq!(event_seqs(&ws.subscribed().await), [1, 2, 3, 4, 5]);

    // Each re-subscribe, from the start or from anywhere already sent, is
    // answered but replays nothing: no whole log again and again.
    for after_seq in [0, 0, 2, 5, -1] {
        ws.subscribe(project, after_seq).await;
        let again = ws.subscribed().await;
        assert_eq!(again.len(), 2, "subscribed and caught_up only, from {after_seq}: {again:#?}");
        assert_eq!(again[0], json!({"type": "subscribed", "project_id": project, "head_seq": 5}));
        assert_eq!(again[1], json!({"type": "caught_up", "project_id": project, "seq": 5}));
    }

    // Still one subscription: a live event arrives once.
    rename(&app, &owner, project, "live").await;
    assert_eq!(ws.seqs_until(6).await, [6]);
    assert_eq!(ws.next_within(Duration::from_millis(500)).await, None, "and only once");

    // Unsubscribing ends it; subscribing after that is a new subscription.
    ws.send(json!({"type": "unsubscribe", "project_id": project})).await;
    assert_eq!(ws.next().await.unwrap()["type"], "unsubscribed");
    ws.subscribe(project, 4).await;
    assert_eq!(event_seqs(&ws.subscribed().await), [5, 6]);
}

#[tokio::test]
async fn after_seq_past_the_head_is_refused_and_the_socket_stays_usable() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner").await;
    let project = app.create_project(&owner, "Ahead").await;
    rename(&app, &owner, project, "a").await;
    let mut ws = Ws::connect(&app.address, &owner.token).await;
    for after_seq in [3, i64::MAX] {
        ws.subscribe(project, after_seq).await;
        let refused = ws.next().await.unwrap();
        assert_eq!(
            (refused["type"].as_str(), refused["code"].as_str(), refused["project_id"].as_str()),
            (Some("error"), Some("after_seq_ahead"), Some(project.to_string().as_str())),
            "{refused}"
        );
        assert_eq!(ws.next_within(Duration::from_millis(300)).await, None, "not subscribed");
    }
    rename(&app, &owner, project, "unheard").await;
    assert_eq!(ws.next_within(Duration::from_millis(500)).await, None, "nothing live either");

    // The same socket subscribes properly; the head itself is fine.
    ws.subscribe(project, 3).await;
    assert_eq!(event_seqs(&ws.subscribed().await), Vec::<i64>::new());
    // A refused re-subscribe leaves the subscription as it was: live events
    // keep coming (today's i64::MAX made them vanish).
    ws.subscribe(project, i64::MAX).await;
    assert_eq!(ws.next().await.unwrap()["code"], "after_seq_ahead");
    rename(&app, &owner, project, "heard").await;
    assert_eq!(ws.seqs_until(4).await, [4]);

    // A negative after_seq means from the start, as on GET /events.
    let mut other = Ws::connect(&app.address, &owner.token).await;
    other.subscribe(project, -7).await;
    assert_eq!(event_seqs(&other.subscribed().await), [1, 2, 3, 4]);
}

#[tokio::test]
async fn a_socket_follows_at_most_the_configured_number_of_projects() {
    let app = TestApp::spawn_with(|s| s.realtime.ws_max_subscriptions = 2).await;
    let owner = app.signup("owner").await;
    let (a, b, c) = (
        app.create_project(&owner, "A").await,
        app.create_project(&owner, "B").await,
        app.create_project(&owner, "C").await,
    );
    let mut ws = Ws::connect(&app.address, &owner.token).await;
    for project in [a, b] {
        ws.subscribe(project, 0).await;
        ws.subscribed().await;
    }
    ws.subscribe(c, 0).await;
    let refused = ws.next().await.unwrap();
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str(), refused["project_id"].as_str()),
        (Some("error"), Some("too_many_subscriptions"), Some(c.to_string().as_str())),
        "{refused}"
    );
    rename(&app, &owner, c, "unheard").await;
    assert_eq!(ws.next_within(Duration::from_millis(500)).await, None, "C was not subscribed");

    // Subscribing again replaces a subscription: it does not count twice.
    ws.subscribe(a, 0).await;
    ws.subscribed().await;
    // Making room lets C in.
    ws.send(json!({"type": "unsubscribe", "project_id": b})).await;
    assert_eq!(ws.next().await.unwrap()["type"], "unsubscribed");
    ws.subscribe(c, 0).await;
    assert_eq!(event_seqs(&ws.subscribed().await), [1, 2]);
    rename(&app, &owner, c, "heard").await;
    assert_eq!(ws.seqs_until(3).await, [3]);
}

#[tokio::test]
async fn bad_text_is_answered_and_an_oversized_frame_closes_with_1009() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner").await;
    let mut ws = Ws::connect(&app.address, &owner.token).await;
    let nested = "[".repeat(60_000);
    for bad in ["not json", "{}", r#"{"type":"subscribe"}"#, r#"{"type":"subscribe","project_id":"x"}"#, &nested] {
        ws.socket.send(Message::Text(bad.into())).await.unwrap();
        let answer = ws.next().await.unwrap();
        assert_eq!((answer["type"].as_str(), answer["code"].as_str()), (Some("error"), Some("invalid_message")));
    }
    ws.socket.send(Message::Binary(vec![0; 1000].into())).await.unwrap();
    assert_eq!(ws.next().await.unwrap()["code"], "invalid_message");

    // 64 KiB is allowed, one byte more is not.
    let padded = |size: usize| {
        let head = r#"{"type":"ping","pad":""#;
        format!("{head}{}\"}}", "x".repeat(size - head.len() - 2))
    };
    assert_eq!(padded(65_536).len(), 65_536);
    ws.socket.send(Message::Text(padded(65_536).into())).await.unwrap();
    assert_eq!(ws.next().await.unwrap(), json!({"type": "pong"}));
    ws.socket.send(Message::Text(padded(65_537).into())).await.unwrap();
    assert_eq!(ws.close_code().await, Some(1009), "message too big");

    // The server carries on.
    let mut fresh = Ws::connect(&app.address, &owner.token).await;
    fresh.send(json!({"type": "ping"})).await;
    assert_eq!(fresh.next().await.unwrap(), json!({"type": "pong"}));
}

#[tokio::test]
async fn a_frame_declaring_a_huge_length_is_refused_at_its_header() {
    use tokio::io::AsyncWriteExt;

    let app = TestApp::spawn().await;
    let owner = app.signup("owner").await;
    let mut ws = Ws::connect(&app.address, &owner.token).await;
    // A masked text frame declaring 1 GiB, of which only a few bytes come:
    // the server must not wait for (and buffer) the rest.
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&(1u64 << 30).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend_from_slice(&[b'x'; 100]);
    let tcp = ws.socket.get_mut();
    tcp.write_all(&frame).await.unwrap();
    tcp.flush().await.unwrap();
    assert_eq!(ws.close_code().await, Some(1009));
}

/// A device's socket opening and closing is told, as `presence`, to every
/// socket following one of its projects, through whichever server; a
/// socket following another project hears nothing of it.
#[tokio::test]
async fn a_device_coming_and_going_is_told_to_the_sockets_of_its_projects() {
    let app = TestApp::spawn().await;
    let (other_server, handle) = start_server(&app.settings).await;
    let owner = app.signup("owner").await;
    let member = app.signup("member").await;
    let project = app.create_project(&owner, "Presence told").await;
    let elsewhere = app.create_project(&owner, "Elsewhere").await;
    app.join(&owner, project, &member).await;
    let device = app.source_device(&owner, project).await;
    let device_id = app.get("/api/me", &device).await.1["device"]["id"].as_str().unwrap().to_owned();

    let mut watcher = Ws::connect(&other_server, &member.token).await;
    watcher.subscribe(project, 0).await;
    watcher.subscribed().await;
    let mut bystander = Ws::connect(&app.address, &owner.token).await;
    bystander.subscribe(elsewhere, 0).await;
    bystander.subscribed().await;

    let is_presence = |online: bool| {
        let device_id = device_id.clone();
        move |m: &Value| m["type"] == "presence" && m["device_id"] == device_id.as_str() && m["online"] == online
    };
    // The device connects through one server; the member hears it through the other.
    let agent = Ws::connect(&app.address, &device).await;
    let online = watcher.until(is_presence(true)).await.pop().unwrap();
    assert_eq!(online["project_id"], project.to_string(), "{online}");
    assert!(online["last_seen_at"].is_string(), "{online}");
    assert!(online.get("seq").is_none(), "not an event of the log: {online}");

    drop(agent);
    let offline = watcher.until(is_presence(false)).await.pop().unwrap();
    assert!(offline["last_seen_at"].is_string(), "{offline}");
    let devices = app.get(&format!("/api/projects/{project}/devices"), &member.token).await.1;
    let listed = devices["devices"].as_array().unwrap().iter().find(|d| d["device_id"] == device_id.as_str()).cloned();
    assert_eq!(listed.unwrap()["online"], false, "{devices}");

    // The project the device is not in was told nothing.
    let mut heard = Vec::new();
    while let Some(message) = bystander.next_within(Duration::from_millis(500)).await {
        heard.push(message);
    }
    assert!(heard.iter().all(|m| m["type"] != "presence"), "{heard:#?}");
    handle.stop(false).await;
}

/// A socket lives no longer than its token: revoked through any server
/// (logout, a deleted device), it is closed with 1008 on every server,
/// while the same user's other sockets go on.
#[tokio::test]
async fn a_socket_closes_when_its_token_is_revoked_on_any_server() {
    let app = TestApp::spawn().await;
    let (other_server, handle) = start_server(&app.settings).await;
    let owner = app.signup("owner").await;
    let project = app.create_project(&owner, "Revoked").await;
    let body = json!({"email": owner.email, "password": crate::support::PASSWORD});
    let (status, login) = app.call(Method::POST, "/api/auth/login", None, Some(&body)).await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let second = login["token"].as_str().unwrap().to_owned();
    let (device, device_token) = app.register_device(&owner, "laptop").await;

    let mut here = Ws::connect(&app.address, &second).await;
    let mut there = Ws::connect(&other_server, &second).await;
    let mut on_device = Ws::connect(&other_server, &device_token).await;
    let mut kept = Ws::connect(&other_server, &owner.token).await;
    for ws in [&mut here, &mut there, &mut on_device, &mut kept] {
        ws.subscribe(project, 0).await;
        ws.subscribed().await;
    }

    assert_eq!(app.call(Method::POST, "/api/auth/logout", Some(&second), None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(here.close_code().await, Some(1008), "the socket on the server that revoked");
    assert_eq!(there.close_code().await, Some(1008), "the socket on the other server");
    let (status, _) = app.call(Method::DELETE, &format!("/api/devices/{device}"), Some(&owner.token), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(on_device.close_code().await, Some(1008), "the deleted device's socket");

    rename(&app, &owner, project, "still heard").await;
    let last = head(&app, &owner, project).await;
    assert_eq!(kept.seqs_until(last).await.last(), Some(&last), "the user's other socket goes on");
    handle.stop(false).await;
}
