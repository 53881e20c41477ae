//! Integration tests of the embedded PostgreSQL default
//! (`ferry::store::embedded`). Needs PostgreSQL installed (initdb, pg_ctl);
//! works as root (PostgreSQL then runs as `postgres`/`nobody`).
//!
//! Few tests, one data folder each, on purpose: every initdb costs seconds.

use std::io::BufRead;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry::store::embedded::{EmbeddedPostgres, Released};
use serde_json::{json, Value};
use tokio_postgres::NoTls;

/// A fresh directory under `target/`, removed (after stopping its cluster,
/// if running) when dropped, even if the test panics.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir }
    }

    fn password(&self) -> String {
        std::fs::read_to_string(self.dir.join("pg.password")).unwrap()
    }

    /// Whether the cluster's server runs (pg_ctl removes postmaster.pid on
    /// a clean stop).
    fn cluster_running(&self) -> bool {
        self.dir.join("pg/postmaster.pid").exists()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.cluster_running() {
            // Adopt it only to stop it, whoever else uses it.
            if let Ok(pg) = EmbeddedPostgres::start(&self.dir) {
                let _ = pg.stop();
            }
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `EmbeddedPostgres::start` off the async runtime's worker thread.
async fn start(dir: &Path) -> EmbeddedPostgres {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&dir))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("start failed: {e}"))
}

