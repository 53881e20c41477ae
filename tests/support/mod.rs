//! Shared by the integration tests (`tests/api`) and the benches
//! (`benches/common`): the PostgreSQL server they run on (a private cluster
//! under `target/` when none answers), scratch databases cloned from a
//! migrated template, the real server in process, the HTTP calls that
//! set a scene up, and the real `ferry` binary ([`cli`]). Every function answers a `Result`: the tests unwrap it,
//! the benches say what failed.
//!
//! Included by path (`#[path = ...] mod support;`); cargo does not build
//! it alone.

pub mod cli;

use std::sync::OnceLock;

use ferry::config::ServeSettings;
use ferry::store::embedded::EmbeddedPostgres;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::OnceCell;
use uuid::Uuid;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The PostgreSQL server to run on: `FERRY_TEST_DATABASE_URL`, else
/// `DATABASE_URL`, else the local default when it answers, else a private
/// cluster started under `target/`.
pub async fn admin_url() -> Result<&'static str, BoxError> {
    static URL: OnceCell<String> = OnceCell::const_new();
    static EMBEDDED: OnceLock<EmbeddedPostgres> = OnceLock::new();
    let url = URL
        .get_or_try_init(|| async {
            for name in ["FERRY_TEST_DATABASE_URL", "DATABASE_URL"] {
                if let Ok(url) = std::env::var(name) {
                    return Ok::<_, BoxError>(url);
                }
            }
            let local = "postgres://postgres@127.0.0.1:5432/postgres".to_owned();
            if tokio_postgres::connect(&local, tokio_postgres::NoTls).await.is_ok() {
                return Ok(local);
            }
            let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ferry-test-pg");
            let pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&dir)).await?.map_err(|e| {
                format!("no PostgreSQL answers on 127.0.0.1:5432 and a private cluster could not start: {e}")
            })?;
            Ok(EMBEDDED.get_or_init(|| pg).database_url())
        })
        .await?;
    Ok(url)
}

/// `url` with its database replaced by `db` (query parameters kept).
pub fn url_for(url: &str, db: &str) -> String {
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    };
    let base = match path.split_once("://") {
        Some((_, rest)) if rest.contains('/') => path.rsplit_once('/').map_or(path, |(b, _)| b),
        _ => path,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// A plain connection to `url`.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn admin_client() -> Result<tokio_postgres::Client, BoxError> {
    Ok(connect(admin_url().await?).await?)
}

/// A template database holding the current migrations and projections,
/// named by their hash so a changed schema gets a new template.
async fn template() -> Result<String, BoxError> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut hasher = blake3::Hasher::new();
    let mut migrations =
        std::fs::read_dir(root.join("migrations"))?.map(|e| e.map(|e| e.path())).collect::<Result<Vec<_>, _>>()?;
    migrations.sort();
    for file in migrations {
        hasher.update(file.file_name().unwrap_or_default().as_encoded_bytes());
        hasher.update(&std::fs::read(&file)?);
    }
    for projection in ferry::projections::ALL {
        hasher.update(projection.name.as_bytes());
        hasher.update(projection.version().as_bytes());
    }
    let name = format!("ferry_tpl_{}", &hasher.finalize().to_hex()[..12]);
    let admin = admin_client().await?;
    if database_exists(&admin, &name).await? {
        return Ok(name);
    }
    admin.execute("SELECT pg_advisory_lock(7070)", &[]).await?;
    let built = async {
        if !database_exists(&admin, &name).await? {
            let building = format!("{name}_build");
            admin.batch_execute(&format!("DROP DATABASE IF EXISTS {building}")).await?;
            admin.batch_execute(&format!("CREATE DATABASE {building}")).await?;
            let pool = ferry::store::connect(&url_for(admin_url().await?, &building), 2)?;
            ferry::store::migrate::run(&pool).await?;
            ferry::projections::ensure_up_to_date(&pool).await?;
            pool.close();
            // Renaming last makes the template appear only when complete.
            admin.batch_execute(&format!("ALTER DATABASE {building} RENAME TO {name}")).await?;
        }
        Ok::<_, BoxError>(())
    }
    .await;
    admin.execute("SELECT pg_advisory_unlock(7070)", &[]).await?;
    built.map(|()| name)
}

async fn database_exists(admin: &tokio_postgres::Client, name: &str) -> Result<bool, BoxError> {
    Ok(admin.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]).await?.is_some())
}

/// A fresh database `<prefix>_<random>` cloned from the template, migrated
/// and with every projection built; answers its name and URL.
pub async fn scratch_database(prefix: &str) -> Result<(String, String), BoxError> {
    let template = template().await?;
    let name = format!("{prefix}_{}", Uuid::new_v4().simple());
    admin_client().await?.batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}")).await?;
    Ok((name.clone(), url_for(admin_url().await?, &name)))
}

