use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use std::time::{Duration, Instant};

use crate::helpers::{start_server, TestApp};

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_else(|| panic!("not an error body: {body}"))
}

#[tokio::test]
async fn signup_login_me_and_logout() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .call(
            Method::POST,
            "/api/auth/signup",
            None,
            Some(&json!({"email": "Ana@Example.org", "password": "correct horse", "display_name": "Ana"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["user"]["email"], "Ana@Example.org");
    assert_eq!(body["user"]["display_name"], "Ana");
    let signup_token = body["token"].as_str().unwrap().to_owned();

    // Same address in another case is taken.
    let (status, body) = app
        .call(
            Method::POST,
            "/api/auth/signup",
            None,
            Some(&json!({"email": "ana@example.ORG", "password": "another one"})),
        )
        .await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "email_taken"));

    let (status, body) = app
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(&json!({"email": "ana@example.org", "password": "correct horse"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let login_token = body["token"].as_str().unwrap().to_owned();
    assert_ne!(login_token, signup_token);

    let (status, me) = app.get("/api/me", &login_token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["user"]["display_name"], "Ana");
    assert!(me.get("device").is_none(), "a user token has no device: {me}");

    // Logout revokes exactly the token presented.
    let (status, _) = app.call(Method::POST, "/api/auth/logout", Some(&login_token), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.get("/api/me", &login_token).await;
    assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    assert_eq!(app.get("/api/me", &signup_token).await.0, StatusCode::OK);
}

#[tokio::test]
async fn wrong_credentials_and_bad_tokens_are_401() {
    let app = TestApp::spawn().await;
    let user = app.signup("cred").await;
    for body in [
        json!({"email": user.email, "password": "wrong password"}),
        json!({"email": "nobody@example.org", "password": "correct horse battery"}),
    ] {
        let (status, body) = app.call(Method::POST, "/api/auth/login", None, Some(&body)).await;
        assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "invalid_credentials"));
    }
    for token in ["", "garbage", "fy_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        assert_eq!(app.get("/api/me", token).await.0, StatusCode::UNAUTHORIZED, "{token:?}");
    }
    assert_eq!(app.call(Method::GET, "/api/me", None, None).await.0, StatusCode::UNAUTHORIZED);
    let res = app.http.get(app.url("/api/me")).header("Authorization", "Basic abc").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // Only the WebSocket route takes a token in the query string.
    let res = app.http.get(app.url(&format!("/api/me?access_token={}", user.token))).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.get("/api/me", &user.token).await.0, StatusCode::OK);
}

#[tokio::test]
async fn bad_signups_are_refused_and_create_nothing() {
    let app = TestApp::spawn().await;
    let cases = [
        (json!({"email": "a@example.org", "password": "short"}), StatusCode::UNPROCESSABLE_ENTITY, "weak_password"),
        (
            json!({"email": "not-an-email", "password": "long enough"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_email",
        ),
        (
            json!({"email": "b@example.org", "password": "long enough", "display_name": " "}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_display_name",
        ),
        (json!({"email": "c@example.org"}), StatusCode::BAD_REQUEST, "invalid_body"),
        (json!({"email": 5, "password": "long enough"}), StatusCode::BAD_REQUEST, "invalid_body"),
    ];
    for (body, status, expected) in cases {
        let (got, answer) = app.call(Method::POST, "/api/auth/signup", None, Some(&body)).await;
        assert_eq!((got, code(&answer)), (status, expected), "{body}");
    }
    let res = app
        .http
        .post(app.url("/api/auth/signup"))
        .header("Content-Type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "malformed_json");
    let res = app
        .http
        .post(app.url("/api/auth/signup"))
        .header("Content-Type", "application/json")
        .body(format!("{{\"email\": \"{}\"}}", "x".repeat(100_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let users: i64 = app.pool.get().await.unwrap().query_one("SELECT count(*) FROM users", &[]).await.unwrap().get(0);
    assert_eq!(users, 0);
}

#[tokio::test]
async fn tokens_are_stored_hashed_and_passwords_with_argon2() {
    let app = TestApp::spawn().await;
    let user = app.signup("hash").await;
    let (_, device_token) = app.register_device(&user, "laptop").await;
    let client = app.pool.get().await.unwrap();
    let hashes: Vec<Vec<u8>> =
        client.query("SELECT token_hash FROM api_tokens", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(hashes.len(), 2);
    for token in [&user.token, &device_token] {
        assert!(token.len() >= 43, "256 random bits, base64: {token}");
        assert!(hashes.iter().all(|h| h.as_slice() != token.as_bytes()));
        assert!(hashes.contains(&blake3::hash(token.as_bytes()).as_bytes().to_vec()));
    }
    let dump: String = client
        .query_one("SELECT string_agg(to_jsonb(t)::text, ' ') FROM (SELECT * FROM users) t", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!dump.contains("correct horse battery"));
    assert!(dump.contains("$argon2id$"), "{dump}");
}

#[tokio::test]
async fn devices_register_list_and_delete() {
    let app = TestApp::spawn().await;
    let ana = app.signup("ana").await;
    let bob = app.signup("bob").await;
    let (laptop, laptop_token) = app.register_device(&ana, "laptop").await;
    let (desktop, _) = app.register_device(&ana, "desktop").await;
    let (bobs, _) = app.register_device(&bob, "phone").await;

    let (status, body) = app.get("/api/devices", &ana.token).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = body["devices"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![laptop.to_string(), desktop.to_string()]);
    assert_eq!(body["devices"][0]["platform"], "linux");

    // A device token acts as its user and names the device.
    let (status, me) = app.get("/api/me", &laptop_token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["user"]["id"], ana.id.to_string());
    assert_eq!(me["device"]["id"], laptop.to_string());
    assert_eq!(me["device"]["name"], "laptop");

    // Devices are registered with a user token only.
    let (status, body) = app.post("/api/devices", &laptop_token, json!({"name": "x"})).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "user_token_required"));
    let (status, body) = app.post("/api/devices", &ana.token, json!({"name": ""})).await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_device_name"));
    assert_eq!(
        app.call(Method::POST, "/api/devices", None, Some(&json!({"name": "x"}))).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Someone else's device, an unknown one, a malformed id.
    assert_eq!(app.delete(&format!("/api/devices/{bobs}"), &ana.token).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        app.delete(&format!("/api/devices/{}", uuid::Uuid::now_v7()), &ana.token).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, body) = app.delete("/api/devices/not-a-uuid", &ana.token).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_path"));

    // Deleting a device stops its token at once.
    assert_eq!(app.delete(&format!("/api/devices/{laptop}"), &ana.token).await.0, StatusCode::NO_CONTENT);
    assert_eq!(app.get("/api/me", &laptop_token).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(app.delete(&format!("/api/devices/{laptop}"), &ana.token).await.0, StatusCode::NOT_FOUND);
    let (_, body) = app.get("/api/devices", &ana.token).await;
    assert_eq!(body["devices"].as_array().unwrap().len(), 1);
    assert_eq!(app.get("/api/devices", &bob.token).await.1["devices"][0]["id"], bobs.to_string());
}

/// Servers answer a token they looked up lately from memory; one revoked
/// anywhere (logout, logout-all, a deleted device, a DELETE behind the
/// servers' backs) stops working on every server at once, not when the
/// memory expires (30 s).
#[tokio::test]
async fn a_token_revoked_on_one_server_stops_working_on_every_server() {
    let app = TestApp::spawn().await;
    let (other, handle) = start_server(&app.settings).await;
    let ana = app.signup("ana").await;
    let (device, device_token) = app.register_device(&ana, "laptop").await;
    let (logged_out, everywhere, behind) =
        (login(&app, &ana.email).await, login(&app, &ana.email).await, login(&app, &ana.email).await);
    for token in [&ana.token, &device_token, &logged_out, &everywhere, &behind] {
        // Twice on each server: the second answer comes from memory.
        for _ in 0..2 {
            assert_eq!(me_at(&app, &app.address, token).await, StatusCode::OK);
            assert_eq!(me_at(&app, &other, token).await, StatusCode::OK);
        }
    }

    assert_eq!(app.call(Method::POST, "/api/auth/logout", Some(&logged_out), None).await.0, StatusCode::NO_CONTENT);
    refused_everywhere(&app, &other, &logged_out, "logout").await;
    let (status, _) = app.call(Method::DELETE, &format!("/api/devices/{device}"), Some(&ana.token), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    refused_everywhere(&app, &other, &device_token, "deleting the device").await;
    let hash = blake3::hash(behind.as_bytes());
    let db = app.pool.get().await.unwrap();
    db.execute("DELETE FROM api_tokens WHERE token_hash = $1", &[&hash.as_bytes().as_slice()]).await.unwrap();
    refused_everywhere(&app, &other, &behind, "a DELETE behind the servers' backs").await;
    // Untouched so far; then logout-all takes it too.
    assert_eq!(me_at(&app, &other, &everywhere).await, StatusCode::OK);
    assert_eq!(app.call(Method::POST, "/api/auth/logout-all", Some(&everywhere), None).await.0, StatusCode::NO_CONTENT);
    refused_everywhere(&app, &other, &everywhere, "logout-all").await;
    refused_everywhere(&app, &other, &ana.token, "logout-all").await;
    handle.stop(false).await;
}

async fn me_at(app: &TestApp, base: &str, token: &str) -> StatusCode {
    app.http.get(format!("{base}/api/me")).bearer_auth(token).send().await.unwrap().status()
}

/// Waits (5 s at most) until `token` is refused by both servers.
async fn refused_everywhere(app: &TestApp, other: &str, token: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (here, there) = (me_at(app, &app.address, token).await, me_at(app, other, token).await);
        if (here, there) == (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED) {
            return;
        }
        assert!(Instant::now() < deadline, "after {what}, the token still answers {here} and {there}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn login(app: &TestApp, email: &str) -> String {
    let body = json!({"email": email, "password": crate::support::PASSWORD});
    let (status, answer) = app.call(Method::POST, "/api/auth/login", None, Some(&body)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["token"].as_str().unwrap().to_owned()
}
