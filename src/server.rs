//! Building and running `ferryd serve`.

use std::net::{SocketAddr, TcpListener};

use actix_web::{middleware::from_fn, web, App, HttpServer};
use tracing_actix_web::TracingLogger;

use crate::api::{self, AppState};
use crate::config::{Database, ServeSettings};
use crate::domain::transfers::TransferPolicy;
use crate::realtime::Realtime;
use std::sync::Arc;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {address}: {source}")]
    Bind { address: String, source: std::io::Error },
}

/// A bound server, ready to run.
pub struct Server {
    address: SocketAddr,
    server: actix_web::dev::Server,
    database: Database,
    sweeper: tokio::task::JoinHandle<()>,
    realtime: Arc<Realtime>,
}

impl Server {
    /// Opens the database (migrations, then projections brought up to date)
    /// and binds the listener.
    pub async fn build(settings: &ServeSettings) -> Result<Self, StartError> {
        let database = settings.database.open().await?;
        if let Err(e) = crate::projections::ensure_up_to_date(&database.pool).await {
            database.close().await;
            return Err(e.into());
        }
        let bind_error = |source| StartError::Bind { address: settings.bind.clone(), source };
        let listener = match TcpListener::bind(&settings.bind) {
            Ok(l) => l,
            Err(e) => {
                database.close().await;
                return Err(bind_error(e));
            }
        };
        let address = listener.local_addr().map_err(bind_error)?;
        let policy = settings.transfers.policy();
        let realtime = match Realtime::start(database.pool.clone(), database.url(), settings.realtime.config()) {
            Ok(realtime) => Arc::new(realtime),
            Err(e) => {
                database.close().await;
                return Err(e.into());
            }
        };
        if !realtime.wait_listening(std::time::Duration::from_secs(10)).await {
            tracing::warn!("the event listener is not connected yet; live events start once it is");
        }
        let state = web::Data::new(AppState { pool: database.pool.clone(), transfers: policy, realtime: realtime.clone() });
        let sweeper = tokio::spawn(sweep_transfers(
            database.pool.clone(),
            policy,
            std::time::Duration::from_millis(settings.transfers.sweep_interval_ms.max(10)),
        ));
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(api::json_errors())
                .wrap(from_fn(api::record_metrics))
                .wrap(TracingLogger::default())
                .app_data(state.clone())
                .configure(api::configure)
        })
        .shutdown_timeout(10);
        if let Some(workers) = settings.workers {
            server = server.workers(workers);
        }
        let server = server.listen(listener).map_err(bind_error)?.run();
        tracing::info!("listening on {address}");
        Ok(Self { address, server, database, sweeper, realtime })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves until SIGINT/SIGTERM (or [`actix_web::dev::ServerHandle::stop`]),
    /// then stops the embedded PostgreSQL, if any.
    pub async fn run(self) -> std::io::Result<()> {
        let result = self.server.await;
        self.sweeper.abort();
        self.realtime.stop().await;
        tracing::info!("server stopped");
        self.database.close().await;
        result
    }

    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }
}

/// Expires and fails due transfers, forever. Safe beside other servers
/// doing the same (see `transfers::sweep`).
async fn sweep_transfers(pool: crate::store::Pool, policy: TransferPolicy, every: std::time::Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match crate::domain::transfers::sweep(&pool, &policy).await {
            Ok(swept) if swept.expired + swept.stalled > 0 => {
                tracing::info!(expired = swept.expired, stalled = swept.stalled, "swept transfers");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %crate::api::error_chain(&e), "transfer sweep failed"),
        }
    }
}
