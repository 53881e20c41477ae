//! Realtime: one LISTEN connection per server wakes a hub that reads each
//! project's new events from the log once and fans them out to WebSocket
//! sessions; sessions replay from any seq and fall back to the log whenever
//! they fall behind. Notifications are sent after the commit (a commit's
//! server can die before it sends them), so the hub also looks at the heads
//! of the projects it follows every few seconds, and catches up any it was
//! not woken for. The same connection hears relay chunks land and wakes
//! the readers waiting for them. Presence of devices is kept here too.

pub mod frames;
pub mod hub;
pub mod listener;
pub mod presence;
pub mod session;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::store::Pool;

pub use hub::Hub;
pub use presence::Presence;

/// How sessions behave.
#[derive(Debug, Clone, Copy)]
pub struct RealtimeConfig {
    /// The server pings every socket this often and drops one silent for
    /// three intervals.
    pub ping_interval: Duration,
    /// Batches a socket may have queued before it falls back to the log.
    pub queue: usize,
    /// Projects one socket may be subscribed to at once.
    pub max_subscriptions: usize,
    /// How often the hub compares the heads of the projects it follows with
    /// what it has read (see [`Hub::catch_up`]).
    pub catch_up_interval: Duration,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(15),
            queue: 64,
            max_subscriptions: 100,
            catch_up_interval: Duration::from_secs(2),
        }
    }
}

/// The realtime side of one server.
pub struct Realtime {
    pub pool: Pool,
    pub hub: Arc<Hub>,
    pub presence: Presence,
    pub config: RealtimeConfig,
    /// Told of revoked tokens, which close their sessions.
    pub tokens: Arc<crate::domain::tokens::TokenCache>,
    listening: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Realtime {
    /// Starts the listener (on its own connection to `database_url`) and the
    /// presence keeper. The listener wakes chunk `arrivals` and keeps
    /// `tokens` told of revocations.
    pub fn start(
        pool: Pool,
        database_url: &str,
        config: RealtimeConfig,
        arrivals: Arc<crate::relay::ChunkArrivals>,
        tokens: Arc<crate::domain::tokens::TokenCache>,
    ) -> Result<Self, crate::store::StoreError> {
        let mut listen_config: tokio_postgres::Config =
            database_url.parse().map_err(crate::store::StoreError::Config)?;
        listen_config.application_name("ferryd-listener");
        let hub = Hub::new(pool.clone());
        let presence = Presence::new(pool.clone());
        let listening = Arc::new(AtomicBool::new(false));
        let tasks = vec![
            tokio::spawn(listener::listen(listen_config, hub.clone(), arrivals, tokens.clone(), listening.clone())),
            tokio::spawn(presence.clone().keep_alive()),
            tokio::spawn(hub.clone().catch_up_every(config.catch_up_interval)),
        ];
        Ok(Self { pool, hub, presence, config, tokens, listening, tasks })
    }

    /// Waits (up to `timeout`) for the LISTEN connection, so a server that
    /// says it listens also hears.
    pub async fn wait_listening(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.is_listening() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.is_listening()
    }

    /// Whether the LISTEN connection is up.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    /// Stops the tasks and marks this server's devices offline.
    pub async fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
        self.presence.forget_server().await;
    }
}
