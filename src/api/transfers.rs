use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use uuid::Uuid;

use super::{created, idempotency_key, optional_json, resource, ApiError, AppState, Auth};
use crate::domain::events::parse_limit;
use crate::domain::{self, transfers, DomainError};
use crate::protocol::transfers::{
    DirectEndpoints, DownloadRequest, DownloadResponse, Transfer, TransferProtocol, TransferReport, TransferStatus,
    TransfersPage, VerifyRequest,
};
use crate::protocol::validate::ValidationError;

/// Largest download request: room for `have_chunks` of a large folder
/// (about 120,000 hashes; a delta of a 4 GiB file alone names some 4,000).
const DOWNLOAD_LIMIT: usize = 8 * 1024 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/projects/{project_id}/files/download")
            .app_data(super::json_config().limit(DOWNLOAD_LIMIT))
            .post(request_download),
    )
    .service(resource("/projects/{project_id}/transfers").get(list_transfers))
    .service(resource("/projects/{project_id}/transfers/{transfer_id}").get(get_transfer).patch(report_transfer))
    .service(resource("/projects/{project_id}/transfers/{transfer_id}/verify").post(verify_transfer))
    .service(resource("/projects/{project_id}/transfers/{transfer_id}/cancel").post(cancel_transfer))
    .service(resource("/projects/{project_id}/transfers/{transfer_id}/retry").post(retry_transfer))
    .service(resource("/projects/{project_id}/transfers/{transfer_id}/direct-token").post(refresh_direct_token));
}

/// Requests a file from the project's source device (owner or member).
///
/// `request_mode: "delta"` with `have_chunks` makes `chunks_needed` hold
/// only what the requester lacks.
#[utoipa::path(
    post,
    path = "/api/projects/{project_id}/files/download",
    tag = "transfers",
    security(("bearer" = [])),
    params(("project_id" = Uuid, Path, description = "The project"), ("Idempotency-Key" = Option<String>, Header, nullable = false, max_length = 255, description = "A repeat with the same key answers the first response and appends nothing")),
    request_body = DownloadRequest,
    responses(
        (status = 201, description = "The transfer was requested", body = DownloadResponse),
        (status = 400, description = "Malformed id, body or idempotency key", body = crate::protocol::ErrorBody),
        (status = 401, description = "No or invalid token", body = crate::protocol::ErrorBody),
        (status = 404, description = "Unknown project, or the file is unknown or deleted", body = crate::protocol::ErrorBody),
        (status = 409, description = "`file_hash` is not the file's current hash", body = crate::protocol::ErrorBody),
        (status = 422, description = "Bad path or hash", body = crate::protocol::ErrorBody),
        (status = 503, description = "`no_source_device`: the project has no source device", body = crate::protocol::ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, project_id = %path), err(level = "debug"))]
async fn request_download(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<Uuid>,
    body: web::Json<DownloadRequest>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req, &*body)?;
    let (project_id, body, policy) = (path.into_inner(), body.into_inner(), state.transfers);
    let mut answer = domain::execute(&state.pool, auth.0, key.as_ref(), move |tx, cmd| {
        Box::pin(async move { transfers::request(tx, cmd, &policy, project_id, body).await })
    })
    .await?;
    // The relay is this server: its endpoint is the project's chunks route.
    let info = req.connection_info();
    for endpoint in &mut answer.transfer_info.endpoints {
        if endpoint.protocol == TransferProtocol::Relay {
            endpoint.url = format!("{}://{}/api/projects/{project_id}/chunks", info.scheme(), info.host());
        }
    }
    Ok(created(&answer))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Only transfers in this status (`pending`, `in_progress`, `completed`, `failed`, `cancelled`, `expired`).
    #[param(pattern = "^(?:pending|in_progress|completed|failed|cancelled|expired)?$")]
    status: Option<String>,
    /// The `next_cursor` of the previous page (422 `invalid_cursor` for one this server did not give out).
    #[param(pattern = "^[A-Za-z0-9_-]*$")]
    cursor: Option<String>,
    /// Transfers per page: 1 to 1000.
    #[param(minimum = 1, maximum = 1000, default = 50)]
    limit: Option<i64>,
}

/// The project's transfers: all of them for the owner, their own for a member.
#[utoipa::path(
    get,
    path = "/api/projects/{project_id}/transfers",
    tag = "transfers",
    security(("bearer" = [])),
    params(("project_id" = Uuid, Path, description = "The project"), ListParams),
    responses(
        (status = 200, description = "A page of transfers", body = TransfersPage),
        (status = 400, description = "Malformed id or query", body = crate::protocol::ErrorBody),
        (status = 401, description = "No or invalid token", body = crate::protocol::ErrorBody),
        (status = 404, description = "Unknown project, or the caller is not in it", body = crate::protocol::ErrorBody),
        (status = 422, description = "Bad status, limit or cursor", body = crate::protocol::ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, project_id = %path), err(level = "debug"))]
