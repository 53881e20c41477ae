//! The web app in a real, headless Chromium: what a person does on its
//! pages, found by role and accessible name, with screenshots of each
//! page at a phone's and a desktop's width in `target/screenshots/`.

use std::time::{Duration, Instant};

use fantoccini::key::Key;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

use crate::browser::{Browser, WIDTHS};
use crate::client_pull::write;
use crate::client_share::{noise, Person, Running, TempDir};
use crate::helpers::TestApp;
use crate::web::{invite, owner, OWNER_NAME};

#[tokio::test]
async fn browser_a_member_signs_up_and_joins_from_an_invite_link() {
    let app = TestApp::spawn().await;
    let owner = owner(&app).await;
    let project = app.create_project(&owner, "Holiday Photos").await;
    let (_, token) = invite(&app, &owner, project, json!({"max_uses": 1})).await;
    let mut browser = Browser::open(&app).await;

    browser.goto("/").await;
    browser.find_by_role("heading", "Sign in to Ferry").await;
    browser.screenshots("start").await;

    // On a phone, as most invite links are opened.
    browser.set_width(WIDTHS[0]).await;
    browser.goto(&format!("/join/{token}")).await;
    browser.find_by_role("heading", "Join “Holiday Photos”").await;
    browser.wait_for_text(&format!("{OWNER_NAME} invited you to the project Holiday Photos.")).await;
    browser.screenshots("join").await;

    let name = format!("mia-{}", Uuid::new_v4().simple());
    let email = format!("{name}@example.org");
    browser.fill_by_label("Email", &email).await;
    browser.fill_by_label("Password", "correct horse battery").await;
    browser.click("button", "Sign up").await;
    // Signed up, the same page again, signed in: only Join is left to do.
    browser.wait_for_text(&format!("You will join as {name} ({email}).")).await;
    browser.screenshots("join-signed-in").await;

    browser.click("button", "Join").await;
    browser.wait_for_path(&format!("/p/{project}/")).await;
    browser.screenshots("joined").await;

    // The account the page made is now in the project, as a member.
    let (status, login) = app
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(&json!({"email": email, "password": "correct horse battery"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let (status, projects) = app.get("/api/projects", login["token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{projects}");
    let joined: Vec<_> = projects["projects"].as_array().unwrap().iter().map(|p| (&p["id"], &p["role"])).collect();
    assert_eq!(joined, [(&json!(project), &json!("member"))], "{projects}");

    // Its one use taken, the link says so in words, with nothing to press.
    browser.goto(&format!("/join/{token}")).await;
    browser.find_by_role("heading", "This invite link can no longer be used").await;
    browser.wait_for_text("It has been used up").await;
    browser.screenshots("join-used-up").await;
    browser.close().await;
}

/// A TCP way to the server that carries what its clients send at most
/// `rate` bytes a second, all connections together (answers go back
/// unhindered): the owner's computer on a slow uplink, so a transfer can
/// be watched, or stopped, as it moves.
pub(crate) struct SlowUplink {
    pub(crate) url: String,
    task: tokio::task::JoinHandle<()>,
}

impl SlowUplink {
    pub(crate) async fn to(app: &TestApp, rate: f64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = app.address.trim_start_matches("http://").to_owned();
        // When the uplink is next free, all connections together: each
        // piece takes its turn (idle time is not saved up for a burst).
        let next = std::sync::Arc::new(std::sync::Mutex::new(Instant::now()));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (server, next) = (server.clone(), next.clone());
                tokio::spawn(async move {
                    let Ok(upstream) = TcpStream::connect(&server).await else { return };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_server, mut to_server) = upstream.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                    });
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match from_client.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let due = {
                            let mut next = next.lock().unwrap();
                            *next = (*next).max(Instant::now()) + Duration::from_secs_f64(n as f64 / rate);
                            *next
                        };
                        tokio::time::sleep_until(due.into()).await;
                        if to_server.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = to_server.shutdown().await;
                });
            }
        });
        Self { url, task }
    }
}

