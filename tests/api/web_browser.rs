//! The web app in a real, headless Chromium: what a person does on its
//! pages, found by role and accessible name, with screenshots of each
//! page at a phone's and a desktop's width in `target/screenshots/`.

use std::time::{Duration, Instant};

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

/// A TCP way to the server that carries what the client sends at most
/// `rate` bytes a second (answers go back unhindered): the owner's
/// computer on a slow uplink, so a download can be watched as it moves.
struct SlowUplink {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl SlowUplink {
    async fn to(app: &TestApp, rate: f64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = app.address.trim_start_matches("http://").to_owned();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = server.clone();
                tokio::spawn(async move {
                    let Ok(upstream) = TcpStream::connect(&server).await else { return };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_server, mut to_server) = upstream.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                    });
                    let started = Instant::now();
                    let (mut sent, mut buf) = (0u64, vec![0u8; 16 * 1024]);
                    loop {
                        let n = match from_client.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if to_server.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        sent += n as u64;
                        tokio::time::sleep_until((started + Duration::from_secs_f64(sent as f64 / rate)).into()).await;
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
    let app = TestApp::spawn().await;
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
    assert_eq!(browser.eval("return window.notReloaded === true").await, true, "the page was reloaded");
    browser.screenshots("folder").await;

    // Download: the transfer's state moves on the page while the owner's
    // computer sends, and the browser saves the exact file.
    browser.click("button", "Download beach “sunset”.bin").await;
    let moving = browser
        .wait_until("the download's progress, between 0% and 100%", || async {
            percent_shown(&browser.text().await).filter(|p| (1..100).contains(p))
        })
        .await;
    browser.screenshots("downloading").await;
    browser.wait_for_text("Done: 30 MB, verified.").await;
    let saved = browser.downloaded("beach “sunset”.bin", Duration::from_secs(120)).await;
    assert_eq!(
        blake3::hash(&saved),
        blake3::hash(&beach),
        "the saved file is not the owner's (progress was {moving}%)"
    );
    browser.screenshots("downloaded").await;
    browser.close().await;
}
