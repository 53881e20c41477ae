use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::{resource, ApiError, AppState};
use crate::protocol::ErrorBody;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz").get(healthz))
        .service(resource("/readyz").get(readyz))
        .service(resource("/metrics").get(metrics));
}

/// `GET /healthz`: always `ok`.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Health {
    #[schema(example = "ok")]
    status: &'static str,
}

/// `GET /readyz`: `ready`, with the database `up`.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Readiness {
    #[schema(example = "ready")]
    status: &'static str,
    #[schema(example = "up")]
    database: &'static str,
    listener: &'static str,
}

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "The process is up", body = Health))
)]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// The database answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "The database is reachable", body = Readiness),
        (status = 503, description = "The database is not reachable", body = ErrorBody),
    )
)]
async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if let Err(e) = crate::store::check(&state.pool).await {
        tracing::warn!(error = %crate::telemetry::error_chain(&e), "readiness check failed");
        return Err(ApiError::database_unavailable());
    }
    if !state.realtime.is_listening() {
        return Err(ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the event listener is not connected",
        ));
    }
    Ok(HttpResponse::Ok().json(Readiness { status: "ready", database: "up", listener: "up" }))
}

/// Counters and histograms in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses(
        (status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain; version=0.0.4"),
    )
)]
async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(crate::telemetry::render(&state.pools.status()))
}
