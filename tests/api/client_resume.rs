//! `ferry pull` killed with SIGKILL mid-way resumes from the chunks it
//! wrote into the file's part (`.NAME.ferry-part` beside the target, with
//! a record of its chunks in `DIR/.ferry/parts/`): the second run fetches
//! only what it lacked, and refetches a chunk damaged meanwhile.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client_pull::{hash, write};
use crate::client_share::{describe, last_json, noise, Person, Running, TempDir};
use crate::helpers::TestApp;

/// An owner and a member of a new project; answers the project id.
pub(crate) async fn owner_and_member(app: &TestApp, name: &str) -> (Person, Person, String) {
    owner_via_and_member(app, &app.address, name).await
}

/// The same, the owner reaching the server at `owner_server` (a slow
/// uplink, say).
pub(crate) async fn owner_via_and_member(app: &TestApp, owner_server: &str, name: &str) -> (Person, Person, String) {
    let owner = Person { config: TempDir::new("config-owner"), server: owner_server.to_owned() };
    let member = Person::new(app, "member");
    owner.signup("owner").await;
    member.signup("member").await;
    let project = owner.json(&["project", "create", name]).await["id"].as_str().unwrap().to_owned();
    let invite = owner.json(&["invite", "create", &project]).await["token"].as_str().unwrap().to_owned();
    member.json(&["join", &invite]).await;
    (owner, member, project)
}

/// The chunks the part's records list as written: (offset, size) of each
/// whole line (the last may be cut short by the kill).
fn recorded_chunks(dir: &Path) -> Vec<(u64, u64)> {
    let Ok(entries) = std::fs::read_dir(dir.join(".ferry/parts")) else {
        return vec![];
    };
    let mut chunks = vec![];
    for e in entries.filter_map(|e| e.ok()) {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split(' ').collect();
            if let [offset, size, hash] = f[..] {
                if let (Ok(o), Ok(s), 64) = (offset.parse(), size.parse(), hash.len()) {
                    chunks.push((o, s));
                }
            }
        }
    }
    chunks
}

/// The chunks kept for resuming: how many and their bytes.
fn kept_chunks(dir: &Path) -> (usize, u64) {
    let chunks = recorded_chunks(dir);
    (chunks.len(), chunks.iter().map(|c| c.1).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_killed_mid_way_resumes_fetching_only_what_it_lacked() {
    let app = TestApp::spawn().await;
    let (owner, member, project) = owner_and_member(&app, "Resume").await;

    let tree = TempDir::new("resume-src");
    let src = tree.path();
    let big = noise(24 * 1024 * 1024 + 777, 21);
    write(src, "big.bin", &big);
    let mut agent = Running::share(&owner, &project, src);
    agent.wait_for("its first push", |v| v["event"] == "synced").await;

    let target = TempDir::new("resume-dst");
    let dst = target.path();
    let to = dst.to_str().unwrap();

    // The first pull, killed with SIGKILL once a few chunks have landed.
    let mut child = member
        .command(&["pull", &project, "--to", to, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ferry pull starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if kept_chunks(dst).0 >= 2 {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the pull ended ({status:?}) before it could be killed");
        }
        assert!(Instant::now() < deadline, "no chunk ever landed");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "the pull finished before the kill: {status:?}");
    }
    assert!(!dst.join("big.bin").exists(), "a killed pull leaves no partial file in place");
    let part = dst.join(".big.bin.ferry-part");
    assert_eq!(std::fs::metadata(&part).map(|m| m.len()).ok(), Some(big.len() as u64), "the part is beside the target");
    assert!(!dst.join(".ferry/chunks").exists(), "each byte is written once: no chunk store");
    // Progress showed from the first chunk, before the file was whole.
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    let progress: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "progress")
        .collect();
    assert!(
        progress.iter().any(|v| v["bytes"].as_u64().is_some_and(|b| b > 0 && b < big.len() as u64)
            && v["total_bytes"].as_u64() == Some(big.len() as u64)),
        "no progress while the pull ran: {stdout}"
    );

    // A recorded chunk damaged behind the pull's back is fetched again.
    let chunks = recorded_chunks(dst);
    let (count, kept) = kept_chunks(dst);
    assert!(count >= 2 && kept > 0 && kept < big.len() as u64);
    let (damaged_at, damaged_size) = chunks[0];
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&part).unwrap();
        let mut byte = [0u8];
        f.read_exact_at(&mut byte, damaged_at + damaged_size / 2).unwrap();
        f.write_all_at(&[byte[0] ^ 0xFF], damaged_at + damaged_size / 2).unwrap();
    }
    let kept = kept - damaged_size;

    // Again: only what was not kept crosses; the kept chunks are reused.
    let again = member.run(&["pull", &project, "--to", to, "--json"]).await;
    assert!(again.status.success(), "{}", describe(&again));
    let result = last_json(&again);
    assert_eq!(result["files"].as_u64(), Some(1), "{result}");
    assert_eq!(
        result["bytes_transferred"].as_u64(),
        Some(big.len() as u64 - kept),
        "kept {count} chunks ({kept} bytes): {result}"
    );
    assert_eq!(result["bytes_reused"].as_u64(), Some(kept), "{result}");
    let got = std::fs::read(dst.join("big.bin")).unwrap();
    assert!(got == big, "the resumed file differs");
    assert_eq!(hash(&got), hash(&big));
    assert_eq!(kept_chunks(dst).0, 0, "the record is dropped once whole");
    assert!(!part.exists(), "the part became the file");
    let leftovers: Vec<_> = std::fs::read_dir(dst.join(".ferry/parts")).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A transfer that keeps failing at the source is retried through the API
