//! `ferryd` as an operator runs it: the real binary as a subprocess, its
//! log line naming the address, SIGTERM for a graceful stop, exit codes and
//! messages of the admin commands.
//!
//! Every wait on a child is bounded; the bounds are hang checks, generous
//! for a loaded 2-core CI machine, not timing assertions.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::fresh_database;

/// Longest wait for `listening on` with a database URL.
const START_WITHIN: Duration = Duration::from_secs(60);
/// Longest wait for `listening on` when ferryd also runs initdb and starts
/// its embedded PostgreSQL.
const EMBEDDED_START_WITHIN: Duration = Duration::from_secs(180);
/// Longest wait for the exit after SIGTERM.
const EXIT_WITHIN: Duration = Duration::from_secs(30);
/// Longest run of a one-shot command (migrate, rebuild, admin).
const COMMAND_WITHIN: Duration = Duration::from_secs(120);

use crate::support::PASSWORD;

/// `ferryd` with a predictable environment: text logs at `info` on stderr,
/// run from `target/tmp` so that a default `ferry-data` never lands in the
/// source tree.
fn ferryd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferryd"));
    cmd.current_dir(env!("CARGO_TARGET_TMPDIR"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("FERRY_LOG_FORMAT")
        .stdin(Stdio::null());
    cmd
}

/// Runs a one-shot command to its end (killing it, and failing, if it hangs).
fn run(args: &[&str]) -> Output {
    let child = ferryd().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("ferryd starts");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(COMMAND_WITHIN) {
        Ok(output) => output.expect("ferryd output read"),
        Err(_) => {
            signal(pid, libc::SIGKILL);
            panic!("`ferryd {}` still running after {COMMAND_WITHIN:?}", args.join(" "));
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory effects; the pid is a child of ours.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// A running `ferryd serve`, killed if the test ends with it still running.
struct Serve {
    child: Child,
    stderr: mpsc::Receiver<String>,
    /// Every stderr line read so far, shown when a test fails.
    log: Vec<String>,
}

impl Serve {
    fn start(args: &[&str], configure: impl FnOnce(&mut Command)) -> Self {
        let mut cmd = ferryd();
        cmd.arg("serve").args(["--bind", "127.0.0.1:0", "--workers", "1", "--pool-size", "2"]).args(args);
        configure(&mut cmd);
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("ferryd starts");
        // A reader thread for the whole life of the child: a full pipe
        // would block ferryd on its next log line.
        let pipe = child.stderr.take().expect("stderr piped");
        let (tx, stderr) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Serve { child, stderr, log: Vec::new() }
    }

    fn log(&self) -> String {
        self.log.join("\n")
    }

    /// Reads stderr up to `listening on ADDR`; answers `http://ADDR`.
    fn wait_listening(&mut self, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    let address = listening_address(&line);
                    self.log.push(line);
                    if let Some(address) = address {
                        return format!("http://{address}");
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().expect("ferryd reaped");
                    panic!("ferryd exited ({status}) before listening:\n{}", self.log());
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no `listening on` within {within:?}:\n{}", self.log())
                }
            }
        }
    }

    /// SIGTERM, then the exit status, which must come within `EXIT_WITHIN`.
    fn terminate(&mut self) -> ExitStatus {
        signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + EXIT_WITHIN;
        loop {
            if let Some(status) = self.child.try_wait().expect("ferryd polled") {
                self.log.extend(self.stderr.try_iter());
                return status;
            }
            if Instant::now() > deadline {
                self.log.extend(self.stderr.try_iter());
                panic!("ferryd still running {EXIT_WITHIN:?} after SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn terminate_cleanly(&mut self) {
        let status = self.terminate();
        assert!(status.success(), "ferryd exited with {status} after SIGTERM:\n{}", self.log());
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            self.log.extend(self.stderr.try_iter());
            eprintln!("--- ferryd stderr ---\n{}", self.log());
        }
    }
}

/// The address in a `listening on ADDR` log line, whatever surrounds it.
fn listening_address(line: &str) -> Option<SocketAddr> {
    let rest = line.split_once("listening on ")?.1;
    let end = rest.find(|c: char| c.is_whitespace() || c == '"' || c == '\x1b').unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// `url` with its database name replaced by `postgres`, the maintenance
/// database every cluster has.
pub fn admin_url(url: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("database URLs name a database");
    format!("{base}/postgres")
}

/// Drops the database `url` names, whoever is still connected to it.
pub fn drop_database(url: &str) {
    let (_, name) = url.rsplit_once('/').expect("database URLs name a database");
    let (admin, name) = (admin_url(url), name.to_owned());
    // Its own thread and runtime: this runs from Drop, maybe inside a runtime.
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let Ok((client, connection)) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await else {
                return;
            };
            tokio::spawn(connection);
            let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
        });
    })
    .join();
}

/// A fresh migrated database, dropped when the test ends, pass or fail.
struct TestDb {
    url: String,
}

impl TestDb {
    async fn fresh() -> Self {
        let (_, url) = fresh_database().await;
        TestDb { url }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop_database(&self.url);
    }
}

/// An HTTP client that keeps no idle connections, so nothing of ours holds
/// the graceful shutdown open.
fn http() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap()
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> (StatusCode, Value) {
    let res = http.post(url).json(&body).send().await.expect("request sent");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn serve_listens_answers_health_and_stops_on_sigterm() {
    let db = TestDb::fresh().await;
    let mut ferryd = Serve::start(&["--database-url", &db.url], |_| {});
    let base = ferryd.wait_listening(START_WITHIN);

    let http = http();
    for path in ["/healthz", "/readyz"] {
        let res = http.get(format!("{base}{path}")).send().await.expect("request sent");
        assert_eq!(res.status(), StatusCode::OK, "{path}: {:?}", res.text().await);
    }

    ferryd.terminate_cleanly();
}

#[tokio::test]
async fn serve_logs_a_refusal_in_one_short_line_and_never_a_secret() {
    let db = TestDb::fresh().await;
    let mut ferryd = Serve::start(&["--database-url", &db.url], |_| {});
    let base = ferryd.wait_listening(START_WITHIN);
    let http = http();
    let (status, body) =
        post(&http, format!("{base}/api/auth/signup"), json!({"email": "logs@example.org", "password": PASSWORD}))
            .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();

    // A token in the URL works on the WebSocket route only.
    let res = http.get(format!("{base}/api/me?access_token={token}")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let ws = format!("{}/api/ws?access_token={token}", base.replacen("http", "ws", 1));
    let (socket, _) = tokio_tungstenite::connect_async(ws.as_str()).await.expect("the WebSocket opens");
    drop(socket);
    let (status, _) =
        post(&http, format!("{base}/api/auth/login"), json!({"email": "logs@example.org", "password": "wrong"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // An invite link, looked at through the API and the web app, and a
    // wrong one refused by each: its token is logged by neither.
    let res = http.post(format!("{base}/api/projects")).bearer_auth(&token).json(&json!({"name": "Logged"})).send();
    let project = res.await.unwrap().json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let res = http.post(format!("{base}/api/projects/{project}/invites")).bearer_auth(&token).json(&json!({})).send();
    let invite = res.await.unwrap().json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let wrong = format!("{}x", &invite[..invite.len() - 1]);
    for (token, status) in [(&invite, StatusCode::OK), (&wrong, StatusCode::NOT_FOUND)] {
        for path in [format!("/api/invites/{token}"), format!("/join/{token}")] {
            assert_eq!(http.get(format!("{base}{path}")).send().await.unwrap().status(), status, "{path}");
        }
    }
    const NOT_FOUND: usize = 40;
    for _ in 0..NOT_FOUND {
        let res = http.get(format!("{base}/api/projects/{}", Uuid::new_v4())).bearer_auth(&token).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
    ferryd.terminate_cleanly();

    let log = ferryd.log();
    assert!(!log.contains(&token["fy_".len()..]), "a token reached the log:\n{log}");
    assert!(!log.contains(&invite["fyi_".len()..]), "an invite token reached the log:\n{log}");
    assert!(!log.contains(&wrong["fyi_".len()..]), "a wrong invite token reached the log:\n{log}");
    assert!(!log.contains(PASSWORD) && !log.contains("Bearer"), "a secret reached the log:\n{log}");
    let refused = log.lines().filter(|l| l.contains("request refused")).count();
    assert_eq!(refused, NOT_FOUND + 4, "one line per refusal:\n{log}");
    for line in log.lines() {
        assert!(!line.contains("ERROR") && !line.contains("WARN"), "a client's mistake is no server error: {line}");
        assert!(line.len() < 300, "a long line: {line}");
    }
}

/// A data dir under `target/tmp`; on drop, stops a PostgreSQL left running
/// in it (a test that failed half-way), then removes it (kept after a
/// failure, for its pg.log).
struct DataDir(PathBuf);

impl DataDir {
    fn new(name: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        DataDir(dir)
    }

    fn postmaster_pid(&self) -> PathBuf {
        self.0.join("pg").join("postmaster.pid")
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let pid_file = self.postmaster_pid();
        if let Some(pid) = std::fs::read_to_string(&pid_file).ok().and_then(|s| s.lines().next()?.trim().parse().ok()) {
            signal(pid, libc::SIGINT); // fast shutdown
            let deadline = Instant::now() + Duration::from_secs(30);
            while pid_file.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if std::thread::panicking() {
            eprintln!("kept {} for inspection", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[tokio::test]
async fn serve_without_database_url_runs_and_reuses_its_own_postgres() {
    let dir = DataDir::new("cli-embedded");
    let data_dir = dir.0.to_str().unwrap().to_owned();
    let without_url = |cmd: &mut Command| {
        cmd.env_remove("DATABASE_URL");
    };
    let http = http();
    let email = format!("embedded-{}@example.org", Uuid::new_v4().simple());
    let credentials = json!({"email": email, "password": PASSWORD});

    let mut first = Serve::start(&["--data-dir", &data_dir], without_url);
    let base = first.wait_listening(EMBEDDED_START_WITHIN);
    let (status, body) = post(&http, format!("{base}/api/auth/signup"), credentials.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let password_file = std::fs::read_to_string(dir.0.join("pg.password")).expect("pg.password written");
    first.terminate_cleanly();
    drop(first);
    assert!(!dir.postmaster_pid().exists(), "the embedded PostgreSQL still runs after ferryd stopped");

    let mut second = Serve::start(&["--data-dir", &data_dir], without_url);
    let base = second.wait_listening(EMBEDDED_START_WITHIN);
    let (status, body) = post(&http, format!("{base}/api/auth/login"), credentials).await;
    assert_eq!(status, StatusCode::OK, "the user signed up before the restart: {body}");
    assert!(body["token"].is_string(), "{body}");
    assert_eq!(std::fs::read_to_string(dir.0.join("pg.password")).unwrap(), password_file, "same cluster");
    second.terminate_cleanly();
    drop(second);
    assert!(!dir.postmaster_pid().exists(), "the embedded PostgreSQL still runs after ferryd stopped");
}

#[tokio::test]
async fn admin_create_user_makes_an_admin_once() {
    let db = TestDb::fresh().await;
    let email = format!("root-{}@example.org", Uuid::new_v4().simple());
    let create = |password: &str| {
        run(&["admin", "create-user", "--email", &email, "--password", password, "--admin", "--database-url", &db.url])
    };

    let out = create(PASSWORD);
    assert!(out.status.success(), "{}\n{}", out.status, text(&out.stderr));
    assert!(text(&out.stdout).contains(&email), "{}", text(&out.stdout));

    let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let admins: Vec<bool> = client
        .query("SELECT is_admin FROM users WHERE email = $1", &[&email])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(admins, [true]);
    drop(client);

    let again = create(PASSWORD);
    assert!(!again.status.success(), "a second account with the same email");
    assert!(text(&again.stderr).contains("already exists"), "{}", text(&again.stderr));

    let weak =
        run(&["admin", "create-user", "--email", "weak@example.org", "--password", "short", "--database-url", &db.url]);
    assert!(!weak.status.success(), "a 5-character password");
    assert!(text(&weak.stderr).contains("password"), "{}", text(&weak.stderr));
}

#[tokio::test]
async fn migrate_and_rebuild_run_and_name_what_they_did() {
    let db = TestDb::fresh().await;

    let migrate = run(&["migrate", "--database-url", &db.url]);
    assert!(migrate.status.success(), "{}\n{}", migrate.status, text(&migrate.stderr));

    let rebuild = run(&["rebuild", "--database-url", &db.url]);
    assert!(rebuild.status.success(), "{}\n{}", rebuild.status, text(&rebuild.stderr));
    let stdout = text(&rebuild.stdout);
    let rebuilt: Vec<&str> = stdout.lines().filter(|l| l.starts_with("rebuilt ")).collect();
    assert_eq!(rebuilt.len(), ferry::projections::ALL.len(), "{stdout}");
    for projection in ferry::projections::ALL {
        let prefix = format!("rebuilt {} ", projection.name);
        assert_eq!(rebuilt.iter().filter(|l| l.starts_with(&prefix)).count(), 1, "{}: {stdout}", projection.name);
    }

    let unknown = run(&["rebuild", "nope", "--database-url", &db.url]);
    assert!(!unknown.status.success(), "rebuild of an unknown projection");
    assert!(text(&unknown.stderr).contains("no projection named"), "{}", text(&unknown.stderr));
}

#[tokio::test]
async fn two_servers_on_one_database_hear_each_others_events() {
    let db = TestDb::fresh().await;
    let mut first = Serve::start(&["--database-url", &db.url], |_| {});
    let mut second = Serve::start(&["--database-url", &db.url], |_| {});
    let (a, b) = (first.wait_listening(START_WITHIN), second.wait_listening(START_WITHIN));

    let http = http();
    let (status, user) =
        post(&http, format!("{b}/api/auth/signup"), json!({"email": "two@example.org", "password": "two servers"}))
            .await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    let token = user["token"].as_str().unwrap();
    let created = http
        .post(format!("{b}/api/projects"))
        .bearer_auth(token)
        .json(&json!({"name": "Shared"}))
        .send()
        .await
        .unwrap();
    let project: uuid::Uuid = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();

    // Listening on the first, committing through the second.
    let mut ws = crate::realtime::Ws::connect(&a, token).await;
    ws.subscribe(project, 0).await;
    ws.until(|m| m["type"] == "caught_up").await;
    for name in ["one", "two"] {
        let res = http
            .patch(format!("{b}/api/projects/{project}"))
            .bearer_auth(token)
            .json(&json!({"name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert_eq!(ws.seqs_until(3).await, [2, 3]);
    drop(ws);
    first.terminate_cleanly();
    second.terminate_cleanly();
}
