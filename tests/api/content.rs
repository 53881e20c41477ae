//! `GET .../transfers/:id/content`: a transfer's file into the browser,
//! streamed from the relay as the owner's device uploads it.

use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_RANGE, RANGE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{start_server, TestApp};
use crate::relay::{hash, noise, Relay};

const NAME: &str = "my \"quoted\" résumé 文件.bin";

/// Three chunks of noise, as a file of the project.
async fn three_chunks(app: &TestApp, r: &Relay) -> Vec<Vec<u8>> {
    let chunks = vec![noise(700_000, 11), noise(300_000, 12), noise(500_000, 13)];
    let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
    r.file(app, &format!("/docs/{NAME}"), &refs).await;
    chunks
}

/// The member requests the file; answers the transfer id.
async fn request(app: &TestApp, r: &Relay) -> Uuid {
    let (status, body) = app
        .post(
            &format!("/api/projects/{}/files/download", r.project),
            &r.member.token,
            json!({"file_path": format!("/docs/{NAME}")}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["download_id"].as_str().unwrap().parse().unwrap()
}

fn content_path(r: &Relay, transfer: Uuid) -> String {
    format!("/api/projects/{}/transfers/{transfer}/content", r.project)
}

/// Reads a body to its end or its first error: the bytes, and whether it ended cleanly.
async fn read_body(mut res: reqwest::Response) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        match res.chunk().await {
            Ok(Some(piece)) => body.extend_from_slice(&piece),
            Ok(None) => return (body, true),
            Err(_) => return (body, false),
        }
    }
}

