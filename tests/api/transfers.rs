use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{start_server, TestApp, TestUser};

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_else(|| panic!("not an error body: {body}"))
}

fn hash(seed: &str) -> String {
    blake3::hash(seed.as_bytes()).to_hex().to_string()
}

/// A project with an owner's source device, a member, and a 3 MiB file of
/// three chunks at `/big.bin`.
struct Scene {
    owner: TestUser,
    member: TestUser,
    project: Uuid,
    device: String,
}

const SIZE: i64 = 3 * 1024 * 1024;

impl Scene {
    async fn new(app: &TestApp) -> Self {
        let owner = app.signup("owner").await;
        let member = app.signup("member").await;
        let project = app.create_project(&owner, "Transfers").await;
        app.join(&owner, project, &member).await;
        let device = app.source_device(&owner, project).await;
        let chunks: Vec<Value> = (0..3).map(|i| json!({"hash": hash(&format!("c{i}")), "size": 1024 * 1024})).collect();
        let file = json!([{"op": "upsert", "path": "/big.bin", "size": SIZE, "hash": hash("big"), "chunks": chunks}]);
        assert_eq!(app.push(&device, project, file).await.0, StatusCode::OK);
        Self { owner, member, project, device }
    }

    fn path(&self, rest: &str) -> String {
        format!("/api/projects/{}{rest}", self.project)
    }

    async fn request(&self, app: &TestApp, user: &TestUser, body: Value) -> (StatusCode, Value) {
        app.post(&self.path("/files/download"), &user.token, body).await
    }

