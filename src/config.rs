//! Settings: defaults, then `FERRY_*`/`DATABASE_URL` environment, then
//! flags (clap with `env`). Secrets never appear in `Debug` or logs.

use std::path::PathBuf;

use crate::store::embedded::EmbeddedPostgres;
use crate::store::{self, Pool, StoreError};

/// Where the database is: a URL, or an embedded PostgreSQL in the data dir.
#[derive(Clone, clap::Args)]
pub struct DatabaseSettings {
    /// PostgreSQL URL. Without it, Ferry runs its own PostgreSQL under --data-dir.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Folder for Ferry's own state (the embedded PostgreSQL, the relay store).
    #[arg(long, env = "FERRY_DATA_DIR", default_value = "ferry-data")]
    pub data_dir: PathBuf,
    /// Most database connections this process holds: `ferryd serve` splits
    /// them evenly between its HTTP workers and its background work (at
    /// least one each).
    #[arg(long, env = "FERRY_DB_POOL_SIZE", default_value_t = 16)]
    pub pool_size: usize,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("database_url", &self.database_url.as_deref().map(redact_url))
            .field("data_dir", &self.data_dir)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "***".into() };
    let Some((userinfo, host)) = rest.rsplit_once('@') else { return url.to_owned() };
    let user = userinfo.split(':').next().unwrap_or_default();
    format!("{scheme}://{user}:***@{host}")
}

/// An open database: the pool, and the embedded server when we started one.
pub struct Database {
    pub pool: Pool,
    url: String,
    embedded: Option<EmbeddedPostgres>,
}

impl DatabaseSettings {
    /// Connects (starting the embedded PostgreSQL when no URL is given) and
    /// applies pending migrations.
    pub async fn open(&self) -> Result<Database, StoreError> {
        let (url, embedded) = match &self.database_url {
            Some(url) => (url.clone(), None),
            None => {
                let dir = self.data_dir.clone();
                let pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&dir))
                    .await
                    .map_err(|e| StoreError::Invalid(format!("embedded PostgreSQL task failed: {e}")))??;
                (pg.database_url(), Some(pg))
            }
        };
        let database = Database { pool: store::connect(&url, self.pool_size)?, url, embedded };
        let ready = async {
            store::check(&database.pool).await?;
            store::migrate::run(&database.pool).await
        };
        if let Err(e) = ready.await {
            database.close().await;
            return Err(e);
        }
        Ok(database)
    }
}

impl Database {
    /// The URL connected to (with its password: never log it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Closes the pool and releases the embedded PostgreSQL, if any: it is
    /// stopped unless another process (e.g. `ferryd serve` while an admin
    /// command runs) still uses it.
    pub async fn close(self) {
        self.pool.close();
        if let Some(pg) = self.embedded {
            let released = tokio::task::spawn_blocking(move || pg.release()).await;
            if let Ok(Err(e)) = released {
                tracing::error!(error = %e, "could not release the embedded PostgreSQL");
            }
        }
    }
}

/// How transfers behave, and how often the server tidies them.
#[derive(Debug, Clone, clap::Args)]
pub struct TransferSettings {
    /// A pending transfer expires this many seconds after it was requested.
    #[arg(long, env = "FERRY_TRANSFER_TTL_SECONDS", default_value_t = 3600)]
    pub transfer_ttl_seconds: u32,
    /// Attempts a transfer may make, the first included.
    #[arg(long, env = "FERRY_TRANSFER_MAX_ATTEMPTS", default_value_t = 3)]
    pub transfer_max_attempts: u16,
    /// An in-progress transfer idle this many seconds fails as `stalled`.
    #[arg(long, env = "FERRY_TRANSFER_STALL_SECONDS", default_value_t = 120)]
    pub transfer_stall_seconds: u32,
    /// A direct token (what a member shows the owner's agent) lives this
    /// many seconds, at most as long as its transfer.
    #[arg(long, env = "FERRY_DIRECT_TOKEN_TTL_SECONDS", default_value_t = 300)]
    pub direct_token_ttl_seconds: u32,
    /// How often (milliseconds) the server expires and fails due transfers.
    #[arg(long, env = "FERRY_SWEEP_INTERVAL_MS", default_value_t = 5000)]
    pub sweep_interval_ms: u64,
}

