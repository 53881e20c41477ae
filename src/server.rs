//! Building and running `ferryd serve`.

use std::net::{SocketAddr, TcpListener};

use actix_web::http::header;
use actix_web::middleware::{from_fn, DefaultHeaders};
use actix_web::{web, App, HttpServer};

use crate::api::{self, AppState};
use crate::config::{Database, ServeSettings};
use crate::domain::relay::RelayPolicy;
use crate::domain::transfers::{RelayedBytes, TransferPolicy};
use crate::realtime::Realtime;
use crate::relay::ChunkStore;
use crate::store::{PoolRole, StoreError};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("relay store: {0}")]
    Relay(#[from] crate::relay::RelayError),
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
    /// Opens the database (migrations, then projections brought up to date),
    /// the relay store and the event listener, and binds the address.
    pub async fn build(settings: &ServeSettings) -> Result<Self, StartError> {
        return_large_allocations();
        let database = settings.database.open().await?;
        match Self::start(settings, &database).await {
            Ok((address, server, sweeper, realtime)) => Ok(Self { address, server, database, sweeper, realtime }),
            Err(e) => {
                database.close().await;
                Err(e)
            }
        }
    }

    async fn start(
        settings: &ServeSettings,
        database: &Database,
    ) -> Result<(SocketAddr, actix_web::dev::Server, tokio::task::JoinHandle<()>, Arc<Realtime>), StartError> {
        crate::projections::ensure_up_to_date(&database.pool).await?;
        let chunks = ChunkStore::open(&settings.relay.store_spec(&settings.database.data_dir))?;
        let bind_error = |source| StartError::Bind { address: settings.bind.clone(), source };
        let listener = TcpListener::bind(&settings.bind).map_err(bind_error)?;
        let address = listener.local_addr().map_err(bind_error)?;

        let arrivals = crate::relay::ChunkArrivals::new();
        let accounts = settings.accounts.accounts();
        let realtime = Arc::new(Realtime::start(
            database.pool.clone(),
            database.url(),
            settings.realtime.config(),
            arrivals.clone(),
            accounts.tokens.clone(),
        )?);
        if !realtime.wait_listening(std::time::Duration::from_secs(10)).await {
            tracing::warn!("the event listener is not connected yet; live events start once it is");
        }
        let (transfers, relay) = (settings.transfers.policy(), settings.relay.policy());
        // Each HTTP worker has a pool of its own: a connection's task then
        // runs on the thread of the requests using it, so a query needs no
        // hop to another thread and back (`cargo bench --bench append`: 1.8
        // context switches per command over HTTP instead of 2.8). The
        // workers and the background (live events, the sweeper, progress)
        // share `pool_size` evenly.
        let workers = settings.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let share = (settings.database.pool_size / (workers + 1)).max(1);
        database.pool.resize(share);
        let pools = crate::store::Pools::default();
        pools.add(PoolRole::Background, &database.pool);
        let state = AppState {
            pool: database.pool.clone(),
            pools: pools.clone(),
            transfers,
            realtime: realtime.clone(),
            chunks: chunks.clone(),
            relay,
            accounts: Arc::new(accounts),
            relayed: RelayedBytes::new(database.pool.clone(), transfers.progress_interval),
            arrivals,
            content_wait: settings.relay.content_wait(),
        };
        let url = database.url().to_owned();
        let server = HttpServer::new(move || {
            let pool = crate::store::connect(&url, share).expect("the database URL was read at start");
            pools.add(PoolRole::Http, &pool);
            let state = AppState { pool, ..state.clone() };
            App::new()
                .wrap(from_fn(api::screen_requests))
                .wrap(api::json_errors())
                .wrap(from_fn(api::observe_requests))
                .wrap(DefaultHeaders::new().add((header::X_CONTENT_TYPE_OPTIONS, "nosniff")))
                .app_data(web::Data::new(state))
                .configure(api::configure)
                .configure(crate::web::routes)
                .default_service(web::to(not_found))
        })
        // Each part of a response goes out as it is written: with Nagle's
        // algorithm (the OS default) the last, short segment of a chunk
        // waited for the client's delayed ACK, 40 ms on Linux, stalling
        // one chunk download in ten.
        .tcp_nodelay(true)
        .workers(workers)
        .shutdown_timeout(10);
        let server = match server.listen(listener) {
            Ok(server) => server.run(),
            Err(e) => {
                realtime.stop().await;
                return Err(bind_error(e));
            }
        };
        let every = std::time::Duration::from_millis(settings.transfers.sweep_interval_ms.max(10));
        let sweeper = tokio::spawn(sweep(database.pool.clone(), transfers, chunks, relay, every));
        tracing::info!("listening on {address}");
        Ok((address, server, sweeper, realtime))
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves until SIGINT/SIGTERM (or [`actix_web::dev::ServerHandle::stop`]),
    /// then releases the embedded PostgreSQL, if any (stopped unless another
    /// process, e.g. an admin command, still uses it).
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

/// Makes glibc give large blocks back to the system when they are freed.
/// By default it raises its mmap threshold to the size of the last large
/// block freed (up to 32 MiB), after which Argon2's 19 MiB blocks and relay
/// chunks (up to 16 MiB) are carved from heaps it keeps: 500 wrong logins
/// left 360 MiB behind for good. A fixed threshold stops that adjustment,
/// so every block of 1 MiB or more is mapped on its own and unmapped when
/// freed (measured by `scripts/bench-login`).
///
/// Fixing it also leaves the trim threshold at 128 KiB, so each heap gave
/// its free top back, and faulted it in again, many times a second while
/// relaying (the connections' read buffers come and go): a 1 GiB relayed
/// download cost 1 million page faults, 440k of them this churn. Up to
/// 8 MiB of free top is kept per heap now (measured by
/// `scripts/bench-content`).
///
/// Each of those heaps is an arena, and glibc makes up to eight per core,
/// one for each thread that finds the others busy: the relay store's
/// blocking threads, which wait on the disk, made more of them, each
/// keeping its free top. Two per core are kept (set before the server's
/// threads multiply, so the limit holds): the server's peak RSS growth over
/// a relayed 1 GiB pull fell from 42-48 to 36-40 MiB, and over 8 GiB from
/// 59 (two runs) to 47 MiB, at the same speed and CPU time (`cargo bench
/// --bench pull`, before and after run alternately, two cores).
fn return_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let arenas = std::thread::available_parallelism().map_or(2, |n| 2 * n.get());
        // SAFETY: mallopt only changes allocator parameters; it is safe to
        // call at any time, from any thread.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
            libc::mallopt(libc::M_ARENA_MAX, i32::try_from(arenas).unwrap_or(i32::MAX));
        }
    }
}