/// up to the server's maximum, and the user is told why when pull gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_transfer_is_retried_then_given_up_with_its_reason() {
    use reqwest::Method;
    use serde_json::json;

    let app = TestApp::spawn().await;
    let (owner, member, project) = owner_and_member(&app, "Retry").await;
    let tree = TempDir::new("retry-src");
    let src = tree.path();
    write(src, "doc.txt", b"a file whose source keeps failing");
    {
        // Shared once; then nobody serves it.
        let mut agent = Running::share(&owner, &project, src);
        agent.wait_for("its first push", |v| v["event"] == "synced").await;
    }
    let target = TempDir::new("retry-dst");
    let pull = member
        .command(&["pull", &project, "--to", target.path().to_str().unwrap(), "--wait", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ferry pull starts");

    // As the source device, fail every attempt the puller makes.
    let (device, owner_token) = (owner.device_token(), owner.token());
    let transfers = format!("/api/projects/{project}/transfers");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pull = pull;
    let status = loop {
        if let Some(status) = pull.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "pull neither finished nor gave up");
        let (_, page) = app.get(&transfers, &owner_token).await;
        for t in page["transfers"].as_array().unwrap() {
            if t["status"] == "pending" || t["status"] == "in_progress" {
                let path = format!("{transfers}/{}", t["id"].as_str().unwrap());
                let body = json!({"status": "failed", "error_message": "disk unplugged"});
                app.call(Method::PATCH, &path, Some(&device), Some(&body)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let output = pull.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!status.success(), "pull gave up, so it must fail");
    assert!(stderr.contains("disk unplugged"), "the reason is shown: {stderr}");

    let (_, page) = app.get(&transfers, &owner_token).await;
    let all = page["transfers"].as_array().unwrap();
    assert_eq!(all.len(), 1, "one transfer, retried in place: {page}");
    assert_eq!((all[0]["status"].as_str(), all[0]["attempts"].as_i64()), (Some("failed"), Some(3)));
    let retried = app.log(project.parse().unwrap()).await.iter().filter(|e| e.event_type == "transfer_retried").count();
    assert_eq!(retried, 2, "two retries through the API, up to the maximum of three attempts");
    assert!(!target.path().join("doc.txt").exists(), "nothing half-written");
}

/// A pull waiting for the owner's device learns from the project's events
/// that its transfer was cancelled (here by the owner), and stops saying so
/// instead of waiting out `--wait`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_whose_transfer_is_cancelled_stops_and_says_so() {
    let app = TestApp::spawn().await;
    let (owner, member, project) = owner_and_member(&app, "Cancelled").await;
    let tree = TempDir::new("cancelled-src");
    write(tree.path(), "doc.txt", b"a file nobody will send");
    {
        let mut agent = Running::share(&owner, &project, tree.path());
        agent.wait_for("its first push", |v| v["event"] == "synced").await;
    }
    let target = TempDir::new("cancelled-dst");
    let mut pull = member
        .command(&["pull", &project, "--to", target.path().to_str().unwrap(), "--wait", "600"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ferry pull starts");

    let transfers = format!("/api/projects/{project}/transfers");
    let open = loop {
        let (_, page) = app.get(&transfers, &owner.token()).await;
        if let Some(t) = page["transfers"].as_array().unwrap().iter().find(|t| t["status"] == "pending") {
            break t["id"].as_str().unwrap().to_owned();
        }
        assert!(pull.try_wait().unwrap().is_none(), "pull ended before asking");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (status, body) = app.post(&format!("{transfers}/{open}/cancel"), &owner.token(), serde_json::json!({})).await;
    assert_eq!(status, 200, "{body}");

    // Far less than --wait, or than the server holds one relay request
    // (60 s): the pull heard it, it did not wait it out.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = pull.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the pull did not notice its transfer was cancelled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let output = pull.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!status.success(), "a cancelled pull fails: {stderr}");
    assert!(stderr.contains("the transfer was cancelled"), "it says why: {stderr}");
    assert!(!target.path().join("doc.txt").exists(), "nothing half-written");
}
