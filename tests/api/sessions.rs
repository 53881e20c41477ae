//! Sessions in the browser: signup and login with `"session": "cookie"`
//! set an HttpOnly cookie the API takes wherever it takes a Bearer token,
//! and a request the cookie authenticates that changes anything is refused
//! unless it comes from the app's own origin.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::header::{HeaderMap, CACHE_CONTROL, COOKIE, ORIGIN, SET_COOKIE};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use uuid::Uuid;

use crate::helpers::TestApp;

const PASSWORD: &str = "correct horse battery";
const EVIL: &str = "https://evil.example";

/// A response's status, headers and JSON body (Null when empty).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    async fn of(request: RequestBuilder) -> Self {
        let res = request.send().await.expect("request sent");
        let (status, headers) = (res.status(), res.headers().clone());
        let bytes = res.bytes().await.expect("body read");
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("JSON") };
        Self { status, headers, body }
    }

    /// The `Set-Cookie` of the session cookie, if any.
    fn session_cookie(&self) -> Option<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("ferry_session="))
            .map(str::to_owned)
    }

    fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

/// The value a browser would send back for a `Set-Cookie`: `name=value`.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or_default().trim().to_owned()
}

/// The attributes of a `Set-Cookie`, lowercased, without the pair.
fn attributes(set_cookie: &str) -> Vec<String> {
    set_cookie.split(';').skip(1).map(|a| a.trim().to_ascii_lowercase()).collect()
}

fn request(app: &TestApp, method: Method, path: &str) -> RequestBuilder {
    app.http.request(method, app.url(path))
}

/// A request carrying the session cookie (`name=value`).
fn with_cookie(app: &TestApp, method: Method, path: &str, cookie: &str) -> RequestBuilder {
    request(app, method, path).header(COOKIE, cookie)
}

