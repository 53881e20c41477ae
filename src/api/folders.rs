//! One folder of a project's files at a time: what the web app's file
//! browser pages through.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use uuid::Uuid;

use super::{resource, ApiError, AppState, Auth};
use crate::domain::folders::{self, FolderQuery};
use crate::domain::DomainError;
use crate::protocol::files::FolderPage;
use crate::protocol::ErrorBody;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/projects/{project_id}/folder").get(list_folder));
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct FolderParams {
    /// The folder: `/` (the default) or a folder's path ending in `/`, e.g. `/documents/`.
    #[param(pattern = r"^/(?:[^\x00]*/)?$", max_length = 4097)]
    path: Option<String>,
    /// The `next_cursor` of the previous page of the same folder (422 `invalid_cursor` otherwise).
    #[param(pattern = "^[A-Za-z0-9_-]*$")]
    cursor: Option<String>,
    /// Entries per page: 1 to 1000.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<i64>,
}

/// A folder's subfolders and the files directly in it, ordered by name
/// byte by byte, a page at a time. Folders are those holding a live file.
#[utoipa::path(
    get,
    path = "/api/projects/{project_id}/folder",
    tag = "files",
    security(("bearer" = [])),
    params(("project_id" = Uuid, Path, description = "The project"), FolderParams),
    responses(
        (status = 200, description = "A page of the folder's entries (empty for a folder with no live file)", body = FolderPage),
        (status = 400, description = "Malformed id or query", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 404, description = "Unknown project, or the caller is not in it", body = ErrorBody),
        (status = 422, description = "Bad folder path, limit or cursor", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, project_id = %path), err(level = "debug"))]
async fn list_folder(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<Uuid>,
    params: web::Query<FolderParams>,
) -> Result<HttpResponse, ApiError> {
    let p = params.into_inner();
    let query = FolderQuery::parse(p.path.as_deref(), p.cursor.as_deref(), p.limit).map_err(DomainError::from)?;
    let mut client = state.pool.get().await.map_err(DomainError::from)?;
    Ok(HttpResponse::Ok().json(folders::list(&mut client, &auth.0, path.into_inner(), &query).await?))
}
