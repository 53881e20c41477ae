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
    assert!(text.contains(r#"ferry_db_pool_connections{state="max"} 8"#), "{text}");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json_errors() {
    let app = TestApp::spawn().await;
    let (status, body) = app.call(Method::GET, "/api/nope", None, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (status, body) = app.call(Method::PUT, "/api/auth/signup", None, Some(&json!({}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed")));
}
