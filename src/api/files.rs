use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use uuid::Uuid;

use super::{idempotency_key, resource, ApiError, AppState, Auth};
use crate::domain::events::{self, parse_limit, parse_types};
use crate::domain::files::{self, FilesQuery};
use crate::domain::{self, DomainError};
use crate::protocol::files::UpdateFilesRequest;

/// A batch of 10,000 changes with their chunk lists fits comfortably.
const UPDATE_LIMIT: usize = 32 * 1024 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/projects/{project_id}/files/update")
            .app_data(super::json_config().limit(UPDATE_LIMIT))
            .post(update_files),
    )
    .service(resource("/projects/{project_id}/files-paginated").get(list_files))
    .service(resource("/projects/{project_id}/events").get(list_events))
    .service(resource("/projects/{project_id}/project_events").get(list_events));
}

#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, project_id = %path, changes = body.changes.len()), err)]
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

#[derive(Deserialize)]
struct FilesParams {
    prefix: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
    #[serde(default)]
    include_deleted: bool,
}

#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, project_id = %path), err)]
async fn list_files(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<Uuid>,
    params: web::Query<FilesParams>,
) -> Result<HttpResponse, ApiError> {
    let p = params.into_inner();
    let query = FilesQuery::parse(p.prefix, p.cursor.as_deref(), p.limit, p.include_deleted).map_err(DomainError::from)?;
    let mut client = state.pool.get().await.map_err(DomainError::from)?;
    Ok(HttpResponse::Ok().json(files::list(&mut client, &auth.0, path.into_inner(), &query).await?))
}

#[derive(Deserialize)]
struct EventsParams {
    #[serde(default)]
    after_seq: i64,
    limit: Option<i64>,
    #[serde(rename = "type")]
    event_type: Option<String>,
}

#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, project_id = %path), err)]
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