/// Any unknown address: the JSON 404 under `/api/`, where clients expect
/// JSON, else the web app's own 404 page.
async fn not_found(req: actix_web::HttpRequest) -> actix_web::HttpResponse {
    if crate::web::is_api(req.path()) {
        api::no_such_route()
    } else {
        crate::web::not_found_page()
    }
}

/// Keeps the system clean, forever: expires and fails due transfers, and
/// removes relay chunks nothing needs. Safe beside other servers doing the
/// same (see `transfers::sweep` and `relay::expire`).
async fn sweep(
    pool: crate::store::Pool,
    transfers: TransferPolicy,
    chunks: ChunkStore,
    relay: RelayPolicy,
    every: std::time::Duration,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match crate::domain::transfers::sweep(&pool, &transfers).await {
            Ok(swept) if swept.expired + swept.stalled > 0 => {
                tracing::info!(expired = swept.expired, stalled = swept.stalled, "swept transfers");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %crate::telemetry::error_chain(&e), "transfer sweep failed"),
        }
        match crate::domain::relay::expire(&pool, &relay).await {
            Ok(expired) => {
                for (project_id, hash) in &expired {
                    chunks.delete(*project_id, hash).await;
                }
                if !expired.is_empty() {
                    tracing::info!(chunks = expired.len(), "removed relay chunks nothing needs");
                }
            }
            Err(e) => tracing::warn!(error = %crate::telemetry::error_chain(&e), "relay retention failed"),
        }
    }
}
