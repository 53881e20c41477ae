//! The web app: server-rendered pages and their embedded assets. Like
//! `api`, it parses the request, calls `domain` and shapes the answer; no
//! SQL here.

mod assets;
mod pages;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{guard, web, HttpRequest, HttpResponse, Route};
use maud::Markup;

use crate::api::{error_chain, ApiError, AppState};
use crate::domain::{membership, DomainError};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/").route(read().to(index)))
        .service(web::resource("/join/{token}").route(read().to(join)))
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
    page(StatusCode::NOT_FOUND, pages::not_found())
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

#[tracing::instrument(skip_all)]
async fn index() -> HttpResponse {
    page(StatusCode::OK, pages::index())
}

/// An invite link. Recording nothing of the request (`skip_all`): the
/// token is a secret; looking consumes no use.
#[tracing::instrument(skip_all)]
async fn join(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let Some(token) = req.match_info().get("token") else {
        return page(StatusCode::NOT_FOUND, pages::invalid_invite());
    };
    let preview = match state.pool.get().await {
        Ok(client) => membership::preview_invite(&client, token).await,
        Err(e) => Err(DomainError::from(e)),
    };
    match preview.map_err(ApiError::from) {
        Ok(invite) => page(StatusCode::OK, pages::join(&invite)),
        Err(e) if actix_web::ResponseError::status_code(&e) == StatusCode::NOT_FOUND => {
            page(StatusCode::NOT_FOUND, pages::invalid_invite())
        }
        Err(e) => failure_page(e),
    }
}

#[tracing::instrument(skip_all)]
async fn asset(req: HttpRequest) -> HttpResponse {
    let file = req.match_info().get("file").unwrap_or_default();
    assets::serve(&req, file).unwrap_or_else(not_found_page)
}
