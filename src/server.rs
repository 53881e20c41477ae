//! Building and running `ferryd serve`.

use std::net::{SocketAddr, TcpListener};

use actix_web::{middleware::from_fn, web, App, HttpServer};
use tracing_actix_web::TracingLogger;

use crate::api::{self, AppState};
use crate::config::{Database, ServeSettings};
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
        let state = web::Data::new(AppState { pool: database.pool.clone() });
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
        Ok(Self { address, server, database })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves until SIGINT/SIGTERM (or [`actix_web::dev::ServerHandle::stop`]),
    /// then stops the embedded PostgreSQL, if any.
    pub async fn run(self) -> std::io::Result<()> {
        let result = self.server.await;
        tracing::info!("server stopped");
        self.database.close().await;
        result
    }

    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }
}