/// Drops a scratch database, closing whatever is still connected to it.
pub async fn drop_database(name: &str) -> Result<(), BoxError> {
    admin_client().await?.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
    Ok(())
}

/// The real server, running in this process.
pub struct Serving {
    /// `http://ADDR`.
    pub address: String,
    pub handle: actix_web::dev::ServerHandle,
    /// Ends once the server has stopped and let go of its listener and
    /// database.
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Serving {
    pub async fn start(settings: &ServeSettings) -> Result<Self, ferry::server::StartError> {
        let server = ferry::server::Server::build(settings).await?;
        let address = format!("http://{}", server.address());
        let handle = server.handle();
        Ok(Self { address, handle, task: tokio::spawn(server.run()) })
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.task.await;
    }
}

/// A signed-up user and their token.
#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub token: String,
}

pub const PASSWORD: &str = "correct horse battery";

/// Calls to the server at `address` that set a scene up.
#[derive(Clone)]
pub struct Calls {
    pub address: String,
    pub http: reqwest::Client,
}

impl Calls {
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
    ) -> Result<(StatusCode, Value), BoxError> {
        let mut req = self.http.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let res = req.send().await?;
        let status = res.status();
        let bytes = res.bytes().await?;
        if bytes.is_empty() {
            return Ok((status, Value::Null));
        }
        let value = serde_json::from_slice(&bytes)
            .map_err(|_| format!("{status}: not JSON: {}", String::from_utf8_lossy(&bytes)))?;
        Ok((status, value))
    }

    /// [`Calls::call`] that must answer `expected`.
    pub async fn expect(
        &self,
        expected: StatusCode,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value, BoxError> {
        let (status, value) = self.call(method.clone(), path, token, body).await?;
        if status != expected {
            return Err(format!("{method} {path}: expected {expected}, got {status}: {value}").into());
        }
        Ok(value)
    }

    pub async fn signup(&self, name: &str) -> Result<User, BoxError> {
        self.signup_as(name, None).await
    }

    /// Signs up `name-<random>@example.org`, with a display name if given.
    pub async fn signup_as(&self, name: &str, display_name: Option<&str>) -> Result<User, BoxError> {
        let email = format!("{name}-{}@example.org", Uuid::new_v4().simple());
        let mut body = json!({"email": email, "password": PASSWORD});
        if let Some(display_name) = display_name {
            body["display_name"] = json!(display_name);
        }
        let v = self.expect(StatusCode::CREATED, Method::POST, "/api/auth/signup", None, Some(&body)).await?;
        Ok(User { id: field(&v["user"]["id"])?.parse()?, email, token: field(&v["token"])?.to_owned() })
    }

    pub async fn create_project(&self, owner: &User, name: &str) -> Result<Uuid, BoxError> {
        let body = json!({"name": name});
        let v =
            self.expect(StatusCode::CREATED, Method::POST, "/api/projects", Some(&owner.token), Some(&body)).await?;
        Ok(field(&v["id"])?.parse()?)
    }

    /// Registers a device of `user`; answers its id and token.
    pub async fn register_device(&self, user: &User, name: &str) -> Result<(Uuid, String), BoxError> {
        let body = json!({"name": name, "platform": "linux"});
        let v = self.expect(StatusCode::CREATED, Method::POST, "/api/devices", Some(&user.token), Some(&body)).await?;
        Ok((field(&v["device"]["id"])?.parse()?, field(&v["device_token"])?.to_owned()))
    }

    /// Registers a device of the owner and attaches it to the project as a
    /// source; answers its id and token.
    pub async fn source_device(&self, owner: &User, project: Uuid) -> Result<(Uuid, String), BoxError> {
        let (device, token) = self.register_device(owner, "studio").await?;
        let path = format!("/api/projects/{project}/devices/{device}");
        let v = self.expect(StatusCode::OK, Method::PUT, &path, Some(&owner.token), None).await?;
        if v["role"] != "source" {
            return Err(format!("device attached as {}, not source", v["role"]).into());
        }
        Ok((device, token))
    }

    /// `user` joins the owner's project through an invite.
    pub async fn join(&self, owner: &User, project: Uuid, user: &User) -> Result<(), BoxError> {
        let path = format!("/api/projects/{project}/invites");
        let invite =
            self.expect(StatusCode::CREATED, Method::POST, &path, Some(&owner.token), Some(&json!({}))).await?;
        let body = json!({"token": field(&invite["token"])?});
        self.expect(StatusCode::OK, Method::POST, "/api/invites/accept", Some(&user.token), Some(&body)).await?;
        Ok(())
    }
}

fn field(v: &Value) -> Result<&str, BoxError> {
    v.as_str().ok_or_else(|| format!("expected a string, got {v}").into())
}
