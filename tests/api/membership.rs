use chrono::{Duration, Utc};
use ferry::protocol::{Actor, EventType};
use ferry::store::{self, EventMeta, NewEvent};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser};

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_else(|| panic!("not an error body: {body}"))
}

async fn invite(app: &TestApp, owner: &TestUser, project: Uuid, body: Value) -> Value {
    let (status, invite) = app.post(&format!("/api/projects/{project}/invites"), &owner.token, body).await;
    assert_eq!(status, StatusCode::CREATED, "{invite}");
    invite
}

async fn accept(app: &TestApp, user: &TestUser, token: &str) -> (StatusCode, Value) {
    app.post("/api/invites/accept", &user.token, json!({"token": token})).await
}

/// An invite whose time ran out, recorded as the command would have: the
/// API's shortest expiry is a minute, too long for a test to wait.
pub(crate) async fn expired_invite(app: &TestApp, owner: &TestUser, project: Uuid) -> String {
    let token = format!("fyi_expired-{}", Uuid::new_v4().simple());
    let mut client = app.pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let meta = EventMeta { actor: Actor { user_id: Some(owner.id), device_id: None }, idempotency_key: None };
    let event = NewEvent::new(
        EventType::InviteCreated,
        json!({"invite_id": Uuid::now_v7(), "token_hash": hex::encode(blake3::hash(token.as_bytes()).as_bytes()),
               "expires_at": Utc::now() - Duration::seconds(1), "max_uses": 1}),
    );
    store::append(&tx, project, &meta, &[event]).await.unwrap();
    tx.commit().await.unwrap();
    token
}

fn types(log: &[store::RecordedEvent]) -> Vec<&str> {
    log.iter().map(|e| e.event_type.as_str()).collect()
}

#[tokio::test]
async fn invites_are_created_listed_accepted_and_revoked() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner").await;
    let ana = app.signup("ana").await;
    let bob = app.signup("bob").await;
    let project = app.create_project(&owner, "Shared").await;

    let before = Utc::now();
    let created = invite(&app, &owner, project, json!({})).await;
    let token = created["token"].as_str().unwrap().to_owned();
    let expires: chrono::DateTime<Utc> = created["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(
        expires - before >= Duration::days(7) - Duration::seconds(5)
            && expires - before <= Duration::days(7) + Duration::seconds(60)
    );
    assert_eq!(created["max_uses"], 1);

    // Listed without its token; stored only as a hash.
    let (status, listed) = app.get(&format!("/api/projects/{project}/invites"), &owner.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["invites"].as_array().unwrap().len(), 1);
    assert_eq!(listed["invites"][0]["uses"], 0);
    assert_eq!(listed["invites"][0]["revoked"], false);
    assert!(!listed.to_string().contains(&token));
    let log = app.log(project).await;
    assert!(!serde_json::to_string(&log.iter().map(|e| &e.data).collect::<Vec<_>>()).unwrap().contains(&token));
    assert_eq!(log[1].data["token_hash"], hex::encode(blake3::hash(token.as_bytes()).as_bytes()));

    let (status, body) = accept(&app, &ana, &token).await;
    assert_eq!((status, body.clone()), (StatusCode::OK, json!({"project_id": project, "role": "member"})));
    let (status, body) = accept(&app, &ana, &token).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "already_member"));
    let (status, body) = accept(&app, &bob, &token).await;
    assert_eq!((status, code(&body)), (StatusCode::GONE, "invite_used_up"));
    let (status, body) = accept(&app, &bob, "fyi_unknown").await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "invite_not_found"));
    let (status, _) = accept(&app, &owner, &token).await;
    assert_eq!(status, StatusCode::CONFLICT, "the owner is already in");

    let (_, members) = app.get(&format!("/api/projects/{project}/members"), &ana.token).await;
    let members = members["members"].as_array().unwrap().clone();
    assert_eq!(members.len(), 2);
    assert_eq!(
        (members[0]["user_id"].as_str(), members[0]["role"].as_str()),
        (Some(owner.id.to_string().as_str()), Some("owner"))
    );
    assert_eq!(
        (members[1]["user_id"].as_str(), members[1]["role"].as_str()),
        (Some(ana.id.to_string().as_str()), Some("member"))
    );
    assert!(members[1]["display_name"].as_str().unwrap().starts_with("ana-"));

    // Revoked: 410, and revoking twice changes nothing.
    let open = invite(&app, &owner, project, json!({"max_uses": 5, "expires_in_seconds": 3600})).await;
    let path = format!("/api/projects/{project}/invites/{}", open["id"].as_str().unwrap());
    assert_eq!(app.delete(&path, &owner.token).await.0, StatusCode::NO_CONTENT);
    assert_eq!(app.delete(&path, &owner.token).await.0, StatusCode::NO_CONTENT);
    let (status, body) = accept(&app, &bob, open["token"].as_str().unwrap()).await;
    assert_eq!((status, code(&body)), (StatusCode::GONE, "invite_revoked"));
    assert_eq!(
        app.delete(&format!("/api/projects/{project}/invites/{}", Uuid::now_v7()), &owner.token).await.0,
        StatusCode::NOT_FOUND
    );

    assert_eq!(
        types(&app.log(project).await),
        ["project_created", "invite_created", "member_joined", "invite_created", "invite_revoked"]
    );
    let (_, listed) = app.get(&format!("/api/projects/{project}/invites"), &owner.token).await;
    assert_eq!(
        (listed["invites"][0]["uses"].as_i64(), listed["invites"][1]["revoked"].as_bool()),
        (Some(1), Some(true))
    );
}

