use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser};

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_else(|| panic!("not an error body: {body}"))
}

fn hash(seed: &str) -> String {
    blake3::hash(seed.as_bytes()).to_hex().to_string()
}

fn upsert(path: &str, size: i64, seed: &str) -> Value {
    json!({"op": "upsert", "path": path, "size": size, "hash": hash(seed)})
}

async fn setup(app: &TestApp) -> (TestUser, Uuid, String) {
    let owner = app.signup("owner").await;
    let project = app.create_project(&owner, "Files").await;
    let device = app.source_device(&owner, project).await;
    (owner, project, device)
}

async fn page(app: &TestApp, token: &str, project: Uuid, query: &str) -> Value {
    let (status, body) = app.get(&format!("/api/projects/{project}/files-paginated?{query}"), token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn paths(page: &Value) -> Vec<&str> {
    page["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_batch_adds_updates_moves_and_deletes_in_one_transaction() {
    let app = TestApp::spawn().await;
    let (owner, project, device) = setup(&app).await;
    let chunks = json!([{"hash": hash("c1"), "size": 600}, {"hash": hash("c2"), "size": 424}]);
    let (status, body) = app
        .push(
            &device,
            project,
            json!([
                {"op": "upsert", "path": "/documents/report.pdf", "size": 1024, "hash": hash("r1"),
                 "modified_at": "2026-11-17T18:00:00Z", "chunks": chunks},
                upsert("/a.txt", 3, "a"),
                upsert("/photos/ünï cødé.JPG", 10, "p"),
                {"op": "move", "from": "/a.txt", "to": "/b/a.txt"},
                upsert("/a.txt", 4, "a2"),
                {"op": "delete", "path": "/photos/ünï cødé.JPG"},
            ]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"applied": 6, "from_seq": 3, "to_seq": 8, "head_seq": 8}));

    let log = app.log(project).await;
    let types: Vec<&str> = log[2..].iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["file_added", "file_added", "file_added", "file_moved", "file_added", "file_deleted"]);
    assert_eq!(log[2].data["mime_type"], "application/pdf", "guessed from the path");
    assert_eq!(log[2].data["chunks"], chunks);
    assert_eq!(log[4].data["mime_type"], "image/jpeg");
    assert_eq!(
        log[5].data,
        json!({"from": "/a.txt", "to": "/b/a.txt", "from_version": 2, "version": 1,
        "size": 3, "hash": hash("a"), "mime_type": "text/plain", "modified_at": null, "chunks": null})
    );
    assert_eq!((log[6].data["version"].as_i64(), log[7].data["version"].as_i64()), (Some(3), Some(2)));
    assert!(log[2..].iter().all(|e| e.actor.device_id.is_some()), "the device is recorded");

    let listed = page(&app, &owner.token, project, "").await;
    assert_eq!(paths(&listed), ["/a.txt", "/b/a.txt", "/documents/report.pdf"]);
    assert_eq!(listed["head_seq"], 8);
    assert_eq!(listed["next_cursor"], Value::Null);
    assert_eq!(listed["files"][2]["modified_at"], "2026-11-17T18:00:00Z");
    assert_eq!(
        (listed["files"][0]["version"].as_i64(), listed["files"][0]["updated_seq"].as_i64()),
        (Some(3), Some(7))
    );
    let all = page(&app, &owner.token, project, "include_deleted=true").await;
    assert_eq!(paths(&all), ["/a.txt", "/b/a.txt", "/documents/report.pdf", "/photos/ünï cødé.JPG"]);
    assert_eq!(all["files"][3]["deleted"], true);
    assert_eq!(all["files"][3]["size"], 10, "a tombstone keeps the last state");

    // Unchanged upserts and deletes of absent paths append nothing.
    let (status, body) =
        app.push(&device, project, json!([upsert("/a.txt", 4, "a2"), {"op": "delete", "path": "/nope"}])).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"applied": 0, "from_seq": null, "to_seq": null, "head_seq": 8}))
    );
    // A deleted path comes back as added, its version going on.
    let (_, body) = app.push(&device, project, json!([upsert("/photos/ünï cødé.JPG", 11, "p2")])).await;
    assert_eq!(body["applied"], 1);
    let last = app.log(project).await.pop().unwrap();
    assert_eq!((last.event_type.as_str(), last.data["version"].as_i64()), ("file_added", Some(3)));
}

