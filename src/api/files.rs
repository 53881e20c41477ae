use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use uuid::Uuid;

use super::{idempotency_key, resource, ApiError, AppState, Auth};
use crate::domain::events::{self, parse_limit, parse_types};
use crate::domain::files::{self, FilesQuery};
use crate::domain::{self, DomainError};
use crate::protocol::events::EventsPage;
use crate::protocol::files::{FilesPage, UpdateFilesRequest, UpdateFilesResponse};
use crate::protocol::ErrorBody;

/// A batch of 10,000 changes with their chunk lists fits comfortably.
pub(super) const UPDATE_LIMIT: usize = 32 * 1024 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/projects/{project_id}/files/update")
            .app_data(super::json_config().limit(UPDATE_LIMIT))
            .post(update_files),
    )
    .service(resource("/projects/{project_id}/files-paginated").get(list_files))
    .service(resource("/projects/{project_id}/events").get(list_events))
    .service(resource("/projects/{project_id}/project_events").get(list_project_events));
}

/// Applies a batch of file changes from a source device, in one transaction.
///
/// An upsert whose hash and size equal the current ones appends nothing.
/// `chunks` sizes must add up to `size`; `mime_type` is guessed from the
/// path when absent. Up to 10,000 changes per call.
#[utoipa::path(
    post,
    path = "/api/projects/{project_id}/files/update",
    tag = "files",
    security(("bearer" = [])),
    params(("project_id" = Uuid, Path, description = "The project"), ("Idempotency-Key" = Option<String>, Header, nullable = false, max_length = 255, description = "A repeat with the same key answers the first response and appends nothing")),
    request_body = UpdateFilesRequest,
    responses(
        (status = 200, description = "The batch was applied", body = UpdateFilesResponse),
        (status = 400, description = "Malformed id, body or idempotency key", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "Not a device token of a source device of the project", body = ErrorBody),
        (status = 404, description = "Unknown project, or the caller is not in it", body = ErrorBody),
        (status = 413, description = "More than 10,000 changes, or the body is too large", body = ErrorBody),
        (status = 422, description = "A bad path, hash, size or chunk list (the message names the change's index)", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, project_id = %path, changes = body.changes.len()), err(level = "debug"))]
async fn update_files(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<Uuid>,
    body: web::Json<UpdateFilesRequest>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req, &*body)?;
    let project_id = path.into_inner();
    let changes = body.into_inner().changes;
    let answer = domain::execute(&state.pool, auth.0, key.as_ref(), move |tx, cmd| {
        Box::pin(files::update(tx, cmd, project_id, changes))
    })
    .await?;
    Ok(HttpResponse::Ok().json(answer))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct FilesParams {
    /// Only paths starting with this, e.g. `/documents/`: at most 4096 bytes, no NUL.
    #[param(pattern = r"^(?:/[^\x00]*)?$", max_length = 4096)]
    prefix: Option<String>,
    /// The `next_cursor` of the previous page (422 `invalid_cursor` for one this server did not give out).
    #[param(pattern = "^[A-Za-z0-9_-]*$")]
    cursor: Option<String>,
    /// Files per page: 1 to 1000.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<i64>,
    /// Include tombstones of deleted files.
    #[serde(default)]
    include_deleted: bool,
}

/// The project's files, ordered by path, a page at a time.
#[utoipa::path(
    get,
    path = "/api/projects/{project_id}/files-paginated",
    tag = "files",
    security(("bearer" = [])),
    params(("project_id" = Uuid, Path, description = "The project"), FilesParams),
    responses(
        (status = 200, description = "A page of files", body = FilesPage),
        (status = 400, description = "Malformed id or query", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 404, description = "Unknown project, or the caller is not in it", body = ErrorBody),
        (status = 422, description = "Bad limit, cursor or prefix", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, project_id = %path), err(level = "debug"))]
async fn list_files(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<Uuid>,
    params: web::Query<FilesParams>,
) -> Result<HttpResponse, ApiError> {
    let p = params.into_inner();
    let query =
        FilesQuery::parse(p.prefix, p.cursor.as_deref(), p.limit, p.include_deleted).map_err(DomainError::from)?;
    let mut client = state.pool.get().await.map_err(DomainError::from)?;
    Ok(HttpResponse::Ok().json(files::list(&mut client, &auth.0, path.into_inner(), &query).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsParams {
    /// Events after this seq.
    #[serde(default)]
    #[param(default = 0)]
    after_seq: i64,
    /// Events per page: 1 to 1000.
    #[param(minimum = 1, maximum = 1000, default = 500)]
    limit: Option<i64>,
    /// Only these event types, comma-separated (422 `invalid_type` for an unknown one).
    #[serde(rename = "type")]
    #[param(
        pattern = r"^(?:\s*(?:project_created|project_renamed|project_archived|invite_created|invite_revoked|member_joined|member_removed|device_attached|device_detached|file_added|file_updated|file_deleted|file_moved|transfer_requested|file_transfer_started|file_transfer_progress|file_transfer_complete|file_transfer_failed|file_transfer_cancelled|file_transfer_expired|transfer_retried)\s*(?:,\s*(?:project_created|project_renamed|project_archived|invite_created|invite_revoked|member_joined|member_removed|device_attached|device_detached|file_added|file_updated|file_deleted|file_moved|transfer_requested|file_transfer_started|file_transfer_progress|file_transfer_complete|file_transfer_failed|file_transfer_cancelled|file_transfer_expired|transfer_retried)\s*)*)?$",
        example = "file_added,file_deleted"
    )]
    event_type: Option<String>,
}

/// The project's events after `after_seq` that the caller may see: both
/// logs merged in seq order.
#[utoipa::path(
    get,
    path = "/api/projects/{project_id}/events",
    tag = "events",
    security(("bearer" = [])),
    params(("project_id" = Uuid, Path, description = "The project"), EventsParams),
    responses(
        (status = 200, description = "A page of events", body = EventsPage),
        (status = 400, description = "Malformed id or query", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 404, description = "Unknown project, or the caller is not in it", body = ErrorBody),
        (status = 422, description = "Bad limit or unknown event type", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, project_id = %path), err(level = "debug"))]
async fn list_events(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<Uuid>,
    params: web::Query<EventsParams>,
) -> Result<HttpResponse, ApiError> {
    let p = params.into_inner();
    let types = parse_types(p.event_type.as_deref()).map_err(DomainError::from)?;
    let limit = parse_limit(p.limit, 500, 1000).map_err(DomainError::from)?;
    let client = state.pool.get().await.map_err(DomainError::from)?;
    let page = events::feed(&client, &auth.0, path.into_inner(), p.after_seq.max(0), types.as_deref(), limit).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// The same feed as `events`, under the name existing clients use.
#[utoipa::path(
    get,
    path = "/api/projects/{project_id}/project_events",
    tag = "events",
    security(("bearer" = [])),
    params(("project_id" = Uuid, Path, description = "The project"), EventsParams),
    responses(
        (status = 200, description = "A page of events", body = EventsPage),
        (status = 400, description = "Malformed id or query", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 404, description = "Unknown project, or the caller is not in it", body = ErrorBody),
        (status = 422, description = "Bad limit or unknown event type", body = ErrorBody),
    )
)]
async fn list_project_events(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<Uuid>,
    params: web::Query<EventsParams>,
) -> Result<HttpResponse, ApiError> {
    list_events(state, auth, path, params).await
}
