//! `ferry share`, the owner's agent, as a person runs it: the real `ferry`
//! binary against the real server, in temporary folders, one config folder
//! per identity. Every wait is bounded (a hang check, not a timing claim).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::TestApp;
use crate::support::cli::{self, Background};

/// Longest run of a one-shot `ferry` command.
const COMMAND_WITHIN: Duration = Duration::from_secs(60);
/// Longest wait for something the running agent should do.
pub(crate) const AGENT_WITHIN: Duration = Duration::from_secs(30);
pub use crate::support::cli::describe;
pub use crate::support::PASSWORD;

/// A folder under `target/tmp`, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("client-{name}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One person on one machine: a config folder and the server.
pub struct Person {
    pub config: TempDir,
    pub server: String,
}

impl Person {
    pub fn new(app: &TestApp, name: &str) -> Self {
        Self { config: TempDir::new(&format!("config-{name}")), server: app.address.clone() }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        cli::ferry(self.config.path(), &self.server, args)
    }

    /// Runs `ferry ARGS` to its end.
    pub async fn run(&self, args: &[&str]) -> Output {
        cli::run(self.command(args), COMMAND_WITHIN).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `ferry ARGS --json`, expects success, answers the last stdout line.
    pub async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let output = self.run(&all).await;
        assert!(output.status.success(), "`ferry {}` failed:\n{}", args.join(" "), describe(&output));
        last_json(&output)
    }

    pub async fn signup(&self, email_name: &str) -> (String, String) {
        let email = format!("{email_name}-{}@example.org", uuid::Uuid::new_v4().simple());
        let body = self.json(&["signup", "--email", &email, "--password", PASSWORD]).await;
        (email, body["user_id"].as_str().expect("user_id").to_owned())
    }

    /// The user token the client keeps.
    pub fn token(&self) -> String {
        self.profile()["token"].as_str().expect("logged in").to_owned()
    }

    pub fn device_token(&self) -> String {
        self.profile()["device"]["token"].as_str().expect("a device").to_owned()
    }

    fn profile(&self) -> Value {
        let config: Value =
            serde_json::from_slice(&std::fs::read(self.config.path().join("config.json")).unwrap()).unwrap();
        config["servers"][&self.server].clone()
    }
}

/// The last stdout line of a `--json` run (its result, or its error).
pub fn last_json(output: &Output) -> Value {
    cli::last_json(output).unwrap_or_else(|e| panic!("{e}"))
}

/// Pseudo-random bytes that neither compress nor repeat.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

fn write(dir: &Path, rel: &str, bytes: &[u8]) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// A `ferry` command running in the background (`share` or `sync`, with
/// `--json`), its stdout lines collected, its stderr passed on to the
/// test's own; killed when dropped.
pub(crate) struct Running(Background);

impl std::ops::Deref for Running {
    type Target = Background;

    fn deref(&self) -> &Background {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Background {
        &mut self.0
    }
}

impl Running {
    pub(crate) fn start(person: &Person, args: &[&str]) -> Self {
        Self(Background::spawn(person.command(args), true).unwrap_or_else(|e| panic!("ferry {args:?} starts: {e}")))
    }

    /// The owner's agent: `ferry share PROJECT DIR --json`.
    pub(crate) fn share(person: &Person, project: &str, dir: &Path) -> Self {
        Self::share_with(person, project, dir, &[])
    }

    /// The owner's agent with more options (`--no-direct`, `--advertise URL`).
    pub(crate) fn share_with(person: &Person, project: &str, dir: &Path, options: &[&str]) -> Self {
        let mut args = vec!["share", project, dir.to_str().unwrap(), "--json"];
        args.extend_from_slice(options);
        Self::start(person, &args)
    }

    /// A member's `ferry sync PROJECT DIR --json`.
    pub(crate) fn sync(person: &Person, project: &str, dir: &Path) -> Self {
        Self::start(person, &["sync", project, dir.to_str().unwrap(), "--json"])
    }

    /// The next JSON line that satisfies `want`.
    pub(crate) async fn wait_for(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        self.0.wait_for_at(what, AGENT_WITHIN, want).await.unwrap_or_else(|e| panic!("{e}")).1
    }

