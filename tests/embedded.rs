//! Integration test of the embedded PostgreSQL default
//! (`ferry::store::embedded`). Needs PostgreSQL installed (initdb, pg_ctl);
//! works as root (PostgreSQL then runs as `postgres`/`nobody`).
//!
//! One test on purpose: every initdb costs seconds.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry::store::embedded::EmbeddedPostgres;
use tokio_postgres::NoTls;

/// A fresh directory under `target/`, removed (after stopping the cluster)
/// when dropped, even if the test panics.
struct Scratch {
    dir: PathBuf,
    pg: Option<EmbeddedPostgres>,
}

impl Scratch {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir, pg: None }
    }

    /// `EmbeddedPostgres::start` off the async runtime's worker thread.
    async fn start(&mut self) -> &EmbeddedPostgres {
        let dir = self.dir.clone();
        let pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&dir))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("start failed: {e}"));
        self.pg = Some(pg);
        self.pg.as_ref().unwrap()
    }

    fn password(&self) -> String {
        std::fs::read_to_string(self.dir.join("pg.password")).unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(pg) = self.pg.take() {
            let _ = pg.stop();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
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
async fn embedded_lifecycle_restart_and_adoption() {
    let mut scratch = Scratch::new("embedded");

    // A leftover from an interrupted initdb (no PG_VERSION): wiped and redone.
    std::fs::create_dir_all(scratch.dir.join("pg")).unwrap();
    std::fs::write(scratch.dir.join("pg/junk"), "half an initdb").unwrap();

    // First start: initdb + start.
    let pg = scratch.start().await;
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
    scratch.pg.as_ref().unwrap().stop().unwrap();
    assert!(!accepts_connections(port));
    assert!(connect(&url).await.is_err());
    // Stopping a stopped cluster is fine.
    scratch.pg.as_ref().unwrap().stop().unwrap();

    // Start again: same cluster (no new initdb: same password, row kept).
    let pg = scratch.start().await;
    let (url, port) = (pg.database_url(), pg.port());
    assert_eq!(scratch.password(), password, "initdb ran again");
    let client = connect(&url).await.unwrap();
    let v: String = client.query_one("SELECT v FROM t", &[]).await.unwrap().get(0);
    assert_eq!(v, "kept");

    // A second start while it runs (a crashed ferryd left it): adopted.
    let adopted = scratch.start().await;
    assert_eq!(adopted.port(), port);
    assert_eq!(adopted.database_url(), url);
    let v: String = client.query_one("SELECT v FROM t", &[]).await.unwrap().get(0);
    assert_eq!(v, "kept");
    drop(client);

    scratch.pg.as_ref().unwrap().stop().unwrap();
    assert!(!accepts_connections(port));
}