impl Default for TransferSettings {
    fn default() -> Self {
        Self {
            transfer_ttl_seconds: 3600,
            transfer_max_attempts: 3,
            transfer_stall_seconds: 120,
            direct_token_ttl_seconds: 300,
            sweep_interval_ms: 5000,
        }
    }
}

impl TransferSettings {
    pub fn policy(&self) -> crate::domain::transfers::TransferPolicy {
        crate::domain::transfers::TransferPolicy {
            ttl: chrono::Duration::seconds(self.transfer_ttl_seconds.into()),
            max_attempts: self.transfer_max_attempts.into(),
            stall_after: chrono::Duration::seconds(self.transfer_stall_seconds.into()),
            direct_token_ttl: chrono::Duration::seconds(self.direct_token_ttl_seconds.into()),
            ..Default::default()
        }
    }
}

/// The relay: where chunk bytes live, how much a project may keep, how long.
#[derive(Debug, Clone, clap::Args)]
pub struct RelaySettings {
    /// A folder, or `s3://bucket/prefix` (with the usual AWS environment;
    /// `AWS_ENDPOINT_URL` for S3-compatible servers). Default: `<data-dir>/relay`.
    #[arg(long, env = "FERRY_RELAY_STORE")]
    pub relay_store: Option<String>,
    /// Bytes of chunks a project may keep in the relay.
    #[arg(long, env = "FERRY_RELAY_QUOTA_BYTES", default_value_t = 10 * 1024 * 1024 * 1024)]
    pub relay_quota_bytes: i64,
    /// Seconds an unneeded chunk is kept after its last use.
    #[arg(long, env = "FERRY_RELAY_RETENTION_SECONDS", default_value_t = 86_400)]
    pub relay_retention_seconds: u32,
    /// Seconds a browser download (`/content`) waits for the owner's device
    /// to put the next chunk on the relay before it aborts.
    #[arg(long, env = "FERRY_CONTENT_WAIT_SECONDS", default_value_t = 120)]
    pub content_wait_seconds: u32,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            relay_store: None,
            relay_quota_bytes: 10 * 1024 * 1024 * 1024,
            relay_retention_seconds: 86_400,
            content_wait_seconds: 120,
        }
    }
}

impl RelaySettings {
    pub fn policy(&self) -> crate::domain::relay::RelayPolicy {
        crate::domain::relay::RelayPolicy {
            quota_bytes: self.relay_quota_bytes,
            retention: chrono::Duration::seconds(self.relay_retention_seconds.into()),
        }
    }

    /// How long a browser download waits for the next chunk.
    pub fn content_wait(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.content_wait_seconds.max(1).into())
    }

    pub fn store_spec(&self, data_dir: &std::path::Path) -> String {
        self.relay_store.clone().unwrap_or_else(|| data_dir.join("relay").to_string_lossy().into_owned())
    }
}

/// WebSocket sessions.
#[derive(Debug, Clone, clap::Args)]
pub struct RealtimeSettings {
    /// Seconds between the server's pings; a socket silent for three is dropped.
    #[arg(long, env = "FERRY_WS_PING_SECONDS", default_value_t = 15)]
    pub ws_ping_seconds: u32,
    /// Batches of events a socket may have queued before it reads from the log instead.
    #[arg(long, env = "FERRY_WS_QUEUE", default_value_t = 64)]
    pub ws_queue: usize,
    /// Projects one socket may be subscribed to at once.
    #[arg(long, env = "FERRY_WS_MAX_SUBSCRIPTIONS", default_value_t = 100)]
    pub ws_max_subscriptions: usize,
    /// Milliseconds between two looks at the heads of the projects followed
    /// here, which catch up what a lost notification did not wake.
    #[arg(long, env = "FERRY_WS_CATCH_UP_MS", default_value_t = 2000)]
    pub ws_catch_up_ms: u32,
}

