//! The web app: server-rendered pages and their embedded assets. Like
//! `api`, it parses the request, calls `domain` and shapes the answer; no
//! SQL here.

mod assets;
mod pages;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{guard, web, FromRequest, HttpRequest, HttpResponse, ResponseError, Route};
use maud::Markup;

use percent_encoding::percent_decode_str;
use uuid::Uuid;

use crate::api::{ApiError, AppState, Auth};
use crate::domain::{accounts, membership, projects, Caller, DomainError};
use crate::protocol::accounts::User;
use crate::protocol::files::FilePath;
use crate::protocol::projects::{Project, Role};
use crate::telemetry::error_chain;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/").route(read().to(index)))
        .service(web::resource("/join/{token}").route(read().to(join)))
        .service(web::resource("/p/{project_id}").route(read().to(to_project_top)))
        .service(web::resource("/p/{project_id}/settings").route(read().to(settings)))
        .service(web::resource("/p/{project_id}/{folder:.*}").route(read().to(folder)))
        .service(web::resource("/assets/{file}").route(read().to(asset)));
}

/// GET, and HEAD for the same answer without its body.
fn read() -> Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// Scripts and styles only from our own files (no inline script), nothing
/// framed, forms posting only to us.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; \
                                       base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Whether a path belongs to the JSON API (which answers its own 404).
pub fn is_api(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// An HTML page. Never cached and never named in a `Referer`: a page's
/// address can hold a secret (`/join/<token>`), and signed in, a page
/// shows what is the caller's alone.
fn page(status: StatusCode, markup: Markup) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .body(markup.into_string())
}

/// The app's own 404 page, for any unknown address outside `/api/`.
pub fn not_found_page() -> HttpResponse {
    page(StatusCode::NOT_FOUND, pages::not_found(None))
}

/// A page for a failure that is not the visitor's: 503 (with
/// `Retry-After`) when the database is down, else 500 with its cause in
/// the log only.
fn failure_page(error: ApiError) -> HttpResponse {
    match error {
        ApiError::Client { status, .. } if status == StatusCode::SERVICE_UNAVAILABLE => {
            let mut res = page(status, pages::failed(true));
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            res
        }
        ApiError::Client { status, .. } => page(status, pages::failed(false)),
        ApiError::Internal(cause) => {
            tracing::error!(error = %error_chain(cause.as_ref()), "page failed");
            page(StatusCode::INTERNAL_SERVER_ERROR, pages::failed(false))
        }
    }
}

/// The visitor's page, by their session: who they are, or None when not
/// signed in (no cookie, or one that no longer works).
async fn visitor(state: &AppState, req: &HttpRequest) -> Result<Option<(Caller, User)>, ApiError> {
    match Auth::extract(req).await {
        Ok(Auth(caller, _)) => {
            let me = accounts::me(&state.pool, &caller).await?;
            Ok(Some((caller, me.user)))
        }
        Err(e) if e.status_code() == StatusCode::UNAUTHORIZED => Ok(None),
        Err(e) => Err(e),
    }
}

/// `/`: signing in, or signed in, the visitor's projects.
#[tracing::instrument(skip_all)]
async fn index(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let answer = async {
        let Some((caller, user)) = visitor(&state, &req).await? else {
            return Ok(page(StatusCode::OK, pages::index()));
        };
        let projects = projects::list(&state.pool, &caller).await?;
        Ok(page(StatusCode::OK, pages::projects(&user, &projects)))
    };
    answer.await.unwrap_or_else(failure_page)
}

/// An invite link. Recording nothing of the request (`skip_all`): the
/// token is a secret; looking consumes no use.
#[tracing::instrument(skip_all)]
async fn join(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let answer = async {
        let visitor = visitor(&state, &req).await?;
        let user = visitor.as_ref().map(|(_, user)| user);
        let token = req.match_info().get("token").unwrap_or_default();
        let client = state.pool.get().await.map_err(DomainError::from)?;
        match membership::preview_invite(&client, token).await.map_err(ApiError::from) {
            Ok(invite) => Ok(page(StatusCode::OK, pages::join(&invite, user))),
            Err(e) if e.status_code() == StatusCode::NOT_FOUND => {
                Ok(page(StatusCode::NOT_FOUND, pages::invalid_invite(user)))
            }
            Err(e) => Err(e),
        }
    };
    answer.await.unwrap_or_else(failure_page)
}

