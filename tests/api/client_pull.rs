//! `ferry pull`, `ferry ls` and `ferry transfers`, as people run them: the
//! owner's real `ferry share` agent in the background, the member's real
//! `ferry pull` through the relay, one config folder per identity.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client_resume::{owner_and_member, owner_via_and_member};
use crate::client_share::{describe, noise, Person, Running, TempDir, AGENT_WITHIN};
use crate::helpers::TestApp;
use crate::support::cli::AtTerminal;

pub(crate) fn write(dir: &Path, rel: &str, bytes: &[u8]) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

pub(crate) fn hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_pulls_through_the_relay_then_only_the_changed_chunk() {
    let app = TestApp::spawn().await;
    let owner = Person::new(&app, "owner");
    let member = Person::new(&app, "member");
    owner.signup("owner").await;
    member.signup("member").await;
    let project = owner.json(&["project", "create", "Pull"]).await["id"].as_str().unwrap().to_owned();
    let invite = owner.json(&["invite", "create", &project]).await["token"].as_str().unwrap().to_owned();
    member.json(&["join", &invite]).await;

    let tree = TempDir::new("pull-src");
    let src = tree.path();
    let mut big = noise(6 * 1024 * 1024 + 4321, 9);
    write(src, "media/big.bin", &big);
    write(src, "docs/small.txt", b"small and plain");

    // Relay only: `client_direct` covers the direct path.
    let mut agent = Running::share_with(&owner, &project, src, &["--no-direct"]);
    agent.wait_for("its first push", |v| v["event"] == "synced").await;

    // ls, with and without a prefix.
    let listed = member.json(&["ls", &project]).await;
    let paths: Vec<&str> = listed["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/docs/small.txt", "/media/big.bin"], "{listed}");
    let docs = member.json(&["ls", &project, "/docs/"]).await;
    assert_eq!(docs["files"].as_array().unwrap().len(), 1, "{docs}");
    assert_eq!(docs["files"][0]["hash"], hash(b"small and plain"));
    let table = member.run(&["ls", &project]).await;
    assert!(table.status.success(), "{}", describe(&table));
    assert!(String::from_utf8_lossy(&table.stdout).contains("/media/big.bin"));

    // The first pull: everything crosses the relay.
    let target = TempDir::new("pull-dst");
    let dst = target.path();
    let to = dst.to_str().unwrap();
    let first = member.json(&["pull", &project, "--to", to]).await;
    assert_eq!(first["files"].as_u64(), Some(2), "{first}");
    assert_eq!(first["bytes_transferred"].as_u64(), Some(big.len() as u64 + 15), "{first}");
    assert_eq!(first["bytes_reused"].as_u64(), Some(0), "{first}");
    assert!(std::fs::read(dst.join("media/big.bin")).unwrap() == big);
    assert_eq!(std::fs::read(dst.join("docs/small.txt")).unwrap(), b"small and plain");
    let manifest: Value = serde_json::from_slice(&std::fs::read(dst.join(".ferry/manifest.json")).unwrap()).unwrap();
    let entry = &manifest["files"]["/media/big.bin"];
    assert_eq!(
        (entry["project_id"].as_str(), entry["hash"].as_str(), entry["size"].as_u64()),
        (Some(project.as_str()), Some(hash(&big).as_str()), Some(big.len() as u64)),
        "{manifest}"
    );
    assert!(entry["synced_at"].is_string() && entry["local_path"].is_string());
    assert!(
        std::fs::read_dir(dst.join(".ferry/parts")).unwrap().next().is_none(),
        "the parts' records are dropped once the pull is whole"
    );
    assert!(!dst.join("media/.big.bin.ferry-part").exists(), "the part became the file");
    assert!(!dst.join(".ferry/chunks").exists(), "each byte written once: no chunk store beside the file");

    // The transfers, completed, as the member sees them.
    let transfers = member.json(&["transfers", &project]).await;
    let list = transfers["transfers"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{transfers}");
    assert!(list.iter().all(|t| t["status"] == "completed"), "{transfers}");
    let table = member.run(&["transfers", &project]).await;
    assert!(String::from_utf8_lossy(&table.stdout).contains("completed"));
    // By state, however old; every one; a state that does not exist is refused.
    let completed = member.json(&["transfers", &project, "--status", "completed"]).await;
    assert_eq!(completed["transfers"].as_array().map(Vec::len), Some(2), "{completed}");
    let failed = member.json(&["transfers", &project, "--status", "failed"]).await;
    assert_eq!(failed["transfers"].as_array().map(Vec::len), Some(0), "{failed}");
    let all = member.json(&["transfers", &project, "--all"]).await;
    assert_eq!(all["transfers"], transfers["transfers"], "nothing older than a day here");
    let unknown = member.run(&["transfers", &project, "--status", "done"]).await;
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert!(!unknown.status.success() && said.contains("one of pending, in_progress"), "{}", describe(&unknown));

    // Nothing changed: nothing moves.
    let again = member.json(&["pull", &project, "--to", to]).await;
    assert_eq!((again["files"].as_u64(), again["bytes_transferred"].as_u64()), (Some(0), Some(0)), "{again}");

    // One byte in the middle: about one chunk crosses, the rest is reused.
    let middle = big.len() / 2;
    big[middle] ^= 0xff;
    write(src, "media/big.bin", &big);
    let new_hash = hash(&big);
    let deadline = Instant::now() + AGENT_WITHIN;
    loop {
        let listed = member.json(&["ls", &project, "/media/"]).await;
        if listed["files"][0]["hash"] == new_hash.as_str() {
            break;
        }
        assert!(Instant::now() < deadline, "the edit never reached the server");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let delta = member.json(&["pull", &project, "media", "--to", to]).await;
    let transferred = delta["bytes_transferred"].as_u64().unwrap();
    let reused = delta["bytes_reused"].as_u64().unwrap();
    assert_eq!(delta["files"].as_u64(), Some(1), "{delta}");
    assert_eq!(transferred + reused, big.len() as u64, "{delta}");
    assert!(transferred > 0 && transferred < big.len() as u64 / 2, "{delta}");
    assert!(std::fs::read(dst.join("media/big.bin")).unwrap() == big);

    // The source away: the pull gives up in time, says why, and fails.
    drop(agent);
    write(src, "docs/small.txt", b"changed while nobody serves");
    owner.json(&["share", &project, src.to_str().unwrap(), "--once"]).await;
    let stuck = member.run(&["pull", &project, "/docs/small.txt", "--to", to, "--wait", "2"]).await;
    assert!(!stuck.status.success(), "{}", describe(&stuck));
    let stderr = String::from_utf8_lossy(&stuck.stderr);
    assert!(
        stderr.contains("/docs/small.txt") && stderr.contains("waited 2s (--wait) for the owner's computer"),
        "{}",
        describe(&stuck)
    );
    assert_eq!(
        std::fs::read(dst.join("docs/small.txt")).unwrap(),
        b"small and plain",
        "a failed pull leaves the old file"
    );
    // And it cancels the transfer it gave up on: nobody need serve it later.
    let transfers = member.json(&["transfers", &project]).await;
    let given_up: Vec<&Value> = transfers["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["file_path"] == "/docs/small.txt" && t["status"] != "completed")
        .collect();
    assert_eq!(given_up.len(), 1, "{transfers}");
    assert_eq!(given_up[0]["status"], "cancelled", "{transfers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_follows_the_open_ones_live_at_a_terminal() {
    let app = TestApp::spawn().await;
    let (owner, member, project) = crate::client_resume::owner_and_member(&app, "Live").await;
    let tree = TempDir::new("live-src");
    write(tree.path(), "big.bin", &noise(2 * 1024 * 1024, 5));
    owner.json(&["share", &project, tree.path().to_str().unwrap(), "--once"]).await;
    // No agent runs: the transfer stays open until the test moves it.
    let (status, download) = app
        .post(&format!("/api/projects/{project}/files/download"), &member.token(), json!({"file_path": "/big.bin"}))
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{download}");
    let transfer = download["download_id"].as_str().unwrap().to_owned();

    // `script` gives `ferry transfers` a terminal.
    let mut view = AtTerminal::spawn(&member.command(&["transfers", &project])).expect("script runs");
    let wait_for = |what: &'static str| {
        let view = &view;
        async move { view.wait_for(what, AGENT_WITHIN).await.unwrap_or_else(|e| panic!("{e}")) }
    };
    wait_for("Following 1 open transfer").await;
    assert!(view.printed().contains("pending"), "the table first");

    // Progress from the source, then the requester cancels: the view says
    // so and ends by itself.
    let device = owner.device_token();
    let path = format!("/api/projects/{project}/transfers/{transfer}");
    let (status, body) = app
        .call(
            reqwest::Method::PATCH,
            &path,
            Some(&device),
            Some(&json!({"status": "in_progress", "bytes_transferred": 1024 * 1024})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    app.post(&format!("{path}/cancel"), &member.token(), json!({})).await;
    wait_for("cancelled /big.bin").await;
    let deadline = Instant::now() + AGENT_WITHIN;
    let status = loop {
        if let Some(status) = view.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the live view did not end:\n{}", view.printed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}:\n{}", view.printed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_says_the_owners_computer_is_offline_waits_and_stops_with_why() {
    let app = TestApp::spawn().await;
    let (owner, member, project) = owner_and_member(&app, "Away").await;
    let tree = TempDir::new("offline-src");
    write(tree.path(), "report.pdf", b"the owner's report");
    // Shared once: the owner's computer is not online to send it.
    owner.json(&["share", &project, tree.path().to_str().unwrap(), "--once"]).await;

    let target = TempDir::new("offline-dst");
    let pulled = member.run(&["pull", &project, "--to", target.path().to_str().unwrap(), "--wait", "3"]).await;
    assert!(!pulled.status.success(), "{}", describe(&pulled));
    let said = String::from_utf8_lossy(&pulled.stderr);
    assert!(said.contains("waiting for the owner's computer “") && said.contains("”, offline"), "{said}");
    assert_eq!(said.matches("waiting for the owner's computer").count(), 1, "said once: {said}");
    assert!(said.contains("waited 3s (--wait) for the owner's computer"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_on_a_pull_cancels_its_transfer_keeps_what_arrived_and_the_same_command_resumes() {
    let app = TestApp::spawn().await;
    // The owner's uplink: 2 MB/s, so the pull can be stopped mid-file.
    let uplink = crate::web_browser::SlowUplink::to(&app, 2e6).await;
    let (owner, member, project) = owner_via_and_member(&app, &uplink.url, "Stop").await;
    let tree = TempDir::new("int-src");
    let big = noise(8 * 1000 * 1000, 5);
    write(tree.path(), "big.bin", &big);
    let mut agent = Running::share_with(&owner, &project, tree.path(), &["--no-direct"]);
    agent.wait_for("its first push", |v| v["event"] == "synced").await;

    let target = TempDir::new("int-dst");
    let to = target.path().to_str().unwrap();
    let mut pull = tokio::process::Command::from(member.command(&["pull", &project, "--to", to]));
    let pull = pull.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true).spawn().unwrap();
    let token = member.token();
    let deadline = Instant::now() + AGENT_WITHIN;
    let transfer = loop {
        let (_, page) = app.get(&format!("/api/projects/{project}/transfers"), &token).await;
        let t = &page["transfers"][0];
        if t["status"] == "in_progress" && t["bytes_transferred"].as_i64().unwrap_or(0) > 1_000_000 {
            break t["id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "the transfer never moved: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Ctrl-C: the transfer is cancelled, and the pull says what it kept.
    // SAFETY: kill(2) on the child this test started and has not reaped.
    unsafe { libc::kill(pull.id().unwrap() as libc::pid_t, libc::SIGINT) };
    let stopped = tokio::time::timeout(Duration::from_secs(30), pull.wait_with_output()).await.unwrap().unwrap();
    assert!(!stopped.status.success(), "{}", describe(&stopped));
    let said = String::from_utf8_lossy(&stopped.stderr);
    assert!(said.contains("stopped: 1 open transfer(s) cancelled") && said.contains("resumes"), "{said}");
    let (_, t) = app.get(&format!("/api/projects/{project}/transfers/{transfer}"), &token).await;
    assert_eq!(t["status"], "cancelled", "{t}");

    // The same command takes up what arrived: less than the whole crosses.
    let again = member.json(&["pull", &project, "--to", to]).await;
    let transferred = again["bytes_transferred"].as_u64().unwrap();
    assert!(transferred < big.len() as u64, "{again}");
    assert!(std::fs::read(target.path().join("big.bin")).unwrap() == big, "the resumed file is not the owner's");
}

/// A file replaced behind the agent's back by one of the same size and
/// mtime (as a copy that keeps times does): the agent's index still names
/// the old chunks, so what it reads and uploads does not hash to them. The
/// relay refuses those bytes and stores nothing, and the transfer fails as
/// `file_changed_at_source`, which the member is told. The agent hashes the
/// file again and pushes its new version, which the next pull gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_replaced_behind_the_agents_back_fails_its_relayed_transfer_as_changed_at_source() {
    replaced_behind_the_agents_back(&["--no-direct"]).await;
}

/// The same served directly: the agent sends the bytes its file holds now
/// without hashing them, the member's check refuses them and takes the
/// transfer to the relay, and it ends as the relayed one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_replaced_behind_the_agents_back_fails_its_direct_transfer_as_changed_at_source() {
    let said = replaced_behind_the_agents_back(&[]).await;
    assert!(said.contains("from the owner's machine did not verify; using the relay"), "{said}");
}

/// Shares a file with `share_args`, replaces it behind the agent's back,
/// checks that the member's pull fails as `file_changed_at_source` with
/// nothing written or kept on the relay; answers what the pull printed.
async fn replaced_behind_the_agents_back(share_args: &[&str]) -> String {
    let app = TestApp::spawn().await;
    let (owner, member, project) = owner_and_member(&app, "Changed").await;
    let tree = TempDir::new("changed-src");
    let original = noise(300_000, 5);
    write(tree.path(), "data/report.bin", &original);
    let mut agent = Running::share_with(&owner, &project, tree.path(), share_args);
    agent.wait_for("its first push", |v| v["event"] == "synced").await;

    // Same size and mtime, other bytes, renamed into place in one step.
    let path = tree.path().join("data/report.bin");
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let aside = TempDir::new("changed-aside");
    let replacement = aside.path().join("report.bin");
    let replaced = noise(original.len(), 6);
    std::fs::write(&replacement, &replaced).unwrap();
    std::fs::File::options().write(true).open(&replacement).unwrap().set_modified(mtime).unwrap();
    std::fs::rename(&replacement, &path).unwrap();

    let target = TempDir::new("changed-dst");
    let to = target.path().to_str().unwrap();
    // Each attempt's failure, told on the project's stream, ends the pull's
    // wait at the relay: three attempts, each far within --wait and within
    // the 60 s the server holds one relay request, all within the 60 s
    // this command is given.
    let pulled = member.run(&["pull", &project, "--to", to, "--wait", "120"]).await;
    assert!(!pulled.status.success(), "{}", describe(&pulled));
    let said = String::from_utf8_lossy(&pulled.stderr).into_owned();
    // The first attempt always fails so: the relay refused what the agent read.
    assert!(said.contains("/data/report.bin") && said.contains("file_changed_at_source"), "{}", describe(&pulled));
    assert!(!target.path().join("data/report.bin").exists(), "nothing is written from bytes that were refused");

    let (_, page) = app.get(&format!("/api/projects/{project}/transfers"), &member.token()).await;
    let transfer = &page["transfers"][0];
    assert_eq!(transfer["status"], "failed", "{page}");
    // Its retries end the same way, or as `file_changed` once the agent
    // has pushed the file's new version.
    let why = transfer["error_message"].as_str();
    assert!(matches!(why, Some("file_changed_at_source" | "file_changed")), "{page}");
    let client = app.pool.get().await.unwrap();
    let project_id: uuid::Uuid = project.parse().unwrap();
    let stored: i64 = client
        .query_one("SELECT count(*) FROM relay_chunks WHERE project_id = $1", &[&project_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0, "the relay kept none of the refused bytes");

    // The agent hashed the file again and pushed what it holds now: the
    // same command gets the replacement, exactly.
    agent.wait_for("the replacement pushed", |v| v["event"] == "synced" && v["hashed"] == 1).await;
    let again = member.json(&["pull", &project, "--to", to]).await;
    assert_eq!(again["files"], 1, "{again}");
    assert!(
        std::fs::read(target.path().join("data/report.bin")).unwrap() == replaced,
        "the pulled file is the replacement"
    );
    drop(agent);
    describe(&pulled)
}