async fn list_transfers(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<Uuid>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    let p = params.into_inner();
    let status = p
        .status
        .filter(|s| !s.is_empty())
        .map(|s| {
            TransferStatus::parse(&s)
                .ok_or_else(|| ValidationError::new("invalid_status", format!("unknown status {s:?}")))
        })
        .transpose()
        .map_err(DomainError::from)?;
    let limit = parse_limit(p.limit, 50, 1000).map_err(DomainError::from)?;
    let client = state.pool.get().await.map_err(DomainError::from)?;
    let page = transfers::list(&client, &auth.0, path.into_inner(), status, p.cursor.as_deref(), limit).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// One transfer (the owner, or its requester).
#[utoipa::path(
    get,
    path = "/api/projects/{project_id}/transfers/{transfer_id}",
    tag = "transfers",
    security(("bearer" = [])),
    params(("project_id" = Uuid, Path, description = "The project"), ("transfer_id" = Uuid, Path, description = "The transfer")),
    responses(
        (status = 200, description = "The transfer", body = Transfer),
        (status = 400, description = "Malformed id", body = crate::protocol::ErrorBody),
        (status = 401, description = "No or invalid token", body = crate::protocol::ErrorBody),
        (status = 404, description = "Unknown project or transfer, or not visible to the caller", body = crate::protocol::ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err(level = "debug"))]
async fn get_transfer(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (project_id, transfer_id) = path.into_inner();
    let client = state.pool.get().await.map_err(DomainError::from)?;
    Ok(HttpResponse::Ok().json(transfers::get(&client, &auth.0, project_id, transfer_id).await?))
}

/// The source device reports progress, failure or the start of a transfer;
/// the requester may report only a failure (`{"status": "failed"}`), so
/// that an attempt whose bytes never verified can be retried.
#[utoipa::path(
    patch,
    path = "/api/projects/{project_id}/transfers/{transfer_id}",
    tag = "transfers",
    security(("bearer" = [])),
    params(("project_id" = Uuid, Path, description = "The project"), ("transfer_id" = Uuid, Path, description = "The transfer"), ("Idempotency-Key" = Option<String>, Header, nullable = false, max_length = 255, description = "A repeat with the same key answers the first response and appends nothing")),
    request_body = TransferReport,
    responses(
        (status = 200, description = "The transfer", body = Transfer),
        (status = 400, description = "Malformed id, body or idempotency key", body = crate::protocol::ErrorBody),
        (status = 401, description = "No or invalid token", body = crate::protocol::ErrorBody),
        (status = 403, description = "Not the transfer's source device (nor its requester reporting a failure)", body = crate::protocol::ErrorBody),
        (status = 404, description = "Unknown project or transfer, or not visible to the caller", body = crate::protocol::ErrorBody),
        (status = 409, description = "Illegal transition, or bytes going backwards or past the total", body = crate::protocol::ErrorBody),
        (status = 422, description = "Invalid report", body = crate::protocol::ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err(level = "debug"))]
async fn report_transfer(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<(Uuid, Uuid)>,
    body: web::Json<TransferReport>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req, &*body)?;
    let ((project_id, transfer_id), report, policy) = (path.into_inner(), body.into_inner(), state.transfers);
    let transfer = domain::execute(&state.pool, auth.0, key.as_ref(), move |tx, cmd| {
        Box::pin(async move { transfers::report(tx, cmd, &policy, project_id, transfer_id, report).await })
    })
    .await?;
    Ok(HttpResponse::Ok().json(transfer))
}

/// The requester reports the hash of what it received: `completed` when it
/// matches, else `failed` with `error_message: "hash_mismatch"`.
#[utoipa::path(
    post,
    path = "/api/projects/{project_id}/transfers/{transfer_id}/verify",
    tag = "transfers",
    security(("bearer" = [])),
    params(("project_id" = Uuid, Path, description = "The project"), ("transfer_id" = Uuid, Path, description = "The transfer"), ("Idempotency-Key" = Option<String>, Header, nullable = false, max_length = 255, description = "A repeat with the same key answers the first response and appends nothing")),
    request_body = VerifyRequest,
    responses(
        (status = 200, description = "The transfer", body = Transfer),
        (status = 400, description = "Malformed id, body or idempotency key", body = crate::protocol::ErrorBody),
        (status = 401, description = "No or invalid token", body = crate::protocol::ErrorBody),
        (status = 403, description = "Not the transfer's requester", body = crate::protocol::ErrorBody),
        (status = 404, description = "Unknown project or transfer, or not visible to the caller", body = crate::protocol::ErrorBody),
        (status = 409, description = "The transfer cannot be verified in its state", body = crate::protocol::ErrorBody),
        (status = 422, description = "Bad hash", body = crate::protocol::ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err(level = "debug"))]
async fn verify_transfer(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<(Uuid, Uuid)>,
    body: web::Json<VerifyRequest>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req, &*body)?;
    let ((project_id, transfer_id), verified) = (path.into_inner(), body.into_inner());
    let transfer = domain::execute(&state.pool, auth.0, key.as_ref(), move |tx, cmd| {
        Box::pin(async move { transfers::verify(tx, cmd, project_id, transfer_id, verified).await })
    })
    .await?;
    Ok(HttpResponse::Ok().json(transfer))
}