    /// A transfer of `/big.bin` requested by the member; answers its id.
    async fn transfer(&self, app: &TestApp) -> Uuid {
        let (status, body) = self.request(app, &self.member, json!({"file_path": "/big.bin"})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["download_id"].as_str().unwrap().parse().unwrap()
    }

    async fn patch(&self, app: &TestApp, token: &str, id: Uuid, body: Value) -> (StatusCode, Value) {
        app.call(Method::PATCH, &self.path(&format!("/transfers/{id}")), Some(token), Some(&body)).await
    }

    async fn act(&self, app: &TestApp, user: &TestUser, id: Uuid, action: &str, body: Value) -> (StatusCode, Value) {
        app.post(&self.path(&format!("/transfers/{id}/{action}")), &user.token, body).await
    }

    async fn get(&self, app: &TestApp, user: &TestUser, id: Uuid) -> Value {
        let (status, body) = app.get(&self.path(&format!("/transfers/{id}")), &user.token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

async fn transfer_events(app: &TestApp, project: Uuid, id: Uuid) -> Vec<String> {
    app.log(project).await.into_iter().filter(|e| e.data["transfer_id"] == json!(id)).map(|e| e.event_type).collect()
}

#[tokio::test]
async fn a_download_request_names_the_file_the_source_and_the_chunks_needed() {
    let app = TestApp::spawn().await;
    let s = Scene::new(&app).await;
    let (status, body) = s.request(&app, &s.member, json!({"file_path": "/big.bin", "file_hash": hash("big")})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["success"], true);
    let chunks: Vec<Value> = (0..3).map(|i| json!({"hash": hash(&format!("c{i}")), "size": 1024 * 1024})).collect();
    assert_eq!(
        body["file"],
        json!({"path": "/big.bin", "size": SIZE, "hash": hash("big"), "mime_type": "application/octet-stream", "chunks": chunks})
    );
    let info = &body["transfer_info"];
    assert_eq!(info["protocol"], "relay");
    assert_eq!(info["chunks_needed"], json!([hash("c0"), hash("c1"), hash("c2")]));
    assert!(info["endpoints"][0]["url"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{}/api/projects/{}/chunks", app.address, s.project)));
    let expires: chrono::DateTime<chrono::Utc> = info["expires_at"].as_str().unwrap().parse().unwrap();
    let ttl = expires - chrono::Utc::now();
    assert!(ttl > chrono::Duration::minutes(59) && ttl <= chrono::Duration::hours(1), "{ttl}");
    let devices = app.get(&s.path("/devices"), &s.owner.token).await.1;
    assert_eq!(info["source_device_id"], devices["devices"][0]["device_id"]);

    // Delta: only what the requester lacks.
    let (_, delta) = s
        .request(
            &app,
            &s.member,
            json!({"file_path": "/big.bin", "request_mode": "delta", "have_chunks": [hash("c0"), hash("c2")]}),
        )
        .await;
    assert_eq!(delta["transfer_info"]["chunks_needed"], json!([hash("c1")]));
    // A large folder's chunks (here 5,000, some 335 KB of JSON: what a
    // member holding a 5 GiB file sends for its delta) are taken whole.
    let mut many: Vec<String> = (0..5000).map(|i| hash(&format!("held {i}"))).collect();
    many.push(hash("c1"));
    let (status, delta) = s
        .request(&app, &s.member, json!({"file_path": "/big.bin", "request_mode": "delta", "have_chunks": many}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{delta}");
    assert_eq!(delta["transfer_info"]["chunks_needed"], json!([hash("c0"), hash("c2")]));

    let id: Uuid = body["download_id"].as_str().unwrap().parse().unwrap();
    let requested = app.log(s.project).await.into_iter().find(|e| e.data["transfer_id"] == json!(id)).unwrap();
    assert_eq!(requested.event_type, "transfer_requested");
    assert_eq!(requested.data["requester_id"], json!(s.member.id));
    let transfer = s.get(&app, &s.member, id).await;
    assert_eq!((transfer["status"].as_str(), transfer["attempts"].as_i64()), (Some("pending"), Some(1)));
    assert_eq!(transfer["source_device"]["name"], "studio");
    assert_eq!((transfer["total_bytes"].as_i64(), transfer["percent_complete"].as_f64()), (Some(SIZE), Some(0.0)));
}

#[tokio::test]
async fn download_requests_refuse_what_cannot_be_served() {
    let app = TestApp::spawn().await;
    let s = Scene::new(&app).await;
    let cases = [
        (json!({"file_path": "/nope"}), StatusCode::NOT_FOUND, "file_not_found"),
        (json!({"file_path": "/big.bin", "file_hash": hash("old")}), StatusCode::CONFLICT, "file_changed"),
        (json!({"file_path": "big.bin"}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_path"),
        (json!({"file_path": "/big.bin", "file_hash": "XYZ"}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_hash"),
        (json!({"file_path": "/big.bin", "have_chunks": ["nope"]}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_hash"),
        (json!({"file_path": "/big.bin", "target_device_id": Uuid::now_v7()}), StatusCode::NOT_FOUND, "not_found"),
        (json!({"file_path": "/big.bin", "request_mode": "half"}), StatusCode::BAD_REQUEST, "invalid_body"),
    ];
    for (body, status, expected) in cases {
        let (got, answer) = s.request(&app, &s.member, body.clone()).await;
        assert_eq!((got, code(&answer)), (status, expected), "{body}");
    }
    // Targets: the requester's own device, attached to the project.
    let (laptop, _) = app.register_device(&s.member, "laptop").await;
    let (status, body) = s.request(&app, &s.member, json!({"file_path": "/big.bin", "target_device_id": laptop})).await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "device_not_attached"));
    app.call(Method::PUT, &s.path(&format!("/devices/{laptop}")), Some(&s.member.token), None).await;
    let (status, body) = s.request(&app, &s.owner, json!({"file_path": "/big.bin", "target_device_id": laptop})).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "not_your_device"));
    let (status, body) = s.request(&app, &s.member, json!({"file_path": "/big.bin", "target_device_id": laptop})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // A deleted file is gone; a project without a source device cannot serve.
    app.push(&s.device, s.project, json!([{"op": "delete", "path": "/big.bin"}])).await;
    assert_eq!(s.request(&app, &s.member, json!({"file_path": "/big.bin"})).await.0, StatusCode::NOT_FOUND);
    let other = app.create_project(&s.owner, "No source").await;
    let source = app.source_device(&s.owner, other).await;
    app.push(&source, other, json!([{"op": "upsert", "path": "/x", "size": 1, "hash": hash("x")}])).await;
    let me = app.get("/api/me", &source).await.1;
    app.delete(&format!("/api/projects/{other}/devices/{}", me["device"]["id"].as_str().unwrap()), &s.owner.token)
        .await;
    let (status, body) =
        app.post(&format!("/api/projects/{other}/files/download"), &s.owner.token, json!({"file_path": "/x"})).await;
    assert_eq!((status, code(&body)), (StatusCode::SERVICE_UNAVAILABLE, "no_source_device"));
}

#[tokio::test]
async fn the_lifecycle_follows_the_state_machine() {
    let app = TestApp::spawn_with(|s| s.transfers.transfer_max_attempts = 2).await;
    let s = Scene::new(&app).await;
    let id = s.transfer(&app).await;

    // Only the chosen source device reports.
    for (token, expected) in [(&s.member.token, "not_source_device"), (&s.owner.token, "not_source_device")] {
        let (status, body) = s.patch(&app, token, id, json!({"status": "in_progress"})).await;
        assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, expected));
    }
    let (status, started) = s.patch(&app, &s.device, id, json!({"status": "in_progress"})).await;
    assert_eq!((status, started["status"].as_str()), (StatusCode::OK, Some("in_progress")), "{started}");
    assert!(started["started_at"].is_string());
    let (status, body) = s.patch(&app, &s.device, id, json!({"status": "completed"})).await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_status"));

    let (_, progressed) = s.patch(&app, &s.device, id, json!({"bytes_transferred": 1_000_000})).await;
    assert_eq!(progressed["bytes_transferred"], 1_000_000);
    // Within a second: coalesced, answered as last recorded, nothing appended.
    let (status, coalesced) = s.patch(&app, &s.device, id, json!({"bytes_transferred": 1_500_000})).await;
    assert_eq!((status, coalesced["bytes_transferred"].as_i64()), (StatusCode::OK, Some(1_000_000)));
    let (status, body) = s.patch(&app, &s.device, id, json!({"bytes_transferred": 10})).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "bytes_backwards"));
    let (status, body) = s.patch(&app, &s.device, id, json!({"bytes_transferred": SIZE + 1})).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "bytes_past_total"));
    // Reaching the total is never coalesced.
    let (_, full) = s.patch(&app, &s.device, id, json!({"bytes_transferred": SIZE})).await;
    assert_eq!((full["bytes_transferred"].as_i64(), full["percent_complete"].as_f64()), (Some(SIZE), Some(100.0)));

    // Only the requester verifies; a wrong hash fails the transfer.
    let (status, body) = s.act(&app, &s.owner, id, "verify", json!({"hash": hash("big")})).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "requester_only"));
    let (_, failed) = s.act(&app, &s.member, id, "verify", json!({"hash": hash("garbage")})).await;
    assert_eq!((failed["status"].as_str(), failed["error_message"].as_str()), (Some("failed"), Some("hash_mismatch")));
    let (status, body) = s.patch(&app, &s.device, id, json!({"bytes_transferred": SIZE})).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "transfer_failed"));

    // Retry: back to pending, one more attempt, up to the maximum.
    let (_, retried) = s.act(&app, &s.member, id, "retry", json!({})).await;
    assert_eq!(
        (retried["status"].as_str(), retried["attempts"].as_i64(), retried["bytes_transferred"].as_i64()),
        (Some("pending"), Some(2), Some(0))
    );
    let (status, body) = s.act(&app, &s.owner, id, "retry", json!({})).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "transfer_pending"));
    s.patch(&app, &s.device, id, json!({"status": "failed", "error_message": "disk unplugged"})).await;
    let (status, body) = s.act(&app, &s.owner, id, "retry", json!({})).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "retry_limit_reached"));
    assert_eq!(s.get(&app, &s.member, id).await["error_message"], "disk unplugged");

    // A fresh transfer completes on a matching hash; completed is final.
    let id2 = s.transfer(&app).await;
    let (_, done) = s.act(&app, &s.member, id2, "verify", json!({"hash": hash("big")})).await;
    assert_eq!((done["status"].as_str(), done["percent_complete"].as_f64()), (Some("completed"), Some(100.0)));
    assert!(done["completed_at"].is_string());
    for action in ["cancel", "retry"] {
        let (status, body) = s.act(&app, &s.owner, id2, action, json!({})).await;
        assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "transfer_completed"), "{action}");
    }
    let (status, body) = s.patch(&app, &s.device, id2, json!({"status": "in_progress"})).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "transfer_completed"));

    // The owner cancels a pending one; cancelled is final.
    let id3 = s.transfer(&app).await;
    let (_, cancelled) = s.act(&app, &s.owner, id3, "cancel", json!({})).await;
    assert_eq!(cancelled["status"], "cancelled");
    let (status, _) = s.act(&app, &s.member, id3, "verify", json!({"hash": hash("big")})).await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Its requester may report only a failure (bytes that never verified),
    // which makes the transfer retryable.
    let id4 = s.transfer(&app).await;
    for (token, report) in [
        (&s.member.token, json!({"status": "failed", "bytes_transferred": 1})),
        (&s.member.token, json!({"status": "in_progress"})),
        (&s.owner.token, json!({"status": "failed"})),
    ] {
        let (status, body) = s.patch(&app, token, id4, report.clone()).await;
        assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "not_source_device"), "{report}");
    }
    let (_, failed) = s
        .patch(&app, &s.member.token, id4, json!({"status": "failed", "error_message": "chunk_verification_failed"}))
        .await;
    assert_eq!(
        (failed["status"].as_str(), failed["error_message"].as_str()),
        (Some("failed"), Some("chunk_verification_failed"))
    );
    let (_, retried) = s.act(&app, &s.member, id4, "retry", json!({})).await;
    assert_eq!((retried["status"].as_str(), retried["attempts"].as_i64()), (Some("pending"), Some(2)));

    assert_eq!(
        transfer_events(&app, s.project, id).await,
        [
            "transfer_requested",
            "file_transfer_started",
            "file_transfer_progress",
            "file_transfer_progress",
            "file_transfer_failed",
            "transfer_retried",
            "file_transfer_failed"
        ]
    );
    assert_eq!(transfer_events(&app, s.project, id2).await, ["transfer_requested", "file_transfer_complete"]);
}

