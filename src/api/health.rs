use actix_web::{web, HttpResponse};

use super::{resource, ApiError, AppState};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/healthz").get(healthz))
        .service(resource("/readyz").get(readyz))
        .service(resource("/metrics").get(metrics));
}

/// The process is up.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// The database answers.
async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match crate::store::check(&state.pool).await {
        Ok(()) => Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready", "database": "up"}))),
        Err(e) => {
            tracing::warn!(error = %super::error_chain(&e), "readiness check failed");
            Err(ApiError::new(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the database is not reachable",
            ))
        }
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::telemetry::render(&state.pool))
}