impl Drop for SlowUplink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The percent a "Downloading: N% · …" line shows, if the page has one.
fn percent_shown(text: &str) -> Option<u32> {
    let rest = &text[text.find("Downloading: ")? + "Downloading: ".len()..];
    rest[..rest.find('%')?].parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_a_member_browses_sees_new_files_live_and_downloads_the_exact_file() {
    let mut app = TestApp::spawn().await;
    // The owner's computer sends at 4 MB/s: 30 MB take several seconds.
    let uplink = SlowUplink::to(&app, 4e6).await;
    let owner = Person { config: TempDir::new("web-owner"), server: uplink.url.clone() };
    owner.signup("owner").await;
    let project = owner.json(&["project", "create", "Holiday"]).await["id"].as_str().unwrap().to_owned();
    let token = owner.json(&["invite", "create", &project]).await["token"].as_str().unwrap().to_owned();
    let tree = TempDir::new("web-share");
    let beach = noise(30 * 1000 * 1000 + 17, 7);
    write(tree.path(), "Photos 2026/beach “sunset”.bin", &beach);
    write(tree.path(), "notes.txt", b"bring towels");
    let mut agent = Running::share_with(&owner, &project, tree.path(), &["--no-direct"]);
    agent.wait_for("its first push", |v| v["event"] == "synced").await;

    // The member has an account already: they sign in on the invite's page.
    let member = app.signup_as("mia", Some("Mia")).await;
    let mut browser = Browser::open(&app).await;
    browser.goto(&format!("/join/{token}")).await;
    browser.fill_by_label("Email", &member.email).await;
    browser.fill_by_label("Password", "correct horse battery").await;
    browser.click("button", "Sign in").await;
    browser.wait_for_text("You will join as Mia").await;
    browser.click("button", "Join").await;
    browser.wait_for_path(&format!("/p/{project}/")).await;

    // The top folder: a folder and a file, each as a person reads them.
    browser.find_by_role("button", "Download notes.txt").await;
    browser.wait_for_text("12 B").await;
    browser.screenshots("project").await;
    browser.click("link", "Photos 2026").await;
    browser.wait_for_path(&format!("/p/{project}/Photos%202026/")).await;
    browser.find_by_role("button", "Download beach “sunset”.bin").await;
    browser.wait_for_text("30 MB").await;
    browser.find_by_role("link", "Holiday").await;

    // A file the owner adds appears without a reload.
    browser.eval("window.notReloaded = true; return null").await;
    write(tree.path(), "Photos 2026/new.txt", b"just taken");
    browser.find_by_role("button", "Download new.txt").await;
    browser.screenshots("folder").await;

    // The server restarts: the page reconnects and resumes after the last
    // seq it saw, so what changed meanwhile arrives, once.
    app.restart().await;
    std::fs::remove_file(tree.path().join("Photos 2026/new.txt")).unwrap();
    write(tree.path(), "Photos 2026/after the restart.txt", b"still here");
    browser.find_by_role("button", "Download after the restart.txt").await;
    browser
        .wait_until("new.txt to disappear", || async { (!browser.text().await.contains("new.txt")).then_some(()) })
        .await;
    // A file the owner changes shows its new size.
    write(tree.path(), "Photos 2026/after the restart.txt", b"still here, and longer");
    browser.wait_for_text("22 B").await;
    assert_eq!(browser.eval("return window.notReloaded === true").await, true, "the page was reloaded");

    // Download: the transfer's state moves on the page while the owner's
    // computer sends, and the browser saves the exact file.
    browser.click("button", "Download beach “sunset”.bin").await;
    let moving = browser
        .wait_until("the download's progress, between 0% and 100%", || async {
            percent_shown(&browser.text().await).filter(|p| (1..100).contains(p))
        })
        .await;
    browser.screenshots("downloading").await;
    browser.wait_for_text("Done: 30 MB, verified, through Ferry.").await;
    let saved = browser.downloaded("beach “sunset”.bin", Duration::from_secs(120)).await;
    assert_eq!(
        blake3::hash(&saved),
        blake3::hash(&beach),
        "the saved file is not the owner's (progress was {moving}%)"
    );
    browser.screenshots("downloaded").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_a_download_that_failed_while_the_owner_was_offline_is_retried_from_the_page() {
    // A browser download waits 2 s for the owner's computer, then fails.
    let app = TestApp::spawn_with(|s| s.relay.content_wait_seconds = 2).await;
    let owner = Person::new(&app, "web-offline-owner");
    owner.signup("owner").await;
    let project = owner.json(&["project", "create", "Offline"]).await["id"].as_str().unwrap().to_owned();
    let tree = TempDir::new("web-offline");
    let report = noise(3 * 1000 * 1000, 11);
    write(tree.path(), "report.pdf", &report);
    // Shared once, then the owner's computer goes away.
    owner.json(&["share", &project, tree.path().to_str().unwrap(), "--once"]).await;
    let member = app.signup_as("max", Some("Max")).await;
    let token = owner.json(&["invite", "create", &project]).await["token"].as_str().unwrap().to_owned();
    let (status, body) = app.post("/api/invites/accept", &member.token, json!({"token": token})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let mut browser = Browser::open(&app).await;
    browser.goto(&format!("/p/{project}/")).await;
    browser.find_by_role("heading", "Sign in to see this project").await;
    browser.fill_by_label("Email", &member.email).await;
    browser.fill_by_label("Password", "correct horse battery").await;
    browser.click("button", "Sign in").await;
    browser.click("button", "Download report.pdf").await;
    browser.wait_for_text("which is offline").await;
    browser.screenshots("waiting-offline").await;
    browser.wait_for_text("Failed: the owner’s computer is offline. Choose Retry to ask again.").await;
    browser.screenshots("failed").await;

    // The owner's computer is back; Retry asks again and the browser saves it.
    let mut agent = Running::share_with(&owner, &project, tree.path(), &["--no-direct"]);
    agent.wait_for("its first push", |v| v["event"] == "synced").await;
    // By keyboard alone, as some people use it.
    browser.tab_to("button", "Retry").await;
    browser.press(Key::Enter).await;
    browser.wait_for_text("Done: 3 MB, verified, through Ferry.").await;
    let saved = browser.downloaded("report.pdf", Duration::from_secs(60)).await;
    assert_eq!(blake3::hash(&saved), blake3::hash(&report), "the saved file is not the owner's");
    let (status, transfers) = app.get(&format!("/api/projects/{project}/transfers"), &member.token).await;
    assert_eq!(status, StatusCode::OK, "{transfers}");
    let only = &transfers["transfers"][0];
    assert_eq!((only["status"].as_str(), only["attempts"].as_i64()), (Some("completed"), Some(2)), "{transfers}");
    browser.close().await;
}

#[tokio::test]
async fn browser_the_owner_creates_copies_and_revokes_an_invite_and_a_stranger_sees_no_project() {
    let app = TestApp::spawn().await;
    let owner = owner(&app).await;
    let project = app.create_project(&owner, "Band Rehearsals").await;
    let member = app.signup_as("pia", Some("Pia")).await;
    let (_, token) = invite(&app, &owner, project, json!({})).await;
    let (status, body) = app.post("/api/invites/accept", &member.token, json!({"token": token})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A folder longer than a page, and a member's download waiting for the
    // owner's computer.
    let source = app.source_device(&owner, project).await;
    let takes: Vec<_> = (0..105)
        .map(|i| json!({"op": "upsert", "path": format!("/Takes/take-{i:03}.wav"), "size": 1000 + i, "hash": blake3::hash(&[i as u8]).to_hex().to_string()}))
        .collect();
    let (status, body) = app.push(&source, project, json!(takes)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .post(
            &format!("/api/projects/{project}/files/download"),
            &member.token,
            json!({"file_path": "/Takes/take-007.wav"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let mut browser = Browser::open(&app).await;
    sign_in(&browser, &owner.email).await;
    browser.screenshots("projects").await;
    browser.click("link", "Band Rehearsals").await;
    browser.click("link", "Takes").await;
    browser.wait_for_text("take-099.wav").await;
    assert!(!browser.text().await.contains("take-100.wav"), "the first page holds 100 entries");
    browser.click("button", "Show more files").await;
    browser.wait_for_text("take-104.wav").await;
    assert_eq!(browser.text().await.matches(".wav").count(), 105, "every take once");
    browser.click("link", "Band Rehearsals").await;
    browser.click("link", "Project settings").await;
    browser.wait_for_path(&format!("/p/{project}/settings")).await;
    browser.wait_for_text("studio").await;
    browser.wait_for_text("Shares the files · Offline").await;
    // Every transfer, whoever asked.
    browser.wait_for_text("Asked by Pia").await;
    browser.wait_for_text("Waiting for the owner’s computer “studio”, which is offline.").await;
    browser.click("button", "Create invite link").await;
    let field = browser.find_by_role("textbox", "New invite link").await;
    let link = browser
        .wait_until("the new invite link", || async {
            field.prop("value").await.ok().flatten().filter(|v| v.contains("/join/"))
        })
        .await;
    browser.click("button", "Copy").await;
    browser.wait_for_text("Invite link copied.").await;
    browser.screenshots("settings").await;

    // The link shown works until the owner revokes it.
    let path = link.strip_prefix(&app.address).unwrap_or_else(|| panic!("{link} is not on {}", app.address));
    let preview_path = path.replace("/join/", "/api/invites/");
    let (status, preview) = app.call(Method::GET, &preview_path, None, None).await;
    assert_eq!((status, preview["usable"].as_bool()), (StatusCode::OK, Some(true)), "{preview}");
    let active = browser.text().await.matches("Invite link · Active").count();
    assert_eq!(active, 1, "one invite is still usable (the other was used)");
    let revoke = browser.find_by_role_starting("button", "Revoke the invite link that expires").await;
    revoke.click().await.unwrap();
    browser.wait_for_text("Invite link revoked").await;
    // The revoked link is not left on the page to be copied and sent.
    browser
        .wait_until("the revoked link to leave the page", || async {
            (!browser.text().await.contains("Copy it now")).then_some(())
        })
        .await;
    let (_, preview) = app.call(Method::GET, &preview_path, None, None).await;
    assert_eq!(preview["reason"].as_str(), Some("revoked"), "{preview}");

    // Removing a member.
    browser.click("button", "Remove Pia").await;
    browser.wait_for_text("Pia was removed from the project.").await;
    let (status, _) = app.get(&format!("/api/projects/{project}"), &member.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the removed member still sees the project");
    browser.screenshots("settings-after").await;

    // A stranger, signed in, sees none of it.
    browser.click("button", "Sign out").await;
    browser.find_by_role("heading", "Sign in to Ferry").await;
    let stranger = app.signup("stranger").await;
    sign_in(&browser, &stranger.email).await;
    browser.wait_for_text("You are not in any project yet.").await;
    for page in [format!("/p/{project}/"), format!("/p/{project}/settings")] {
        browser.goto(&page).await;
        browser.find_by_role("heading", "Page not found").await;
        assert!(!browser.text().await.contains("Band Rehearsals"), "{page} names the project");
    }
    browser.close().await;
}

/// Signs in on the start page, and waits for the projects list.
async fn sign_in(browser: &Browser, email: &str) {
    browser.goto("/").await;
    browser.fill_by_label("Email", email).await;
    browser.fill_by_label("Password", "correct horse battery").await;
    browser.click("button", "Sign in").await;
    browser.find_by_role("heading", "Your projects").await;
}
