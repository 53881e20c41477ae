//! The web app: `GET /api/invites/{token}` (what an invite link leads to),
//! the `/` and `/join/<token>` pages, the embedded assets and the 404s.

use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser};
use crate::membership::expired_invite;

pub const OWNER_NAME: &str = "Olga Owner";

/// The owner, signed up with a display name the pages must show.
pub async fn owner(app: &TestApp) -> TestUser {
    app.signup_as("olga", Some(OWNER_NAME)).await
}

/// Creates an invite; answers its id and token.
pub async fn invite(app: &TestApp, owner: &TestUser, project: Uuid, body: Value) -> (Uuid, String) {
    let (status, invite) = app.post(&format!("/api/projects/{project}/invites"), &owner.token, body).await;
    assert_eq!(status, StatusCode::CREATED, "{invite}");
    (invite["id"].as_str().unwrap().parse().unwrap(), invite["token"].as_str().unwrap().to_owned())
}

/// `GET /api/invites/{token}` without any credentials.
async fn preview(app: &TestApp, token: &str) -> (StatusCode, Value) {
    let res = app.http.get(app.url(&format!("/api/invites/{token}"))).send().await.unwrap();
    let status = res.status();
    if status == StatusCode::OK {
        assert_eq!(res.headers()[CACHE_CONTROL], "no-store", "an answer for a secret is never cached");
    }
    (status, res.json().await.unwrap())
}

