use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = TestApp::spawn().await;
    let (status, body) = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (status, body) = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!((status, body["database"].as_str()), (StatusCode::OK, Some("up")));

    // Something to count: a refused and an accepted command.
    let user = app.signup("metrics").await;
    app.call(Method::GET, "/api/projects", None, None).await;
    app.create_project(&user, "counted").await;

    let text = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains(r#"ferry_http_requests_total{method="POST",route="/api/projects",status="201"}"#), "{text}");
    assert!(text.contains(r#"route="/api/projects",status="401""#), "{text}");
    assert!(text.contains("ferry_http_request_duration_seconds_bucket"), "{text}");
    let appended =
        text.lines().find_map(|l| l.strip_prefix("ferry_events_appended_total ")).expect("events counter present");
    assert!(appended.parse::<f64>().unwrap() >= 1.0, "{appended}");
    // The test server's 8 connections, split evenly between its two HTTP
    // workers and its background work: 2 each, and never more than 8.
    let gauge = |pool: &str, state: &str| -> u64 {
        let name = format!(r#"ferry_db_pool_connections{{pool="{pool}",state="{state}"}} "#);
        let line = text.lines().find_map(|l| l.strip_prefix(name.as_str()));
        line.unwrap_or_else(|| panic!("{name} missing: {text}")).parse().unwrap()
    };
    assert_eq!((gauge("http", "max"), gauge("background", "max")), (4, 2), "{text}");
    // The requests above went through the workers' own pools.
    assert!(gauge("http", "size") >= 1, "{text}");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json_errors() {
    let app = TestApp::spawn().await;
    let (status, body) = app.call(Method::GET, "/api/nope", None, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (status, body) = app.call(Method::PUT, "/api/auth/signup", None, Some(&json!({}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed")));
}

/// A response goes out as it is written: with Nagle's algorithm on the
/// server's side, the short last segment of a chunk download waited for the
/// client's delayed ACK (40 ms on Linux). The accepted socket, found among
/// this process's descriptors (the server runs in it), says so.
#[tokio::test]
async fn accepted_connections_send_without_delay() {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;

    let app = TestApp::spawn().await;
    let server: std::net::SocketAddr = app.address.trim_start_matches("http://").parse().unwrap();
    let client = tokio::task::spawn_blocking(move || {
        let mut client = std::net::TcpStream::connect(server).unwrap();
        client.write_all(b"GET /healthz HTTP/1.1\r\nHost: ferry\r\n\r\n").unwrap();
        let mut first = [0; 12];
        client.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        client
    })
    .await
    .unwrap();
    let ours = client.local_addr().unwrap();

    let mut accepted = None;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let Ok(fd) = entry.unwrap().file_name().to_string_lossy().parse::<i32>() else { continue };
        // SAFETY: a duplicate of the descriptor, owned (and closed) by this
        // stream alone; the server's own descriptor stays open.
        let dup = unsafe { libc::dup(fd) };
        if dup < 0 {
            continue;
        }
        let socket = unsafe { std::net::TcpStream::from_raw_fd(dup) };
        if socket.local_addr().ok() == Some(server) && socket.peer_addr().ok() == Some(ours) {
            accepted = Some(socket.nodelay().unwrap());
        }
    }
    assert_eq!(accepted, Some(true), "the server's side of the connection sends without delay");
}
