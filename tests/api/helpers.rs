//! `TestApp`: the real server on a random port, on its own database cloned
//! from a migrated template, with typed calls for the tests.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ferry::config::{
    AccountSettings, DatabaseSettings, RealtimeSettings, RelaySettings, ServeSettings, TransferSettings,
};
use ferry::store::embedded::EmbeddedPostgres;
use ferry::store::Pool;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::OnceCell;
use uuid::Uuid;

/// The PostgreSQL server the tests use: `FERRY_TEST_DATABASE_URL`, else
/// the local default, else a private cluster started under `target/`.
async fn admin_url() -> &'static str {
    static URL: OnceCell<String> = OnceCell::const_new();
    static EMBEDDED: OnceLock<EmbeddedPostgres> = OnceLock::new();
    URL.get_or_init(|| async {
        if let Ok(url) = std::env::var("FERRY_TEST_DATABASE_URL") {
            return url;
        }
        let local = "postgres://postgres@127.0.0.1:5432/postgres".to_owned();
        if tokio_postgres::connect(&local, tokio_postgres::NoTls).await.is_ok() {
            return local;
        }
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ferry-test-pg");
        let pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&dir))
            .await
            .expect("embedded start task")
            .expect("no PostgreSQL answers on 127.0.0.1:5432 and a private cluster could not start");
        EMBEDDED.get_or_init(|| pg).database_url()
    })
    .await
}

/// `url` with its database replaced by `db`.
fn url_for(admin: &str, db: &str) -> String {
    let (base, _) = admin.rsplit_once('/').expect("database URLs name a database");
    format!("{base}/{db}")
}

async fn admin_client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(admin_url().await, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    tokio::spawn(connection);
    client
}

/// A template database holding the current migrations and projections,
/// named by their hash so a changed schema gets a new template.
async fn template() -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut hasher = blake3::Hasher::new();
    let mut migrations: Vec<_> =
        std::fs::read_dir(root.join("migrations")).unwrap().map(|e| e.unwrap().path()).collect();
    migrations.sort();
    for file in migrations {
        hasher.update(file.file_name().unwrap().as_encoded_bytes());
        hasher.update(&std::fs::read(&file).unwrap());
    }
    for projection in ferry::projections::ALL {
        hasher.update(projection.name.as_bytes());
        hasher.update(projection.version().as_bytes());
    }
    let name = format!("ferry_tpl_{}", &hasher.finalize().to_hex()[..12]);
    let admin = admin_client().await;
    if database_exists(&admin, &name).await {
        return name;
    }
    admin.execute("SELECT pg_advisory_lock(7070)", &[]).await.unwrap();
    if !database_exists(&admin, &name).await {
        let building = format!("{name}_build");
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {building}")).await.unwrap();
        admin.batch_execute(&format!("CREATE DATABASE {building}")).await.unwrap();
        let pool = ferry::store::connect(&url_for(admin_url().await, &building), 2).unwrap();
        ferry::store::migrate::run(&pool).await.unwrap();
        ferry::projections::ensure_up_to_date(&pool).await.unwrap();
        pool.close();
        // Renaming last makes the template appear only when complete.
        admin.batch_execute(&format!("ALTER DATABASE {building} RENAME TO {name}")).await.unwrap();
    }
    admin.execute("SELECT pg_advisory_unlock(7070)", &[]).await.unwrap();
    name
}

async fn database_exists(admin: &tokio_postgres::Client, name: &str) -> bool {
    admin.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]).await.unwrap().is_some()
}

/// A fresh database cloned from the template.
pub async fn fresh_database() -> (String, String) {
    let template = template().await;
    let name = format!("ferry_test_{}", Uuid::new_v4().simple());
    admin_client()
        .await
        .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
        .await
        .expect("create the test database");
    let url = url_for(admin_url().await, &name);
    (name, url)
}

/// Drops a test database, closing whatever is still connected to it.
fn drop_database(name: String) {
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let _ = admin_client().await.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
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
    let server = ferry::server::Server::build(settings).await.expect("server starts");
    let (address, handle, _) = serve(server);
    (address, handle)
}

