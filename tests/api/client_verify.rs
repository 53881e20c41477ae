//! `ferry pull` checks every relay chunk against its BLAKE3 name: a chunk
//! whose bytes come back damaged is fetched again, and when they keep coming
//! back damaged the transfer is retried through the API up to the server's
//! maximum, then pull gives up and says why. The damage is done by a small
//! forwarding proxy between the member's real `ferry` and the real server.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::client_pull::hash;
use crate::client_share::{describe, last_json, noise, Person, TempDir};
use crate::helpers::TestApp;

/// Which relay chunk downloads the proxy damages.
#[derive(Debug, Clone, Copy)]
enum Corrupt {
    /// Only the first answer for each chunk hash.
    FirstOfEachChunk,
    /// Every answer.
    Always,
}

/// What the proxy saw and did.
#[derive(Default)]
struct Seen {
    /// `GET .../chunks/:hash` answered with bytes, by hash.
    chunk_gets: Mutex<HashMap<String, usize>>,
    corrupted: AtomicUsize,
}

impl Seen {
    fn chunk_gets(&self) -> usize {
        self.chunk_gets.lock().unwrap().values().sum()
    }

    fn corrupted(&self) -> usize {
        self.corrupted.load(Ordering::SeqCst)
    }
}

struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    policy: Corrupt,
    seen: Arc<Seen>,
}

/// An HTTP proxy to the test server that flips one byte of relay chunk
/// bodies according to its policy; stopped when dropped.
struct Proxy {
    address: String,
    seen: Arc<Seen>,
    handle: actix_web::dev::ServerHandle,
}