async fn uses(app: &TestApp, owner: &TestUser, project: Uuid, invite: Uuid) -> i64 {
    let (status, body) = app.get(&format!("/api/projects/{project}/invites"), &owner.token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let found = body["invites"].as_array().unwrap().iter().find(|i| i["id"] == invite.to_string()).cloned();
    found.unwrap_or_else(|| panic!("invite {invite} not listed: {body}"))["uses"].as_i64().unwrap()
}

async fn accept(app: &TestApp, user: &TestUser, token: &str) -> (StatusCode, Value) {
    app.post("/api/invites/accept", &user.token, json!({"token": token})).await
}

/// A page: its status, headers and HTML.
async fn page(app: &TestApp, path: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let res = app.http.get(app.url(path)).send().await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    (status, headers, res.text().await.unwrap())
}

/// What every page must be: HTML for phones, titled, with landmarks, no
/// inline script, never cached, never named in a Referer.
fn assert_page(what: &str, headers: &reqwest::header::HeaderMap, html: &str) {
    assert_eq!(headers[CONTENT_TYPE], "text/html; charset=utf-8", "{what}");
    assert_eq!(headers[CACHE_CONTROL], "no-store", "{what}");
    assert_eq!(headers["referrer-policy"], "no-referrer", "{what}");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'self'") && !csp.contains("unsafe-inline"), "{what}: {csp}");
    assert!(html.starts_with("<!DOCTYPE html><html lang=\"en\">"), "{what}: {html}");
    assert!(html.contains(r#"<meta name="viewport" content="width=device-width, initial-scale=1">"#), "{what}");
    assert!(html.contains("<title>") && html.contains("<main") && html.contains("<header"), "{what}: {html}");
    for script in html.split("<script").skip(1) {
        assert!(
            script.starts_with(r#" type="module" src="/assets/"#) && script.contains("></script>"),
            "{what}: {script}"
        );
    }
}

/// A control found by its accessible name, as a screen reader would: a
/// `<label for>` naming an `<input>`, or a `<button>`'s text.
fn has_labelled_input(html: &str, name: &str) -> bool {
    html.split("<label for=\"").skip(1).any(|rest| {
        let (id, after) = rest.split_once('"').unwrap();
        after.starts_with(&format!(">{name}</label>")) && html.contains(&format!("<input id=\"{id}\""))
    })
}

fn has_button(html: &str, name: &str) -> bool {
    html.split("<button")
        .skip(1)
        .any(|b| b.split_once('>').is_some_and(|(_, text)| text.starts_with(&format!("{name}</button>"))))
}

#[tokio::test]
async fn an_invite_preview_tells_project_owner_and_usability_and_consumes_nothing() {
    let app = TestApp::spawn().await;
    let owner = owner(&app).await;
    let (ana, bob) = (app.signup("ana").await, app.signup("bob").await);
    let project = app.create_project(&owner, "Holiday Photos").await;
    let (id, token) = invite(&app, &owner, project, json!({"max_uses": 2})).await;

    let fresh = json!({"project_id": project, "project_name": "Holiday Photos",
                       "owner_display_name": OWNER_NAME, "usable": true});
    for _ in 0..3 {
        assert_eq!(preview(&app, &token).await, (StatusCode::OK, fresh.clone()), "no `reason` while usable");
    }
    assert_eq!(uses(&app, &owner, project, id).await, 0, "looking consumes no use");
    assert_eq!(accept(&app, &ana, &token).await.0, StatusCode::OK, "accepting works after looking");
    assert_eq!(preview(&app, &token).await, (StatusCode::OK, fresh.clone()), "one use of two left");
    assert_eq!(uses(&app, &owner, project, id).await, 1);
    assert_eq!(accept(&app, &bob, &token).await.0, StatusCode::OK);
    let used_up = json!({"project_id": project, "project_name": "Holiday Photos",
                         "owner_display_name": OWNER_NAME, "usable": false, "reason": "used_up"});
    assert_eq!(preview(&app, &token).await, (StatusCode::OK, used_up));
    assert_eq!(uses(&app, &owner, project, id).await, 2);

    let (id, revoked) = invite(&app, &owner, project, json!({})).await;
    assert_eq!(
        app.delete(&format!("/api/projects/{project}/invites/{id}"), &owner.token).await.0,
        StatusCode::NO_CONTENT
    );
    let (status, body) = preview(&app, &revoked).await;
    assert_eq!(
        (status, &body["usable"], &body["reason"]),
        (StatusCode::OK, &json!(false), &json!("revoked")),
        "{body}"
    );

    // The shortest expiry the API takes is a minute.
    let short =
        app.post(&format!("/api/projects/{project}/invites"), &owner.token, json!({"expires_in_seconds": 59})).await;
    assert_eq!(
        (short.0, short.1["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_expiry"))
    );
    let (_, minute) = invite(&app, &owner, project, json!({"expires_in_seconds": 60})).await;
    assert_eq!(preview(&app, &minute).await.1["usable"], true);
    let expired = expired_invite(&app, &owner, project).await;
    let (status, body) = preview(&app, &expired).await;
    assert_eq!(
        (status, &body["usable"], &body["reason"]),
        (StatusCode::OK, &json!(false), &json!("expired")),
        "{body}"
    );

    // An archived project's invites can no longer be used: `revoked`.
    let archived = app.create_project(&owner, "Old Stuff").await;
    let (_, old) = invite(&app, &owner, archived, json!({})).await;
    assert_eq!(app.delete(&format!("/api/projects/{archived}"), &owner.token).await.0, StatusCode::NO_CONTENT);
    let (status, body) = preview(&app, &old).await;
    assert_eq!(
        (status, &body["usable"], &body["reason"]),
        (StatusCode::OK, &json!(false), &json!("revoked")),
        "{body}"
    );

    // A wrong token reveals nothing: the same bare 404 for any shape of it.
    let near_miss = format!("{}x", &token[..token.len() - 1]);
    for wrong in [near_miss.as_str(), "fyi_nope", "not-a-token", "accept-me", &"fyi_a".repeat(40)] {
        let (status, body) = preview(&app, wrong).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{wrong}: {body}");
        assert_eq!(body, json!({"error": {"code": "invite_not_found", "message": "no invite has this token"}}));
    }
    assert_eq!(uses(&app, &owner, project, id).await, 0, "the revoked invite was never used");
}

#[tokio::test]
async fn join_pages_say_in_words_what_the_link_leads_to() {
    let app = TestApp::spawn().await;
    let owner = owner(&app).await;
    let project = app.create_project(&owner, "Plans <b>& \"drafts\"</b>").await;
    let escaped = "Plans &lt;b&gt;&amp; &quot;drafts&quot;&lt;/b&gt;";

    let (id, token) = invite(&app, &owner, project, json!({})).await;
    let (status, headers, html) = page(&app, &format!("/join/{token}")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_page("a usable invite", &headers, &html);
    assert!(html.contains(escaped) && !html.contains("<b>"), "the name is shown, escaped: {html}");
    assert!(html.contains(&format!("{OWNER_NAME} invited you to the project")), "{html}");
    assert!(has_button(&html, "Join"), "{html}");
    assert!(has_labelled_input(&html, "Email") && has_labelled_input(&html, "Password"), "{html}");
    assert!(!html.contains(&token[4..]), "the token is only in the address");
    assert_eq!(uses(&app, &owner, project, id).await, 0, "showing the page consumes no use");
    let member = app.signup("member").await;
    assert_eq!(accept(&app, &member, &token).await.0, StatusCode::OK);

    let (id, revoked) = invite(&app, &owner, project, json!({})).await;
    app.delete(&format!("/api/projects/{project}/invites/{id}"), &owner.token).await;
    let expired = expired_invite(&app, &owner, project).await;
    for (token, words) in [(&token, "It has been used up"), (&revoked, "It was revoked"), (&expired, "It has expired")]
    {
        let (status, headers, html) = page(&app, &format!("/join/{token}")).await;
        assert_eq!(status, StatusCode::OK, "{words}: {html}");
        assert_page(words, &headers, &html);
        assert!(html.contains("This invite link can no longer be used") && html.contains(words), "{words}: {html}");
        assert!(html.contains(escaped) && html.contains(OWNER_NAME), "{words}: {html}");
        assert!(!has_button(&html, "Join"), "{words}: nothing to join with");
        assert!(!html.contains(&token[4..]), "{words}: the token is only in the address");
    }

    for wrong in ["fyi_nope", "nothing-like-a-token"] {
        let (status, headers, html) = page(&app, &format!("/join/{wrong}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{html}");
        assert_page("an unknown token", &headers, &html);
        assert!(html.contains("This invite link is not valid"), "{html}");
        assert!(!html.contains("Plans") && !html.contains(OWNER_NAME), "nothing revealed: {html}");
    }
}

#[tokio::test]
async fn the_start_page_is_the_app_with_its_form_and_assets_cached_by_content() {
    let app = TestApp::spawn().await;
    let (status, headers, html) = page(&app, "/").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_page("/", &headers, &html);
    assert!(has_labelled_input(&html, "Email") && has_labelled_input(&html, "Password"), "{html}");
    assert!(has_button(&html, "Sign in") && has_button(&html, "Sign up"), "{html}");
    assert!(html.contains(r#"<form id="auth" class="card" method="post""#), "never a GET carrying the password");

    let assets: Vec<String> = html
        .split('"')
        .filter(|s| s.starts_with("/assets/"))
        .map(str::to_owned)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(assets.len(), 3, "a stylesheet, a module and an icon: {assets:?}");
    for url in &assets {
        let name = url.trim_start_matches("/assets/");
        let parts: Vec<&str> = name.split('.').collect();
        assert!(
            parts.len() == 3 && parts[1].len() == 16 && parts[1].bytes().all(|b| b.is_ascii_hexdigit()),
            "{url}: hashed name"
        );
        let expected = match parts[2] {
            "css" => "text/css; charset=utf-8",
            "js" => "text/javascript; charset=utf-8",
            "svg" => "image/svg+xml",
            other => panic!("{url}: unexpected kind {other}"),
        };
        let res = app.http.get(app.url(url)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{url}");
        assert_eq!(res.headers()[CONTENT_TYPE], expected, "{url}");
        assert_eq!(res.headers()[CACHE_CONTROL], "public, max-age=31536000, immutable", "{url}");
        let etag = res.headers()[ETAG].to_str().unwrap().to_owned();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "a strong ETag: {etag}");
        assert!(!res.bytes().await.unwrap().is_empty(), "{url}");

        let again = app.http.get(app.url(url)).header(IF_NONE_MATCH, &etag).send().await.unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{url}");
        assert_eq!(again.headers()[ETAG], etag.as_str());
        assert!(again.bytes().await.unwrap().is_empty());
        let changed = app.http.get(app.url(url)).header(IF_NONE_MATCH, "\"something-else\"").send().await.unwrap();
        assert_eq!(changed.status(), StatusCode::OK, "{url}");
    }
    let (status, _, html) = page(&app, "/assets/app.0000000000000000.css").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "an asset of another build: {html}");
    assert!(html.contains("Page not found"));
}

#[tokio::test]
async fn unknown_pages_get_the_apps_404_and_unknown_api_routes_json() {
    let app = TestApp::spawn().await;
    for path in ["/nope", "/no/such/page", "/apix", "/join/", "/p/unknown/", "/p/unknown/settings"] {
        let (status, headers, html) = page(&app, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {html}");
        assert_page(path, &headers, &html);
        assert!(html.contains("<h1>Page not found</h1>"), "{path}: {html}");
    }
    for path in ["/api", "/api/x", "/api/no/such/route"] {
        let (status, body) = app.call(Method::GET, path, None, None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{path}");
    }
}

/// A page as the visitor holding `cookie` (a session) sees it.
async fn page_as(app: &TestApp, path: &str, cookie: Option<&str>) -> (StatusCode, String) {
    let mut request = app.http.get(app.url(path));
    if let Some(cookie) = cookie {
        request = request.header(reqwest::header::COOKIE, cookie);
    }
    let res = request.send().await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    let html = res.text().await.unwrap();
    assert_page(path, &headers, &html);
    (status, html)
}

#[tokio::test]
async fn project_pages_are_for_their_members_and_settings_for_the_owner() {
    let app = TestApp::spawn().await;
    let owner = owner(&app).await;
    let member = app.signup_as("mo", Some("Mo")).await;
    let stranger = app.signup("stranger").await;
    let project = app.create_project(&owner, "Choir <Scores>").await;
    let (_, token) = invite(&app, &owner, project, json!({})).await;
    assert_eq!(accept(&app, &member, &token).await.0, StatusCode::OK);
    let [owner_cookie, member_cookie, stranger_cookie] = [&owner, &member, &stranger].map(|u| u.email.clone());
    let owner_cookie = crate::sessions::cookie_login(&app, &owner_cookie).await;
    let member_cookie = crate::sessions::cookie_login(&app, &member_cookie).await;
    let stranger_cookie = crate::sessions::cookie_login(&app, &stranger_cookie).await;
    let top = format!("/p/{project}/");
    let settings = format!("/p/{project}/settings");

    // Signed in, `/` lists the visitor's projects, each a link by its name (escaped).
    let (status, html) = page_as(&app, "/", Some(&member_cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(&format!(r#"<a class="name" href="{top}">Choir &lt;Scores&gt;</a>"#)), "{html}");
    assert!(html.contains("Signed in as <strong>Mo</strong>"), "{html}");
    let (_, html) = page_as(&app, "/", Some(&stranger_cookie)).await;
    assert!(html.contains("You are not in any project yet") && !html.contains("Choir"), "{html}");

    // The folder page: the owner and a member; a folder by its escaped segments.
    for (cookie, role) in [(&owner_cookie, "owner"), (&member_cookie, "member")] {
        let (status, html) = page_as(&app, &top, Some(cookie)).await;
        assert_eq!(status, StatusCode::OK, "{role}: {html}");
        assert!(html.contains(&format!(r#"data-folder="/" data-role="{role}""#)), "{role}: {html}");
        assert_eq!(html.contains("Project settings"), role == "owner", "{role}: {html}");
    }
    let (status, html) = page_as(&app, &format!("{top}Sheet%20music/%C3%9Cbung/"), Some(&member_cookie)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains(r#"data-folder="/Sheet music/Übung/""#), "{html}");
    assert!(html.contains(&format!(r#"href="{top}Sheet%20music/""#)), "the trail links each folder: {html}");
    for bad in ["a", "a//b/", "..%2F/", "%FF/"] {
        let (status, _) = page_as(&app, &format!("{top}{bad}"), Some(&member_cookie)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{bad}");
    }
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let res = no_redirects.get(app.url(&format!("/p/{project}"))).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(res.headers()[reqwest::header::LOCATION], top.as_str());

    // Settings: the owner's; a member is told so; a stranger learns nothing.
    let (status, html) = page_as(&app, &settings, Some(&owner_cookie)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Create invite link"), "{html}");
    let (status, html) = page_as(&app, &settings, Some(&member_cookie)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{html}");
    assert!(html.contains("Only the project's owner can see this page"), "{html}");
    for path in [&top, &settings] {
        let (status, html) = page_as(&app, path, Some(&stranger_cookie)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(!html.contains("Choir"), "{path} names the project to a stranger: {html}");
    }

    // Not signed in: the same sign-in page for a real project and a made-up one.
    let (status, real) = page_as(&app, &top, None).await;
    let (_, made_up) = page_as(&app, &format!("/p/{}/", Uuid::now_v7()), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(real.contains("Sign in to see this project") && !real.contains("Choir"), "{real}");
    assert_eq!(real, made_up);
    // A session that ended is no session: the page asks to sign in again.
    let res = app
        .http
        .post(app.url("/api/auth/logout"))
        .header(reqwest::header::COOKIE, &owner_cookie)
        .header(reqwest::header::ORIGIN, &app.address)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let (status, html) = page_as(&app, &settings, Some(&owner_cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Sign in to see this project"), "{html}");
}
