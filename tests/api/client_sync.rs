//! `ferry sync PROJECT DIR`: the member's folder follows the owner's live —
//! an added, an edited, a deleted and a renamed file — through a server
//! restart, and SIGTERM stops it cleanly.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client_pull::write;
use crate::client_resume::owner_and_member;
use crate::client_share::{Person, Running, TempDir};
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

/// `ferry sync PROJECT DIR --json` with stdout and stderr kept in files:
/// its warnings (a dropped connection, a reconnect) go to stderr, which
/// `Running` leaves to the terminal. Killed when dropped.
struct LoggedSync {
    child: tokio::process::Child,
    logs: TempDir,
}

impl LoggedSync {
    fn start(person: &Person, project: &str, dir: &Path) -> Self {
        let logs = TempDir::new("sync-logs");
        let file = |name| std::fs::File::create(logs.path().join(name)).unwrap();
        let mut cmd =
            tokio::process::Command::from(person.command(&["sync", project, dir.to_str().unwrap(), "--json"]));
        cmd.stdout(file("stdout")).stderr(file("stderr")).kill_on_drop(true);
        Self { child: cmd.spawn().expect("ferry sync starts"), logs }
    }

    fn printed(&self, stream: &str) -> String {
        std::fs::read_to_string(self.logs.path().join(stream)).unwrap_or_default()
    }

