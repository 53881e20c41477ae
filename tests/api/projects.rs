use ferry::protocol::{Actor, EventType};
use ferry::store::{self, EventMeta, NewEvent};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser};

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_else(|| panic!("not an error body: {body}"))
}

/// Joins `user` to a project through the log, as the membership commands will.
async fn add_member(app: &TestApp, project_id: Uuid, user: &TestUser) {
    let mut client = app.pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let meta = EventMeta { actor: Actor { user_id: Some(user.id), device_id: None }, idempotency_key: None };
    let event = NewEvent::new(EventType::MemberJoined, json!({"user_id": user.id}));
    store::append(&tx, project_id, &meta, &[event]).await.unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn create_list_get_through_the_log() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner").await;
    let (status, created) = app.post("/api/projects", &owner.token, json!({"name": "  Holiday photos "})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["name"], "Holiday photos");
    assert_eq!(created["owner_id"], owner.id.to_string());
    assert_eq!(created["role"], "owner");
    assert_eq!(created["head_seq"], 1);
    let id: Uuid = created["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(id.get_version_num(), 7);

    let log = app.log(id).await;
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].seq, log[0].event_type.as_str()), (1, "project_created"));
    assert_eq!(log[0].data, json!({"name": "Holiday photos", "owner_id": owner.id}));
    assert_eq!(log[0].actor.user_id, Some(owner.id));

    let other = app.create_project(&owner, "Second").await;
    let (status, list) = app.get("/api/projects", &owner.token).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list["projects"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![other.to_string(), id.to_string()], "newest first");
    assert_eq!(
        list["projects"][1],
        json!({
            "id": id, "name": "Holiday photos", "owner_id": owner.id, "role": "owner",
            "head_seq": 1, "created_at": created["created_at"],
        })
    );

    let (status, one) = app.get(&format!("/api/projects/{id}"), &owner.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["member_count"], 1);
    assert_eq!(one["created_at"], created["created_at"]);

    // A member sees it with their role.
    let member = app.signup("member").await;
    add_member(&app, id, &member).await;
    let (_, seen) = app.get(&format!("/api/projects/{id}"), &member.token).await;
    assert_eq!(
        (seen["role"].as_str(), seen["member_count"].as_i64(), seen["head_seq"].as_i64()),
        (Some("member"), Some(2), Some(2))
    );
    assert_eq!(app.get("/api/projects", &member.token).await.1["projects"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn strangers_get_404_members_403_anonymous_401() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner").await;
    let member = app.signup("member").await;
    let stranger = app.signup("stranger").await;
    let id = app.create_project(&owner, "Private").await;
    add_member(&app, id, &member).await;
    let path = format!("/api/projects/{id}");
    let rename = json!({"name": "Renamed"});

    let cases: Vec<(Method, Option<&TestUser>, Option<&Value>, StatusCode)> = vec![
        (Method::GET, None, None, StatusCode::UNAUTHORIZED),
        (Method::PATCH, None, Some(&rename), StatusCode::UNAUTHORIZED),
        (Method::DELETE, None, None, StatusCode::UNAUTHORIZED),
        (Method::GET, Some(&stranger), None, StatusCode::NOT_FOUND),
        (Method::PATCH, Some(&stranger), Some(&rename), StatusCode::NOT_FOUND),
        (Method::DELETE, Some(&stranger), None, StatusCode::NOT_FOUND),
        (Method::PATCH, Some(&member), Some(&rename), StatusCode::FORBIDDEN),
        (Method::DELETE, Some(&member), None, StatusCode::FORBIDDEN),
    ];
    for (method, user, body, expected) in cases {
        let (status, answer) = app.call(method.clone(), &path, user.map(|u| u.token.as_str()), body).await;
        assert_eq!(status, expected, "{method} as {:?}: {answer}", user.map(|u| &u.email));
        assert!(answer["error"]["code"].is_string());
    }
    assert!(app.get("/api/projects", &stranger.token).await.1["projects"].as_array().unwrap().is_empty());
    assert_eq!(app.log(id).await.len(), 2, "refusals append nothing");
    assert_eq!(
        app.call(Method::POST, "/api/projects", None, Some(&json!({"name": "x"}))).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.call(Method::GET, "/api/projects", None, None).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_project_input_is_refused_and_appends_nothing() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner").await;
    for (body, status, expected) in [
        (json!({"name": ""}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_name"),
        (json!({"name": "x".repeat(201)}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_name"),
        (json!({"name": 7}), StatusCode::BAD_REQUEST, "invalid_body"),
        (json!({}), StatusCode::BAD_REQUEST, "invalid_body"),
    ] {
        let (got, answer) = app.post("/api/projects", &owner.token, body.clone()).await;
        assert_eq!((got, code(&answer)), (status, expected), "{body}");
    }
    let (status, body) = app.get("/api/projects/not-a-uuid", &owner.token).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_path"));
    assert_eq!(app.get(&format!("/api/projects/{}", Uuid::now_v7()), &owner.token).await.0, StatusCode::NOT_FOUND);

    let id = app.create_project(&owner, "Kept").await;
    let (status, _) =
        app.call(Method::PATCH, &format!("/api/projects/{id}"), Some(&owner.token), Some(&json!({"name": " "}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let events: i64 = app.pool.get().await.unwrap().query_one("SELECT count(*) FROM events", &[]).await.unwrap().get(0);
    assert_eq!(events, 1, "only the one project_created");
}

/// A rename sends its checks and its append together (one round trip); a
/// refused one must leave no trace: not in the log, the head, the name, nor
/// the answer (which stays the refusal, whatever the append did first).
#[tokio::test]
async fn a_refused_rename_appends_nothing_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner").await;
    let member = app.signup("member").await;
    let id = app.create_project(&owner, "Kept").await;
    add_member(&app, id, &member).await;
    let path = format!("/api/projects/{id}");
    let rename = json!({"name": "Taken over"});
    let head = || async {
        let row = app.pool.get().await.unwrap();
        let head: i64 =
            row.query_one("SELECT head_seq FROM project_heads WHERE project_id = $1", &[&id]).await.unwrap().get(0);
        head
    };
    let before = head().await;

    let (status, answer) = app.call(Method::PATCH, &path, Some(&member.token), Some(&rename)).await;
    assert_eq!((status, code(&answer)), (StatusCode::FORBIDDEN, "owner_only"));
    let unknown = format!("/api/projects/{}", Uuid::now_v7());
    let (status, answer) = app.call(Method::PATCH, &unknown, Some(&owner.token), Some(&rename)).await;
    assert_eq!((status, code(&answer)), (StatusCode::NOT_FOUND, "not_found"));
    assert_eq!(head().await, before);
    assert_eq!(app.log(id).await.len() as i64, before);
    assert_eq!(app.get(&path, &owner.token).await.1["name"], "Kept");

    // Archived: not found, and still nothing appended.
    assert_eq!(app.delete(&path, &owner.token).await.0, StatusCode::NO_CONTENT);
    let archived = head().await;
    let (status, answer) = app.call(Method::PATCH, &path, Some(&owner.token), Some(&rename)).await;
    assert_eq!((status, code(&answer)), (StatusCode::NOT_FOUND, "not_found"));
    assert_eq!(head().await, archived);
    assert_eq!(app.table("projects").await[0]["name"], "Kept");

    // And an allowed one still answers the renamed project at its new head.
    let id = app.create_project(&owner, "Next").await;
    let (status, renamed) =
        app.call(Method::PATCH, &format!("/api/projects/{id}"), Some(&owner.token), Some(&rename)).await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!((renamed["name"].as_str(), renamed["head_seq"].as_i64()), (Some("Taken over"), Some(2)));
    assert_eq!(renamed["member_count"], 1);
}

#[tokio::test]
async fn rename_and_archive() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner").await;
    let id = app.create_project(&owner, "Draft").await;
    let path = format!("/api/projects/{id}");
    let (status, renamed) = app.call(Method::PATCH, &path, Some(&owner.token), Some(&json!({"name": "Final"}))).await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!((renamed["name"].as_str(), renamed["head_seq"].as_i64()), (Some("Final"), Some(2)));

    assert_eq!(app.delete(&path, &owner.token).await.0, StatusCode::NO_CONTENT);
    let types: Vec<String> = app.log(id).await.into_iter().map(|e| e.event_type).collect();
    assert_eq!(types, ["project_created", "project_renamed", "project_archived"]);
    // Archived: gone from view, nothing erased.
    assert_eq!(app.get(&path, &owner.token).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.delete(&path, &owner.token).await.0, StatusCode::NOT_FOUND);
    assert!(app.get("/api/projects", &owner.token).await.1["projects"].as_array().unwrap().is_empty());
    assert_eq!(app.table("projects").await[0]["name"], "Final");
}

#[tokio::test]
async fn idempotency_key_returns_the_first_response_and_appends_nothing() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner").await;
    let other = app.signup("other").await;
    let send = |token: String, key: &'static str, name: &'static str| {
        let req = app
            .http
            .post(app.url("/api/projects"))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(&json!({"name": name}));
        async move {
            let res = req.send().await.unwrap();
            (res.status(), res.json::<Value>().await.unwrap())
        }
    };

    // Eight concurrent repeats: one project, eight identical answers.
    let answers = futures_util::future::join_all((0..8).map(|_| send(owner.token.clone(), "k-1", "Once"))).await;
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::CREATED, "{body}");
        assert_eq!(body, &answers[0].1);
    }
    assert_eq!(app.get("/api/projects", &owner.token).await.1["projects"].as_array().unwrap().len(), 1);
    let id: Uuid = answers[0].1["id"].as_str().unwrap().parse().unwrap();
    let log = app.log(id).await;
    assert_eq!(log.len(), 1);

    // The same key with another body is refused; another caller's key is theirs.
    let (status, body) = send(owner.token.clone(), "k-1", "Twice").await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"));
    let (status, body) = send(other.token.clone(), "k-1", "Once").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(body["id"], answers[0].1["id"]);

    // The key is recorded on the events it produced.
    let key: Option<String> = app
        .pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT idempotency_key FROM project_events WHERE project_id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(key.as_deref(), Some("k-1"));

    // A refused command does not burn its key.
    let path = format!("/api/projects/{id}");
    let patch = |name: &'static str| {
        app.http
            .patch(app.url(&path))
            .bearer_auth(&owner.token)
            .header("Idempotency-Key", "k-2")
            .json(&json!({"name": name}))
            .send()
    };
    assert_eq!(patch("").await.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(patch("Renamed").await.unwrap().status(), StatusCode::OK);
    assert_eq!(patch("Renamed").await.unwrap().status(), StatusCode::OK);
    assert_eq!(app.log(id).await.len(), 2);
}

/// A rename waiting for the project's head lock is checked against what the
/// holder committed: here an archive, so it is refused and appends nothing
/// (the rename is one statement, whose check runs after the lock in a
/// snapshot of its own).
#[tokio::test]
async fn a_rename_waiting_on_the_head_sees_the_archive_committed_before_it() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner").await;
    let id = app.create_project(&owner, "Raced").await;
    let mut client = app.pool.get().await.unwrap();
    let archive = client.transaction().await.unwrap();
    let meta = EventMeta { actor: Actor { user_id: Some(owner.id), device_id: None }, idempotency_key: None };
    store::append(&archive, id, &meta, &[NewEvent::new(EventType::ProjectArchived, json!({}))]).await.unwrap();

    let watcher = app.pool.get().await.unwrap();
    let commit_once_the_rename_waits = async {
        let waits = async {
            loop {
                let row = watcher
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity
                         WHERE datname = current_database() AND wait_event_type = 'Lock'",
                        &[],
                    )
                    .await
                    .unwrap();
                if row.get::<_, i64>(0) > 0 {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), waits)
            .await
            .expect("the rename waits on the head lock");
        archive.commit().await.unwrap();
    };
    let path = format!("/api/projects/{id}");
    let name = json!({"name": "Too late"});
    let rename = app.call(Method::PATCH, &path, Some(&owner.token), Some(&name));
    let ((status, answer), ()) = tokio::join!(rename, commit_once_the_rename_waits);
    assert_eq!((status, code(&answer)), (StatusCode::NOT_FOUND, "not_found"), "{answer}");
    let types: Vec<String> = app.log(id).await.into_iter().map(|e| e.event_type).collect();
    assert_eq!(types, ["project_created", "project_archived"]);
    assert_eq!(app.table("projects").await[0]["name"], "Raced");
}