    /// What it printed on stderr so far.
    pub(crate) fn stderr(&self) -> Vec<String> {
        self.0.stderr()
    }
}

/// Polls `check` until it answers Some, within the agent's bound.
pub(crate) async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + AGENT_WITHIN;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} did not happen within {AGENT_WITHIN:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn remote_files(app: &TestApp, token: &str, project: &str) -> Vec<Value> {
    let (status, body) = app.get(&format!("/api/projects/{project}/files-paginated?limit=1000"), token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["files"].as_array().unwrap().clone()
}

fn paths(files: &[Value]) -> Vec<String> {
    files.iter().map(|f| f["path"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_once_pushes_a_tree_then_only_what_changed_without_rehashing() {
    let app = TestApp::spawn().await;
    let owner = Person::new(&app, "owner");
    owner.signup("owner").await;
    let project = owner.json(&["project", "create", "Tree"]).await["id"].as_str().unwrap().to_owned();

    let tree = TempDir::new("tree");
    let dir = tree.path();
    let big = noise(5 * 1024 * 1024 + 12345, 1);
    write(dir, "docs/readme.md", b"# Ferry\n");
    write(dir, "docs/nested/deep/notes.txt", b"first notes");
    write(dir, "ünïcødé/名前 file.txt", "héllo wörld".as_bytes());
    write(dir, "empty.txt", b"");
    write(dir, "big.bin", &big);
    write(dir, ".ferryignore", b"*.log\nscratch/\n");
    write(dir, "debug.log", b"ignored");
    write(dir, "scratch/tmp.txt", b"ignored too");

    // By name, with the global flag after the subcommand.
    let first = owner.json(&["share", "Tree", dir.to_str().unwrap(), "--once"]).await;
    assert_eq!(
        (first["files"].as_u64(), first["changes_applied"].as_u64(), first["hashed"].as_u64()),
        (Some(6), Some(6), Some(6)),
        "{first}"
    );
    assert!(dir.join(".ferry/index.json").is_file(), "the local index is kept in DIR/.ferry");

    let token = owner.token();
    let files = remote_files(&app, &token, &project).await;
    assert_eq!(
        paths(&files),
        [
            "/.ferryignore",
            "/big.bin",
            "/docs/nested/deep/notes.txt",
            "/docs/readme.md",
            "/empty.txt",
            "/ünïcødé/名前 file.txt"
        ]
    );
    let remote_big = files.iter().find(|f| f["path"] == "/big.bin").unwrap();
    assert_eq!(
        (remote_big["hash"].as_str(), remote_big["size"].as_u64()),
        (Some(hash(&big).as_str()), Some(big.len() as u64))
    );
    let empty = files.iter().find(|f| f["path"] == "/empty.txt").unwrap();
    assert_eq!((empty["size"].as_u64(), empty["hash"].as_str()), (Some(0), Some(hash(b"").as_str())));
    // The big file went up as several FastCDC chunks that cover it exactly.
    let added = app.log(project.parse().unwrap()).await;
    let big_event = added.iter().find(|e| e.data["path"] == "/big.bin").expect("file_added for /big.bin");
    let chunks = big_event.data["chunks"].as_array().unwrap();
    assert!(chunks.len() >= 3, "{} chunks", chunks.len());
    let mut offset = 0usize;
    for c in chunks {
        let size = c["size"].as_u64().unwrap() as usize;
        assert!((256 * 1024..=4 * 1024 * 1024).contains(&size) || offset + size == big.len(), "chunk of {size} bytes");
        assert_eq!(c["hash"].as_str().unwrap(), hash(&big[offset..offset + size]));
        offset += size;
    }
    assert_eq!(offset, big.len());

    // A restart with nothing changed hashes nothing and appends nothing.
    let again = owner.json(&["share", &project, dir.to_str().unwrap(), "--once"]).await;
    assert_eq!(
        (again["files"].as_u64(), again["changes_applied"].as_u64(), again["hashed"].as_u64()),
        (Some(6), Some(0), Some(0)),
        "{again}"
    );

    // Edit, delete, rename: only the edited file is hashed; the rename is a move.
    write(dir, "docs/nested/deep/notes.txt", b"second notes, longer");
    std::fs::remove_file(dir.join("docs/readme.md")).unwrap();
    std::fs::create_dir_all(dir.join("archive")).unwrap();
    std::fs::rename(dir.join("big.bin"), dir.join("archive/big renamed.bin")).unwrap();
    let changed = owner.json(&["--json", "share", &project, dir.to_str().unwrap(), "--once"]).await;
    assert_eq!(
        (changed["files"].as_u64(), changed["changes_applied"].as_u64(), changed["hashed"].as_u64()),
        (Some(5), Some(3), Some(1)),
        "{changed}"
    );
    let log = app.log(project.parse().unwrap()).await;
    let last: Vec<(&str, String)> = log[log.len() - 3..]
        .iter()
        .map(|e| (e.event_type.as_str(), e.data["path"].as_str().or(e.data["to"].as_str()).unwrap().to_owned()))
        .collect();
    let mut last = last;
    last.sort();
    assert_eq!(
        last,
        [
            ("file_deleted", "/docs/readme.md".to_owned()),
            ("file_moved", "/archive/big renamed.bin".to_owned()),
            ("file_updated", "/docs/nested/deep/notes.txt".to_owned())
        ]
    );

    // The server is the reference: a file it has that DIR lacks goes, a
    // file it lost comes back, and nothing is hashed for either.
    let device = owner.device_token();
    let (status, body) = app
        .push(&device, project.parse().unwrap(), json!([{"op": "upsert", "path": "/phantom.txt", "size": 3, "hash": hash(b"abc")}, {"op": "delete", "path": "/empty.txt"}]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let resumed = owner.json(&["share", &project, dir.to_str().unwrap(), "--once"]).await;
    assert_eq!((resumed["changes_applied"].as_u64(), resumed["hashed"].as_u64()), (Some(2), Some(0)), "{resumed}");
    let files = remote_files(&app, &token, &project).await;
    assert_eq!(
        paths(&files),
        [
            "/.ferryignore",
            "/archive/big renamed.bin",
            "/docs/nested/deep/notes.txt",
            "/empty.txt",
            "/ünïcødé/名前 file.txt"
        ]
    );

    // One device for this machine, however often it shares.
    let devices = owner.json(&["devices"]).await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1, "{devices}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_watches_and_serves_a_transfer_through_the_relay() {
    let app = TestApp::spawn().await;
    let owner = Person::new(&app, "owner");
    let member = Person::new(&app, "member");
    owner.signup("owner").await;
    member.signup("member").await;
    let project = owner.json(&["project", "create", "Live"]).await["id"].as_str().unwrap().to_owned();
    let invite = owner.json(&["invite", "create", &project]).await["token"].as_str().unwrap().to_owned();
    member.json(&["join", &invite]).await;

    let tree = TempDir::new("live");
    let dir = tree.path();
    let big = noise(3 * 1024 * 1024 + 777, 2);
    write(dir, "media/big.bin", &big);
    write(dir, "small.txt", b"small");

    let once = owner.json(&["share", &project, dir.to_str().unwrap(), "--once"]).await;
    assert_eq!((once["files"].as_u64(), once["changes_applied"].as_u64()), (Some(2), Some(2)), "{once}");
    // Asked while the agent is away: served when it comes back.
    let member_token = member.token();
    let (status, early) = app
        .post(&format!("/api/projects/{project}/files/download"), &member_token, json!({"file_path": "/small.txt"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{early}");
    let early = early["download_id"].as_str().unwrap().to_owned();

    let mut agent = Running::share(&owner, &project, dir);
    let synced = agent.wait_for("its first push", |v| v["event"] == "synced").await;
    assert_eq!(
        (synced["files"].as_u64(), synced["changes_applied"].as_u64(), synced["hashed"].as_u64()),
        (Some(2), Some(0), Some(0)),
        "{synced}"
    );
    agent
        .wait_for("serving the earlier request", |v| {
            v["event"] == "transfer_served" && v["transfer_id"] == early.as_str()
        })
        .await;
    let res = app
        .http
        .get(app.url(&format!("/api/projects/{project}/chunks/{}", hash(b"small"))))
        .bearer_auth(&member_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"small");

    // Online as its device over the WebSocket.
    let owner_token = owner.token();
    let devices_path = format!("/api/projects/{project}/devices");
    eventually("the agent's device coming online", || async {
        let (_, body) = app.get(&devices_path, &owner_token).await;
        body["devices"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["role"] == "source" && d["online"] == true))
            .map(drop)
    })
    .await;

    // The member asks for the big file; the agent puts its chunks on the relay.
    let (status, download) = app
        .post(&format!("/api/projects/{project}/files/download"), &member_token, json!({"file_path": "/media/big.bin"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{download}");
    let transfer = download["download_id"].as_str().unwrap().to_owned();
    let needed: Vec<String> = serde_json::from_value(download["transfer_info"]["chunks_needed"].clone()).unwrap();
    assert!(needed.len() >= 2, "{download}");
    let served = agent
        .wait_for("serving the transfer", |v| v["event"] == "transfer_served" && v["transfer_id"] == transfer.as_str())
        .await;
    assert_eq!(served["chunks_uploaded"].as_u64(), Some(needed.len() as u64), "{served}");

    let (_, state) = app.get(&format!("/api/projects/{project}/transfers/{transfer}"), &member_token).await;
    assert_eq!(
        (state["status"].as_str(), state["bytes_transferred"].as_u64()),
        (Some("in_progress"), Some(big.len() as u64)),
        "{state}"
    );

    // The member downloads the chunks over the relay: they are the file.
    let mut whole = Vec::new();
    for chunk in &needed {
        let res = app
            .http
            .get(app.url(&format!("/api/projects/{project}/chunks/{chunk}")))
            .bearer_auth(&member_token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        whole.extend_from_slice(&res.bytes().await.unwrap());
    }
    assert!(whole == big, "the relayed chunks are not the file");
    let (status, verified) = app
        .post(
            &format!("/api/projects/{project}/transfers/{transfer}/verify"),
            &member_token,
            json!({"hash": hash(&big)}),
        )
        .await;
    assert_eq!((status, verified["status"].as_str()), (StatusCode::OK, Some("completed")), "{verified}");

    // Changes in DIR reach the server as they happen.
    write(dir, "new/later.txt", b"written while watched");
    std::fs::remove_file(dir.join("small.txt")).unwrap();
    eventually("the watched changes reaching the server", || async {
        let names = paths(&remote_files(&app, &owner_token, &project).await);
        (names == ["/media/big.bin", "/new/later.txt"]).then_some(())
    })
    .await;

    // A symbolic link is not shared, and said so once, not at every rescan.
    std::os::unix::fs::symlink(dir.join("media/big.bin"), dir.join("link.bin")).unwrap();
    write(dir, "new/again.txt", b"a rescan");
    eventually("the rescan reaching the server", || async {
        let names = paths(&remote_files(&app, &owner_token, &project).await);
        (names == ["/media/big.bin", "/new/again.txt", "/new/later.txt"]).then_some(())
    })
    .await;
    write(dir, "new/more.txt", b"another rescan");
    eventually("another rescan reaching the server", || async {
        let names = paths(&remote_files(&app, &owner_token, &project).await);
        names.contains(&"/new/more.txt".to_owned()).then_some(())
    })
    .await;
    let said: Vec<String> = agent.stderr().into_iter().filter(|l| l.contains("a symbolic link")).collect();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].contains("link.bin"), "{said:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharing_another_folder_or_deleting_most_of_the_project_stops_and_says_why() {
    let app = TestApp::spawn().await;
    let owner = Person::new(&app, "guard-owner");
    owner.signup("owner").await;
    let project = owner.json(&["project", "create", "Photos"]).await["id"].as_str().unwrap().to_owned();
    let tree = TempDir::new("guard");
    let root = tree.path().to_str().unwrap().to_owned();
    for i in 0..60 {
        write(tree.path(), &format!("2025/img-{i:02}.jpg"), format!("photo {i}").as_bytes());
    }
    write(tree.path(), "2024/old.jpg", b"an old photo");
    owner.json(&["share", &project, &root, "--once"]).await;
    let count = || async { owner.json(&["ls", &project]).await["files"].as_array().unwrap().len() };
    assert_eq!(count().await, 61);

    // The wrong folder (here a subfolder of the right one): refused before
    // anything is scanned or pushed.
    let year = tree.path().join("2025");
    let year = year.to_str().unwrap();
    let wrong = owner.run(&["share", &project, year, "--once", "--json"]).await;
    assert!(!wrong.status.success(), "{}", describe(&wrong));
    assert_eq!(last_json(&wrong)["error"]["code"], "another_folder", "{}", describe(&wrong));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("--move-folder"), "{}", describe(&wrong));
    assert_eq!(count().await, 61);

    // Most of the right folder gone: stopped, naming what would go.
    for i in 0..50 {
        std::fs::remove_file(tree.path().join(format!("2025/img-{i:02}.jpg"))).unwrap();
    }
    let emptied = owner.run(&["share", &project, &root, "--once", "--json"]).await;
    assert!(!emptied.status.success(), "{}", describe(&emptied));
    assert_eq!(last_json(&emptied)["error"]["code"], "too_many_deletes", "{}", describe(&emptied));
    let said = String::from_utf8_lossy(&emptied.stderr);
    assert!(said.contains("delete 50 of the project's 61 files"), "{said}");
    assert!(said.contains("/2025/img-00.jpg") && said.contains("… and 30 more"), "{said}");
    assert_eq!(count().await, 61, "nothing was deleted");

    // Meant: --allow-deletes pushes it.
    let pushed = owner.json(&["share", &project, &root, "--once", "--allow-deletes"]).await;
    assert_eq!(pushed["changes_applied"], 50, "{pushed}");
    assert_eq!(count().await, 11);

    // The project moves to another folder: said with --move-folder, then
    // that folder is the project's, and the old one is refused in turn.
    let moved = owner.json(&["share", &project, year, "--once", "--move-folder"]).await;
    assert_eq!(moved["files"], 10, "{moved}");
    owner.json(&["share", &project, year, "--once"]).await;
    let back = owner.run(&["share", &project, &root, "--once", "--json"]).await;
    assert_eq!(last_json(&back)["error"]["code"], "another_folder", "{}", describe(&back));
}

/// One `ferry share` per project on a machine: a second one (running, or
/// `--once`) is refused before it scans or pushes anything, since two
/// would take each other's direct entry away; once the first has stopped,
/// the same command runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_share_of_a_project_on_one_machine_is_refused_until_the_first_stops() {
    let app = TestApp::spawn().await;
    let owner = Person::new(&app, "twice-owner");
    owner.signup("owner").await;
    let project = owner.json(&["project", "create", "Twice"]).await["id"].as_str().unwrap().to_owned();
    let other = owner.json(&["project", "create", "Other"]).await["id"].as_str().unwrap().to_owned();
    let tree = TempDir::new("twice");
    write(tree.path(), "a.txt", b"shared once");
    let root = tree.path().to_str().unwrap().to_owned();
    let mut agent = Running::share_with(&owner, &project, tree.path(), &["--no-direct"]);
    agent.wait_for("its first push", |v| v["event"] == "synced").await;

    for args in
        [vec!["share", &project, &root, "--once", "--json"], vec!["share", &other, &root, &project, &root, "--json"]]
    {
        let second = owner.run(&args).await;
        assert!(!second.status.success(), "{}", describe(&second));
        assert_eq!(last_json(&second)["error"]["code"], "already_shared", "{}", describe(&second));
        assert!(String::from_utf8_lossy(&second.stderr).contains("Stop that one first"), "{}", describe(&second));
    }
    // Another project of the same machine is not held by it.
    assert_eq!(owner.json(&["share", &other, &root, "--once"]).await["files"], 1);

    // Killed, not stopped: a crashed agent holds nothing either.
    drop(agent);
    write(tree.path(), "b.txt", b"shared after");
    assert_eq!(owner.json(&["share", &project, &root, "--once"]).await["files"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restarted_mid_transfer_takes_it_up_again_and_says_when_it_is_back() {
    let mut app = TestApp::spawn().await;
    // The owner's uplink: 2 MB/s, so the agent can be stopped mid-file.
    let uplink = crate::web_browser::SlowUplink::to(&app, 2e6).await;
    let (owner, member, project) = crate::client_resume::owner_via_and_member(&app, &uplink.url, "Restart").await;
    let tree = TempDir::new("restart-src");
    let big = noise(8 * 1000 * 1000, 3);
    write(tree.path(), "big.bin", &big);
    let agent = Running::share_with(&owner, &project, tree.path(), &["--no-direct"]);
    let mut agent = Some(agent);
    agent.as_mut().unwrap().wait_for("its first push", |v| v["event"] == "synced").await;

    let target = TempDir::new("restart-dst");
    let mut pull = tokio::process::Command::from(member.command(&[
        "pull",
        &project,
        "--to",
        target.path().to_str().unwrap(),
        "--json",
    ]));
    let pull = pull.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true).spawn().unwrap();

    // Some bytes have moved: the agent stops (killed, as a crash would).
    let token = member.token();
    eventually("the transfer to move", || async {
        let (_, page) = app.get(&format!("/api/projects/{project}/transfers"), &token).await;
        let moved = page["transfers"][0]["bytes_transferred"].as_i64().unwrap_or(0);
        (moved > 0 && page["transfers"][0]["status"] == "in_progress").then_some(())
    })
    .await;
    drop(agent.take());

    // Started again, it takes the half-sent transfer up: the pull ends whole.
    let mut agent = Running::share_with(&owner, &project, tree.path(), &["--no-direct"]);
    let done = tokio::time::timeout(Duration::from_secs(120), pull.wait_with_output())
        .await
        .expect("the pull still waits two minutes after the agent came back")
        .unwrap();
    assert!(done.status.success(), "{}", describe(&done));
    assert_eq!(std::fs::read(target.path().join("big.bin")).unwrap(), big);

    // The server restarts: the agent says it lost it, then that it is back.
    app.restart().await;
    agent.wait_for("its reconnection", |v| v["event"] == "reconnected").await;
}