impl Proxy {
    fn start(app: &TestApp, policy: Corrupt) -> Self {
        let seen = Arc::new(Seen::default());
        let state = web::Data::new(ProxyState {
            upstream: app.address.clone(),
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
            policy,
            seen: seen.clone(),
        });
        let server = HttpServer::new(move || App::new().app_data(state.clone()).default_service(web::to(forward)))
            .workers(1)
            .bind("127.0.0.1:0")
            .expect("the proxy binds");
        let address = format!("http://{}", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self { address, seen, handle }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// The hash of a `GET /api/projects/:id/chunks/:hash`, if that is the request.
fn chunk_download(method: &actix_web::http::Method, path: &str) -> Option<String> {
    if method != actix_web::http::Method::GET {
        return None;
    }
    let rest = path.strip_prefix("/api/projects/")?;
    let (project, rest) = rest.split_once('/')?;
    let hash = rest.strip_prefix("chunks/")?;
    let is_hash = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
    (Uuid::parse_str(project).is_ok() && is_hash).then(|| hash.to_owned())
}

/// Headers not passed along: hop-by-hop ones, the ones the proxy's own
/// client sets, and Accept-Encoding so that bodies stay plain.
fn passed(name: &str) -> bool {
    !matches!(
        name.to_ascii_lowercase().as_str(),
        "host" | "connection" | "keep-alive" | "transfer-encoding" | "content-length" | "accept-encoding" | "upgrade"
    )
}

async fn forward(req: HttpRequest, body: web::Bytes, state: web::Data<ProxyState>) -> HttpResponse {
    let target = format!("{}{}", state.upstream, req.uri().path_and_query().map_or("/", |p| p.as_str()));
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
    let mut upstream = state.http.request(method, target).body(body.to_vec());
    for (name, value) in req.headers() {
        if passed(name.as_str()) {
            upstream = upstream.header(name.as_str(), value.as_bytes());
        }
    }
    let res = match upstream.send().await {
        Ok(res) => res,
        Err(e) => return HttpResponse::BadGateway().body(e.to_string()),
    };
    let status = actix_web::http::StatusCode::from_u16(res.status().as_u16()).unwrap();
    let headers: Vec<(String, Vec<u8>)> = res
        .headers()
        .iter()
        .filter(|(name, _)| passed(name.as_str()))
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    let mut bytes = match res.bytes().await {
        Ok(bytes) => bytes.to_vec(),
        Err(e) => return HttpResponse::BadGateway().body(e.to_string()),
    };

    if let Some(hash) = chunk_download(req.method(), req.path()).filter(|_| status.is_success() && !bytes.is_empty()) {
        let nth = {
            let mut gets = state.seen.chunk_gets.lock().unwrap();
            let n = gets.entry(hash).or_default();
            *n += 1;
            *n
        };
        let corrupt = match state.policy {
            Corrupt::FirstOfEachChunk => nth == 1,
            Corrupt::Always => true,
        };
        if corrupt {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x5a;
            state.seen.corrupted.fetch_add(1, Ordering::SeqCst);
        }
    }

    let mut answer = HttpResponse::build(status);
    for (name, value) in headers {
        answer.append_header((name, value));
    }
    answer.body(bytes)
}

/// A project whose source device pushed one file of three chunks and put
/// the chunks on the relay; answers the owner's token, the project and the
/// file's bytes. The device never advertised direct endpoints, so a
/// download is offered the relay only.
async fn shared_file(app: &TestApp, path: &str) -> (String, Uuid, Vec<u8>) {
    let owner = app.signup("owner").await;
    let project = app.create_project(&owner, "Verify").await;
    let device = app.source_device(&owner, project).await;

    let whole = noise(200_000 + 321, 77);
    let chunks: Vec<&[u8]> = vec![&whole[..70_000], &whole[70_000..140_000], &whole[140_000..]];
    let list: Vec<Value> = chunks.iter().map(|c| json!({"hash": hash(c), "size": c.len()})).collect();
    let change = json!([{"op": "upsert", "path": path, "size": whole.len(), "hash": hash(&whole), "chunks": list}]);
    let (status, body) = app.push(&device, project, change).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for chunk in &chunks {
        let res = app
            .http
            .put(app.url(&format!("/api/projects/{project}/chunks/{}", hash(chunk))))
            .bearer_auth(&device)
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED, "{:?}", res.text().await);
    }
    (owner.token, project, whole)
}

/// A member who signed up and joined through `proxy`.
async fn member_behind(app: &TestApp, proxy: &Proxy, owner_token: &str, project: Uuid) -> Person {
    let member = Person { config: TempDir::new("config-member"), server: proxy.address.clone() };
    member.signup("member").await;
    let (status, invite) = app.post(&format!("/api/projects/{project}/invites"), owner_token, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{invite}");
    member.json(&["join", invite["token"].as_str().unwrap()]).await;
    member
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_that_fails_verification_is_fetched_again() {
    let app = TestApp::spawn().await;
    let (owner_token, project, whole) = shared_file(&app, "/data/blob.bin").await;
    let proxy = Proxy::start(&app, Corrupt::FirstOfEachChunk);
    let member = member_behind(&app, &proxy, &owner_token, project).await;

    let target = TempDir::new("verify-dst");
    let to = target.path().to_str().unwrap();
    let project = project.to_string();
    let pulled = member.run(&["pull", &project, "--to", to, "--wait", "5", "--json"]).await;
    assert!(pulled.status.success(), "{}", describe(&pulled));
    let result = last_json(&pulled);
    assert_eq!(result["files"].as_u64(), Some(1), "{result}");
    let got = std::fs::read(target.path().join("data/blob.bin")).unwrap();
    assert!(got == whole, "the pulled file differs from the original");

    assert!(proxy.seen.corrupted() >= 1, "the proxy damaged no chunk");
    assert_eq!(proxy.seen.corrupted(), 3, "each of the three chunks came back damaged once");
    assert!(proxy.seen.chunk_gets() > 3, "damaged chunks were fetched again: {} GETs", proxy.seen.chunk_gets());
    assert_eq!(proxy.seen.chunk_gets(), 6, "once damaged, once sound, per chunk");

    // Fetched again within the first attempt: the transfer did not need a retry.
    let (_, page) = app.get(&format!("/api/projects/{project}/transfers"), &owner_token).await;
    let all = page["transfers"].as_array().unwrap();
    assert_eq!(all.len(), 1, "{page}");
    assert_eq!((all[0]["status"].as_str(), all[0]["attempts"].as_i64()), (Some("completed"), Some(1)), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_that_keep_failing_verification_make_pull_give_up_and_say_why() {
    let app = TestApp::spawn().await;
    let max_attempts = i64::from(app.settings.transfers.transfer_max_attempts);
    let (owner_token, project, _) = shared_file(&app, "/data/blob.bin").await;
    let proxy = Proxy::start(&app, Corrupt::Always);
    let member = member_behind(&app, &proxy, &owner_token, project).await;

    let target = TempDir::new("verify-dst");
    let to = target.path().to_str().unwrap();
    let project_arg = project.to_string();
    let pulled = member.run(&["pull", &project_arg, "--to", to, "--wait", "5", "--json"]).await;
    assert!(!pulled.status.success(), "pull gave up, so it must fail:\n{}", describe(&pulled));
    let stderr = String::from_utf8_lossy(&pulled.stderr);
    assert!(stderr.contains("/data/blob.bin") && stderr.contains("failed verification"), "{}", describe(&pulled));
    let error = last_json(&pulled);
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("failed verification"), "the --json error says why: {error}");
    assert!(!target.path().join("data/blob.bin").exists(), "no file is written from damaged chunks");
    assert!(proxy.seen.corrupted() >= 3 && proxy.seen.corrupted() == proxy.seen.chunk_gets());

    // The transfer was retried through the API up to the maximum.
    let (_, page) = app.get(&format!("/api/projects/{project}/transfers"), &owner_token).await;
    let all = page["transfers"].as_array().unwrap();
    assert_eq!(all.len(), 1, "one transfer, retried in place: {page}");
    assert_eq!(
        all[0]["attempts"].as_i64(),
        Some(max_attempts),
        "retried up to the maximum: {page}\n{}",
        describe(&pulled)
    );
    let retried = app.log(project).await.iter().filter(|e| e.event_type == "transfer_retried").count();
    assert_eq!(retried as i64, max_attempts - 1, "{page}");
    assert!(
        proxy.seen.chunk_gets() >= 3 * max_attempts as usize,
        "each attempt fetched the chunks again: {} GETs",
        proxy.seen.chunk_gets()
    );
}

#[test]
fn only_relay_chunk_downloads_are_recognised() {
    let get = actix_web::http::Method::GET;
    let h = "a".repeat(64);
    let p = Uuid::new_v4();
    assert_eq!(chunk_download(&get, &format!("/api/projects/{p}/chunks/{h}")), Some(h.clone()));
    assert_eq!(chunk_download(&get, &format!("/api/projects/{p}/chunks/missing")), None);
    assert_eq!(chunk_download(&actix_web::http::Method::PUT, &format!("/api/projects/{p}/chunks/{h}")), None);
    assert_eq!(chunk_download(&get, &format!("/api/projects/{p}/files/{h}")), None);
}