/// Waits (up to 30 s) for the transfer to reach `status`; answers it.
async fn transfer_becomes(app: &TestApp, r: &Relay, transfer: Uuid, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, t) = app.get(&format!("/api/projects/{}/transfers/{transfer}", r.project), &r.member.token).await;
        if t["status"] == status {
            return t;
        }
        assert!(Instant::now() < deadline, "the transfer did not become {status}: {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn percent_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

#[tokio::test]
async fn a_stream_starts_before_any_upload_and_ends_with_the_exact_bytes() {
    let app = TestApp::spawn().await;
    let r = Relay::new(&app).await;
    let chunks = three_chunks(&app, &r).await;
    let whole = chunks.concat();
    let transfer = request(&app, &r).await;

    // The response starts (headers) while the relay holds nothing yet.
    let res = app.http.get(app.url(&content_path(&r, transfer))).bearer_auth(&r.member.token).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let header = |name| res.headers().get(name).unwrap().to_str().unwrap().to_owned();
    assert_eq!(header(CONTENT_LENGTH), whole.len().to_string());
    assert_eq!(header(ETAG), format!("\"{}\"", hash(&whole)));
    assert_eq!(header(CONTENT_TYPE), "application/octet-stream");
    let disposition = header(CONTENT_DISPOSITION);
    assert!(disposition.starts_with("attachment; filename=\""), "{disposition}");
    let encoded = disposition.split("filename*=UTF-8''").nth(1).unwrap();
    assert_eq!(String::from_utf8(percent_decode(encoded)).unwrap(), NAME, "the name survives whole");

    // The owner's device uploads, one chunk after the other.
    let handed_before = app.metric("ferry_relay_chunks_handed_over_total").await;
    for chunk in &chunks {
        let (status, body) = r.put(&app, &r.device, &hash(chunk), chunk.clone(), false).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (body, clean) = read_body(res).await;
    assert!(clean && body == whole, "the exact bytes, ended cleanly ({} of {})", body.len(), whole.len());
    let handed = app.metric("ferry_relay_chunks_handed_over_total").await - handed_before;
    assert!(handed >= 3.0, "the uploads handed their chunks over, not read back from the store ({handed})");

    // Verified by the server: the transfer is complete, live for every page.
    let t = transfer_becomes(&app, &r, transfer, "completed").await;
    assert_eq!(t["bytes_transferred"], whole.len());
    let types: Vec<String> = app.log(r.project).await.iter().map(|e| e.event_type.clone()).collect();
    assert_eq!(types.iter().filter(|t| *t == "file_transfer_complete").count(), 1, "{types:?}");

    // Fetched again (a completed transfer's bytes may be saved twice): whole
    // again; a range past the end is 416.
    let res = app.http.get(app.url(&content_path(&r, transfer))).bearer_auth(&r.member.token).send().await.unwrap();
    assert_eq!(read_body(res).await, (whole.clone(), true));
    let res = app
        .http
        .get(app.url(&content_path(&r, transfer)))
        .bearer_auth(&r.member.token)
        .header(RANGE, format!("bytes={}-", whole.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(res.headers()[CONTENT_RANGE], format!("bytes */{}", whole.len()).as_str());

    // A member's `?wait=` for a chunk (a range of it) is handed it the same
    // way by an upload to this server, before the chunk is even recorded.
    let later = noise(200_000, 15);
    r.file(&app, "/later.bin", &[&later]).await;
    let handed_before = app.metric("ferry_relay_chunks_handed_over_total").await;
    let waiting = r.get(&app, &r.member.token, &hash(&later)).await.query(&[("wait", "30")]).header(RANGE, "bytes=10-");
    let waiting = tokio::spawn(waiting.send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(r.put(&app, &r.device, &hash(&later), later.clone(), false).await.0, StatusCode::CREATED);
    let res = waiting.await.unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.headers()[CONTENT_RANGE], format!("bytes 10-199999/{}", later.len()).as_str());
    assert_eq!(res.bytes().await.unwrap(), later[10..]);
    assert!(app.metric("ferry_relay_chunks_handed_over_total").await > handed_before, "handed over");
}

#[tokio::test]
async fn an_aborted_stream_says_why_and_a_range_resumes_it() {
    let app = TestApp::spawn_with(|s| s.relay.content_wait_seconds = 1).await;
    let r = Relay::new(&app).await;
    let chunks = three_chunks(&app, &r).await;
    let whole = chunks.concat();
    let transfer = request(&app, &r).await;
    for chunk in &chunks[..2] {
        assert_eq!(r.put(&app, &r.device, &hash(chunk), chunk.clone(), false).await.0, StatusCode::CREATED);
    }

    // The owner's device stops sending after two chunks: the stream stops
    // short after them, and the transfer says why.
    let res = app.http.get(app.url(&content_path(&r, transfer))).bearer_auth(&r.member.token).send().await.unwrap();
    let etag = res.headers()[ETAG].to_str().unwrap().to_owned();
    let (got, clean) = read_body(res).await;
    assert!(!clean, "an aborted stream never ends cleanly");
    assert_eq!(got, whole[..got.len()], "what came is the file's start");
    assert_eq!(got.len(), chunks[0].len() + chunks[1].len(), "the chunks that were there");
    let t = transfer_becomes(&app, &r, transfer, "failed").await;
    assert_eq!(t["error_message"], "source_offline", "{t}");

    // Asked whole again, a failed download is not retried behind anyone's
    // back: that is for the page's Retry, or a resume.
    let res = app.http.get(app.url(&content_path(&r, transfer))).bearer_auth(&r.member.token).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "transfer_failed", "{body}");
    let t = transfer_becomes(&app, &r, transfer, "failed").await;
    assert_eq!(t["attempts"], 1, "{t}");

    // The device sends the rest; the browser resumes where it stopped.
    assert_eq!(r.put(&app, &r.device, &hash(&chunks[2]), chunks[2].clone(), false).await.0, StatusCode::CREATED);
    let res = app
        .http
        .get(app.url(&content_path(&r, transfer)))
        .bearer_auth(&r.member.token)
        .header(RANGE, format!("bytes={}-", got.len()))
        .header(IF_RANGE, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        res.headers()[CONTENT_RANGE],
        format!("bytes {}-{}/{}", got.len(), whole.len() - 1, whole.len()).as_str()
    );
    let (rest, clean) = read_body(res).await;
    assert!(clean && rest == whole[got.len()..], "the rest, exactly");
    let t = transfer_becomes(&app, &r, transfer, "completed").await;
    assert_eq!(t["attempts"], 2, "asking again retried the transfer: {t}");

    // A range in the middle of a chunk, ending before the end.
    let res = app
        .http
        .get(app.url(&content_path(&r, transfer)))
        .bearer_auth(&r.member.token)
        .header(RANGE, "bytes=699990-1000009")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(read_body(res).await, (whole[699_990..1_000_010].to_vec(), true));
}

#[tokio::test]
async fn a_damaged_chunk_in_the_store_aborts_the_stream() {
    let app = TestApp::spawn().await;
    let r = Relay::new(&app).await;
    let chunks = three_chunks(&app, &r).await;
    let transfer = request(&app, &r).await;
    for chunk in &chunks {
        assert_eq!(r.put(&app, &r.device, &hash(chunk), chunk.clone(), false).await.0, StatusCode::CREATED);
    }
    // Behind the server's back: one byte of the second chunk flips.
    let stored = app.relay_dir().join("chunks").join(r.project.to_string()).join(hash(&chunks[1]));
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&stored, bytes).unwrap();

    let res = app.http.get(app.url(&content_path(&r, transfer))).bearer_auth(&r.member.token).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let (got, clean) = read_body(res).await;
    assert!(!clean, "never a complete response");
    assert_eq!(got, chunks[0], "nothing of the damaged chunk went out");
    let t = transfer_becomes(&app, &r, transfer, "failed").await;
    assert_eq!(t["error_message"], "relay_chunk_damaged");
}

#[tokio::test]
async fn a_chunk_uploaded_through_one_server_is_streamed_by_another() {
    // The stream's server waits less than its safety-net re-check (5 s):
    // only the database's notification can wake it in time.
    let app = TestApp::spawn().await;
    let mut settings = app.settings.clone();
    settings.bind = "127.0.0.1:0".into();
    settings.relay.content_wait_seconds = 4;
    let (other, handle) = start_server(&settings).await;
    let r = Relay::new(&app).await;
    let chunks = three_chunks(&app, &r).await;
    let whole = chunks.concat();
    let transfer = request(&app, &r).await;

    let res = app
        .http
        .get(format!("{other}{}", content_path(&r, transfer)))
        .bearer_auth(&r.member.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let reading = tokio::spawn(read_body(res));
    for chunk in &chunks {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(r.put(&app, &r.device, &hash(chunk), chunk.clone(), false).await.0, StatusCode::CREATED);
    }
    let (body, clean) = reading.await.unwrap();
    assert!(clean && body == whole, "{} of {} bytes", body.len(), whole.len());
    transfer_becomes(&app, &r, transfer, "completed").await;

    // The same wake-up serves a member's `?wait=` for a chunk.
    let later = noise(200_000, 14);
    r.file(&app, "/later.bin", &[&later]).await;
    let waiting = r.get(&app, &r.member.token, &hash(&later)).await.query(&[("wait", "30")]).send();
    let waiting = tokio::spawn(waiting);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(r.put(&app, &r.device, &hash(&later), later.clone(), false).await.0, StatusCode::CREATED);
    let res = waiting.await.unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.unwrap(), later);
    handle.stop(false).await;
}

#[tokio::test]
async fn only_the_requester_gets_the_bytes() {
    let app = TestApp::spawn().await;
    let r = Relay::new(&app).await;
    three_chunks(&app, &r).await;
    let transfer = request(&app, &r).await;
    let other = app.signup("other").await;
    app.join(&r.owner, r.project, &other).await;
    let stranger = app.signup("stranger").await;

    let path = content_path(&r, transfer);
    let (status, body) = app.get(&path, &other.token).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{body}");
    assert_eq!(app.get(&path, &stranger.token).await.0, StatusCode::NOT_FOUND);
    let (status, body) = app.get(&path, &r.owner.token).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("requester_only")));
    assert_eq!(app.http.get(app.url(&path)).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let unknown = content_path(&r, Uuid::now_v7());
    assert_eq!(app.get(&unknown, &r.member.token).await.0, StatusCode::NOT_FOUND);

    // A cancelled transfer's bytes are not served.
    let (status, _) =
        app.post(&format!("/api/projects/{}/transfers/{transfer}/cancel", r.project), &r.member.token, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.get(&path, &r.member.token).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("transfer_cancelled")));

    // A stream waiting for the owner's device stops once the transfer is
    // cancelled (at the latest at the next safety-net look, a few seconds),
    // not after the whole content wait (120 s here).
    let transfer = request(&app, &r).await;
    let res = app.http.get(app.url(&content_path(&r, transfer))).bearer_auth(&r.member.token).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let reading = tokio::spawn(read_body(res));
    let (status, _) =
        app.post(&format!("/api/projects/{}/transfers/{transfer}/cancel", r.project), &r.member.token, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let ended = tokio::time::timeout(Duration::from_secs(60), reading).await;
    assert!(matches!(ended, Ok(Ok((_, false)))), "the stream ended short once the transfer was cancelled");

    // `?wait=` waits only for a chunk of the project's files.
    let res = r.get(&app, &r.member.token, &hash(b"no file has this")).await.query(&[("wait", "30")]).send().await;
    assert_eq!(res.unwrap().status(), StatusCode::NOT_FOUND);
}