/// `/p/<id>` is the project's top folder, `/p/<id>/`.
async fn to_project_top(req: HttpRequest) -> HttpResponse {
    HttpResponse::PermanentRedirect().insert_header((header::LOCATION, format!("{}/", req.path()))).finish()
}

/// A project page for the visitor: sign in first, the project's 404 when
/// they cannot see it (strangers learn nothing), else `show`.
async fn project_page(
    state: &AppState,
    req: &HttpRequest,
    show: impl FnOnce(&User, &Project) -> HttpResponse,
) -> HttpResponse {
    let answer = async {
        let visitor = visitor(state, req).await?;
        let project_id = req.match_info().get("project_id").and_then(|id| Uuid::parse_str(id).ok());
        let (Some((caller, user)), Some(project_id)) = (visitor.as_ref(), project_id) else {
            // Not signed in, the same page for every project id: it says
            // nothing of which ones exist.
            return Ok(match (visitor.as_ref(), project_id) {
                (None, Some(_)) => page(StatusCode::OK, pages::sign_in_first()),
                (visitor, _) => page(StatusCode::NOT_FOUND, pages::not_found(visitor.map(|(_, user)| user))),
            });
        };
        let client = state.pool.get().await.map_err(DomainError::from)?;
        match projects::get(&client, caller, project_id).await.map_err(ApiError::from) {
            Ok(project) => Ok(show(user, &project)),
            Err(e) if e.status_code() == StatusCode::NOT_FOUND => {
                Ok(page(StatusCode::NOT_FOUND, pages::not_found(Some(user))))
            }
            Err(e) => Err(e),
        }
    };
    answer.await.unwrap_or_else(failure_page)
}

/// `/p/<id>/<folder>/`: the folder's files, `/p/<id>/` the project's top.
#[tracing::instrument(skip_all)]
async fn folder(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    // From the raw address: each segment percent-decoded once, so a `/`
    // or `%` inside a folder's name survives.
    let tail = req.path().splitn(4, '/').nth(3).unwrap_or_default();
    let folder = folder_path(tail);
    project_page(&state, &req, |user, project| match folder {
        Some(folder) => page(StatusCode::OK, pages::folder(user, project, &folder)),
        None => page(StatusCode::NOT_FOUND, pages::not_found(Some(user))),
    })
    .await
}

/// The folder a page address names after `/p/<id>/`: `/` for nothing, else
/// valid path segments each ending in `/`. None for anything else.
fn folder_path(tail: &str) -> Option<String> {
    if tail.is_empty() {
        return Some("/".to_owned());
    }
    let segments = tail.strip_suffix('/')?;
    let mut path = String::new();
    for segment in segments.split('/') {
        path.push('/');
        path.push_str(&percent_decode_str(segment).decode_utf8().ok()?);
    }
    FilePath::parse(&path).ok()?;
    path.push('/');
    Some(path)
}

/// `/p/<id>/settings`: the owner's; a member is told it is not theirs.
#[tracing::instrument(skip_all)]
async fn settings(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    project_page(&state, &req, |user, project| match project.role {
        Role::Owner => page(StatusCode::OK, pages::settings(user, project)),
        Role::Member => page(StatusCode::FORBIDDEN, pages::owner_only(user, project)),
    })
    .await
}

#[tracing::instrument(skip_all)]
async fn asset(req: HttpRequest) -> HttpResponse {
    let file = req.match_info().get("file").unwrap_or_default();
    assets::serve(&req, file).unwrap_or_else(not_found_page)
}

#[cfg(test)]
mod tests {
    use super::folder_path;

    #[test]
    fn a_page_address_names_a_valid_folder_or_none() {
        assert_eq!(folder_path("").as_deref(), Some("/"));
        assert_eq!(folder_path("a/").as_deref(), Some("/a/"));
        assert_eq!(folder_path("a%20b/%C3%BCn%2Fi/").as_deref(), Some("/a b/ün/i/"));
        for bad in ["a", "a//", "%2E%2E/", "../", "%FF/", "a%00/"] {
            assert_eq!(folder_path(bad), None, "{bad:?}");
        }
    }
}
