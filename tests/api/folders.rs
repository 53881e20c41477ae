//! `GET /api/projects/:id/folder`: one folder at a time, subfolders and
//! files directly in it, in byte order, paged by keyset however many files
//! the subfolders hold.

use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser};

fn upsert(path: &str, size: i64) -> Value {
    json!({"op": "upsert", "path": path, "size": size, "hash": blake3::hash(path.as_bytes()).to_hex().to_string()})
}

async fn folder(app: &TestApp, user: &TestUser, project: Uuid, query: &str) -> (StatusCode, Value) {
    app.get(&format!("/api/projects/{project}/folder?{query}"), &user.token).await
}

/// The entries as `name` for files and `name/` for folders.
fn names(page: &Value) -> Vec<String> {
    page["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries: {page}"))
        .iter()
        .map(|e| match e["kind"].as_str() {
            Some("folder") => format!("{}/", e["name"].as_str().unwrap()),
            Some("file") => e["name"].as_str().unwrap().to_owned(),
            other => panic!("kind {other:?}: {e}"),
        })
        .collect()
}

/// Every page of a folder, `limit` entries at a time.
async fn walk(app: &TestApp, user: &TestUser, project: Uuid, path: &str, limit: usize) -> Vec<String> {
    let (mut all, mut cursor) = (Vec::new(), String::new());
    loop {
        let query = format!("path={}&limit={limit}&cursor={cursor}", urlencode(path));
        let (status, page) = folder(app, user, project, &query).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page["entries"].as_array().unwrap().len() <= limit, "{page}");
        all.extend(names(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return all,
        }
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn a_folder_lists_its_subfolders_and_files_paged_in_byte_order() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner").await;
    let member = app.signup("member").await;
    let project = app.create_project(&owner, "Folders").await;
    let source = app.source_device(&owner, project).await;
    let mut changes = vec![
        upsert("/a.txt", 1),
        upsert("/a/one.txt", 2),
        upsert("/a/deep/er/two.txt", 3),
        upsert("/a0", 4),
        upsert("/B.txt", 5),
        upsert("/Ünï cødé/x", 6),
        upsert("/gone/only.txt", 7),
    ];
    // A subfolder holding many files is one entry, and costs one step.
    changes.extend((0..300).map(|i| upsert(&format!("/big/{i:04}.bin"), 8)));
    let (status, body) = app.push(&source, project, json!(changes)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app.push(&source, project, json!([{"op": "delete", "path": "/gone/only.txt"}])).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The top: byte order, `a.txt` < `a/` < `a0`, capitals first; the
    // folder whose only file was deleted is gone.
    app.join(&owner, project, &member).await;
    let (status, top) = folder(&app, &member, project, "").await;
    assert_eq!(status, StatusCode::OK, "{top}");
    assert_eq!(names(&top), ["B.txt", "a.txt", "a/", "a0", "big/", "Ünï cødé/"], "{top}");
    let (_, about) = app.get(&format!("/api/projects/{project}"), &member.token).await;
    assert_eq!((top["path"].as_str(), &top["head_seq"]), (Some("/"), &about["head_seq"]), "{top}");
    assert_eq!(top["next_cursor"], Value::Null);
    let file = &top["entries"][1];
    assert_eq!(
        (file["path"].as_str(), file["size"].as_i64(), file["mime_type"].as_str()),
        (Some("/a.txt"), Some(1), Some("text/plain")),
        "{file}"
    );
    assert_eq!(file["hash"], blake3::hash(b"/a.txt").to_hex().to_string());
    assert_eq!(top["entries"][2], json!({"kind": "folder", "name": "a", "path": "/a/"}));

    // Every page size walks the same entries, each once.
    for limit in [1, 2, 5] {
        assert_eq!(walk(&app, &member, project, "/", limit).await, names(&top), "limit {limit}");
    }
    assert_eq!(walk(&app, &member, project, "/a/", 1).await, ["deep/", "one.txt"]);
    assert_eq!(walk(&app, &member, project, "/Ünï cødé/", 100).await, ["x"]);
    let big = walk(&app, &member, project, "/big/", 128).await;
    assert_eq!(big.len(), 300);
    assert!(big.windows(2).all(|w| w[0] < w[1]), "in order");
    // A folder with nothing live in it is an empty page, not an error.
    assert!(walk(&app, &member, project, "/gone/", 10).await.is_empty());
    assert!(walk(&app, &member, project, "/nowhere/", 10).await.is_empty());
}

#[tokio::test]
async fn a_folder_refuses_bad_input_and_strangers() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner").await;
    let stranger = app.signup("stranger").await;
    let project = app.create_project(&owner, "Private").await;
    let source = app.source_device(&owner, project).await;
    let (status, body) = app.push(&source, project, json!([upsert("/a/b.txt", 1), upsert("/c.txt", 1)])).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = folder(&app, &stranger, project, "").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{body}");
    let res = app.http.get(app.url(&format!("/api/projects/{project}/folder"))).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let (_, first) = folder(&app, &owner, project, "limit=1").await;
    let cursor = first["next_cursor"].as_str().expect("a second page").to_owned();
    for (query, code) in [
        ("path=a/", "invalid_folder"),
        ("path=/a", "invalid_folder"),
        ("path=/a//", "invalid_folder"),
        ("path=/../", "invalid_folder"),
        ("limit=0", "invalid_limit"),
        ("limit=1001", "invalid_limit"),
        ("cursor=***", "invalid_cursor"),
        // A cursor given out for one folder is not one for another.
        (&format!("path=/a/&cursor={cursor}") as &str, "invalid_cursor"),
    ] {
        let (status, body) = folder(&app, &owner, project, query).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(code)),
            "{query}: {body}"
        );
    }
    let (status, body) = folder(&app, &owner, project, "limit=x").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_query")), "{body}");
}
