//! Bandwidth limits with the real binaries: `pull --max-download` keeps to
//! its rate (measured over seconds, a lower bound that load cannot break),
//! and `ferry limit` changes the limit of a pull already running.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::client_pull::{hash, write};
use crate::client_resume::owner_and_member;
use crate::client_share::{describe, noise, Person, Running, TempDir};
use crate::helpers::TestApp;

const MIB: usize = 1 << 20;

/// A project whose file `/big.bin` (`size` bytes of noise) is on the relay
/// already (a first pull fetched it there), with nobody serving any more.
async fn on_the_relay(app: &TestApp, size: usize) -> (Person, Person, String, String) {
    let (owner, member, project) = owner_and_member(app, "Limits").await;
    let tree = TempDir::new("limits-src");
    let big = noise(size, 11);
    write(tree.path(), "big.bin", &big);
    let mut agent = Running::share_with(&owner, &project, tree.path(), &["--no-direct"]);
    agent.wait_for("its first push", |v| v["event"] == "synced").await;
    let first = TempDir::new("limits-first");
    member.json(&["pull", &project, "--to", first.path().to_str().unwrap()]).await;
    drop(agent);
    (owner, member, project, hash(&big))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_keeps_to_its_download_limit() {
    let app = TestApp::spawn().await;
    let (_owner, member, project, want) = on_the_relay(&app, 4 * MIB).await;

    let limited = TempDir::new("limits-limited");
    let started = Instant::now();
    let pulled =
        member.json(&["pull", &project, "--to", limited.path().to_str().unwrap(), "--max-download", "1MiB/s"]).await;
    let took = started.elapsed().as_secs_f64();
    assert_eq!(pulled["bytes_transferred"].as_u64(), Some(4 * MIB as u64), "{pulled}");
    assert_eq!(hash(&std::fs::read(limited.path().join("big.bin")).unwrap()), want);
    // 4 MiB at 1 MiB/s, less a quarter second's burst: at least 3.75 s.
    assert!(took >= 3.5, "4 MiB arrived in {took:.2} s through a 1 MiB/s limit");

    // A rate that is not one is refused before anything happens.
    let bad = member.run(&["pull", &project, "--to", limited.path().to_str().unwrap(), "--max-download", "fast"]).await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a rate"), "{}", describe(&bad));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_limit_changes_the_limit_of_a_running_pull() {
    let app = TestApp::spawn().await;
    let (_owner, member, project, want) = on_the_relay(&app, 8 * MIB).await;

    // Set for this machine: a pull started without a flag keeps to it.
    let set = member.json(&["limit", "--max-download", "256KiB/s"]).await;
    assert_eq!((set["max_download"].as_u64(), set["max_upload"].as_u64()), (Some(256 * 1024), None), "{set}");

    let target = TempDir::new("limits-running");
    let started = Instant::now();
    let pull = member
        .command(&["pull", &project, "--to", target.path().to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ferry pull starts");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(std::fs::metadata(target.path().join("big.bin")).is_err(), "8 MiB at 256 KiB/s takes 32 s");

    // Lifted while it runs: it finishes long before the 32 s the limit needed.
    let lifted = member.json(&["limit", "--max-download", "off"]).await;
    assert_eq!(lifted["max_download"], serde_json::Value::Null, "{lifted}");
    let output = tokio::task::spawn_blocking(move || pull.wait_with_output()).await.unwrap().unwrap();
    let took = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("limits now: upload unlimited, download unlimited"), "it says so: {stderr}");
    assert!(took < 24.0, "the lifted limit was not followed: {took:.1} s");
    assert_eq!(hash(&std::fs::read(target.path().join("big.bin")).unwrap()), want);
}

/// `share --max-upload` holds for what the agent sends, directly and
/// through the relay alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_keeps_to_its_upload_limit_directly_and_through_the_relay() {
    let app = TestApp::spawn().await;
    let (owner, member, project) = owner_and_member(&app, "Upload limit").await;
    let tree = TempDir::new("upload-limit-src");
    let big = noise(3 * MIB, 12);
    write(tree.path(), "big.bin", &big);

    for (options, how) in
        [(&["--max-upload", "1MiB/s"][..], "direct"), (&["--max-upload", "1MiB/s", "--no-direct"][..], "relay")]
    {
        let mut agent = Running::share_with(&owner, &project, tree.path(), options);
        agent.wait_for("its first push", |v| v["event"] == "synced").await;
        let target = TempDir::new("upload-limit-dst");
        let started = Instant::now();
        let pulled = member.json(&["pull", &project, "--to", target.path().to_str().unwrap()]).await;
        let took = started.elapsed().as_secs_f64();
        let direct = if how == "direct" { 3 * MIB as u64 } else { 0 };
        assert_eq!(pulled["bytes_direct"].as_u64(), Some(direct), "{how}: {pulled}");
        assert_eq!(hash(&std::fs::read(target.path().join("big.bin")).unwrap()), hash(&big));
        // 3 MiB at 1 MiB/s, less a quarter second's burst.
        assert!(took >= 2.5, "{how}: 3 MiB were sent in {took:.2} s through a 1 MiB/s limit");
    }
}