#[tokio::test]
async fn speed_and_eta_come_from_the_servers_own_window() {
    let app = TestApp::spawn().await;
    let s = Scene::new(&app).await;
    let id = s.transfer(&app).await;
    let (_, first) = s.patch(&app, &s.device, id, json!({"bytes_transferred": 0, "status": "in_progress"})).await;
    assert_eq!(first["speed_mbps"], Value::Null, "one sample is no speed");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Whatever a client claims about speed is not read.
    let (_, second) = s.patch(&app, &s.device, id, json!({"bytes_transferred": 1_048_576, "speed_mbps": 99999})).await;
    let speed = second["speed_mbps"].as_f64().expect("a speed after two samples");
    let eta = second["eta_seconds"].as_i64().expect("an eta");
    // Two samples at least 1.1 s apart, a second or so: 1 MiB over ~1.1 s.
    assert!(speed > 0.5 && speed < 8.0, "{speed}");
    let bytes_per_second = speed * 1e6 / 8.0;
    let expected_eta = ((SIZE - 1_048_576) as f64 / bytes_per_second).ceil() as i64;
    assert!((eta - expected_eta).abs() <= 1, "eta {eta}, expected about {expected_eta}");
    let progress = app.log(s.project).await.into_iter().rfind(|e| e.event_type == "file_transfer_progress").unwrap();
    assert_eq!(progress.data["speed_mbps"], second["speed_mbps"]);
    assert_eq!(progress.data["percent"].as_f64(), Some(33.33));
}