/// Signs in with a cookie session from the app's own origin; answers the
/// `name=value` to send back.
pub async fn cookie_login(app: &TestApp, email: &str) -> String {
    let login = Answer::of(
        request(app, Method::POST, "/api/auth/login")
            .header(ORIGIN, &app.address)
            .json(&json!({"email": email, "password": PASSWORD, "session": "cookie"})),
    )
    .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    cookie_pair(&login.session_cookie().expect("a session cookie"))
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `/api/ws` with these extra headers; answers the socket, or the
/// status of a refused handshake.
async fn websocket(app: &TestApp, headers: &[(&'static str, &str)]) -> Result<Socket, StatusCode> {
    let url = format!("{}/api/ws", app.address.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(WsError::Http(response)) => Err(StatusCode::from_u16(response.status().as_u16()).unwrap()),
        Err(e) => panic!("handshake failed otherwise: {e}"),
    }
}

#[tokio::test]
async fn a_cookie_session_is_set_and_works_from_the_apps_own_origin() {
    let app = TestApp::spawn().await;
    let email = format!("ana-{}@example.org", Uuid::new_v4().simple());
    let idle = app.settings.accounts.token_idle_seconds;

    // Signup sets the cookie, keeps the token out of the body and out of caches.
    let signup = Answer::of(
        request(&app, Method::POST, "/api/auth/signup")
            .header(ORIGIN, &app.address)
            .json(&json!({"email": email, "password": PASSWORD, "session": "cookie"})),
    )
    .await;
    assert_eq!(signup.status, StatusCode::CREATED, "{}", signup.body);
    assert_eq!(signup.headers[CACHE_CONTROL], "no-store");
    assert_eq!(signup.body["user"]["email"], email.as_str());
    assert!(signup.body.get("token").is_none(), "the page never holds the token: {}", signup.body);
    let set = signup.session_cookie().expect("signup sets the session cookie");
    assert!(cookie_pair(&set).starts_with("ferry_session=fy_"), "{set}");
    let attrs = attributes(&set);
    for wanted in ["httponly", "samesite=lax", "path=/", &format!("max-age={idle}")] {
        assert!(attrs.iter().any(|a| a == wanted), "{wanted} missing from {set}");
    }
    assert!(!attrs.iter().any(|a| a == "secure"), "plain http: no Secure ({set})");
    let user_id = signup.body["user"]["id"].clone();

    // Without `session`, signup and login answer a token as before, with no cookie.
    let login =
        Answer::of(request(&app, Method::POST, "/api/auth/login").json(&json!({"email": email, "password": PASSWORD})))
            .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.body);
    assert!(login.body["token"].as_str().is_some_and(|t| t.starts_with("fy_")), "{}", login.body);
    assert_eq!(login.session_cookie(), None);

    // Login over https (as a TLS proxy in front says) sets a Secure cookie.
    let host = app.address.trim_start_matches("http://");
    let secure = Answer::of(
        request(&app, Method::POST, "/api/auth/login")
            .header("x-forwarded-proto", "https")
            .header(ORIGIN, format!("https://{host}"))
            .json(&json!({"email": email, "password": PASSWORD, "session": "cookie"})),
    )
    .await;
    assert_eq!(secure.status, StatusCode::OK, "{}", secure.body);
    assert_eq!(secure.headers[CACHE_CONTROL], "no-store");
    assert_eq!(secure.body, json!({"user": signup.body["user"]}));
    let set = secure.session_cookie().expect("login sets the session cookie");
    let attrs = attributes(&set);
    for wanted in ["secure", "httponly", "samesite=lax", "path=/", &format!("max-age={idle}")] {
        assert!(attrs.iter().any(|a| a == wanted), "{wanted} missing from {set}");
    }

    // The cookie reads, and writes from the app's own origin: by `Origin`,
    // or by `Sec-Fetch-Site` alone.
    let cookie = cookie_login(&app, &email).await;
    let me = Answer::of(with_cookie(&app, Method::GET, "/api/me", &cookie)).await;
    assert_eq!((me.status, &me.body["user"]["id"]), (StatusCode::OK, &user_id), "{}", me.body);
    let created = Answer::of(
        with_cookie(&app, Method::POST, "/api/projects", &cookie)
            .header(ORIGIN, &app.address)
            .json(&json!({"name": "Photos"})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let project = created.body["id"].as_str().unwrap().to_owned();
    let renamed = Answer::of(
        with_cookie(&app, Method::PATCH, &format!("/api/projects/{project}"), &cookie)
            .header("sec-fetch-site", "same-origin")
            .json(&json!({"name": "Holidays"})),
    )
    .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);

    // A WebSocket from the app's own page needs no token in JavaScript.
    let mut socket = websocket(&app, &[("cookie", &cookie), ("origin", &app.address)]).await.expect("socket opens");
    let subscribe = json!({"type": "subscribe", "project_id": project, "after_seq": 0});
    socket.send(Message::Text(subscribe.to_string().into())).await.unwrap();
    let first = loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => break serde_json::from_str::<Value>(&text).unwrap(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no message: {other:?}"),
        }
    };
    assert_eq!(first, json!({"type": "subscribed", "project_id": project, "head_seq": 2}));
}

#[tokio::test]
async fn a_cookie_request_from_another_origin_that_changes_anything_is_refused() {
    let app = TestApp::spawn().await;
    let ana = app.signup("ana").await;
    let cookie = cookie_login(&app, &ana.email).await;
    let host = app.address.trim_start_matches("http://");

    // Forged POSTs: another origin, the browser's own verdict, another
    // port of the same host, an opaque origin, and neither header.
    let forgeries: [&[(&str, &str)]; 6] = [
        &[("origin", EVIL)],
        &[("origin", EVIL), ("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "same-site"), ("origin", "http://127.0.0.1:1")],
        &[("origin", "null")],
        &[],
    ];
    for headers in forgeries {
        let mut forged = with_cookie(&app, Method::POST, "/api/projects", &cookie).json(&json!({"name": "Forged"}));
        for (name, value) in headers {
            forged = forged.header(*name, *value);
        }
        let refused = Answer::of(forged).await;
        assert_eq!((refused.status, refused.error_code()), (StatusCode::FORBIDDEN, "cross_site"), "{headers:?}");
    }
    // `Origin` is compared as an origin: the scheme's case makes no difference.
    let upper = Answer::of(
        with_cookie(&app, Method::POST, "/api/projects", &cookie)
            .header(ORIGIN, format!("HTTP://{}", host.to_uppercase()))
            .json(&json!({"name": "Upper"})),
    )
    .await;
    assert_eq!(upper.status, StatusCode::CREATED, "{}", upper.body);
    // Reads need no origin: the cookie still works, and the forgeries appended nothing.
    let projects = Answer::of(with_cookie(&app, Method::GET, "/api/projects", &cookie)).await;
    assert_eq!(projects.status, StatusCode::OK, "{}", projects.body);
    let names: Vec<&str> =
        projects.body["projects"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["Upper"]);

    // Another site's page cannot open a WebSocket on the cookie.
    let refused = websocket(&app, &[("cookie", &cookie), ("origin", EVIL)]).await.err();
    assert_eq!(refused, Some(StatusCode::FORBIDDEN));
    let refused = websocket(&app, &[("cookie", &cookie)]).await.err();
    assert_eq!(refused, Some(StatusCode::FORBIDDEN), "a cookie socket with no Origin");

    // Nor start a cookie session of its choosing (login CSRF).
    let login = Answer::of(
        request(&app, Method::POST, "/api/auth/login")
            .header(ORIGIN, EVIL)
            .json(&json!({"email": ana.email, "password": PASSWORD, "session": "cookie"})),
    )
    .await;
    assert_eq!((login.status, login.error_code()), (StatusCode::FORBIDDEN, "cross_site"));
    assert_eq!(login.session_cookie(), None);

    // A Bearer token is not subject to the rule, and wins over a cookie.
    let bearer = Answer::of(
        request(&app, Method::POST, "/api/projects")
            .bearer_auth(&ana.token)
            .header(ORIGIN, EVIL)
            .header("sec-fetch-site", "cross-site")
            .header(COOKIE, "ferry_session=fy_garbage")
            .json(&json!({"name": "By token"})),
    )
    .await;
    assert_eq!(bearer.status, StatusCode::CREATED, "{}", bearer.body);
    let socket = websocket(&app, &[("authorization", &format!("Bearer {}", ana.token)), ("origin", EVIL)]).await;
    assert!(socket.is_ok(), "a Bearer socket from anywhere opens");
}

#[tokio::test]
async fn logout_clears_the_cookie_and_a_dead_cookie_is_refused() {
    let app = TestApp::spawn().await;
    let ana = app.signup("ana").await;
    let own = |method: Method, path: &str, cookie: &str| {
        with_cookie(&app, method, path, cookie).header(ORIGIN, app.address.as_str())
    };

    // Logout revokes the cookie's token and clears the cookie.
    let cookie = cookie_login(&app, &ana.email).await;
    let out = Answer::of(own(Method::POST, "/api/auth/logout", &cookie)).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{}", out.body);
    let cleared = out.session_cookie().expect("logout clears the cookie");
    assert_eq!(cookie_pair(&cleared), "ferry_session=");
    assert!(attributes(&cleared).iter().any(|a| a == "max-age=0"), "{cleared}");
    let me = Answer::of(with_cookie(&app, Method::GET, "/api/me", &cookie)).await;
    assert_eq!((me.status, me.error_code()), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (status, _) = app.get("/api/me", &ana.token).await;
    assert_eq!(status, StatusCode::OK, "the Bearer token of another login still works");

    // A cookie whose token went unused too long, or that was never one, is 401.
    let cookie = cookie_login(&app, &ana.email).await;
    let client = app.pool.get().await.unwrap();
    let hash = blake3::hash(cookie.trim_start_matches("ferry_session=").as_bytes()).as_bytes().to_vec();
    let aged = client
        .execute("UPDATE api_tokens SET last_used_at = now() - interval '365 days' WHERE token_hash = $1", &[&hash])
        .await
        .unwrap();
    assert_eq!(aged, 1);
    for dead in [cookie.as_str(), "ferry_session=fy_garbage", "ferry_session="] {
        let me = Answer::of(with_cookie(&app, Method::GET, "/api/me", dead)).await;
        assert_eq!((me.status, me.error_code()), (StatusCode::UNAUTHORIZED, "unauthorized"), "{dead}");
        let post = Answer::of(own(Method::POST, "/api/projects", dead).json(&json!({"name": "x"}))).await;
        assert_eq!(post.status, StatusCode::UNAUTHORIZED, "{dead}");
    }

    // A Bearer logout leaves a cookie alone; logout-all by cookie clears it
    // and ends every token.
    let cookie = cookie_login(&app, &ana.email).await;
    let (_, login) =
        app.call(Method::POST, "/api/auth/login", None, Some(&json!({"email": ana.email, "password": PASSWORD}))).await;
    let other = login["token"].as_str().unwrap();
    let out =
        Answer::of(request(&app, Method::POST, "/api/auth/logout").bearer_auth(other).header(COOKIE, &cookie)).await;
    assert_eq!((out.status, out.session_cookie()), (StatusCode::NO_CONTENT, None));
    let all = Answer::of(own(Method::POST, "/api/auth/logout-all", &cookie)).await;
    assert_eq!(all.status, StatusCode::NO_CONTENT, "{}", all.body);
    assert!(all.session_cookie().is_some_and(|c| c.starts_with("ferry_session=;")), "{:?}", all.headers);
    for (status, what) in [
        (Answer::of(with_cookie(&app, Method::GET, "/api/me", &cookie)).await.status, "the cookie"),
        (app.get("/api/me", &ana.token).await.0, "the signup token"),
    ] {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what} stopped working");
    }
}
