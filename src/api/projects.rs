use actix_web::{web, HttpRequest, HttpResponse};
use uuid::Uuid;

use super::{created, idempotency_key, no_content, resource, ApiError, AppState, Auth};
use crate::domain::{self, projects, DomainError};
use crate::protocol::projects::{CreateProjectRequest, ProjectsResponse, UpdateProjectRequest};
use crate::protocol::validate::ProjectName;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/projects").post(create_project).get(list_projects))
        .service(
            resource("/projects/{project_id}")
                .get(get_project)
                .patch(update_project)
                .delete(archive_project),
        );
}

#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err)]
async fn create_project(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    body: web::Json<CreateProjectRequest>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req, &*body)?;
    let name = ProjectName::parse(&body.name).map_err(DomainError::from)?;
    let project = domain::execute(&state.pool, auth.0, key.as_ref(), move |tx, cmd| {
        Box::pin(projects::create(tx, cmd, name))
    })
    .await?;
    Ok(created(&project))
}

#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err)]
async fn list_projects(state: web::Data<AppState>, auth: Auth) -> Result<HttpResponse, ApiError> {
    let projects = projects::list(&state.pool, &auth.0).await?;
    Ok(HttpResponse::Ok().json(ProjectsResponse { projects }))
}

#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, project_id = %path), err)]
async fn get_project(state: web::Data<AppState>, auth: Auth, path: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    let client = state.pool.get().await.map_err(DomainError::from)?;
    Ok(HttpResponse::Ok().json(projects::get(&client, &auth.0, path.into_inner()).await?))
}

#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, project_id = %path), err)]
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
    let project = domain::execute(&state.pool, auth.0, key.as_ref(), move |tx, cmd| {
        Box::pin(projects::rename(tx, cmd, project_id, name))
    })
    .await?;
    Ok(HttpResponse::Ok().json(project))
}

#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, project_id = %path), err)]
async fn archive_project(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req, &())?;
    let project_id = path.into_inner();
    domain::execute(&state.pool, auth.0, key.as_ref(), move |tx, cmd| {
        Box::pin(projects::archive(tx, cmd, project_id))
    })
    .await?;
    Ok(no_content())
}
