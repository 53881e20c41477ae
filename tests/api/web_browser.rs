//! The web app in a real, headless Chromium: what a person does on its
//! pages, found by role and accessible name, with screenshots of each
//! page at a phone's and a desktop's width in `target/screenshots/`.

use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::browser::{Browser, WIDTHS};
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
