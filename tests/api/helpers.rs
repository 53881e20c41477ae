//! `TestApp`: the real server on a random port, on its own database cloned
//! from a migrated template, with typed calls for the tests.

use std::time::{Duration, Instant};

use ferry::config::{
    AccountSettings, DatabaseSettings, RealtimeSettings, RelaySettings, ServeSettings, TransferSettings,
};
use ferry::store::Pool;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::{self, Calls, Serving};

/// A signed-up user and their token.
pub type TestUser = support::User;

/// A fresh database cloned from the template: its name and URL.
pub async fn fresh_database() -> (String, String) {
    support::scratch_database("ferry_test").await.expect("create the test database")
}

/// Drops a test database (from a thread of its own: called from `Drop`).
fn drop_database(name: String) {
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let _ = support::drop_database(&name).await;
        });
    })
    .join();
}

/// The relay folder of a test (beside its database's name).
pub fn relay_dir(db_name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("relay-{db_name}"))
}

/// Starts a server with `settings`; answers its base URL and handle.
pub async fn start_server(settings: &ServeSettings) -> (String, actix_web::dev::ServerHandle) {
    let serving = Serving::start(settings).await.expect("server starts");
    (serving.address, serving.handle)
}

pub struct TestApp {
    pub address: String,
    pub database_url: String,
    /// A pool on the test's own database, for checks behind the API.
    pub pool: Pool,
    pub http: reqwest::Client,
    /// The settings the server runs with, to start siblings on the same database.
    pub settings: ServeSettings,
    db_name: String,
    serving: Serving,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Spawns with settings adjusted by `adjust` (say, short transfer timers).
    pub async fn spawn_with(adjust: impl FnOnce(&mut ServeSettings)) -> Self {
        if std::env::var_os("TEST_LOG").is_some() {
            ferry::telemetry::init();
        }
        let (db_name, database_url) = fresh_database().await;
        let mut settings = ServeSettings {
            database: DatabaseSettings {
                database_url: Some(database_url.clone()),
                data_dir: std::env::temp_dir(),
                pool_size: 8,
            },
            transfers: TransferSettings::default(),
            realtime: RealtimeSettings::default(),
            relay: RelaySettings {
                relay_store: Some(relay_dir(&db_name).to_string_lossy().into_owned()),
                ..RelaySettings::default()
            },
            accounts: AccountSettings::default(),
            bind: "127.0.0.1:0".into(),
            workers: Some(2),
        };
        adjust(&mut settings);
        let serving = Serving::start(&settings).await.expect("server starts");
        Self {
            address: serving.address.clone(),
            pool: ferry::store::connect(&database_url, 8).unwrap(),
            database_url,
            http: reqwest::Client::new(),
            settings,
            db_name,
            serving,
        }
    }

    /// Restarts the server as a crash and a supervisor would: every
    /// connection, WebSockets included, is cut at once (no graceful
    /// draining), then a new server listens on the same address, on the
    /// same database and relay folder.
    pub async fn restart(&mut self) {
        // Not graceful: a graceful stop would keep open WebSockets for the
        // whole shutdown timeout; a forced one drops each worker's runtime,
        // closing its connections.
        self.serving.handle.stop(false).await;
        // The old server ends by stopping its event listener and pool.
        let stopped = tokio::time::timeout(Duration::from_secs(10), &mut self.serving.task).await;
        assert!(stopped.is_ok(), "the old server had not finished stopping after 10s");

        let mut settings = self.settings.clone();
        settings.bind = self.address.trim_start_matches("http://").to_owned();
        // The listener is closed by now, but allow the port a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        let serving = loop {
            match Serving::start(&settings).await {
                Ok(serving) => break serving,
                Err(ferry::server::StartError::Bind { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("the server restarts on {}: {e}", settings.bind),
            }
        };
        assert_eq!(serving.address, self.address, "the restarted server listens where the old one did");
        self.serving = serving;
    }

    /// The folder the relay keeps this server's chunks in.
    pub fn relay_dir(&self) -> std::path::PathBuf {
        relay_dir(&self.db_name)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Calls to this server.
    pub fn calls(&self) -> Calls {
        Calls { address: self.address.clone(), http: self.http.clone() }
    }

    /// Sends a request; answers the status and the JSON body (Null when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        self.calls().call(method, path, token, body).await.unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(&body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    pub async fn signup(&self, name: &str) -> TestUser {
        self.calls().signup(name).await.unwrap_or_else(|e| panic!("signup: {e}"))
    }

    /// Signs up `name-<random>@example.org`, with a display name if given.
    pub async fn signup_as(&self, name: &str, display_name: Option<&str>) -> TestUser {
        self.calls().signup_as(name, display_name).await.unwrap_or_else(|e| panic!("signup: {e}"))
    }

    pub async fn create_project(&self, owner: &TestUser, name: &str) -> Uuid {
        self.calls().create_project(owner, name).await.unwrap_or_else(|e| panic!("create a project: {e}"))
    }

    /// Registers a device of `user`; answers its id and token.
    pub async fn register_device(&self, user: &TestUser, name: &str) -> (Uuid, String) {
        self.calls().register_device(user, name).await.unwrap_or_else(|e| panic!("register a device: {e}"))
    }

    /// Registers a device of the owner and attaches it to the project as a
    /// source; answers its token.
    pub async fn source_device(&self, owner: &TestUser, project: Uuid) -> String {
        self.calls().source_device(owner, project).await.unwrap_or_else(|e| panic!("a source device: {e}")).1
    }

    /// `user` joins the owner's project through an invite.
    pub async fn join(&self, owner: &TestUser, project: Uuid, user: &TestUser) {
        self.calls().join(owner, project, user).await.unwrap_or_else(|e| panic!("join: {e}"))
    }

    /// Pushes a batch of file changes with a source device's token.
    pub async fn push(&self, device_token: &str, project: Uuid, changes: Value) -> (StatusCode, Value) {
        self.post(&format!("/api/projects/{project}/files/update"), device_token, json!({"changes": changes})).await
    }

    /// A counter of this process's `/metrics` (shared by the tests running
    /// at once: compare before and after, expecting at least a change).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.http.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap();
        text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).map_or(0.0, |v| v.parse().unwrap())
    }

    /// Every event of a project straight from the log, in seq order.
    pub async fn log(&self, project_id: Uuid) -> Vec<ferry::store::RecordedEvent> {
        let client = self.pool.get().await.unwrap();
        ferry::store::read_after(&client, project_id, 0, 1_000_000).await.unwrap()
    }

    /// Rows of a table as JSON, in a stable order, for comparisons.
    pub async fn table(&self, table: &str) -> Vec<Value> {
        let client = self.pool.get().await.unwrap();
        client
            .query(&format!("SELECT to_jsonb(t) FROM {table} t ORDER BY to_jsonb(t)::text"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.pool.close();
        drop(self.serving.handle.stop(false));
        let _ = std::fs::remove_dir_all(relay_dir(&self.db_name));
        drop_database(std::mem::take(&mut self.db_name));
    }
}
