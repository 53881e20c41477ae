//! What an attacker or a careless client tries: floods of wrong passwords,
//! compression bombs, bytes PostgreSQL cannot store, absurd ranges, tokens
//! in URLs, idle tokens, a database that goes away. Each answers a clear
//! 4xx or 503 and changes nothing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{ALLOW, CACHE_CONTROL, CONTENT_RANGE, RANGE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::TestApp;
use crate::relay::{hash, noise, Relay};

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

async fn login(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.http.post(app.url("/api/auth/login")).json(&json!({"email": email, "password": password})).send().await.unwrap()
}

fn retry_after(res: &reqwest::Response) -> u64 {
    res.headers().get(RETRY_AFTER).expect("Retry-After").to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn failed_logins_lock_the_account_for_growing_times_and_the_right_password_works_after() {
    let app = TestApp::spawn().await;
    let user = app.signup("throttled").await;
    for _ in 0..5 {
        assert_eq!(login(&app, &user.email, "wrong password").await.status(), StatusCode::UNAUTHORIZED);
    }
    // Locked now: even the right password is not checked.
    let res = login(&app, &user.email, "correct horse battery").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let first = retry_after(&res);
    assert_eq!(code(&res.json().await.unwrap()), "too_many_attempts");
    assert!((1..=2).contains(&first), "{first}");

    tokio::time::sleep(Duration::from_secs(first) + Duration::from_millis(100)).await;
    assert_eq!(login(&app, &user.email, "wrong again").await.status(), StatusCode::UNAUTHORIZED);
    let res = login(&app, &user.email, "wrong again").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let second = retry_after(&res);
    assert!(second > first, "the lock grows: {first} then {second}");

    // Another account from the same address is not locked by this one.
    let other = app.signup("bystander").await;
    assert_eq!(login(&app, &other.email, "correct horse battery").await.status(), StatusCode::OK);

    tokio::time::sleep(Duration::from_secs(second) + Duration::from_millis(100)).await;
    let res = login(&app, &user.email, "correct horse battery").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[CACHE_CONTROL], "no-store", "an answer with a token is never cached");
    // A success forgets the failures.
    assert_eq!(login(&app, &user.email, "one slip").await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(login(&app, &user.email, "correct horse battery").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn password_checks_past_the_queue_answer_503_busy_and_nothing_breaks() {
    let app = TestApp::spawn_with(|s| {
        s.accounts.password_workers = Some(1);
        s.accounts.password_queue = 1;
        s.accounts.login_failures_per_address = 10_000;
    })
    .await;
    let user = app.signup("busy").await;
    let attempts = (0..24).map(|n| {
        let app = &app;
        async move { login(app, &format!("nobody{n}@example.org"), "wrong password").await }
    });
    let answers = futures_util::future::join_all(attempts).await;
    let mut busy = 0;
    for res in answers {
        match res.status() {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                busy += 1;
                assert!(retry_after(&res) >= 1);
                assert_eq!(code(&res.json().await.unwrap()), "busy");
            }
            other => panic!("{other}: {}", res.text().await.unwrap()),
        }
    }
    assert!(busy > 0, "one thread and a queue of one cannot take 24 at once");
    assert_eq!(login(&app, &user.email, "correct horse battery").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_compressed_upload_stops_at_the_limit_whatever_it_expands_to() {
    // 1 GiB of zeros in a few tens of KB. Made before the server starts: a
    // client connection left idle while it is made could outlive the
    // server's keep-alive on a loaded machine.
    let zeros = vec![0u8; 64 << 20];
    let mut bomb = Vec::new();
    {
        use std::io::Write;
        let mut encoder = zstd::stream::write::Encoder::new(&mut bomb, 1).unwrap();
        for _ in 0..16 {
            encoder.write_all(&zeros).unwrap();
        }
        encoder.finish().unwrap();
    }
    assert!(bomb.len() < 200_000, "{}", bomb.len());
    let app = TestApp::spawn().await;
    let r = Relay::new(&app).await;
    let (status, body) = r.put(&app, &r.device, &"a".repeat(64), bomb, true).await;
    assert_eq!((status, code(&body)), (StatusCode::PAYLOAD_TOO_LARGE, "chunk_too_large"), "{body}");
    assert_eq!(r.missing(&app, &[&"a".repeat(64)]).await.len(), 1, "nothing was stored");
}

#[tokio::test]
async fn nul_characters_are_refused_before_they_reach_sql() {
    let app = TestApp::spawn().await;
    let user = app.signup("nul").await;
    let project = app.create_project(&user, "Nul").await;
    let before = app.log(project).await.len();
    let cases = [
        (Method::POST, "/api/auth/login".to_owned(), None, json!({"email": "a\u{0}b@example.org", "password": "x"})),
        (
            Method::POST,
            "/api/auth/signup".to_owned(),
            None,
            json!({"email": "n@example.org", "password": "pass\u{0}word"}),
        ),
        (Method::POST, "/api/projects".to_owned(), Some(&user.token), json!({"name": "a\u{0}b"})),
        (Method::PATCH, format!("/api/projects/{project}"), Some(&user.token), json!({"name": "\u{0}"})),
    ];
    for (method, path, token, body) in cases {
        let (status, answer) = app.call(method, &path, token.map(String::as_str), Some(&body)).await;
        assert_eq!((status, code(&answer)), (StatusCode::BAD_REQUEST, "invalid_characters"), "{path} {body}");
    }
    for query in ["prefix=%00", "cursor=a%00b", "limit=1&prefix=/a%00"] {
        let path = format!("/api/projects/{project}/files-paginated?{query}");
        let (status, answer) = app.get(&path, &user.token).await;
        assert_eq!((status, code(&answer)), (StatusCode::BAD_REQUEST, "invalid_characters"), "{query}");
    }
    let (status, _) = app.get(&format!("/api/projects/{project}%00"), &user.token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A backslash followed by the letters u0000 is ordinary text.
    let (status, body) = app.post("/api/projects", &user.token, json!({"name": "C:\\u0000"})).await;
    assert_eq!((status, body["name"].as_str()), (StatusCode::CREATED, Some("C:\\u0000")), "{body}");
    assert_eq!(app.log(project).await.len(), before, "nothing was appended");
}

#[tokio::test]
async fn overflowing_and_unsatisfiable_ranges_answer_206_or_416() {
    let app = TestApp::spawn().await;
    let r = Relay::new(&app).await;
    let bytes = noise(1000, 3);
    r.file(&app, "/r.bin", &[&bytes]).await;
    assert_eq!(r.put(&app, &r.device, &hash(&bytes), bytes.clone(), false).await.0, StatusCode::CREATED);
    let whole = [
        "bytes=0-18446744073709551615",
        "bytes=0-99999999999999999999999",
        "bytes=-18446744073709551615",
        "bytes=-99999999999999999999999",
    ];
    for range in whole {
        let res = r.get(&app, &r.member.token, &hash(&bytes)).await.header(RANGE, range).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(res.headers()[CONTENT_RANGE], "bytes 0-999/1000", "{range}");
        assert_eq!(res.bytes().await.unwrap(), bytes, "{range}");
    }
    for range in ["bytes=18446744073709551615-", "bytes=99999999999999999999999-5", "bytes=-0", "bytes=1000-"] {
        let res = r.get(&app, &r.member.token, &hash(&bytes)).await.header(RANGE, range).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(res.headers()[CONTENT_RANGE], "bytes */1000", "{range}");
        assert_eq!(code(&res.json().await.unwrap()), "range_not_satisfiable");
    }
}

#[tokio::test]
async fn framework_refusals_answer_the_json_error_body() {
    let app = TestApp::spawn().await;
    let user = app.signup("framework").await;
    let res = app.http.delete(app.url("/api/auth/login")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers()[ALLOW], "POST");
    assert_eq!(code(&res.json().await.unwrap()), "method_not_allowed");
    let res = app.http.put(app.url("/api/projects")).bearer_auth(&user.token).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers()[ALLOW], "POST, GET");

    let huge = format!("/api/projects?x={}", "a".repeat(40_000));
    let res = app.http.get(app.url(&huge)).bearer_auth(&user.token).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::URI_TOO_LONG);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    assert_eq!(code(&res.json().await.unwrap()), "uri_too_long");

    // Every body is an object: serde alone would read an array into a struct.
    let project = app.create_project(&user, "Shapes").await;
    for path in ["/api/projects".to_owned(), format!("/api/projects/{project}/invites")] {
        let (status, body) = app.post(&path, &user.token, json!(["Shapes"])).await;
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_body"), "{path}");
    }

    let res = app.http.get(app.url("/api/no/such/route")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(res.headers()["x-content-type-options"], "nosniff", "every response");
    assert_eq!(code(&res.json().await.unwrap()), "not_found");
    // Outside /api/ an unknown address is the web app's own page (tests/api/web.rs).
    let res = app.http.get(app.url("/no/such/page")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(res.headers()["x-content-type-options"], "nosniff", "every response");
}

#[tokio::test]
async fn user_tokens_expire_when_idle_and_device_tokens_do_not() {
    let app = TestApp::spawn_with(|s| s.accounts.token_idle_seconds = 2).await;
    let user = app.signup("idle").await;
    let (_, device) = app.register_device(&user, "laptop").await;
    // Used more often than the limit, it keeps working.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(app.get("/api/me", &user.token).await.0, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, body) = app.get("/api/me", &user.token).await;
    assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    assert_eq!(app.get("/api/me", &device).await.0, StatusCode::OK, "an owner's machine may be off for long");
}

#[tokio::test]
async fn logout_all_revokes_every_token_of_the_caller_and_no_one_elses() {
    let app = TestApp::spawn().await;
    let user = app.signup("everywhere").await;
    let other = app.signup("elsewhere").await;
    let (_, device) = app.register_device(&user, "laptop").await;
    let second = login(&app, &user.email, "correct horse battery").await.json::<Value>().await.unwrap();
    let second = second["token"].as_str().unwrap().to_owned();
    assert_eq!(app.call(Method::POST, "/api/auth/logout-all", None, None).await.0, StatusCode::UNAUTHORIZED);
    let (status, _) = app.call(Method::POST, "/api/auth/logout-all", Some(&second), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for token in [&user.token, &second, &device] {
        assert_eq!(app.get("/api/me", token).await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.get("/api/me", &other.token).await.0, StatusCode::OK);
    assert_eq!(login(&app, &user.email, "correct horse battery").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn answers_with_tokens_are_never_cached() {
    let app = TestApp::spawn().await;
    let res = app
        .http
        .post(app.url("/api/auth/signup"))
        .json(&json!({"email": "cache@example.org", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers()[CACHE_CONTROL], "no-store");
    let token = res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let res =
        app.http.post(app.url("/api/devices")).bearer_auth(&token).json(&json!({"name": "d"})).send().await.unwrap();
    assert_eq!(res.headers()[CACHE_CONTROL], "no-store");
    let (_, project) = app.post("/api/projects", &token, json!({"name": "C"})).await;
    let path = format!("/api/projects/{}/invites", project["id"].as_str().unwrap());
    let res = app.http.post(app.url(&path)).bearer_auth(&token).json(&json!({})).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers()[CACHE_CONTROL], "no-store");
}

#[tokio::test]
async fn paths_with_terminal_tricks_client_state_or_unsendable_sizes_are_refused() {
    let app = TestApp::spawn().await;
    let owner = app.signup("paths").await;
    let project = app.create_project(&owner, "Paths").await;
    let device = app.source_device(&owner, project).await;
    let before = app.log(project).await.len();
    let h = "a".repeat(64);
    let upsert = |path: &str| json!({"op": "upsert", "path": path, "size": 1, "hash": h});
    let big = 17 << 20;
    let cases = [
        (upsert("/a\u{1b}[31mred"), "invalid_path"),
        (upsert("/bell\u{7}"), "invalid_path"),
        (upsert("/del\u{7f}"), "invalid_path"),
        (upsert("/c1\u{9b}x"), "invalid_path"),
        (upsert("/invoice\u{202e}fdp.exe"), "invalid_path"),
        (upsert("/cafe\u{301}.txt"), "invalid_path"),
        (upsert("/.ferry/index.json"), "invalid_path"),
        (upsert("/photos/.ferry/manifest.json"), "invalid_path"),
        (json!({"op": "move", "from": "/a", "to": "/.ferry/a"}), "invalid_path"),
        (json!({"op": "upsert", "path": "/big.bin", "size": big, "hash": h}), "chunks_required"),
        (
            json!({"op": "upsert", "path": "/big.bin", "size": big, "hash": h,
                   "chunks": [{"hash": h, "size": 1}, {"hash": h, "size": big - 1}]}),
            "invalid_chunk_size",
        ),
        (
            json!({"op": "upsert", "path": "/huge.bin", "size": (1i64 << 53) + 1, "hash": h, "chunks": []}),
            "invalid_size",
        ),
    ];
    for (change, expected) in cases {
        let (status, body) = app.push(&device, project, json!([upsert("/fine.txt"), change])).await;
        assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, expected), "{change}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().starts_with("changes[1]"), "{body}");
    }
    assert_eq!(app.log(project).await.len(), before, "no partial batch");
    let (status, body) = app.push(&device, project, json!([upsert("/caf\u{e9}.txt"), upsert("/.ferryignore")])).await;
    assert_eq!((status, body["applied"].as_u64()), (StatusCode::OK, Some(2)), "{body}");
}

#[tokio::test]
async fn direct_endpoints_take_only_http_urls_to_a_host() {
    let app = TestApp::spawn().await;
    let user = app.signup("direct").await;
    let (device, token) = app.register_device(&user, "box").await;
    let path = format!("/api/devices/{device}/direct");
    let key = "ab".repeat(32);
    for url in [
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://",
        "http://user:pw@192.0.2.1:7000",
        "http://192.0.2.1:7000/\u{0007}",
        "http://192.0.2.1 :7000",
        "ftp://192.0.2.1/",
    ] {
        let body = json!({"urls": [url], "key": key});
        let (status, answer) = app.call(Method::PUT, &path, Some(&token), Some(&body)).await;
        assert_eq!((status, code(&answer)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_urls"), "{url}");
    }
    let body = json!({"urls": ["http://192.0.2.1:7000", "https://[2001:db8::1]:7000"], "key": key, "cert_sha256": key});
    assert_eq!(app.call(Method::PUT, &path, Some(&token), Some(&body)).await.0, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn relayed_bytes_count_for_a_transfer_only_when_its_requester_fetches_them() {
    let app = TestApp::spawn().await;
    let r = Relay::new(&app).await;
    let bytes = noise(40_000, 8);
    r.file(&app, "/p.bin", &[&bytes]).await;
    assert_eq!(r.put(&app, &r.device, &hash(&bytes), bytes.clone(), false).await.0, StatusCode::CREATED);
    let path = format!("/api/projects/{}/files/download", r.project);
    let (_, requested) = app.post(&path, &r.member.token, json!({"file_path": "/p.bin"})).await;
    let transfer = requested["download_id"].as_str().unwrap().to_owned();
    let transfer_path = format!("/api/projects/{}/transfers/{transfer}", r.project);

    for token in [&r.owner.token, &r.device] {
        let res = r.get(&app, token, &hash(&bytes)).await.query(&[("transfer_id", &transfer)]).send().await.unwrap();
        assert_eq!(res.bytes().await.unwrap().len(), 40_000);
    }
    // Relayed bytes are counted after at most the progress interval (1 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, t) = app.get(&transfer_path, &r.member.token).await;
    assert_eq!((t["bytes_transferred"].as_i64(), t["status"].as_str()), (Some(0), Some("pending")), "{t}");

    let res =
        r.get(&app, &r.member.token, &hash(&bytes)).await.query(&[("transfer_id", &transfer)]).send().await.unwrap();
    assert_eq!(res.bytes().await.unwrap().len(), 40_000);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, t) = app.get(&transfer_path, &r.member.token).await;
        if t["bytes_transferred"] == 40_000 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the requester's fetch was not counted: {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP proxy in front of PostgreSQL that can be cut (every connection
/// dropped, new ones closed at once) and restored: a database restart as
/// the server sees it, without stopping the PostgreSQL other tests use.
struct PgProxy {
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl PgProxy {
    /// Starts a proxy to the server `url` names; answers it and the URL
    /// that goes through it.
    fn start(url: &str) -> (Self, String) {
        let config: tokio_postgres::Config = url.parse().unwrap();
        let host = match &config.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(host) => host.clone(),
            other => panic!("the tests' PostgreSQL is reached over TCP, not {other:?}"),
        };
        let port = config.get_ports()[0];
        let target: SocketAddr = format!("{host}:{port}").parse().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let proxied = url.replacen(&format!("@{host}:{port}/"), &format!("@{}/", listener.local_addr().unwrap()), 1);
        assert_ne!(proxied, url, "the URL names {host}:{port}");
        let (up, connections) = (Arc::new(AtomicBool::new(true)), Arc::new(Mutex::new(Vec::new())));
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let accept = tokio::spawn({
            let (up, connections) = (up.clone(), connections.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        continue; // dropped: closed at once
                    }
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    connections.lock().unwrap().push(task.abort_handle());
                }
            }
        });
        (Self { up, connections, accept }, proxied)
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

#[tokio::test]
async fn a_database_outage_answers_503_and_recovers_without_a_restart() {
    let mut proxy = None;
    let app = TestApp::spawn_with(|s| {
        let (p, url) = PgProxy::start(s.database.database_url.as_deref().unwrap());
        s.database.database_url = Some(url);
        proxy = Some(p);
    })
    .await;
    let proxy = proxy.unwrap();
    let user = app.signup("outage").await;
    let project = app.create_project(&user, "Outage").await;

    proxy.cut();
    let project_path = format!("/api/projects/{project}");
    let login_body = json!({"email": user.email, "password": "correct horse battery"});
    let calls = [
        (Method::GET, "/api/projects", Some(&user.token), None),
        (Method::GET, project_path.as_str(), Some(&user.token), None),
        (Method::POST, "/api/projects", Some(&user.token), Some(json!({"name": "During"}))),
        (Method::POST, "/api/auth/login", None, Some(login_body)),
        (Method::GET, "/readyz", None, None),
    ];
    for (method, path, token, body) in &calls {
        let mut req = app.http.request(method.clone(), app.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{method} {path}");
        assert!(retry_after(&res) >= 1, "{method} {path}");
        assert_eq!(code(&res.json().await.unwrap()), "database_unavailable", "{method} {path}");
    }

    proxy.restore();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while app.http.get(app.url("/readyz")).send().await.unwrap().status() != StatusCode::OK {
        assert!(tokio::time::Instant::now() < deadline, "not ready 30 s after the database came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.get("/api/projects", &user.token).await.0, StatusCode::OK);
    assert_eq!(app.post("/api/projects", &user.token, json!({"name": "After"})).await.0, StatusCode::CREATED);
    let names: Vec<String> =
        app.table("projects").await.iter().map(|p| p["name"].as_str().unwrap().to_owned()).collect();
    assert!(!names.contains(&"During".to_owned()), "nothing was written while the database was away: {names:?}");
}