    fn events(&self) -> Vec<Value> {
        self.printed("stdout").lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    fn reconnects(&self) -> usize {
        self.printed("stderr").lines().filter(|l| l.starts_with("warning: the live connection")).count()
    }

    /// Polls `done` until it holds; fails if sync exits first or it takes
    /// too long, showing what sync printed.
    async fn wait_until(&mut self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + CONVERGE_WITHIN;
        while !done(self) {
            let exited = self.child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "no {what} (sync exited: {exited:?}); stdout:\n{}\nstderr:\n{}",
                self.printed("stdout"),
                self.printed("stderr")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_reconnects_after_a_server_restart_and_catches_up() {
    let mut app = TestApp::spawn().await;
    let (owner, member, project) = owner_and_member(&app, "Restart").await;

    let tree = TempDir::new("restart-src");
    let src = tree.path();
    write(src, "edit.txt", b"first version");
    let mut agent = Running::share(&owner, &project, src);
    agent.wait_for("its first push", |v| v["event"] == "synced").await;

    let target = TempDir::new("restart-dst");
    let dst = target.path();
    let has = |rel: &str, bytes: &[u8]| read(dst, rel).as_deref() == Some(bytes);
    let mut sync = LoggedSync::start(&member, &project, dst);
    sync.wait_until("first pull", |s| s.events().iter().any(|e| e["event"] == "pulled")).await;
    assert!(has("edit.txt", b"first version"));
    // A live change first, so that the restart cuts a subscribed socket.
    write(src, "edit.txt", b"second version");
    sync.wait_until("live edit", |_| has("edit.txt", b"second version")).await;
    let drops_before = sync.reconnects();

    app.restart().await;
    write(src, "edit.txt", b"third version, after the restart");
    write(src, "new/added.txt", b"added after the restart");
    sync.wait_until("catching up after the restart", |_| {
        has("edit.txt", b"third version, after the restart") && has("new/added.txt", b"added after the restart")
    })
    .await;

    // The same process noticed the cut and reconnected (what came after the
    // restart can only have come over a new socket).
    assert!(sync.reconnects() > drops_before, "no reconnect reported; stderr:\n{}", sync.printed("stderr"));
    assert!(sync.child.try_wait().unwrap().is_none(), "sync exited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_keeps_the_members_own_edits_and_what_the_owner_deletes_or_replaces() {
    let app = TestApp::spawn().await;
    let (owner, member, project) = owner_and_member(&app, "Keep").await;
    let tree = TempDir::new("keep-src");
    let src = tree.path();
    write(src, "edit.txt", b"first version");
    write(src, "docs/gone.txt", b"about to be deleted");
    write(src, "replaced.txt", b"replaced, the old one");
    let mut agent = Running::share(&owner, &project, src);
    agent.wait_for("its first push", |v| v["event"] == "synced").await;
    let target = TempDir::new("keep-dst");
    let dst = target.path();
    let mut sync = Running::sync(&member, &project, dst);
    sync.wait_for("its first pull", |v| v["event"] == "pulled").await;

    // The member edits a file here; the owner changes the same file, deletes
    // another and replaces a third.
    write(dst, "edit.txt", b"the member's own edit");
    write(src, "edit.txt", b"the owner's second version");
    std::fs::remove_file(src.join("docs/gone.txt")).unwrap();
    write(src, "replaced.txt", b"replaced, the new one");
    let find = |events: &[Value], event: &str, path: &str| {
        events.iter().find(|v| v["event"] == event && v["path"] == path).cloned()
    };
    let deadline = Instant::now() + CONVERGE_WITHIN;
    let (conflict, replaced) = loop {
        let events = sync.events();
        let seen = (
            find(&events, "updated", "/edit.txt"),
            find(&events, "updated", "/replaced.txt"),
            find(&events, "deleted", "/docs/gone.txt"),
        );
        if let (Some(conflict), Some(replaced), Some(_)) = seen {
            break (conflict, replaced);
        }
        assert!(Instant::now() < deadline, "not all applied; sync printed:\n{}", sync.seen.join("\n"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // The owner's version is in place; the member's is beside it.
    assert_eq!(read(dst, "edit.txt").as_deref(), Some(&b"the owner's second version"[..]));
    let copy = conflict["conflict_copy"].as_str().unwrap_or_else(|| panic!("no conflict copy: {conflict}"));
    assert!(copy.starts_with("/edit.ferry-conflict-") && copy.ends_with(".txt"), "{conflict}");
    assert_eq!(read(dst, copy.trim_start_matches('/')).as_deref(), Some(&b"the member's own edit"[..]));
    assert_eq!(replaced["trashed"], "/replaced.txt", "{replaced}");
    assert_eq!(read(dst, "replaced.txt").as_deref(), Some(&b"replaced, the new one"[..]));
    assert!(!dst.join("docs/gone.txt").exists());

    // The trash holds what the owner deleted or replaced; restore brings it back.
    let to = dst.to_str().unwrap();
    let trash = member.json(&["trash", "list", to]).await;
    let mut kept: Vec<(&str, u64)> = trash["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["size"].as_u64().unwrap()))
        .collect();
    kept.sort();
    assert_eq!(kept, [("/docs/gone.txt", 19), ("/replaced.txt", 21)], "{trash}");
    member.json(&["trash", "restore", to, "/docs/gone.txt"]).await;
    assert_eq!(read(dst, "docs/gone.txt").as_deref(), Some(&b"about to be deleted"[..]));
    let again = member.run(&["trash", "restore", to, "/docs/gone.txt"]).await;
    assert!(!again.status.success(), "restored twice");
    drop(sync);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_sync_keeps_the_edits_made_here_while_it_was_stopped() {
    let app = TestApp::spawn().await;
    let (owner, member, project) = owner_and_member(&app, "Stopped").await;
    let tree = TempDir::new("stopped-src");
    let src = tree.path();
    write(src, "both.txt", b"first version");
    write(src, "member.txt", b"the owner's only version");
    write(src, "owner.txt", b"the owner's first version");
    write(src, "untouched.txt", b"nobody changes this");
    let mut agent = Running::share(&owner, &project, src);
    agent.wait_for("its first push", |v| v["event"] == "synced").await;
    let target = TempDir::new("stopped-dst");
    let dst = target.path();
    let mut sync = Running::sync(&member, &project, dst);
    sync.wait_for("its first pull", |v| v["event"] == "pulled").await;
    drop(sync);

    // While sync is stopped: both change one file, the member edits another,
    // the owner a third.
    write(src, "both.txt", b"the owner's second version");
    write(src, "owner.txt", b"the owner's second version");
    let mut pushed = 0;
    while pushed < 2 {
        let synced = agent.wait_for("the owner's changes pushed", |v| v["event"] == "synced").await;
        pushed += synced["changes_applied"].as_u64().unwrap();
    }
    write(dst, "both.txt", b"the member's edit, made while sync was stopped");
    write(dst, "member.txt", b"the member's own edit");

    let mut sync = Running::sync(&member, &project, dst);
    sync.wait_for("its first pull", |v| v["event"] == "pulled").await;
    let set_aside = sync.events();
    let copy_of = |path: &str| {
        let line = set_aside.iter().find(|v| v["event"] == "set_aside" && v["path"] == path);
        let copy = line.and_then(|v| v["conflict_copy"].as_str()).unwrap_or_else(|| panic!("{path}: {set_aside:?}"));
        copy.trim_start_matches('/').to_owned()
    };

    // The owner's versions are in place; the member's edits beside them.
    let both = copy_of("/both.txt");
    assert!(both.starts_with("both.ferry-conflict-") && both.ends_with(".txt"), "{both}");
    assert_eq!(read(dst, &both).as_deref(), Some(&b"the member's edit, made while sync was stopped"[..]));
    assert_eq!(read(dst, "both.txt").as_deref(), Some(&b"the owner's second version"[..]));
    assert_eq!(read(dst, &copy_of("/member.txt")).as_deref(), Some(&b"the member's own edit"[..]));
    assert_eq!(read(dst, "member.txt").as_deref(), Some(&b"the owner's only version"[..]));
    // What only the owner changed is replaced, the older version trashed.
    assert_eq!(read(dst, "owner.txt").as_deref(), Some(&b"the owner's second version"[..]));
    let trashed = set_aside.iter().find(|v| v["event"] == "set_aside" && v["path"] == "/owner.txt");
    assert_eq!(trashed.map(|v| v["trashed"].clone()), Some("/owner.txt".into()), "{set_aside:?}");
    assert!(!set_aside.iter().any(|v| v["path"] == "/untouched.txt"), "{set_aside:?}");
    assert_eq!(read(dst, "untouched.txt").as_deref(), Some(&b"nobody changes this"[..]));
}