#[tokio::test]
async fn an_expired_invite_is_gone() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner").await;
    let late = app.signup("late").await;
    let project = app.create_project(&owner, "Old").await;
    let token = expired_invite(&app, &owner, project).await;
    let (status, body) = accept(&app, &late, &token).await;
    assert_eq!((status, code(&body)), (StatusCode::GONE, "invite_expired"));
}

#[tokio::test]
async fn racing_for_the_last_uses_of_an_invite_lets_exactly_that_many_in() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner").await;
    let project = app.create_project(&owner, "Race").await;
    let mut users = Vec::new();
    for i in 0..8 {
        users.push(app.signup(&format!("racer{i}")).await);
    }
    for max_uses in [1, 3] {
        let invite = invite(&app, &owner, project, json!({"max_uses": max_uses})).await;
        let token = invite["token"].as_str().unwrap();
        let racers: Vec<_> = users.iter().filter(|u| !u.email.starts_with("done")).collect();
        let answers = futures_util::future::join_all(racers.iter().map(|u| accept(&app, u, token))).await;
        let joined = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
        let gone = answers.iter().filter(|(s, b)| *s == StatusCode::GONE && code(b) == "invite_used_up").count();
        assert_eq!((joined, gone), (max_uses, answers.len() - max_uses), "{answers:?}");
        for (user, (status, _)) in racers.iter().zip(&answers) {
            if *status == StatusCode::OK {
                let (s, _) = app.get(&format!("/api/projects/{project}"), &user.token).await;
                assert_eq!(s, StatusCode::OK);
            }
        }
        // The ones who got in do not race again.
        let winners: Vec<String> = racers
            .iter()
            .zip(&answers)
            .filter(|(_, (s, _))| *s == StatusCode::OK)
            .map(|(u, _)| u.email.clone())
            .collect();
        for user in users.iter_mut().filter(|u| winners.contains(&u.email)) {
            user.email = format!("done-{}", user.email);
        }
    }
    let (_, members) = app.get(&format!("/api/projects/{project}/members"), &owner.token).await;
    assert_eq!(members["members"].as_array().unwrap().len(), 1 + 1 + 3);
}

