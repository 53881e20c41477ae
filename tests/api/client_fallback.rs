//! A pull that loses the owner's machine midway finishes through the relay,
//! and the agent uploads only what the member still lacks: the member asks
//! again, saying what it holds now. The direct link is cut by a small proxy
//! between the member's real `ferry pull` and the agent's real listener,
//! which passes a few chunks and then answers 503. The proxy presents the
//! agent's own certificate (read from its config folder), so the member's
//! pinning lets it through.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::Value;

use crate::client_direct::{agent_identity, pinned};
use crate::client_pull::write;
use crate::client_resume::owner_and_member;
use crate::client_share::{describe, last_json, noise, Running, TempDir};
use crate::helpers::TestApp;

/// Chunk answers passed before the link is cut.
const PASSED: usize = 4;

#[derive(Default)]
struct Cut {
    passed: AtomicUsize,
    passed_bytes: AtomicU64,
    refused: AtomicUsize,
}

struct CutState {
    upstream: String,
    http: reqwest::Client,
    cut: Arc<Cut>,
}

async fn forward(req: HttpRequest, state: web::Data<CutState>) -> HttpResponse {
    if state.cut.passed.load(Ordering::SeqCst) >= PASSED {
        state.cut.refused.fetch_add(1, Ordering::SeqCst);
        return HttpResponse::ServiceUnavailable().body("the link is cut");
    }
    let target = format!("{}{}", state.upstream, req.uri().path_and_query().map_or("/", |p| p.as_str()));
    let mut upstream = state.http.get(target);
    if let Some(auth) = req.headers().get("authorization") {
        upstream = upstream.header("authorization", auth.as_bytes());
    }
    let Ok(res) = upstream.send().await else { return HttpResponse::BadGateway().finish() };
    let status = res.status().as_u16();
    let Ok(bytes) = res.bytes().await else { return HttpResponse::BadGateway().finish() };
    if status == 200 && state.cut.passed.fetch_add(1, Ordering::SeqCst) < PASSED {
        state.cut.passed_bytes.fetch_add(bytes.len() as u64, Ordering::SeqCst);
        return HttpResponse::Ok().content_type("application/octet-stream").body(bytes);
    }
    if status == 200 {
        state.cut.refused.fetch_add(1, Ordering::SeqCst);
        return HttpResponse::ServiceUnavailable().body("the link is cut");
    }
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or_default()).body(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_cut_off_from_the_owners_machine_midway_gets_only_the_rest_through_the_relay() {
    let app = TestApp::spawn().await;
    let (owner, member, project) = owner_and_member(&app, "Fallback").await;
    let tree = TempDir::new("fallback-src");
    let src = tree.path();
    let big = noise(16 * 1024 * 1024 + 5, 41);
    write(src, "big.bin", &big);
    // Compresses well: the agent sends it zstd-encoded.
    let text: Vec<u8> = (0..40_000).flat_map(|i| format!("line {i} of a plain log\n").into_bytes()).collect();
    write(src, "log.txt", &text);

    // The agent's listener on a known port, advertised through the proxy.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let proxy_socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = format!("https://{}", proxy_socket.local_addr().unwrap());
    let listen = format!("127.0.0.1:{port}");
    let mut agent = Running::share_with(&owner, &project, src, &["--listen", &listen, "--advertise", &proxy]);
    agent.wait_for("its first push", |v| v["event"] == "synced").await;
    agent.wait_for("listening", |v| v["event"] == "listening").await;

    // Listening, the agent has its certificate: the proxy presents it too.
    let identity = agent_identity(&owner);
    let cut = Arc::new(Cut::default());
    let state = web::Data::new(CutState {
        upstream: format!("https://127.0.0.1:{port}"),
        http: pinned(&identity.cert_sha256()),
        cut: cut.clone(),
    });
    let server = HttpServer::new(move || App::new().app_data(state.clone()).default_service(web::to(forward)))
        .workers(1)
        .disable_signals()
        .listen_rustls_0_23(proxy_socket, identity.server_config().unwrap())
        .unwrap()
        .run();
    let handle = server.handle();
    tokio::spawn(server);

    let dst = TempDir::new("fallback-dst");
    let to = dst.path().to_str().unwrap();
    let output = member.run(&["pull", &project, "/big.bin", "--to", to, "--json"]).await;
    assert!(output.status.success(), "{}", describe(&output));
    let pulled = last_json(&output);
    assert!(std::fs::read(dst.path().join("big.bin")).unwrap() == big, "the file arrived whole");
    let direct = pulled["bytes_direct"].as_u64().unwrap();
    assert_eq!(pulled["bytes_transferred"].as_u64(), Some(big.len() as u64), "{pulled}");
    assert!(direct > 0 && direct <= cut.passed_bytes.load(Ordering::SeqCst), "{}", describe(&output));
    assert!(cut.refused.load(Ordering::SeqCst) > 0, "the link was cut");

    // The route of the transfer that finished: the rest through the relay,
    // and why direct was given up.
    let route = crate::client_direct::route_of(&app, &owner, &project, "/big.bin").await;
    assert_eq!(route["bytes_relay"].as_u64(), Some(big.len() as u64 - direct), "{route}");
    assert!(route["direct_abandoned"].is_string(), "{route}");

    // The first transfer was called off; the second one's uploads are
    // exactly what the member lacked.
    agent.wait_for("the first transfer ended", |v| v["event"] == "transfer_cancelled").await;
    let served = agent.wait_for("serving the rest", |v| v["event"] == "transfer_served").await;
    assert_eq!(
        (served["bytes_direct"].as_u64(), served["bytes_uploaded"].as_u64()),
        (Some(0), Some(big.len() as u64 - direct)),
        "{served}"
    );

    // With the link down from the start, the same transfer goes through the
    // relay; a compressible file (sent zstd-encoded) comes back whole.
    let pulled = member.json(&["pull", &project, "/log.txt", "--to", to]).await;
    assert_eq!(
        (pulled["bytes_transferred"].as_u64(), pulled["bytes_direct"].as_u64()),
        (Some(text.len() as u64), Some(0)),
        "{pulled}"
    );
    assert!(std::fs::read(dst.path().join("log.txt")).unwrap() == text);
    let served: Value = agent.wait_for("serving the log", |v| v["event"] == "transfer_served").await;
    assert_eq!(served["bytes_uploaded"].as_u64(), Some(text.len() as u64), "{served}");
    drop(agent);
    handle.stop(false).await;
}