/// Cancels a transfer (its requester, or the owner). Any body is ignored.
#[utoipa::path(
    post,
    path = "/api/projects/{project_id}/transfers/{transfer_id}/cancel",
    tag = "transfers",
    security(("bearer" = [])),
    params(("project_id" = Uuid, Path, description = "The project"), ("transfer_id" = Uuid, Path, description = "The transfer"), ("Idempotency-Key" = Option<String>, Header, nullable = false, max_length = 255, description = "A repeat with the same key answers the first response and appends nothing")),
    responses(
        (status = 200, description = "The cancelled transfer", body = Transfer),
        (status = 400, description = "Malformed id, body or idempotency key", body = crate::protocol::ErrorBody),
        (status = 401, description = "No or invalid token", body = crate::protocol::ErrorBody),
        (status = 403, description = "Neither the requester nor the owner", body = crate::protocol::ErrorBody),
        (status = 404, description = "Unknown project or transfer, or not visible to the caller", body = crate::protocol::ErrorBody),
        (status = 409, description = "The transfer is already over", body = crate::protocol::ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err(level = "debug"))]
async fn cancel_transfer(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<(Uuid, Uuid)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    optional_json::<serde_json::Value>(&body)?;
    let key = idempotency_key(&req, &())?;
    let (project_id, transfer_id) = path.into_inner();
    let transfer = domain::execute(&state.pool, auth.0, key.as_ref(), move |tx, cmd| {
        Box::pin(transfers::cancel(tx, cmd, project_id, transfer_id))
    })
    .await?;
    Ok(HttpResponse::Ok().json(transfer))
}

/// Puts a failed transfer back in `pending` (its requester, or the owner);
/// `attempts` + 1. Any body is ignored.
#[utoipa::path(
    post,
    path = "/api/projects/{project_id}/transfers/{transfer_id}/retry",
    tag = "transfers",
    security(("bearer" = [])),
    params(("project_id" = Uuid, Path, description = "The project"), ("transfer_id" = Uuid, Path, description = "The transfer"), ("Idempotency-Key" = Option<String>, Header, nullable = false, max_length = 255, description = "A repeat with the same key answers the first response and appends nothing")),
    responses(
        (status = 200, description = "The transfer, pending again", body = Transfer),
        (status = 400, description = "Malformed id, body or idempotency key", body = crate::protocol::ErrorBody),
        (status = 401, description = "No or invalid token", body = crate::protocol::ErrorBody),
        (status = 403, description = "Neither the requester nor the owner", body = crate::protocol::ErrorBody),
        (status = 404, description = "Unknown project or transfer, or not visible to the caller", body = crate::protocol::ErrorBody),
        (status = 409, description = "Only a failed transfer can be retried", body = crate::protocol::ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err(level = "debug"))]
async fn retry_transfer(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<(Uuid, Uuid)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    optional_json::<serde_json::Value>(&body)?;
    let key = idempotency_key(&req, &())?;
    let ((project_id, transfer_id), policy) = (path.into_inner(), state.transfers);
    let transfer = domain::execute(&state.pool, auth.0, key.as_ref(), move |tx, cmd| {
        Box::pin(async move { transfers::retry(tx, cmd, &policy, project_id, transfer_id).await })
    })
    .await?;
    Ok(HttpResponse::Ok().json(transfer))
}

/// The requester of an open transfer gets the source's direct endpoints
/// with fresh tokens, when the one it holds ran out (tokens live minutes).
/// Any body is ignored.
#[utoipa::path(
    post,
    path = "/api/projects/{project_id}/transfers/{transfer_id}/direct-token",
    tag = "transfers",
    security(("bearer" = [])),
    params(("project_id" = Uuid, Path, description = "The project"), ("transfer_id" = Uuid, Path, description = "The transfer"), ("Idempotency-Key" = Option<String>, Header, nullable = false, max_length = 255, description = "A repeat with the same key is refused (409 already_applied): the answer holds secrets")),
    responses(
        (status = 200, description = "Fresh direct endpoints (empty when the source no longer advertises any)", body = DirectEndpoints),
        (status = 400, description = "Malformed id, body or idempotency key", body = crate::protocol::ErrorBody),
        (status = 401, description = "No or invalid token", body = crate::protocol::ErrorBody),
        (status = 403, description = "Not the transfer's requester", body = crate::protocol::ErrorBody),
        (status = 404, description = "Unknown project or transfer, or not visible to the caller", body = crate::protocol::ErrorBody),
        (status = 409, description = "The transfer is over (`transfer_not_active`)", body = crate::protocol::ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err(level = "debug"))]
async fn refresh_direct_token(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<(Uuid, Uuid)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    optional_json::<serde_json::Value>(&body)?;
    let key = idempotency_key(&req, &())?;
    let ((project_id, transfer_id), policy) = (path.into_inner(), state.transfers);
    let fresh = domain::execute_secret(&state.pool, auth.0, key.as_ref(), move |tx, cmd| {
        Box::pin(async move { transfers::direct_token(tx, cmd, &policy, project_id, transfer_id).await })
    })
    .await?;
    Ok(HttpResponse::Ok().json(fresh))
}