#[tokio::test]
async fn members_are_removed_or_leave_and_lose_access_at_once() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner").await;
    let ana = app.signup("ana").await;
    let bob = app.signup("bob").await;
    let project = app.create_project(&owner, "Team").await;
    app.join(&owner, project, &ana).await;
    app.join(&owner, project, &bob).await;
    let (ana_device, ana_device_token) = app.register_device(&ana, "ana-laptop").await;
    let (status, _) = app
        .call(Method::PUT, &format!("/api/projects/{project}/devices/{ana_device}"), Some(&ana.token), Some(&json!({})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let member = |u: &TestUser| format!("/api/projects/{project}/members/{}", u.id);

    // A member may not remove another; nobody removes the owner.
    let (status, body) = app.delete(&member(&bob), &ana.token).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "owner_only"));
    let (status, body) = app.delete(&member(&owner), &owner.token).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "owner_cannot_be_removed"));
    let (status, _) = app.delete(&member(&owner), &ana.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let stranger = app.signup("stranger").await;
    assert_eq!(app.delete(&member(&stranger), &owner.token).await.0, StatusCode::NOT_FOUND);

    // The owner removes Ana: her access and her device's end with the command.
    assert_eq!(app.delete(&member(&ana), &owner.token).await.0, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&format!("/api/projects/{project}"), &ana.token).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.get(&format!("/api/projects/{project}"), &ana_device_token).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.get(&format!("/api/projects/{project}/members"), &ana.token).await.0, StatusCode::NOT_FOUND);
    assert!(app.get("/api/projects", &ana.token).await.1["projects"].as_array().unwrap().is_empty());
    let (_, devices) = app.get(&format!("/api/projects/{project}/devices"), &owner.token).await;
    assert!(devices["devices"].as_array().unwrap().is_empty(), "{devices}");

    // Bob leaves on his own.
    assert_eq!(app.delete(&member(&bob), &bob.token).await.0, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&format!("/api/projects/{project}"), &bob.token).await.0, StatusCode::NOT_FOUND);

    let log = app.log(project).await;
    let removals: Vec<(&str, &Value)> = log
        .iter()
        .filter(|e| matches!(e.event_type.as_str(), "member_removed" | "device_detached"))
        .map(|e| (e.event_type.as_str(), &e.data))
        .collect();
    assert_eq!(
        removals,
        vec![
            ("member_removed", &json!({"user_id": ana.id, "reason": "removed"})),
            ("device_detached", &json!({"device_id": ana_device, "user_id": ana.id, "reason": "member_removed"})),
            ("member_removed", &json!({"user_id": bob.id, "reason": "left"})),
        ]
    );
    assert_eq!(log.iter().find(|e| e.event_type == "member_removed").unwrap().actor.user_id, Some(owner.id));
    let (_, members) = app.get(&format!("/api/projects/{project}/members"), &owner.token).await;
    assert_eq!(members["members"].as_array().unwrap().len(), 1);

    // Removed, Ana can come back with a new invite.
    app.join(&owner, project, &ana).await;
    assert_eq!(app.get(&format!("/api/projects/{project}"), &ana.token).await.1["role"], "member");
}

#[tokio::test]
async fn devices_are_attached_as_sources_and_targets_by_their_own_users() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner").await;
    let ana = app.signup("ana").await;
    let project = app.create_project(&owner, "Devices").await;
    app.join(&owner, project, &ana).await;
    let (studio, studio_token) = app.register_device(&owner, "studio").await;
    let (laptop, _) = app.register_device(&ana, "laptop").await;
    let app = &app;
    let put = |device: Uuid, token: &str| {
        let path = format!("/api/projects/{project}/devices/{device}");
        let token = token.to_owned();
        async move { app.call(Method::PUT, &path, Some(&token), Some(&json!({}))).await }
    };

    let (status, body) = put(studio, &studio_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"device_id": studio, "project_id": project, "user_id": owner.id, "role": "source", "online": false})
    );
    let (status, body) = put(laptop, &ana.token).await;
    assert_eq!((status, body["role"].as_str()), (StatusCode::OK, Some("target")));

    // Nobody attaches someone else's device; unknown devices are not found.
    let (status, body) = put(laptop, &owner.token).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "not_your_device"));
    assert_eq!(put(studio, &ana.token).await.0, StatusCode::FORBIDDEN);
    assert_eq!(put(Uuid::now_v7(), &owner.token).await.0, StatusCode::NOT_FOUND);

    // Attaching again changes nothing.
    let events = app.log(project).await.len();
    assert_eq!(put(studio, &owner.token).await.0, StatusCode::OK);
    assert_eq!(app.log(project).await.len(), events);

    let (status, listed) = app.get(&format!("/api/projects/{project}/devices"), &ana.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        listed["devices"],
        json!([
            {"device_id": studio, "user_id": owner.id, "name": "studio", "role": "source", "online": false, "last_seen_at": null},
            {"device_id": laptop, "user_id": ana.id, "name": "laptop", "role": "target", "online": false, "last_seen_at": null},
        ])
    );

    // Detaching: a member not someone else's; the owner any; unknown → 404.
    let detach = |device: Uuid| format!("/api/projects/{project}/devices/{device}");
    let (status, body) = app.delete(&detach(studio), &ana.token).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "not_your_device"));
    assert_eq!(app.delete(&detach(laptop), &owner.token).await.0, StatusCode::NO_CONTENT);
    assert_eq!(app.delete(&detach(laptop), &owner.token).await.0, StatusCode::NOT_FOUND);

    // Deleting a device from the account detaches it everywhere, in the log.
    assert_eq!(app.delete(&format!("/api/devices/{studio}"), &owner.token).await.0, StatusCode::NO_CONTENT);
    let (_, listed) = app.get(&format!("/api/projects/{project}/devices"), &owner.token).await;
    assert!(listed["devices"].as_array().unwrap().is_empty(), "{listed}");
    let last = app.log(project).await.pop().unwrap();
    assert_eq!((last.event_type.as_str(), &last.data["reason"]), ("device_detached", &json!("device_deleted")));
}

