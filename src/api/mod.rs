//! The HTTP edge: routes per resource, the auth extractor, `ApiError`.
//! Handlers parse input into domain types, call `domain`, shape the answer.
//! No SQL here.

mod accounts;
mod admin;
mod auth;
mod error;
mod files;
mod health;
mod membership;
mod openapi;
mod projects;
mod relay;
mod transfers;
mod ws;

pub use auth::Auth;
pub use error::{error_chain, ApiError};
pub use openapi::document;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers, Next};
use actix_web::{error::JsonPayloadError, web, HttpRequest, HttpResponse};
use serde::Serialize;

use crate::domain::IdempotencyKey;
use crate::store::Pool;

/// What every handler can reach.
pub struct AppState {
    pub pool: Pool,
    pub transfers: crate::domain::transfers::TransferPolicy,
    pub realtime: std::sync::Arc<crate::realtime::Realtime>,
    pub chunks: crate::relay::ChunkStore,
    pub relay: crate::domain::relay::RelayPolicy,
    /// Relayed bytes not yet counted as transfer progress.
    pub relayed: relay::RelayedBytes,
}

/// Largest JSON body of an ordinary command.
const JSON_LIMIT: usize = 64 * 1024;

/// Registers every route, the JSON error shapes and the metrics middleware.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(json_config())
        .app_data(web::PayloadConfig::new(JSON_LIMIT))
        .app_data(web::PathConfig::default().error_handler(|err, _| {
            ApiError::bad_request("invalid_path", format!("malformed path parameter: {err}")).into()
        }))
        .app_data(web::QueryConfig::default().error_handler(|err, _| {
            ApiError::bad_request("invalid_query", format!("malformed query string: {err}")).into()
        }))
        .configure(health::routes)
        .service(
            web::scope("/api")
                .configure(accounts::routes)
                .configure(projects::routes)
                .configure(membership::routes)
                .configure(files::routes)
                .configure(transfers::routes)
                .configure(relay::routes)
                .configure(admin::routes)
                .configure(openapi::routes)
                .configure(ws::routes),
        )
        .default_service(web::to(|| async { Err::<HttpResponse, _>(ApiError::not_found("no such route")) }));
}

pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default().limit(JSON_LIMIT).error_handler(|err, _| {
        let api = match &err {
            JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", err.to_string())
            }
            JsonPayloadError::ContentType => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be application/json",
            ),
            JsonPayloadError::Deserialize(e) if e.is_data() => ApiError::bad_request("invalid_body", e.to_string()),
            _ => ApiError::bad_request("malformed_json", err.to_string()),
        };
        api.into()
    })
}

/// A route's resource: a method it does not take answers a JSON 405.
pub(crate) fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(|| async {
        Err::<HttpResponse, _>(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not take that method",
        ))
    }))
}

/// A safety net: an error answered by the framework itself (an oversized
/// raw body, say) gets the same JSON shape as ours.
pub fn json_errors<B: MessageBody + 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(|res: ServiceResponse<B>| {
        let is_json =
            res.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        if is_json {
            return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
        }
        let status = res.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::BAD_REQUEST => "bad_request",
            s if s.is_server_error() => "internal_error",
            _ => "request_refused",
        };
        let message = status.canonical_reason().unwrap_or("error").to_owned();
        let (req, _) = res.into_parts();
        let res = actix_web::ResponseError::error_response(&ApiError::new(status, code, message));
        Ok(ErrorHandlerResponse::Response(ServiceResponse::new(req, res).map_into_right_body()))
    })
}

/// Counts and times every request by route pattern and status.
pub async fn record_metrics(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let method = req.method().to_string();
    let res = next.call(req).await?;
    let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    let status = res.status().as_u16().to_string();
    let labels = [route.as_str(), method.as_str(), status.as_str()];
    crate::telemetry::HTTP_REQUESTS.with_label_values(&labels).inc();
    crate::telemetry::HTTP_LATENCY.with_label_values(&labels).observe(started.elapsed().as_secs_f64());
    Ok(res)
}

/// The request's `Idempotency-Key`, bound to a fingerprint of the request
/// (method, path, body) so a key reused for another request is refused.
pub fn idempotency_key(req: &HttpRequest, body: &impl Serialize) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else { return Ok(None) };
    let key = value.to_str().ok().filter(|k| !k.is_empty() && k.len() <= 255).ok_or_else(|| {
        ApiError::bad_request("invalid_idempotency_key", "Idempotency-Key must be 1 to 255 visible ASCII characters")
    })?;
    let mut hasher = blake3::Hasher::new();
    hasher.update(req.method().as_str().as_bytes());
    hasher.update(b"\n");
    hasher.update(req.path().as_bytes());
    hasher.update(b"\n");
    hasher.update(&serde_json::to_vec(body).map_err(|e| ApiError::Internal(Box::new(e)))?);
    Ok(Some(IdempotencyKey { key: key.to_owned(), request_hash: *hasher.finalize().as_bytes() }))
}

/// A JSON body that may be left out: empty means all defaults.
pub fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &web::Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        let code = if e.is_data() { "invalid_body" } else { "malformed_json" };
        ApiError::bad_request(code, e.to_string())
    })
}

/// `201 Created` with a JSON body.
pub fn created(body: &impl Serialize) -> HttpResponse {
    HttpResponse::Created().json(body)
}

/// `204 No Content`.
pub fn no_content() -> HttpResponse {
    HttpResponse::NoContent().insert_header((header::CACHE_CONTROL, "no-store")).finish()
}