#[tokio::test]
async fn one_bad_change_rejects_the_whole_batch_naming_its_index() {
    let app = TestApp::spawn().await;
    let (_, project, device) = setup(&app).await;
    app.push(&device, project, json!([upsert("/kept.txt", 1, "k")])).await;
    let good = upsert("/fine.txt", 1, "f");
    let cases = [
        (json!({"op": "upsert", "path": "relative.txt", "size": 1, "hash": hash("x")}), "invalid_path"),
        (json!({"op": "upsert", "path": "/a/../b", "size": 1, "hash": hash("x")}), "invalid_path"),
        (json!({"op": "upsert", "path": "/x", "size": 1, "hash": "ABC"}), "invalid_hash"),
        (json!({"op": "upsert", "path": "/x", "size": -1, "hash": hash("x")}), "invalid_size"),
        (
            json!({"op": "upsert", "path": "/x", "size": 10, "hash": hash("x"), "chunks": [{"hash": hash("c"), "size": 9}]}),
            "chunk_sizes_mismatch",
        ),
        (
            json!({"op": "upsert", "path": "/x", "size": 1, "hash": hash("x"), "chunks": [{"hash": "zz", "size": 1}]}),
            "invalid_hash",
        ),
        (
            json!({"op": "upsert", "path": "/x", "size": 1, "hash": hash("x"), "mime_type": "nonsense"}),
            "invalid_mime_type",
        ),
        (json!({"op": "move", "from": "/missing", "to": "/y"}), "not_found"),
        (json!({"op": "move", "from": "/kept.txt", "to": "/kept.txt"}), "invalid_move"),
        (json!({"op": "delete", "path": "/a\\b"}), "invalid_path"),
    ];
    for (bad, expected) in cases {
        let (status, body) = app.push(&device, project, json!([good, good, bad])).await;
        assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, expected), "{bad}");
        assert!(body["error"]["message"].as_str().unwrap().starts_with("changes[2]: "), "{body}");
    }
    for (bad, status) in [
        (json!([{"op": "rename", "path": "/x"}]), StatusCode::BAD_REQUEST),
        (json!([{"op": "upsert", "path": "/x", "size": "big", "hash": hash("x")}]), StatusCode::BAD_REQUEST),
        (json!("not a list"), StatusCode::BAD_REQUEST),
    ] {
        assert_eq!(app.push(&device, project, bad.clone()).await.0, status, "{bad}");
    }
    let too_many: Vec<Value> = (0..10_001).map(|i| json!({"op": "delete", "path": format!("/f{i}")})).collect();
    let (status, body) = app.push(&device, project, Value::Array(too_many)).await;
    assert_eq!((status, code(&body)), (StatusCode::PAYLOAD_TOO_LARGE, "too_many_changes"));
    assert_eq!(app.log(project).await.len(), 3, "nothing appended after the one good batch");
}

#[tokio::test]
async fn only_a_source_device_of_the_project_pushes() {
    let app = TestApp::spawn().await;
    let (owner, project, device) = setup(&app).await;
    let member = app.signup("member").await;
    app.join(&owner, project, &member).await;
    let (member_device, member_device_token) = app.register_device(&member, "laptop").await;
    app.call(Method::PUT, &format!("/api/projects/{project}/devices/{member_device}"), Some(&member.token), None).await;
    let (_, unattached) = app.register_device(&owner, "spare").await;
    let stranger = app.signup("stranger").await;
    let (_, strangers_device) = app.register_device(&stranger, "phone").await;
    let batch = json!([upsert("/x", 1, "x")]);
    for (token, expected) in [
        (owner.token.as_str(), StatusCode::FORBIDDEN),
        (member.token.as_str(), StatusCode::FORBIDDEN),
        (member_device_token.as_str(), StatusCode::FORBIDDEN),
        (unattached.as_str(), StatusCode::FORBIDDEN),
        (stranger.token.as_str(), StatusCode::NOT_FOUND),
        (strangers_device.as_str(), StatusCode::NOT_FOUND),
    ] {
        let (status, body) = app.push(token, project, batch.clone()).await;
        assert_eq!(status, expected, "{body}");
    }
    let (status, body) = app.push(&owner.token, project, batch.clone()).await;
    assert_eq!(code(&body), "source_device_required", "{status}");
    assert_eq!(app.push(&device, project, batch).await.0, StatusCode::OK);
}

#[tokio::test]
async fn pages_follow_the_path_order_with_prefix_cursor_and_limit() {
    let app = TestApp::spawn().await;
    let (owner, project, device) = setup(&app).await;
    let member = app.signup("member").await;
    app.join(&owner, project, &member).await;
    let mut names: Vec<String> = (0..25).map(|i| format!("/docs/{i:02}.txt")).collect();
    names.extend(["/a", "/docs", "/docsX/z", "/é/1", "/z/last"].map(String::from));
    let batch: Vec<Value> = names.iter().map(|p| upsert(p, 1, p)).collect();
    app.push(&device, project, Value::Array(batch)).await;
    names.sort(); // bytewise, as the server orders

    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let p = page(&app, &member.token, project, &format!("limit=7&cursor={cursor}")).await;
        let got: Vec<String> = paths(&p).iter().map(|s| s.to_string()).collect();
        assert!(got.len() <= 7);
        seen.extend(got);
        match p["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, names, "every file once, in order");

    let docs = page(&app, &member.token, project, "prefix=/docs/&limit=1000").await;
    assert_eq!(paths(&docs).len(), 25);
    assert!(paths(&docs).iter().all(|p| p.starts_with("/docs/")));
    let unicode = page(&app, &member.token, project, "prefix=/%C3%A9/").await;
    assert_eq!(paths(&unicode), ["/é/1"]);

    for (query, expected) in [
        ("limit=0", "invalid_limit"),
        ("limit=1001", "invalid_limit"),
        ("cursor=***", "invalid_cursor"),
        ("prefix=docs", "invalid_prefix"),
    ] {
        let (status, body) = app.get(&format!("/api/projects/{project}/files-paginated?{query}"), &owner.token).await;
        assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, expected), "{query}");
    }
    let (status, _) = app.get(&format!("/api/projects/{project}/files-paginated?limit=ten"), &owner.token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let stranger = app.signup("stranger").await;
    assert_eq!(
        app.get(&format!("/api/projects/{project}/files-paginated"), &stranger.token).await.0,
        StatusCode::NOT_FOUND
    );
}