#[tokio::test]
async fn bad_membership_input_is_refused_and_appends_nothing() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner").await;
    let project = app.create_project(&owner, "Strict").await;
    let invites = format!("/api/projects/{project}/invites");
    for (body, expected) in [
        (json!({"expires_in_seconds": -5}), "invalid_expiry"),
        (json!({"expires_in_seconds": 0}), "invalid_expiry"),
        (json!({"expires_in_seconds": 1_000_000_000_000_i64}), "invalid_expiry"),
        (json!({"max_uses": 0}), "invalid_max_uses"),
        (json!({"max_uses": -1}), "invalid_max_uses"),
        (json!({"max_uses": 100_000}), "invalid_max_uses"),
    ] {
        let (status, answer) = app.post(&invites, &owner.token, body.clone()).await;
        assert_eq!((status, code(&answer)), (StatusCode::UNPROCESSABLE_ENTITY, expected), "{body}");
    }
    let (status, answer) = app.post(&invites, &owner.token, json!({"max_uses": "two"})).await;
    assert_eq!((status, code(&answer)), (StatusCode::BAD_REQUEST, "invalid_body"));
    let send_raw = |body: String| app.http.post(app.url(&invites)).bearer_auth(&owner.token).body(body).send();
    let res = send_raw("{not json".into()).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "malformed_json");
    let res = send_raw(format!("{{\"pad\": \"{}\"}}", "x".repeat(1 << 20))).await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "payload_too_large");

    for path in [
        "/api/projects/not-a-uuid/invites".to_owned(),
        format!("/api/projects/{project}/invites/not-a-uuid"),
        format!("/api/projects/{project}/members/12"),
        format!("/api/projects/{project}/devices/%20"),
    ] {
        let (status, body) = app.call(Method::DELETE, &path, Some(&owner.token), None).await;
        assert!(
            matches!(status, StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED),
            "{path}: {status}"
        );
        assert!(body["error"]["code"].is_string(), "{path}: {body}");
    }
    let (status, body) = app.post("/api/invites/accept", &owner.token, json!({"token": 12})).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_body"));
    assert_eq!(app.log(project).await.len(), 1, "nothing appended");
}

#[tokio::test]
async fn secrets_are_never_kept_for_idempotent_replays() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner").await;
    let project = app.create_project(&owner, "Secrets").await;
    let send = |path: String, body: Value| {
        let key = if path.contains("invites") { "invite-once" } else { "device-once" };
        app.http.post(app.url(&path)).bearer_auth(&owner.token).header("Idempotency-Key", key).json(&body).send()
    };
    let invites = format!("/api/projects/{project}/invites");
    let first = send(invites.clone(), json!({})).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let token = first.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let again = send(invites.clone(), json!({})).await.unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(again.json::<Value>().await.unwrap()["error"]["code"], "already_applied");
    assert_eq!(app.get(&invites, &owner.token).await.1["invites"].as_array().unwrap().len(), 1, "one invite");

    let device = send("/api/devices".into(), json!({"name": "laptop"})).await.unwrap();
    assert_eq!(device.status(), StatusCode::CREATED);
    let device_token = device.json::<Value>().await.unwrap()["device_token"].as_str().unwrap().to_owned();
    assert_eq!(send("/api/devices".into(), json!({"name": "laptop"})).await.unwrap().status(), StatusCode::CONFLICT);
    assert_eq!(app.get("/api/devices", &owner.token).await.1["devices"].as_array().unwrap().len(), 1, "one device");

    let kept: String = app
        .pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT coalesce(string_agg(response::text, ' '), '') FROM idempotency_keys", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!kept.contains(&token) && !kept.contains(&device_token), "{kept}");
}
