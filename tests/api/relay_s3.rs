//! The relay in S3 mode (`s3://bucket/prefix`), end to end over the API,
//! against a real S3-compatible server: moto's standalone server, which
//! this test starts on a free loopback port and kills when it ends.
//!
//! Moto must be installed (`.ci/run` installs it):
//!
//! ```sh
//! python3 -m pip install 'moto[server]'
//! ```
//!
//! Without it the test fails, saying how to install it, rather than pass
//! without having tested S3. Set `FERRY_SKIP_S3=1` to skip it instead: it
//! then prints that it was skipped and returns.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::TestApp;
use crate::relay::{hash, noise, text};

const BUCKET: &str = "ferry-test";

/// A moto server, killed when dropped.
struct Moto {
    child: Child,
    log: PathBuf,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Moto {
    /// Starts `moto_server` (else `python3 -m moto.server`) on a free port of
    /// 127.0.0.1 and waits until it answers. `None` when `FERRY_SKIP_S3=1`;
    /// panics when moto is not installed.
    async fn start() -> Option<Self> {
        if std::env::var("FERRY_SKIP_S3").is_ok_and(|v| v == "1") {
            eprintln!("relay_s3: skipped (FERRY_SKIP_S3=1): the relay's S3 mode was NOT tested");
            return None;
        }
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut failures = Vec::new();
        for program in [&["moto_server"][..], &["python3", "-m", "moto.server"][..]] {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("moto-{port}.log"));
            let spawned = Command::new(program[0])
                .args(&program[1..])
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn();
            let child = match spawned {
                Ok(child) => child,
                Err(e) => {
                    let _ = std::fs::remove_file(&log);
                    failures.push(format!("`{}`: {e}", program.join(" ")));
                    continue;
                }
            };
            let mut moto = Moto { child, log, url: format!("http://127.0.0.1:{port}") };
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(Some(status)) = moto.child.try_wait() {
                    let said = std::fs::read_to_string(&moto.log).unwrap_or_default();
                    let lines: Vec<&str> = said.lines().collect();
                    let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
                    failures.push(format!("`{}` exited ({status}): {tail}", program.join(" ")));
                    break;
                }
                if http.get(&moto.url).send().await.is_ok() {
                    return Some(moto);
                }
                assert!(
                    Instant::now() < deadline,
                    "`{}` did not answer on {} within 60 s",
                    program.join(" "),
                    moto.url
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!(
            "moto's S3 server could not be started, so the relay's S3 mode cannot be tested.\n\
             Install it with:  python3 -m pip install 'moto[server]'\n\
             (or set FERRY_SKIP_S3=1 to skip this test).\n{}",
            failures.join("\n")
        );
    }

    /// The keys under `prefix` in the bucket, straight from moto.
    async fn keys(&self, prefix: &str) -> Vec<String> {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let res = http.get(format!("{}/{BUCKET}?list-type=2&prefix={prefix}", self.url)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let xml = res.text().await.unwrap();
        let mut keys: Vec<String> =
            xml.split("<Key>").skip(1).map(|rest| rest.split("</Key>").next().unwrap().to_owned()).collect();
        keys.sort();
        keys
    }
}

#[tokio::test]
async fn the_relay_keeps_chunks_in_s3() {
    let Some(moto) = Moto::start().await else { return };
    // ChunkStore::open reads the AWS environment for s3:// specs. The other
    // tests of this binary run in parallel threads, but their relays are
    // local folders, which never read these variables: setting them is
    // harmless to them.
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_ENDPOINT_URL", &moto.url);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let created = http.put(format!("{}/{BUCKET}", moto.url)).send().await.unwrap();
    assert!(created.status().is_success(), "CreateBucket: {}", created.status());

    let app = TestApp::spawn_with(|s| s.relay.relay_store = Some(format!("s3://{BUCKET}/relay"))).await;
    let owner = app.signup("owner").await;
    let member = app.signup("member").await;
    let project = app.create_project(&owner, "Relay in S3").await;
    app.join(&owner, project, &member).await;
    let device = app.source_device(&owner, project).await;
    let chunk_url = |name: &str| app.url(&format!("/api/projects/{project}/chunks/{name}"));
    let put = |name: String, body: Vec<u8>| {
        let req = app.http.put(chunk_url(&name)).bearer_auth(&device).body(body);
        async move {
            let res = req.send().await.unwrap();
            (res.status(), res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let get = |name: &str| app.http.get(chunk_url(name)).bearer_auth(&member.token);

    // Two chunks: noise (no zstd variant kept) and text (one kept).
    let (a, b) = (noise(100_000, 3), text(150_000));
    for chunk in [&a, &b] {
        let (status, body) = put(hash(chunk), chunk.clone()).await;
        assert_eq!((status, body), (StatusCode::CREATED, json!({"hash": hash(chunk), "size": chunk.len()})));
    }
    let (status, _) = put(hash(&b), b.clone()).await;
    assert_eq!(status, StatusCode::OK, "already there: nothing written");
    let whole = [a.clone(), b.clone()].concat();
    let chunks = json!([{"hash": hash(&a), "size": a.len()}, {"hash": hash(&b), "size": b.len()}]);
    let change =
        json!([{"op": "upsert", "path": "/doc.bin", "size": whole.len(), "hash": hash(&whole), "chunks": chunks}]);
    assert_eq!(app.push(&device, project, change).await.0, StatusCode::OK);

    // The member downloads: whole, a range, and the zstd variant.
    let res = get(&hash(&a)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.unwrap().to_vec(), a);
    let res = get(&hash(&a)).header(RANGE, "bytes=1000-1999").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.headers()[CONTENT_RANGE], "bytes 1000-1999/100000");
    assert_eq!(res.bytes().await.unwrap().to_vec(), a[1000..2000].to_vec());
    let res = get(&hash(&b)).header(ACCEPT_ENCODING, "zstd").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[CONTENT_ENCODING], "zstd");
    let packed = res.bytes().await.unwrap();
    assert!(packed.len() < b.len() / 10, "{} bytes", packed.len());
    assert_eq!(zstd::decode_all(&packed[..]).unwrap(), b);

    // Bytes that do not hash to the name are refused and leave no object.
    let wrong = hash(b"something else");
    let (status, body) = put(wrong.clone(), noise(1000, 2)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("hash_mismatch")));

    // What moto holds: the two chunks and the text's variant, nothing else.
    let dir = format!("relay/chunks/{project}");
    let mut expected =
        vec![format!("{dir}/{}", hash(&a)), format!("{dir}/{}", hash(&b)), format!("{dir}/{}.zst", hash(&b))];
    expected.sort();
    assert_eq!(moto.keys("relay/").await, expected);
}