/// Runs a built server; answers its base URL, its handle and the task that
/// ends once it has stopped and let go of its listener and database.
fn serve(server: ferry::server::Server) -> (String, actix_web::dev::ServerHandle, Serving) {
    let address = format!("http://{}", server.address());
    let handle = server.handle();
    (address, handle, tokio::spawn(server.run()))
}

type Serving = tokio::task::JoinHandle<std::io::Result<()>>;

pub struct TestApp {
    pub address: String,
    pub database_url: String,
    /// A pool on the test's own database, for checks behind the API.
    pub pool: Pool,
    pub http: reqwest::Client,
    /// The settings the server runs with, to start siblings on the same database.
    pub settings: ServeSettings,
    db_name: String,
    handle: actix_web::dev::ServerHandle,
    serving: Serving,
}

/// A signed-up user and their token.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: Uuid,
    pub email: String,
    pub token: String,
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
        let server = ferry::server::Server::build(&settings).await.expect("server starts");
        let (address, handle, serving) = serve(server);
        Self {
            address,
            pool: ferry::store::connect(&database_url, 8).unwrap(),
            database_url,
            http: reqwest::Client::new(),
            settings,
            db_name,
            handle,
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
        self.handle.stop(false).await;
        // The old server ends by stopping its event listener and pool.
        let stopped = tokio::time::timeout(Duration::from_secs(10), &mut self.serving).await;
        assert!(stopped.is_ok(), "the old server had not finished stopping after 10s");

        let mut settings = self.settings.clone();
        settings.bind = self.address.trim_start_matches("http://").to_owned();
        // The listener is closed by now, but allow the port a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        let server = loop {
            match ferry::server::Server::build(&settings).await {
                Ok(server) => break server,
                Err(ferry::server::StartError::Bind { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("the server restarts on {}: {e}", settings.bind),
            }
        };
        let (address, handle, serving) = serve(server);
        assert_eq!(address, self.address, "the restarted server listens where the old one did");
        (self.handle, self.serving) = (handle, serving);
    }

    /// The folder the relay keeps this server's chunks in.
    pub fn relay_dir(&self) -> std::path::PathBuf {
        relay_dir(&self.db_name)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Sends a request; answers the status and the JSON body (Null when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let bytes = res.bytes().await.expect("body read");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("{status}: not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
        (status, value)
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
        self.signup_as(name, None).await
    }

    /// Signs up `name-<random>@example.org`, with a display name if given.
    pub async fn signup_as(&self, name: &str, display_name: Option<&str>) -> TestUser {
        let email = format!("{name}-{}@example.org", Uuid::new_v4().simple());
        let mut body = json!({"email": email, "password": "correct horse battery"});
        if let Some(display_name) = display_name {
            body["display_name"] = json!(display_name);
        }
        let (status, body) = self.call(Method::POST, "/api/auth/signup", None, Some(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        TestUser {
            id: body["user"]["id"].as_str().unwrap().parse().unwrap(),
            email,
            token: body["token"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn create_project(&self, owner: &TestUser, name: &str) -> Uuid {
        let (status, body) = self.post("/api/projects", &owner.token, json!({"name": name})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().parse().unwrap()
    }

    /// Registers a device of `user`; answers its id and token.
    pub async fn register_device(&self, user: &TestUser, name: &str) -> (Uuid, String) {
        let (status, body) = self.post("/api/devices", &user.token, json!({"name": name, "platform": "linux"})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (body["device"]["id"].as_str().unwrap().parse().unwrap(), body["device_token"].as_str().unwrap().to_owned())
    }

    /// Registers a device of the owner and attaches it to the project as a
    /// source; answers its token.
    pub async fn source_device(&self, owner: &TestUser, project: Uuid) -> String {
        let (device, token) = self.register_device(owner, "studio").await;
        let path = format!("/api/projects/{project}/devices/{device}");
        let (status, body) = self.call(Method::PUT, &path, Some(&owner.token), None).await;
        assert_eq!((status, body["role"].as_str()), (StatusCode::OK, Some("source")), "{body}");
        token
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
        drop(self.handle.stop(false));
        let _ = std::fs::remove_dir_all(relay_dir(&self.db_name));
        drop_database(std::mem::take(&mut self.db_name));
    }
}
