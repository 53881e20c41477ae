use actix_web::{web, HttpRequest, HttpResponse};
use uuid::Uuid;

use super::{created, idempotency_key, no_content, resource, ApiError, AppState, Auth};
use crate::domain::{self, projects, DomainError};
use crate::protocol::projects::{CreateProjectRequest, Project, ProjectsResponse, UpdateProjectRequest};
use crate::protocol::validate::ProjectName;
use crate::protocol::ErrorBody;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/projects").post(create_project).get(list_projects))
        .service(resource("/projects/{project_id}").get(get_project).patch(update_project).delete(archive_project));
}

/// Creates a project; the caller becomes its owner.
#[utoipa::path(
    post,
    path = "/api/projects",
    tag = "projects",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, max_length = 255, description = "A repeat with the same key answers the first response and appends nothing")),
    request_body = CreateProjectRequest,
    responses(
        (status = 201, description = "The new project", body = Project),
        (status = 400, description = "Malformed body or idempotency key", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 422, description = "The name is not 1 to 200 characters", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err(level = "debug"))]
async fn create_project(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    body: web::Json<CreateProjectRequest>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req, &*body)?;
    let name = ProjectName::parse(&body.name).map_err(DomainError::from)?;
    let project =
        domain::execute(&state.pool, auth.0, key.as_ref(), move |tx, cmd| Box::pin(projects::create(tx, cmd, name)))
            .await?;
    Ok(created(&project))
}

/// The projects the caller owns or is a member of.
#[utoipa::path(
    get,
    path = "/api/projects",
    tag = "projects",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's projects", body = ProjectsResponse),
        (status = 401, description = "No or invalid token", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err(level = "debug"))]
async fn list_projects(state: web::Data<AppState>, auth: Auth) -> Result<HttpResponse, ApiError> {
    let projects = projects::list(&state.pool, &auth.0).await?;
    Ok(HttpResponse::Ok().json(ProjectsResponse { projects }))
}

/// One project, with its member count.
#[utoipa::path(
    get,
    path = "/api/projects/{project_id}",
    tag = "projects",
    security(("bearer" = [])),
    params(("project_id" = Uuid, Path, description = "The project")),
    responses(
        (status = 200, description = "The project", body = Project),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 404, description = "Unknown, or the caller is not in it", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, project_id = %path), err(level = "debug"))]
async fn get_project(state: web::Data<AppState>, auth: Auth, path: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    let client = state.pool.get().await.map_err(DomainError::from)?;
    Ok(HttpResponse::Ok().json(projects::get(&client, &auth.0, path.into_inner()).await?))
}

/// Renames the project (owner only); appends `project_renamed`.
#[utoipa::path(
    patch,
    path = "/api/projects/{project_id}",
    tag = "projects",
    security(("bearer" = [])),
    params(("project_id" = Uuid, Path, description = "The project"), ("Idempotency-Key" = Option<String>, Header, nullable = false, max_length = 255, description = "A repeat with the same key answers the first response and appends nothing")),
    request_body = UpdateProjectRequest,
    responses(
        (status = 200, description = "The renamed project", body = Project),
        (status = 400, description = "Malformed id, body or idempotency key", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "Only the owner may rename", body = ErrorBody),
        (status = 404, description = "Unknown, or the caller is not in it", body = ErrorBody),
        (status = 422, description = "The name is not 1 to 200 characters", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, project_id = %path), err(level = "debug"))]
async fn update_project(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<Uuid>,
    body: web::Json<UpdateProjectRequest>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req, &*body)?;
    let name = ProjectName::parse(&body.name).map_err(DomainError::from)?;
    let project_id = path.into_inner();
    let project = domain::execute_statement(&state.pool, auth.0, key.as_ref(), move |tx, cmd| {
        Box::pin(projects::rename(tx, cmd, project_id, name))
    })
    .await?;
    Ok(HttpResponse::Ok().json(project))
}

/// Archives the project (owner only): an event, nothing erased.
#[utoipa::path(
    delete,
    path = "/api/projects/{project_id}",
    tag = "projects",
    security(("bearer" = [])),
    params(("project_id" = Uuid, Path, description = "The project"), ("Idempotency-Key" = Option<String>, Header, nullable = false, max_length = 255, description = "A repeat with the same key answers the first response and appends nothing")),
    responses(
        (status = 204, description = "Archived"),
        (status = 400, description = "Malformed id or idempotency key", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "Only the owner may archive", body = ErrorBody),
        (status = 404, description = "Unknown, or the caller is not in it", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, project_id = %path), err(level = "debug"))]
async fn archive_project(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req, &())?;
    let project_id = path.into_inner();
    domain::execute_statement(&state.pool, auth.0, key.as_ref(), move |tx, cmd| {
        Box::pin(projects::archive(tx, cmd, project_id))
    })
    .await?;
    Ok(no_content())
}