/// `EmbeddedPostgres::release` off the async runtime's worker thread.
async fn release(pg: EmbeddedPostgres) -> Released {
    tokio::task::spawn_blocking(move || pg.release()).await.unwrap().unwrap_or_else(|e| panic!("release failed: {e}"))
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn accepts_connections(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

#[tokio::test]
async fn embedded_lifecycle_restart_adoption_and_release() {
    let scratch = Scratch::new("embedded");

    // A leftover from an interrupted initdb (no PG_VERSION): wiped and redone.
    std::fs::create_dir_all(scratch.dir.join("pg")).unwrap();
    std::fs::write(scratch.dir.join("pg/junk"), "half an initdb").unwrap();

    // First start: initdb + start.
    let pg = start(&scratch.dir).await;
    let (url, port, debug) = (pg.database_url(), pg.port(), format!("{pg:?}"));
    assert!(url.starts_with("postgres://ferry:"), "{url}");
    assert!(url.ends_with(&format!("@127.0.0.1:{port}/ferry")), "{url}");
    assert!(!debug.contains(scratch.password().trim()), "Debug shows the password");
    assert!(!scratch.dir.join("pg/junk").exists());
    assert!(!scratch.dir.join("pg.init").exists());
    assert!(!scratch.dir.join("pg.pwfile.tmp").exists());
    let password = scratch.password();
    assert!(password.trim().len() >= 32);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(scratch.dir.join("pg.password")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let client = connect(&url).await.expect("connect to the embedded cluster");
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    let db: String = client.query_one("SELECT current_database()", &[]).await.unwrap().get(0);
    assert_eq!(db, "ferry");
    client.batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')").await.unwrap();
    drop(client);

    // A wrong password is refused: loopback needs the password.
    let wrong = format!("postgres://ferry:wrong@127.0.0.1:{port}/ferry");
    assert!(connect(&wrong).await.is_err());

    // Stop: the port no longer accepts connections.
    pg.stop().unwrap();
    assert!(!accepts_connections(port));
    assert!(connect(&url).await.is_err());
    // Stopping a stopped cluster is fine.
    pg.stop().unwrap();
    drop(pg);

    // Start again: same cluster (no new initdb: same password, row kept).
    let pg = start(&scratch.dir).await;
    let (url, port) = (pg.database_url(), pg.port());
    assert_eq!(scratch.password(), password, "initdb ran again");
    let client = connect(&url).await.unwrap();
    let v: String = client.query_one("SELECT v FROM t", &[]).await.unwrap().get(0);
    assert_eq!(v, "kept");

    // A second start while it runs (another process, or a crashed ferryd
    // left it): adopted.
    let adopted = start(&scratch.dir).await;
    assert_eq!(adopted.port(), port);
    assert_eq!(adopted.database_url(), url);

    // Only the last user stops it: the adopter leaves it to `pg`...
    assert_eq!(release(adopted).await, Released::LeftRunning);
    let v: String = client.query_one("SELECT v FROM t", &[]).await.unwrap().get(0);
    assert_eq!(v, "kept");
    drop(client);
    // ...and a handle dropped without release (as by a killed process)
    // no longer counts.
    drop(start(&scratch.dir).await);
    assert_eq!(release(pg).await, Released::Stopped);
    assert!(!accepts_connections(port));
    assert!(!scratch.cluster_running());

    // The last two users releasing at once: exactly one stops it.
    let (a, b) = (start(&scratch.dir).await, start(&scratch.dir).await);
    let port = a.port();
    let (a, b) = tokio::join!(release(a), release(b));
    let mut outcomes = [a, b];
    outcomes.sort_by_key(|r| *r == Released::Stopped);
    assert_eq!(outcomes, [Released::LeftRunning, Released::Stopped]);
    assert!(!accepts_connections(port));

    // Two releasing at once while a third uses it: neither stops it.
    let (a, b, c) = (start(&scratch.dir).await, start(&scratch.dir).await, start(&scratch.dir).await);
    let port = c.port();
    let (a, b) = tokio::join!(release(a), release(b));
    assert_eq!((a, b), (Released::LeftRunning, Released::LeftRunning));
    assert!(connect(&c.database_url()).await.is_ok());
    assert_eq!(release(c).await, Released::Stopped);
    assert!(!accepts_connections(port));
}

// ---- the real binary ------------------------------------------------------

/// `ferryd <args> --data-dir <dir>` on the embedded default (no
/// DATABASE_URL in its environment), logging JSON lines to stderr.
fn ferryd(dir: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ferryd"));
    cmd.args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("DATABASE_URL")
        .env("FERRY_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    cmd
}

/// The messages of a process's JSON log lines.
fn log_messages(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|v| v["fields"]["message"].as_str().map(str::to_owned))
        .collect()
}

/// Runs an admin command to its end; panics with its output if it fails.
/// Returns its log messages.
async fn run_admin(dir: &Path, args: &[&str]) -> Vec<String> {
    let output = tokio::process::Command::from(ferryd(dir, args)).kill_on_drop(true).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "ferryd {args:?} failed ({}):\n{}\n{stderr}",
        output.status,
        String::from_utf8_lossy(&output.stdout)
    );
    log_messages(&stderr)
}

/// A running `ferryd serve`, killed if the test ends before it stops it.
struct Serve {
    child: Child,
    address: SocketAddr,
    /// Its stderr so far (read by a thread, so the pipe never fills).
    log: Arc<Mutex<String>>,
}

impl Serve {
    /// Starts `ferryd serve` on a free port and waits for `listening on ADDR`.
    fn start(dir: &Path) -> Serve {
        let mut child = ferryd(dir, &["serve", "--bind", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ferryd serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                for message in log_messages(&line) {
                    if let Some(address) = message.strip_prefix("listening on ") {
                        let _ = tx.send(address.parse::<SocketAddr>().unwrap());
                    }
                }
                let mut log = lines.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut serve = Serve { child, address: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), log };
        // initdb, migrations and projections come first.
        match rx.recv_timeout(Duration::from_secs(180)) {
            Ok(address) => serve.address = address,
            Err(_) => panic!("ferryd serve did not listen; its log:\n{}", serve.log()),
        }
        serve
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Asserts it still answers: ready (database up), and a command that
    /// writes to the database succeeds.
    async fn assert_serves(&self, http: &reqwest::Client, after: &str) {
        let base = format!("http://{}", self.address);
        let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200, "readyz after {after}: {}\n{}", ready.text().await.unwrap(), self.log());
        let email = format!("{}@example.com", uuid::Uuid::new_v4());
        let signup = http
            .post(format!("{base}/api/auth/signup"))
            .json(&json!({"email": email, "password": "correct horse battery"}))
            .send()
            .await
            .unwrap();
        assert_eq!(signup.status(), 201, "signup after {after}: {}\n{}", signup.text().await.unwrap(), self.log());
    }

    /// SIGTERM, then waits for a clean exit.
    async fn terminate(&mut self) {
        // SAFETY: kill has no memory preconditions; the child is not reaped yet.
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "ferryd serve exited with {status}:\n{}", self.log());
                return;
            }
            assert!(Instant::now() < deadline, "ferryd serve did not stop on SIGTERM:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Issue 13: admin commands on the data folder of a running `ferryd serve`
/// use its cluster and leave it running; the last user stops it.
#[tokio::test]
async fn admin_commands_leave_a_serving_cluster_running() {
    let scratch = Scratch::new("embedded-admin");
    let dir = scratch.dir.as_path();
    let http = reqwest::Client::new();
    let left_running = |messages: &[String]| messages.iter().any(|m| m.starts_with("left embedded PostgreSQL running"));

    let mut serve = Serve::start(dir);
    serve.assert_serves(&http, "start").await;

    let admin_commands: [&[&str]; 4] = [
        &["migrate"],
        &["rebuild"],
        &["audit", "--format", "json"],
        &["admin", "create-user", "--email", "admin@example.com", "--password", "correct horse battery", "--admin"],
    ];
    for args in admin_commands {
        let messages = run_admin(dir, args).await;
        assert!(left_running(&messages), "ferryd {args:?} did not leave the cluster running: {messages:?}");
        serve.assert_serves(&http, &format!("ferryd {args:?}")).await;
    }

    // All at once: they release concurrently, serve still holds its share.
    let (migrate, rebuild, audit) = tokio::join!(
        run_admin(dir, &["migrate"]),
        run_admin(dir, &["rebuild"]),
        run_admin(dir, &["audit", "--format", "json"]),
    );
    for messages in [migrate, rebuild, audit] {
        assert!(left_running(&messages), "{messages:?}");
    }
    serve.assert_serves(&http, "concurrent admin commands").await;

    // serve, the last user, stops the cluster on SIGTERM.
    serve.terminate().await;
    assert!(
        log_messages(&serve.log()).iter().any(|m| m.starts_with("stopped embedded PostgreSQL")),
        "serve did not stop the cluster:\n{}",
        serve.log()
    );
    assert!(!scratch.cluster_running(), "postmaster.pid is left after serve stopped");

    // Alone, an admin command stops the cluster it started.
    let messages = run_admin(dir, &["migrate"]).await;
    assert!(messages.iter().any(|m| m.starts_with("started embedded PostgreSQL")), "{messages:?}");
    assert!(messages.iter().any(|m| m.starts_with("stopped embedded PostgreSQL")), "{messages:?}");
    assert!(!scratch.cluster_running(), "postmaster.pid is left after a lone migrate");
}