impl Default for RealtimeSettings {
    fn default() -> Self {
        Self { ws_ping_seconds: 15, ws_queue: 64, ws_max_subscriptions: 100, ws_catch_up_ms: 2000 }
    }
}

impl RealtimeSettings {
    pub fn config(&self) -> crate::realtime::RealtimeConfig {
        crate::realtime::RealtimeConfig {
            ping_interval: std::time::Duration::from_secs(self.ws_ping_seconds.max(1).into()),
            queue: self.ws_queue.max(1),
            max_subscriptions: self.ws_max_subscriptions.max(1),
            catch_up_interval: std::time::Duration::from_millis(self.ws_catch_up_ms.max(10).into()),
        }
    }
}

/// Accounts: tokens, password checks, failed logins.
#[derive(Debug, Clone, clap::Args)]
pub struct AccountSettings {
    /// Seconds a user token may go unused before it stops working (device
    /// tokens do not expire by idleness).
    #[arg(long, env = "FERRY_TOKEN_IDLE_SECONDS", default_value_t = 30 * 86_400)]
    pub token_idle_seconds: u32,
    /// Seconds a token looked up is answered from memory (0: every request
    /// asks the database). Revoked tokens are forgotten at once on every
    /// server; at most a tenth of the idle time.
    #[arg(long, env = "FERRY_TOKEN_CACHE_SECONDS", default_value_t = 30)]
    pub token_cache_seconds: u32,
    /// Failed logins an account may have before each further one locks it
    /// for a growing time (1 s, 2 s, 4 s, ... at most 15 minutes).
    #[arg(long, env = "FERRY_LOGIN_FAILURES_PER_ACCOUNT", default_value_t = 5)]
    pub login_failures_per_account: u32,
    /// The same for a client address, across accounts.
    #[arg(long, env = "FERRY_LOGIN_FAILURES_PER_ADDRESS", default_value_t = 20)]
    pub login_failures_per_address: u32,
    /// Threads that hash passwords (default: one per core).
    #[arg(long, env = "FERRY_PASSWORD_WORKERS")]
    pub password_workers: Option<usize>,
    /// Password checks that may wait for a thread; past that, 503 `busy`.
    #[arg(long, env = "FERRY_PASSWORD_QUEUE", default_value_t = 32)]
    pub password_queue: usize,
}

impl Default for AccountSettings {
    fn default() -> Self {
        Self {
            token_idle_seconds: 30 * 86_400,
            token_cache_seconds: 30,
            login_failures_per_account: 5,
            login_failures_per_address: 20,
            password_workers: None,
            password_queue: 32,
        }
    }
}

impl AccountSettings {
    pub fn accounts(&self) -> crate::domain::accounts::Accounts {
        use crate::domain::passwords::{LoginThrottle, PasswordWork};
        crate::domain::accounts::Accounts::new(
            PasswordWork::per_core(self.password_workers, self.password_queue),
            LoginThrottle::new(self.login_failures_per_account, self.login_failures_per_address),
            chrono::Duration::seconds(self.token_idle_seconds.max(1).into()),
            std::time::Duration::from_secs(self.token_cache_seconds.into()),
        )
    }
}

/// `ferryd serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeSettings {
    #[command(flatten)]
    pub database: DatabaseSettings,
    #[command(flatten)]
    pub transfers: TransferSettings,
    #[command(flatten)]
    pub realtime: RealtimeSettings,
    #[command(flatten)]
    pub relay: RelaySettings,
    #[command(flatten)]
    pub accounts: AccountSettings,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "FERRY_BIND", default_value = "127.0.0.1:7070")]
    pub bind: String,
    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "FERRY_WORKERS")]
    pub workers: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password_in_debug_output() {
        assert_eq!(
            redact_url("postgres://ferry:s3cret@127.0.0.1:5432/ferry"),
            "postgres://ferry:***@127.0.0.1:5432/ferry"
        );
        let settings = DatabaseSettings {
            database_url: Some("postgres://a:s3cret@h/db".into()),
            data_dir: "d".into(),
            pool_size: 1,
        };
        assert!(!format!("{settings:?}").contains("s3cret"));
    }
}
