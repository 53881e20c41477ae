use ferry::domain::accounts::{self, NewUser};
use ferry::protocol::validate::{Email, Password};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser};

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_else(|| panic!("not an error body: {body}"))
}

fn types(page: &Value) -> Vec<&str> {
    page["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// A download request of `/f.txt` by `requester`.
async fn transfer_event(app: &TestApp, project: Uuid, requester: &TestUser) {
    let path = format!("/api/projects/{project}/files/download");
    let (status, body) = app.post(&path, &requester.token, json!({"file_path": "/f.txt"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// A project with an owner's source device, two members, an invite, a
/// file and a transfer of each member.
async fn history(app: &TestApp) -> (TestUser, TestUser, Uuid) {
    let owner = app.signup("owner").await;
    let ana = app.signup("ana").await;
    let bob = app.signup("bob").await;
    let project = app.create_project(&owner, "Feed").await;
    app.join(&owner, project, &ana).await;
    app.join(&owner, project, &bob).await;
    let device = app.source_device(&owner, project).await;
    let file = json!([{"op": "upsert", "path": "/f.txt", "size": 1, "hash": blake3::hash(b"f").to_hex().to_string()}]);
    assert_eq!(app.push(&device, project, file).await.0, StatusCode::OK);
    transfer_event(app, project, &ana).await;
    transfer_event(app, project, &bob).await;
    (owner, ana, project)
}

#[tokio::test]
async fn the_feed_merges_both_logs_and_shows_each_caller_what_they_may_see() {
    let app = TestApp::spawn().await;
    let (owner, ana, project) = history(&app).await;
    let feed = |token: String, query: &'static str| {
        let app = &app;
        async move {
            let (status, body) = app.get(&format!("/api/projects/{project}/events?{query}"), &token).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body
        }
    };

    let all = feed(owner.token.clone(), "").await;
    assert_eq!(
        types(&all),
        [
            "project_created",
            "invite_created",
            "member_joined",
            "invite_created",
            "member_joined",
            "device_attached",
            "file_added",
            "transfer_requested",
            "transfer_requested"
        ]
    );
    assert_eq!(all["head_seq"], 9);
    let seqs: Vec<i64> = all["events"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=9).collect::<Vec<_>>());
    assert_eq!(all["events"][0]["actor"]["user_id"], owner.id.to_string());
    assert!(all["events"][6]["actor"]["device_id"].is_string());

    // A member: no invites, only their own transfer.
    let mine = feed(ana.token.clone(), "").await;
    assert_eq!(
        types(&mine),
        ["project_created", "member_joined", "member_joined", "device_attached", "file_added", "transfer_requested"]
    );
    assert_eq!(mine["events"][5]["data"]["requester_id"], ana.id.to_string());
    assert_eq!(mine["head_seq"], 9);

    // Filters, paging, and the name older clients use.
    assert_eq!(
        types(&feed(owner.token.clone(), "type=file_added,member_joined").await),
        ["member_joined", "member_joined", "file_added"]
    );
    let page = feed(owner.token.clone(), "after_seq=3&limit=2").await;
    assert_eq!(
        page["events"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect::<Vec<_>>(),
        [4, 5]
    );
    let (status, alias) = app.get(&format!("/api/projects/{project}/project_events?after_seq=8"), &owner.token).await;
    assert_eq!((status, types(&alias)), (StatusCode::OK, vec!["transfer_requested"]));

    for (query, expected) in
        [("type=nope", "invalid_type"), ("limit=0", "invalid_limit"), ("limit=5000", "invalid_limit")]
    {
        let (status, body) = app.get(&format!("/api/projects/{project}/events?{query}"), &owner.token).await;
        assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, expected), "{query}");
    }
    let stranger = app.signup("stranger").await;
    assert_eq!(app.get(&format!("/api/projects/{project}/events"), &stranger.token).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        app.call(Method::GET, &format!("/api/projects/{project}/events"), None, None).await.0,
        StatusCode::UNAUTHORIZED
    );
}

async fn admin(app: &TestApp) -> TestUser {
    let email = format!("admin-{}@example.org", Uuid::new_v4().simple());
    let new = NewUser {
        email: Email::parse(&email).unwrap(),
        password: Password::parse("admin password").unwrap(),
        display_name: None,
        is_admin: true,
    };
    let created = accounts::create_user(&app.pool, &ferry::domain::passwords::PasswordWork::per_core(None, 1), new)
        .await
        .unwrap();
    TestUser { id: created.user.id, email, token: created.token }
}

#[tokio::test]
async fn admins_see_projections_rebuild_them_and_audit_the_logs() {
    let app = TestApp::spawn().await;
    let (owner, ana, project) = history(&app).await;
    let admin = admin(&app).await;

    for path in ["/api/admin/projections", "/api/admin/audit"] {
        assert_eq!(app.get(path, &owner.token).await.0, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(app.call(Method::GET, path, None, None).await.0, StatusCode::UNAUTHORIZED, "{path}");
    }
    let (status, body) = app.post("/api/admin/projections/remote_files/rebuild", &owner.token, json!({})).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "admin_only"));

    let (status, body) = app.get("/api/admin/projections", &admin.token).await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<&str> =
        body["projections"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    let names: Vec<&str> = ferry::projections::ALL.iter().map(|p| p.name).collect();
    assert_eq!(listed, names);
    assert!(body["projections"].as_array().unwrap().iter().all(|p| p["up_to_date"] == true));
    let files = body["projections"].as_array().unwrap().iter().find(|p| p["name"] == "remote_files").unwrap();
    assert_eq!(files["rows"], 1);

    let (status, report) = app.post("/api/admin/projections/remote_files/rebuild", &admin.token, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["events_read"], 9);
    assert_eq!(app.post("/api/admin/projections/nope/rebuild", &admin.token, json!({})).await.0, StatusCode::NOT_FOUND);

    // Audit: filters and cursor paging in global order.
    let other = app.create_project(&owner, "Other").await;
    let audit = |query: String| {
        let app = &app;
        let token = admin.token.clone();
        async move {
            let (status, body) = app.get(&format!("/api/admin/audit?{query}"), &token).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body
        }
    };
    let everything = audit(String::new()).await;
    assert_eq!(everything["events"].as_array().unwrap().len(), 10);
    let positions: Vec<i64> =
        everything["events"].as_array().unwrap().iter().map(|e| e["position"].as_i64().unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(audit(format!("project_id={other}")).await["events"].as_array().unwrap().len(), 1);
    let by_ana = audit(format!("actor_id={}", ana.id)).await;
    assert_eq!(types(&by_ana), ["member_joined", "transfer_requested"]);
    assert_eq!(types(&audit(format!("project_id={project}&type=file_added")).await), ["file_added"]);
    let future = audit("from=2999-01-01T00:00:00Z".into()).await;
    assert!(future["events"].as_array().unwrap().is_empty());
    assert_eq!(audit("to=2000-01-01T00:00:00Z".into()).await["events"].as_array().unwrap().len(), 0);

    let mut cursor = String::new();
    let mut paged = Vec::new();
    loop {
        let page = audit(format!("limit=3&cursor={cursor}")).await;
        paged.extend(page["events"].as_array().unwrap().iter().map(|e| e["position"].as_i64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(paged, positions);
    let (status, body) = app.get("/api/admin/audit?cursor=***", &admin.token).await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_cursor"));
    let (status, _) = app.get("/api/admin/audit?from=yesterday", &admin.token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The same from the command line.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ferryd"))
        .args(["audit", "--project", &project.to_string(), "--type", "member_joined", "--format", "json"])
        .args(["--database-url", &app.database_url])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<Value> =
        String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l["type"] == "member_joined" && l["project_id"] == project.to_string()));
    let table = std::process::Command::new(env!("CARGO_BIN_EXE_ferryd"))
        .args(["audit", "--actor", &ana.id.to_string(), "--database-url", &app.database_url])
        .output()
        .unwrap();
    let text = String::from_utf8(table.stdout).unwrap();
    assert_eq!(text.lines().count(), 3, "a header and two rows: {text}");
    assert!(text.contains("transfer_requested"));
}
