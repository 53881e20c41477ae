use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{resource, ApiError, AppState, Auth};
use crate::domain::events::{self, decode_position, parse_limit, parse_types, require_admin, AuditQuery};
use crate::domain::{DomainError, Rejection};
use crate::projections;
use crate::protocol::events::AuditPage;
use crate::protocol::ErrorBody;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/admin/projections").get(list_projections))
        .service(resource("/admin/projections/{name}/rebuild").post(rebuild_projection))
        .service(resource("/admin/audit").get(audit));
}

/// A read model: the version of its file, the version its tables were
/// built from, and how big it is.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ProjectionInfo {
    name: &'static str,
    /// The hash of the projection's current SQL file.
    version: String,
    /// The version its tables were last built from; null before the first build.
    built_version: Option<String>,
    up_to_date: bool,
    rows: i64,
    rebuilt_at: Option<DateTime<Utc>>,
    events_read: i64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ProjectionsResponse {
    projections: Vec<ProjectionInfo>,
}

/// What a rebuild did.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct RebuildResponse {
    name: &'static str,
    version: String,
    /// Events read from the log: the snapshot plus the catch-up.
    events_read: i64,
    /// Of those, committed while the build ran.
    caught_up: i64,
}

/// The projections (read models) and whether each is up to date (admins only).
#[utoipa::path(
    get,
    path = "/api/admin/projections",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every projection", body = ProjectionsResponse),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "Not an administrator", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err(level = "debug"))]
async fn list_projections(state: web::Data<AppState>, auth: Auth) -> Result<HttpResponse, ApiError> {
    require_admin(&auth.0)?;
    let status = projections::status(&state.pool).await.map_err(DomainError::from)?;
    let projections: Vec<ProjectionInfo> = status
        .into_iter()
        .map(|s| ProjectionInfo {
            up_to_date: s.built_version.as_deref() == Some(s.version.as_str()),
            name: s.name,
            version: s.version,
            built_version: s.built_version,
            rows: s.rows,
            rebuilt_at: s.rebuilt_at,
            events_read: s.events_read,
        })
        .collect();
    Ok(HttpResponse::Ok().json(ProjectionsResponse { projections }))
}

/// Rebuilds one projection from the log without downtime (admins only).
#[utoipa::path(
    post,
    path = "/api/admin/projections/{name}/rebuild",
    tag = "admin",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The projection's name, e.g. `projects`")),
    responses(
        (status = 200, description = "Rebuilt and swapped in", body = RebuildResponse),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "Not an administrator", body = ErrorBody),
        (status = 404, description = "No projection has this name", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, projection = %path), err(level = "debug"))]
async fn rebuild_projection(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&auth.0)?;
    let projection = projections::find(&path).ok_or_else(|| {
        DomainError::rejected(Rejection::NotFound, "not_found", format!("no projection named {:?}", path.as_str()))
    })?;
    let report = projections::rebuild(&state.pool, projection).await.map_err(DomainError::from)?;
    Ok(HttpResponse::Ok().json(RebuildResponse {
        name: report.name,
        version: report.version,
        events_read: report.events_read,
        caught_up: report.caught_up,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AuditParams {
    /// Only this project's events.
    project_id: Option<Uuid>,
    /// Only events appended by this user or device.
    actor_id: Option<Uuid>,
    /// Only these event types, comma-separated (422 `invalid_type` for an unknown one).
    #[serde(rename = "type")]
    #[param(
        pattern = r"^(?:\s*(?:project_created|project_renamed|project_archived|invite_created|invite_revoked|member_joined|member_removed|device_attached|device_detached|file_added|file_updated|file_deleted|file_moved|transfer_requested|file_transfer_started|file_transfer_progress|file_transfer_complete|file_transfer_failed|file_transfer_cancelled|file_transfer_expired|transfer_retried)\s*(?:,\s*(?:project_created|project_renamed|project_archived|invite_created|invite_revoked|member_joined|member_removed|device_attached|device_detached|file_added|file_updated|file_deleted|file_moved|transfer_requested|file_transfer_started|file_transfer_progress|file_transfer_complete|file_transfer_failed|file_transfer_cancelled|file_transfer_expired|transfer_retried)\s*)*)?$",
        example = "file_added,file_deleted"
    )]
    event_type: Option<String>,
    /// Events created at or after this time.
    from: Option<DateTime<Utc>>,
    /// Events created before this time.
    to: Option<DateTime<Utc>>,
    /// The `next_cursor` of the previous page (422 `invalid_cursor` for one this server did not give out).
    #[param(pattern = "^[A-Za-z0-9_-]*$")]
    cursor: Option<String>,
    /// Events per page: 1 to 1000.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<i64>,
}

/// Both logs of every project in the order they were written, filtered (admins only).
#[utoipa::path(
    get,
    path = "/api/admin/audit",
    tag = "admin",
    security(("bearer" = [])),
    params(AuditParams),
    responses(
        (status = 200, description = "A page of events", body = AuditPage),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "Not an administrator", body = ErrorBody),
        (status = 422, description = "Bad limit, cursor or event type", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err(level = "debug"))]
async fn audit(
    state: web::Data<AppState>,
    auth: Auth,
    params: web::Query<AuditParams>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&auth.0)?;
    let p = params.into_inner();
    let query = AuditQuery {
        project_id: p.project_id,
        actor_id: p.actor_id,
        types: parse_types(p.event_type.as_deref()).map_err(DomainError::from)?,
        from: p.from,
        to: p.to,
        after_position: p
            .cursor
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(decode_position)
            .transpose()
            .map_err(DomainError::from)?,
        limit: parse_limit(p.limit, 100, 1000).map_err(DomainError::from)?,
    };
    let client = state.pool.get().await.map_err(DomainError::from)?;
    Ok(HttpResponse::Ok().json(events::audit(&client, &query).await?))
}
