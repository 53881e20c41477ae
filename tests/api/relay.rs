use std::time::Duration;

use reqwest::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser};

pub(crate) fn hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Pseudo-random bytes that do not compress.
pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

/// Bytes that compress well.
pub(crate) fn text(len: usize) -> Vec<u8> {
    b"ferry carries files across. ".iter().cycle().take(len).copied().collect()
}

pub(crate) struct Relay {
    pub(crate) owner: TestUser,
    pub(crate) member: TestUser,
    pub(crate) project: Uuid,
    pub(crate) device: String,
}

impl Relay {
    pub(crate) async fn new(app: &TestApp) -> Self {
        let owner = app.signup("owner").await;
        let member = app.signup("member").await;
        let project = app.create_project(&owner, "Relay").await;
        app.join(&owner, project, &member).await;
        let device = app.source_device(&owner, project).await;
        Self { owner, member, project, device }
    }

    pub(crate) fn url(&self, app: &TestApp, rest: &str) -> String {
        app.url(&format!("/api/projects/{}{rest}", self.project))
    }

    pub(crate) async fn put(
        &self,
        app: &TestApp,
        token: &str,
        name: &str,
        body: Vec<u8>,
        zstd: bool,
    ) -> (StatusCode, Value) {
        let mut req = app.http.put(self.url(app, &format!("/chunks/{name}"))).bearer_auth(token).body(body);
        if zstd {
            req = req.header(CONTENT_ENCODING, "zstd");
        }
        let res = req.send().await.unwrap();
        (res.status(), res.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn missing(&self, app: &TestApp, hashes: &[&str]) -> Vec<String> {
        let (status, body) = app
            .post(&format!("/api/projects/{}/chunks/missing", self.project), &self.device, json!({"hashes": hashes}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_value(body["missing"].clone()).unwrap()
    }

    /// A file made of `chunks`.
    pub(crate) async fn file(&self, app: &TestApp, path: &str, chunks: &[&[u8]]) {
        let whole: Vec<u8> = chunks.concat();
        let list: Vec<Value> = chunks.iter().map(|c| json!({"hash": hash(c), "size": c.len()})).collect();
        let change = json!([{"op": "upsert", "path": path, "size": whole.len(), "hash": hash(&whole), "chunks": list}]);
        assert_eq!(app.push(&self.device, self.project, change).await.0, StatusCode::OK);
    }

    pub(crate) async fn get(&self, app: &TestApp, token: &str, name: &str) -> reqwest::RequestBuilder {
        app.http.get(self.url(app, &format!("/chunks/{name}"))).bearer_auth(token)
    }
}

fn stored_chunks(app: &TestApp, project: Uuid) -> Vec<String> {
    let dir = app.relay_dir().join("chunks").join(project.to_string());
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn chunks_are_verified_on_the_way_in_and_stored_once() {
    let app = TestApp::spawn().await;
    let r = Relay::new(&app).await;
    let bytes = noise(300_000, 1);
    let name = hash(&bytes);
    assert_eq!(r.missing(&app, &[&name]).await, std::slice::from_ref(&name));

    let (status, body) = r.put(&app, &r.device, &name, bytes.clone(), false).await;
    assert_eq!((status, body.clone()), (StatusCode::CREATED, json!({"hash": name, "size": 300_000})));
    let (status, _) = r.put(&app, &r.device, &name, bytes.clone(), false).await;
    assert_eq!(status, StatusCode::OK, "already there: nothing written");
    assert!(r.missing(&app, &[&name]).await.is_empty());

    // Bytes that do not hash to the name are refused and leave nothing.
    let other = noise(1000, 2);
    let wrong = hash(b"something else");
    let (status, body) = r.put(&app, &r.device, &wrong, other, false).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("hash_mismatch")));
    assert_eq!(r.missing(&app, &[&wrong]).await, std::slice::from_ref(&wrong));
    assert_eq!(
        stored_chunks(&app, r.project),
        std::slice::from_ref(&name),
        "one chunk, no variant for noise, no leftovers"
    );

    // zstd on the way in; too large; a bad name; a bad encoding.
    let plain = text(200_000);
    let packed = zstd::encode_all(&plain[..], 3).unwrap();
    let (status, body) = r.put(&app, &r.device, &hash(&plain), packed, true).await;
    assert_eq!((status, body["size"].as_i64()), (StatusCode::CREATED, Some(200_000)), "{body}");
    let huge = vec![7u8; 16 * 1024 * 1024 + 1];
    let (status, body) = r.put(&app, &r.device, &hash(&huge), huge, false).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("chunk_too_large")));
    let (status, _) = r.put(&app, &r.device, "not-a-hash", vec![1], false).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = r.put(&app, &r.device, &hash(b"x"), b"not zstd at all".to_vec(), true).await;
    assert!(status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY, "{status}");
    let res = app
        .http
        .put(r.url(&app, &format!("/chunks/{}", hash(b"x"))))
        .bearer_auth(&r.device)
        .header(CONTENT_ENCODING, "br")
        .body(b"x".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Only a source device of the project uploads.
    for token in [&r.owner.token, &r.member.token] {
        assert_eq!(r.put(&app, token, &name, bytes.clone(), false).await.0, StatusCode::FORBIDDEN);
    }
}

#[tokio::test]
async fn members_download_chunks_of_files_whole_in_ranges_and_compressed() {
    let app = TestApp::spawn().await;
    let r = Relay::new(&app).await;
    let (a, b) = (noise(100_000, 3), text(150_000));
    for chunk in [&a, &b] {
        assert_eq!(r.put(&app, &r.device, &hash(chunk), chunk.clone(), false).await.0, StatusCode::CREATED);
    }
    let orphan = noise(500, 4);
    r.put(&app, &r.device, &hash(&orphan), orphan.clone(), false).await;
    r.file(&app, "/doc.bin", &[&a, &b]).await;

    let res = r.get(&app, &r.member.token, &hash(&a)).await.send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.unwrap().to_vec(), a);
    // A stored chunk of no file is not served to members.
    let res = r.get(&app, &r.member.token, &hash(&orphan)).await.send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    // Ranges resume an interrupted download mid-chunk.
    let res = r.get(&app, &r.member.token, &hash(&a)).await.header(RANGE, "bytes=1000-1999").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.headers()[CONTENT_RANGE], "bytes 1000-1999/100000");
    assert_eq!(res.bytes().await.unwrap().to_vec(), a[1000..2000].to_vec());
    let res = r.get(&app, &r.member.token, &hash(&a)).await.header(RANGE, "bytes=99000-").send().await.unwrap();
    assert_eq!(res.bytes().await.unwrap().to_vec(), a[99000..].to_vec());
    let res = r.get(&app, &r.member.token, &hash(&a)).await.header(RANGE, "bytes=100000-").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    // zstd where it shrinks, identity where it would not.
    let res = r.get(&app, &r.member.token, &hash(&b)).await.header(ACCEPT_ENCODING, "gzip, zstd").send().await.unwrap();
    assert_eq!(res.headers()[CONTENT_ENCODING], "zstd");
    let packed = res.bytes().await.unwrap();
    assert!(packed.len() < b.len() / 10);
    assert_eq!(zstd::decode_all(&packed[..]).unwrap(), b);
    let res = r.get(&app, &r.member.token, &hash(&a)).await.header(ACCEPT_ENCODING, "zstd").send().await.unwrap();
    assert!(res.headers().get(CONTENT_ENCODING).is_none(), "noise is served as it is");
    assert_eq!(res.bytes().await.unwrap().to_vec(), a);

