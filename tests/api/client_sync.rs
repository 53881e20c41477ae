//! `ferry sync PROJECT DIR`: the member's folder follows the owner's live —
//! an added, an edited, a deleted and a renamed file — and SIGTERM stops it
//! cleanly.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client_pull::write;
use crate::client_resume::owner_and_member;
use crate::client_share::{Running, TempDir};
use crate::helpers::TestApp;

const CONVERGE_WITHIN: Duration = Duration::from_secs(60);

fn read(dir: &Path, rel: &str) -> Option<Vec<u8>> {
    std::fs::read(dir.join(rel)).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_keeps_the_members_folder_current_until_stopped() {
    let app = TestApp::spawn().await;
    let (owner, member, project) = owner_and_member(&app, "Sync").await;

    let tree = TempDir::new("sync-src");
    let src = tree.path();
    write(src, "keep.txt", b"unchanged all along");
    write(src, "edit.txt", b"first version");
    write(src, "gone.txt", b"about to be deleted");
    write(src, "docs/old-name.txt", b"a file that will be renamed");
    let mut agent = Running::share(&owner, &project, src);
    agent.wait_for("its first push", |v| v["event"] == "synced").await;

    let target = TempDir::new("sync-dst");
    let dst = target.path();
    let mut sync = Running::sync(&member, &project, dst);

    // The first pull brings everything.
    let deadline = Instant::now() + CONVERGE_WITHIN;
    while !sync.events().iter().any(|e| e["event"] == "pulled") {
        assert!(Instant::now() < deadline, "no first pull; sync printed:\n{}", sync.seen.join("\n"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(read(dst, "edit.txt").as_deref(), Some(&b"first version"[..]));
    assert_eq!(read(dst, "docs/old-name.txt").as_deref(), Some(&b"a file that will be renamed"[..]));

    // The owner adds, edits, deletes and renames.
    write(src, "new/added.txt", b"added while syncing");
    write(src, "edit.txt", b"second version, longer");
    std::fs::remove_file(src.join("gone.txt")).unwrap();
    std::fs::create_dir_all(src.join("archive")).unwrap();
    std::fs::rename(src.join("docs/old-name.txt"), src.join("archive/new-name.txt")).unwrap();

    let converged = |dst: &Path| {
        read(dst, "new/added.txt").as_deref() == Some(&b"added while syncing"[..])
            && read(dst, "edit.txt").as_deref() == Some(&b"second version, longer"[..])
            && !dst.join("gone.txt").exists()
            && !dst.join("docs/old-name.txt").exists()
            && read(dst, "archive/new-name.txt").as_deref() == Some(&b"a file that will be renamed"[..])
            && read(dst, "keep.txt").as_deref() == Some(&b"unchanged all along"[..])
    };
    let deadline = Instant::now() + CONVERGE_WITHIN;
    while !converged(dst) {
        assert!(
            Instant::now() < deadline,
            "the member's folder never converged; sync printed:\n{}",
            sync.seen.join("\n")
        );
        sync.drain();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // One JSON line per applied change.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let kinds: HashSet<String> =
            sync.events().iter().filter_map(|e| e["event"].as_str().map(str::to_owned)).collect();
        if ["added", "updated", "deleted"].iter().all(|k| kinds.contains(*k))
            && (kinds.contains("moved") || kinds.contains("added"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "changes not reported: {kinds:?}\n{}", sync.seen.join("\n"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = sync.events();
    assert!(events.iter().filter(|e| e["event"] != "pulled").all(|e| e["seq"].as_i64().is_some()), "{events:?}");

    // The last applied seq is kept in the manifest.
    let manifest: Value = serde_json::from_slice(&std::fs::read(dst.join(".ferry/manifest.json")).unwrap()).unwrap();
    assert!(manifest["last_seq"].as_i64().unwrap_or(0) > 0, "{manifest}");
    assert!(manifest["files"]["/archive/new-name.txt"].is_object(), "{manifest}");
    assert!(manifest["files"]["/gone.txt"].is_null(), "{manifest}");

    // SIGTERM: a clean stop.
    let pid = sync.child.id().to_string();
    let killed = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = sync.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "sync ignored SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}