#[tokio::test]
async fn listing_shows_the_owner_everything_and_members_their_own() {
    let app = TestApp::spawn().await;
    let s = Scene::new(&app).await;
    let other = app.signup("other").await;
    app.join(&s.owner, s.project, &other).await;
    let mine: Vec<Uuid> = futures_util::future::join_all((0..3).map(|_| s.transfer(&app))).await;
    let (_, theirs) = s.request(&app, &other, json!({"file_path": "/big.bin"})).await;
    let theirs: Uuid = theirs["download_id"].as_str().unwrap().parse().unwrap();
    s.act(&app, &s.member, mine[0], "cancel", json!({})).await;

    let ids = |page: &Value| -> Vec<String> {
        page["transfers"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_owned()).collect()
    };
    let (_, all) = app.get(&s.path("/transfers"), &s.owner.token).await;
    assert_eq!(ids(&all).len(), 4);
    let (_, own) = app.get(&s.path("/transfers"), &s.member.token).await;
    assert_eq!(ids(&own).len(), 3);
    assert!(!ids(&own).contains(&theirs.to_string()));
    let (_, device_view) = app.get(&s.path("/transfers"), &s.device).await;
    assert_eq!(ids(&device_view).len(), 4, "the owner's devices see what the owner sees");
    let (_, pending) = app.get(&s.path("/transfers?status=pending"), &s.member.token).await;
    assert_eq!(ids(&pending).len(), 2);

    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let (_, page) = app.get(&s.path(&format!("/transfers?limit=3&cursor={cursor}")), &s.owner.token).await;
        paged.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(paged, ids(&all), "newest first, each once");

    // Another member's transfer is not theirs to see or touch.
    assert_eq!(app.get(&s.path(&format!("/transfers/{theirs}")), &s.member.token).await.0, StatusCode::NOT_FOUND);
    assert_eq!(s.act(&app, &s.member, theirs, "cancel", json!({})).await.0, StatusCode::NOT_FOUND);
    let (status, body) = app.get(&s.path("/transfers?status=lost"), &s.owner.token).await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_status"));
    let (status, body) = app.get(&s.path("/transfers?cursor=***"), &s.owner.token).await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_cursor"));

    // The feed shows a member the events of their own transfers only.
    let (_, feed) = app.get(&s.path("/events?type=transfer_requested"), &s.member.token).await;
    assert_eq!(feed["events"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn removed_members_and_changed_files_close_open_transfers() {
    let app = TestApp::spawn().await;
    let s = Scene::new(&app).await;
    let removed = s.transfer(&app).await;
    app.delete(&s.path(&format!("/members/{}", s.member.id)), &s.owner.token).await;
    let t = s.get(&app, &s.owner, removed).await;
    assert_eq!((t["status"].as_str(), t["error_message"].as_str()), (Some("cancelled"), Some("member_removed")));

    app.join(&s.owner, s.project, &s.member).await;
    let changed = s.transfer(&app).await;
    let untouched = {
        app.push(&s.device, s.project, json!([{"op": "upsert", "path": "/other.txt", "size": 1, "hash": hash("o")}]))
            .await;
        let (_, body) = s.request(&app, &s.member, json!({"file_path": "/other.txt"})).await;
        body["download_id"].as_str().unwrap().parse::<Uuid>().unwrap()
    };
    // The same content again changes nothing; new content fails the transfer.
    let chunks: Vec<Value> = (0..3).map(|i| json!({"hash": hash(&format!("c{i}")), "size": 1024 * 1024})).collect();
    app.push(
        &s.device,
        s.project,
        json!([{"op": "upsert", "path": "/big.bin", "size": SIZE, "hash": hash("big"), "chunks": chunks}]),
    )
    .await;
    assert_eq!(s.get(&app, &s.owner, changed).await["status"], "pending");
    let (status, body) = app
        .push(&s.device, s.project, json!([{"op": "upsert", "path": "/big.bin", "size": 5, "hash": hash("v2")}]))
        .await;
    assert_eq!(
        (status, body["applied"].as_i64()),
        (StatusCode::OK, Some(1)),
        "the file change counts, the failure does not"
    );
    let t = s.get(&app, &s.owner, changed).await;
    assert_eq!((t["status"].as_str(), t["error_message"].as_str()), (Some("failed"), Some("file_changed")));
    assert_eq!(s.get(&app, &s.owner, untouched).await["status"], "pending");
    // Moving a file away fails its transfers too.
    app.push(&s.device, s.project, json!([{"op": "move", "from": "/other.txt", "to": "/moved.txt"}])).await;
    assert_eq!(s.get(&app, &s.owner, untouched).await["error_message"], "file_changed");
}

#[tokio::test]
async fn servers_expire_and_fail_due_transfers_once_even_when_several_sweep() {
    let fast = |settings: &mut ferry::config::ServeSettings| {
        settings.transfers.transfer_ttl_seconds = 1;
        settings.transfers.transfer_stall_seconds = 1;
        settings.transfers.sweep_interval_ms = 50;
    };
    let app = TestApp::spawn_with(fast).await;
    // A second server on the same database, sweeping as eagerly.
    let (_, sibling) = start_server(&app.settings).await;
    let s = Scene::new(&app).await;
    let expiring = s.transfer(&app).await;
    let stalling = s.transfer(&app).await;
    s.patch(&app, &s.device, stalling, json!({"status": "in_progress"})).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (a, b) = (s.get(&app, &s.owner, expiring).await, s.get(&app, &s.owner, stalling).await);
        if a["status"] == "expired" && b["status"] == "failed" {
            assert_eq!(b["error_message"], "stalled");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not swept: {a} {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(transfer_events(&app, s.project, expiring).await, ["transfer_requested", "file_transfer_expired"]);
    assert_eq!(
        transfer_events(&app, s.project, stalling).await,
        ["transfer_requested", "file_transfer_started", "file_transfer_failed"]
    );
    sibling.stop(false).await;
}

#[tokio::test]
async fn a_source_that_advertises_itself_is_offered_directly_with_a_per_transfer_token() {
    use ferry::protocol::transfers::{DirectGrant, DirectToken};
    let app = TestApp::spawn().await;
    let s = Scene::new(&app).await;
    let me = app.get("/api/me", &s.device).await.1;
    let device = me["device"]["id"].as_str().unwrap().to_owned();
    let key = "5a".repeat(32);
    let cert = "c3".repeat(32);
    let direct = format!("/api/devices/{device}/direct");
    // Any case taken; kept (and handed out) in lowercase.
    let advert = json!({"urls": ["https://192.0.2.10:7071"], "key": key, "cert_sha256": cert.to_uppercase()});

    // Only the device's own user (or the device) advertises it, and sanely.
    let stranger = app.signup("stranger").await;
    assert_eq!(app.call(Method::PUT, &direct, Some(&stranger.token), Some(&advert)).await.0, StatusCode::NOT_FOUND);
    for (bad, expected) in [
        (json!({"urls": [], "key": key}), "invalid_urls"),
        (json!({"urls": ["ftp://x"], "key": key}), "invalid_urls"),
        (json!({"urls": ["http://x"], "key": "short"}), "invalid_key"),
        // Members pin the certificate: an https endpoint needs one, and a
        // fingerprint is 64 hex characters.
        (json!({"urls": ["https://192.0.2.10:7071"], "key": key}), "missing_cert_sha256"),
        (json!({"urls": ["http://x", "https://x"], "key": key}), "missing_cert_sha256"),
        (json!({"urls": ["https://x"], "key": key, "cert_sha256": "c3".repeat(31)}), "invalid_cert_sha256"),
        (json!({"urls": ["https://x"], "key": key, "cert_sha256": "zz".repeat(32)}), "invalid_cert_sha256"),
        (json!({"urls": ["https://x"], "key": key, "cert_sha256": ""}), "invalid_cert_sha256"),
    ] {
        let (status, body) = app.call(Method::PUT, &direct, Some(&s.device), Some(&bad)).await;
        assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, expected), "{bad}");
    }
    assert_eq!(app.call(Method::PUT, &direct, Some(&s.device), Some(&advert)).await.0, StatusCode::NO_CONTENT);

    let (status, body) = s.request(&app, &s.member, json!({"file_path": "/big.bin"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let info = &body["transfer_info"];
    assert_eq!(info["protocol"], "http");
    assert_eq!(
        (
            info["endpoints"][0]["protocol"].as_str(),
            info["endpoints"][0]["url"].as_str(),
            info["endpoints"][0]["cert_sha256"].as_str()
        ),
        (Some("http"), Some("https://192.0.2.10:7071"), Some(cert.as_str())),
        "the certificate to pin comes with the endpoint"
    );
    assert_eq!(info["endpoints"][1]["protocol"], "relay", "the relay stays the fallback");
    assert!(info["endpoints"][1].get("token").is_none());
    assert!(info["endpoints"][1].get("cert_sha256").is_none());
    // The agent checks the token with its key alone: right transfer, its
    // requester, not expired; it lives minutes, not the transfer's hour.
    let token = info["endpoints"][0]["token"].as_str().unwrap();
    let id: Uuid = body["download_id"].as_str().unwrap().parse().unwrap();
    let key = DirectToken::key(&key).unwrap();
    let grant = DirectGrant { transfer_id: id, requester_id: s.member.id };
    assert_eq!(DirectToken::verify(&key, token, chrono::Utc::now()), Some(grant));
    let soon = chrono::Utc::now() + chrono::Duration::minutes(5) + chrono::Duration::seconds(1);
    assert_eq!(DirectToken::verify(&key, token, soon), None, "a token lives 5 minutes");
    assert!(
        !app.log(s.project).await.iter().any(|e| e.data.to_string().contains(token)),
        "the token is not in the log"
    );

    // A fresh token, for the requester of the open transfer only.
    let refresh = format!("/api/projects/{}/transfers/{id}/direct-token", s.project);
    for (who, status) in [(&stranger, StatusCode::NOT_FOUND), (&s.owner, StatusCode::FORBIDDEN)] {
        let (got, answer) = app.post(&refresh, &who.token, json!({})).await;
        assert_eq!(got, status, "{answer}");
    }
    let (status, fresh) = app.post(&refresh, &s.member.token, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{fresh}");
    let endpoint = &fresh["endpoints"][0];
    assert_eq!(
        (endpoint["url"].as_str(), endpoint["cert_sha256"].as_str(), fresh["endpoints"].as_array().map(Vec::len)),
        (Some("https://192.0.2.10:7071"), Some(cert.as_str()), Some(1)),
        "{fresh}"
    );
    assert_eq!(DirectToken::verify(&key, endpoint["token"].as_str().unwrap(), chrono::Utc::now()), Some(grant));

    // Withdrawn: no direct endpoint to renew; once over, no token at all.
    assert_eq!(app.delete(&direct, &s.device).await.0, StatusCode::NO_CONTENT);
    let (status, fresh) = app.post(&refresh, &s.member.token, json!({})).await;
    assert_eq!((status, &fresh["endpoints"]), (StatusCode::OK, &json!([])), "{fresh}");
    assert_eq!(s.act(&app, &s.member, id, "cancel", json!({})).await.0, StatusCode::OK);
    let (status, answer) = app.post(&refresh, &s.member.token, json!({})).await;
    assert_eq!((status, code(&answer)), (StatusCode::CONFLICT, "transfer_not_active"));

    // Relay only again.
    let (_, body) = s.request(&app, &s.member, json!({"file_path": "/big.bin"})).await;
    assert_eq!(body["transfer_info"]["protocol"], "relay");
    assert_eq!(body["transfer_info"]["endpoints"].as_array().unwrap().len(), 1);
}

/// The route a transfer's bytes took: the requester says how its direct
/// leg went (with its verification, or a failure it reports), checked and
/// refused whole when wrong; the source device may not say it.
#[tokio::test]
async fn the_requester_records_the_route_and_bad_routes_change_nothing() {
    let app = TestApp::spawn().await;
    let s = Scene::new(&app).await;
    let id = s.transfer(&app).await;
    assert_eq!(
        s.get(&app, &s.member, id).await["route"],
        json!({"bytes_relay": 0, "bytes_direct": 0, "direct_endpoint": null, "direct_abandoned": null})
    );

    let before = transfer_events(&app, s.project, id).await;
    for (route, why) in [
        (json!({"bytes_direct": SIZE + 1}), "past the size"),
        (json!({"bytes_direct": -1}), "negative"),
        (json!({"bytes_direct": 0, "direct_abandoned": "x".repeat(1001)}), "a reason too long"),
        (json!({"bytes_direct": 0, "direct_endpoint": "h".repeat(2049)}), "an endpoint too long"),
    ] {
        let (status, body) = s.act(&app, &s.member, id, "verify", json!({"hash": hash("big"), "route": route})).await;
        assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_route"), "{why}: {body}");
    }
    let from_source = json!({"bytes_transferred": 10, "route": {"bytes_direct": 10}});
    let (status, body) = s.patch(&app, &s.device, id, from_source).await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "route_from_requester"), "{body}");
    assert_eq!(transfer_events(&app, s.project, id).await, before, "refusals append nothing");

    let route = json!({"bytes_direct": SIZE, "direct_endpoint": "https://10.0.0.2:7071", "direct_abandoned": null});
    let (status, done) = s.act(&app, &s.member, id, "verify", json!({"hash": hash("big"), "route": route})).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(
        done["route"],
        json!({"bytes_relay": 0, "bytes_direct": SIZE, "direct_endpoint": "https://10.0.0.2:7071", "direct_abandoned": null})
    );
    let completed = app.log(s.project).await.into_iter().last().unwrap();
    assert_eq!((completed.event_type.as_str(), &completed.data["route"]), ("file_transfer_complete", &done["route"]));
    assert_eq!(s.get(&app, &s.owner, id).await["route"], done["route"], "the projection holds it");
}

#[tokio::test]
async fn each_project_keeps_its_own_direct_entry_so_agents_of_one_machine_never_replace_each_other() {
    let app = TestApp::spawn().await;
    let s = Scene::new(&app).await;
    let me = app.get("/api/me", &s.device).await.1;
    let device = me["device"]["id"].as_str().unwrap().to_owned();
    let direct = format!("/api/devices/{device}/direct");
    // A second project served by the same device.
    let second = app.create_project(&s.owner, "Second").await;
    let attach = format!("/api/projects/{second}/devices/{device}");
    assert_eq!(app.call(Method::PUT, &attach, Some(&s.owner.token), None).await.0, StatusCode::OK);
    let file = json!([{"op": "upsert", "path": "/b.txt", "size": 1, "hash": hash("b")}]);
    assert_eq!(app.push(&s.device, second, file).await.0, StatusCode::OK);

    let advert = |url: &str, key: &str, project: Option<Uuid>| match project {
        Some(p) => json!({"urls": [url], "key": key.repeat(32), "project_id": p}),
        None => json!({"urls": [url], "key": key.repeat(32)}),
    };
    let offered = |project: Uuid, path: &'static str| {
        let app = &app;
        let token = s.owner.token.clone();
        async move {
            let url = format!("/api/projects/{project}/files/download");
            let (status, body) = app.post(&url, &token, json!({"file_path": path})).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            let first = &body["transfer_info"]["endpoints"][0];
            (first["protocol"] == "http").then(|| first["url"].as_str().unwrap().to_owned())
        }
    };

    // Who may set a project's entry: the owner, for a source device of it.
    let stranger = app.signup("stranger").await;
    let (stranger_device, stranger_token) = app.register_device(&stranger, "other").await;
    let (member_device, member_token) = app.register_device(&s.member, "laptop").await;
    let unattached = app.create_project(&s.owner, "Unattached").await;
    for (path, token, body, status, code_expected) in [
        (
            direct.clone(),
            &stranger_token,
            advert("http://192.0.2.9:1", "11", Some(s.project)),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            format!("/api/devices/{stranger_device}/direct"),
            &stranger_token,
            advert("http://192.0.2.9:1", "11", Some(s.project)),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            format!("/api/devices/{member_device}/direct"),
            &member_token,
            advert("http://192.0.2.9:1", "11", Some(s.project)),
            StatusCode::FORBIDDEN,
            "owner_only",
        ),
        (
            direct.clone(),
            &s.device,
            advert("http://192.0.2.9:1", "11", Some(unattached)),
            StatusCode::CONFLICT,
            "not_a_source_device",
        ),
        (
            direct.clone(),
            &s.device,
            json!({"urls": ["http://192.0.2.9:1"], "key": "11".repeat(32), "project_id": "nope"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
    ] {
        let (got, answer) = app.call(Method::PUT, &path, Some(token), Some(&body)).await;
        assert_eq!((got, code(&answer)), (status, code_expected), "{path} {body}: {answer}");
    }

    // The older per-device entry serves a project without its own; a
    // project's entry wins for that project and leaves the other alone.
    for body in [
        advert("http://192.0.2.1:1", "aa", None),
        advert("http://192.0.2.2:2", "bb", Some(s.project)),
        advert("http://192.0.2.3:3", "cc", Some(second)),
    ] {
        assert_eq!(app.call(Method::PUT, &direct, Some(&s.device), Some(&body)).await.0, StatusCode::NO_CONTENT);
    }
    assert_eq!(offered(s.project, "/big.bin").await.as_deref(), Some("http://192.0.2.2:2"));
    assert_eq!(offered(second, "/b.txt").await.as_deref(), Some("http://192.0.2.3:3"));
    let (status, body) = s.request(&app, &s.member, json!({"file_path": "/big.bin"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let token = body["transfer_info"]["endpoints"][0]["token"].as_str().unwrap();
    let key = ferry::protocol::transfers::DirectToken::key(&"bb".repeat(32)).unwrap();
    assert!(
        ferry::protocol::transfers::DirectToken::verify(&key, token, chrono::Utc::now()).is_some(),
        "minted with the project's key"
    );

    // Withdrawing: who may, and only the entry named.
    let withdraw = |project: &str| format!("{direct}?project_id={project}");
    for (path, token, status) in [
        (withdraw(&s.project.to_string()), &stranger_token, StatusCode::NOT_FOUND),
        (format!("/api/devices/{member_device}/direct?project_id={}", s.project), &member_token, StatusCode::FORBIDDEN),
        (withdraw("nope"), &s.device, StatusCode::BAD_REQUEST),
    ] {
        let (got, answer) = app.delete(&path, token).await;
        assert_eq!(got, status, "{path}: {answer}");
        assert!(answer["error"]["code"].is_string(), "{answer}");
    }
    assert_eq!(app.delete(&withdraw(&s.project.to_string()), &s.device).await.0, StatusCode::NO_CONTENT);
    assert_eq!(offered(s.project, "/big.bin").await.as_deref(), Some("http://192.0.2.1:1"), "back to the device's");
    assert_eq!(offered(second, "/b.txt").await.as_deref(), Some("http://192.0.2.3:3"), "the other project's stays");
    assert_eq!(app.delete(&direct, &s.device).await.0, StatusCode::NO_CONTENT);
    assert_eq!(offered(s.project, "/big.bin").await, None, "relay only");
    assert_eq!(offered(second, "/b.txt").await.as_deref(), Some("http://192.0.2.3:3"));
}