    // A download records the chunk's use, at most once a minute.
    let db = app.pool.get().await.unwrap();
    let last_used = || async {
        let row = db
            .query_one(
                "SELECT last_used_at FROM relay_chunks WHERE project_id = $1 AND hash = $2",
                &[&r.project, &hash(&a)],
            )
            .await
            .unwrap();
        row.get::<_, chrono::DateTime<chrono::Utc>>(0)
    };
    let set_last_used = |ago: &'static str| {
        let db = &db;
        let name = hash(&a);
        async move {
            let sql = format!("UPDATE relay_chunks SET last_used_at = now() - interval '{ago}' WHERE hash = $1");
            db.execute(&sql, &[&name]).await.unwrap();
        }
    };
    set_last_used("2 minutes").await;
    let stale = last_used().await;
    r.get(&app, &r.member.token, &hash(&a)).await.send().await.unwrap().bytes().await.unwrap();
    let refreshed = last_used().await;
    assert!(refreshed - stale > chrono::Duration::seconds(100), "{stale} → {refreshed}");
    set_last_used("30 seconds").await;
    let recent = last_used().await;
    r.get(&app, &r.member.token, &hash(&a)).await.send().await.unwrap().bytes().await.unwrap();
    assert_eq!(last_used().await, recent, "used within the minute: not written again");

    let stranger = app.signup("stranger").await;
    assert_eq!(r.get(&app, &stranger.token, &hash(&a)).await.send().await.unwrap().status(), StatusCode::NOT_FOUND);
    let anonymous = app.http.get(r.url(&app, &format!("/chunks/{}", hash(&a)))).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_second_download_and_a_new_version_upload_only_what_changed_and_count_as_progress() {
    let app = TestApp::spawn().await;
    let r = Relay::new(&app).await;
    let chunks: Vec<Vec<u8>> = (0..3).map(|i| noise(50_000, 10 + i)).collect();
    let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
    r.file(&app, "/v.bin", &refs).await;
    let (_, requested) = app
        .post(&format!("/api/projects/{}/files/download", r.project), &r.member.token, json!({"file_path": "/v.bin"}))
        .await;
    let needed: Vec<String> = serde_json::from_value(requested["transfer_info"]["chunks_needed"].clone()).unwrap();
    let missing = r.missing(&app, &needed.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(missing, needed, "nothing relayed yet");
    for chunk in &chunks {
        r.put(&app, &r.device, &hash(chunk), chunk.clone(), false).await;
    }
    // The member's downloads advance the transfer.
    let transfer = requested["download_id"].as_str().unwrap();
    for chunk in &chunks {
        let res =
            r.get(&app, &r.member.token, &hash(chunk)).await.query(&[("transfer_id", transfer)]).send().await.unwrap();
        assert_eq!(res.bytes().await.unwrap().len(), 50_000);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, t) = app.get(&format!("/api/projects/{}/transfers/{transfer}", r.project), &r.member.token).await;
        if t["bytes_transferred"] == 150_000 {
            assert_eq!(t["status"], "in_progress");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not counted: {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A new version sharing two chunks needs one upload.
    let changed = noise(50_000, 99);
    r.file(&app, "/v.bin", &[&chunks[0], &changed, &chunks[2]]).await;
    let all = [hash(&chunks[0]), hash(&changed), hash(&chunks[2])];
    assert_eq!(r.missing(&app, &all.iter().map(String::as_str).collect::<Vec<_>>()).await, [hash(&changed)]);
}

#[tokio::test]
async fn unneeded_chunks_expire_and_the_quota_holds() {
    let app = TestApp::spawn_with(|s| {
        s.relay.relay_retention_seconds = 1;
        s.relay.relay_quota_bytes = 200_000;
        s.transfers.sweep_interval_ms = 100;
    })
    .await;
    let r = Relay::new(&app).await;
    let (kept, dropped) = (noise(60_000, 5), noise(60_000, 6));
    for chunk in [&kept, &dropped] {
        assert_eq!(r.put(&app, &r.device, &hash(chunk), chunk.clone(), false).await.0, StatusCode::CREATED);
    }
    r.file(&app, "/kept.bin", &[&kept]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while r.missing(&app, &[&hash(&dropped)]).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "an unneeded chunk was kept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(r.missing(&app, &[&hash(&kept)]).await.is_empty(), "a chunk of a live file stays");
    assert_eq!(stored_chunks(&app, r.project), [hash(&kept)], "its bytes went with it");

    // 60 KB kept; 2 × 60 KB more fit in 200 KB, a third does not.
    for seed in [7, 8] {
        let chunk = noise(60_000, seed);
        assert_eq!(r.put(&app, &r.device, &hash(&chunk), chunk.clone(), false).await.0, StatusCode::CREATED);
    }
    let over = noise(60_000, 9);
    let (status, body) = r.put(&app, &r.device, &hash(&over), over, false).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::INSUFFICIENT_STORAGE, Some("quota_exceeded")));
}

#[tokio::test]
async fn an_upload_cut_off_midway_leaves_no_chunk() {
    use tokio::io::AsyncWriteExt;
    let app = TestApp::spawn().await;
    let r = Relay::new(&app).await;
    let bytes = noise(200_000, 12);
    let name = hash(&bytes);
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "PUT /api/projects/{}/chunks/{name} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        r.project, r.device, bytes.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&bytes[..100_000]).await.unwrap();
    tcp.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(tcp); // the client dies half-way
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(r.missing(&app, &[&name]).await, std::slice::from_ref(&name));
    assert!(stored_chunks(&app, r.project).is_empty());
    // And the whole upload still works afterwards.
    assert_eq!(r.put(&app, &r.device, &name, bytes, false).await.0, StatusCode::CREATED);
}

/// A member who asks for a chunk while its upload is being recorded (on the
/// relay's disk, not yet in the database) is handed the upload's verified
/// bytes at once: no wait for the record, no second look, no read back. The
/// store's copy is spoiled behind the server's back meanwhile, so a read
/// back would show; a download that waited for the record would wait until
/// its `?wait=` ran out, since the record waits for this test.
#[tokio::test]
async fn a_download_asking_while_its_chunk_is_recorded_is_handed_the_upload() {
    let app = TestApp::spawn().await;
    let r = Relay::new(&app).await;
    let chunk = noise(300_000, 41);
    let name = hash(&chunk);
    r.file(&app, "/a.bin", &[&chunk]).await;
    // The project's uploads take turns under this lock to be recorded
    // (V0008): holding it keeps the upload between its store and its record.
    let holder = app.pool.get().await.unwrap();
    let lock = "SELECT pg_advisory_lock(hashtextextended($1::uuid::text, 7))";
    holder.execute(lock, &[&r.project]).await.unwrap();

    let upload = r.put(&app, &r.device, &name, chunk.clone(), false);
    let download = async {
        let stored = app.relay_dir().join("chunks").join(r.project.to_string()).join(&name);
        let waited = std::time::Instant::now();
        while !stored.exists() {
            assert!(waited.elapsed() < Duration::from_secs(10), "the upload never reached the store");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        std::fs::write(&stored, vec![0u8; chunk.len()]).unwrap();
        let res = r.get(&app, &r.member.token, &name).await.query(&[("wait", "5")]).send().await.unwrap();
        let got = (res.status(), res.bytes().await.unwrap());
        holder.execute(&lock.replace("_lock(", "_unlock("), &[&r.project]).await.unwrap();
        got
    };
    let ((uploaded, _), (status, got)) = tokio::join!(upload, download);
    assert_eq!((uploaded, status), (StatusCode::CREATED, StatusCode::OK));
    assert!(got[..] == chunk[..], "the upload's bytes, not the spoiled copy in the store");
}

#[tokio::test]
async fn racing_uploads_cannot_together_pass_the_quota() {
    let app = TestApp::spawn_with(|s| s.relay.relay_quota_bytes = 55_000).await;
    let r = Relay::new(&app).await;
    // Forty uploads of 10 KB at once: each alone fits; only five together do.
    let chunks: Vec<(String, Vec<u8>)> = (0..40)
        .map(|seed| {
            let chunk = noise(10_000, 100 + seed);
            (hash(&chunk), chunk)
        })
        .collect();
    let answers = futures_util::future::join_all(
        chunks.iter().map(|(name, chunk)| r.put(&app, &r.device, name, chunk.clone(), false)),
    )
    .await;
    let created = answers.iter().filter(|(status, _)| *status == StatusCode::CREATED).count();
    let refused = answers
        .iter()
        .filter(|(status, body)| {
            *status == StatusCode::INSUFFICIENT_STORAGE && body["error"]["code"] == "quota_exceeded"
        })
        .count();
    assert_eq!((created, refused), (5, 35), "uploads created and refused for the quota");
    let client = app.pool.get().await.unwrap();
    let used: i64 = client
        .query_one("SELECT coalesce(sum(size), 0)::bigint FROM relay_chunks WHERE project_id = $1", &[&r.project])
        .await
        .unwrap()
        .get(0);
    assert_eq!(used, 50_000);
    assert_eq!(stored_chunks(&app, r.project).len(), 5, "the refused uploads left no bytes");
}
