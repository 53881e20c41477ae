use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{resource, ApiError, AppState, Auth};
use crate::domain::events::{self, decode_position, parse_limit, parse_types, require_admin, AuditQuery};
use crate::domain::{DomainError, Rejection};
use crate::projections;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/admin/projections").get(list_projections))
        .service(resource("/admin/projections/{name}/rebuild").post(rebuild_projection))
        .service(resource("/admin/audit").get(audit));
}

#[derive(Serialize)]
struct ProjectionInfo {
    name: &'static str,
    version: String,
    built_version: Option<String>,
    up_to_date: bool,
    rows: i64,
    rebuilt_at: Option<DateTime<Utc>>,
    events_read: i64,
}

#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err)]
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
    Ok(HttpResponse::Ok().json(serde_json::json!({ "projections": projections })))
}

#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, projection = %path), err)]
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
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "name": report.name,
        "version": report.version,
        "events_read": report.events_read,
        "caught_up": report.caught_up,
    })))
}

#[derive(Deserialize)]
struct AuditParams {
    project_id: Option<Uuid>,
    actor_id: Option<Uuid>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    cursor: Option<String>,
    limit: Option<i64>,
}

#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err)]
async fn audit(state: web::Data<AppState>, auth: Auth, params: web::Query<AuditParams>) -> Result<HttpResponse, ApiError> {
    require_admin(&auth.0)?;
    let p = params.into_inner();
    let query = AuditQuery {
        project_id: p.project_id,
        actor_id: p.actor_id,
        types: parse_types(p.event_type.as_deref()).map_err(DomainError::from)?,
        from: p.from,
        to: p.to,
        after_position: p.cursor.as_deref().filter(|c| !c.is_empty()).map(decode_position).transpose().map_err(DomainError::from)?,
        limit: parse_limit(p.limit, 100, 1000).map_err(DomainError::from)?,
    };
    let client = state.pool.get().await.map_err(DomainError::from)?;
    Ok(HttpResponse::Ok().json(events::audit(&client, &query).await?))
}
