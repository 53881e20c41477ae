//! Who is calling: `Authorization: Bearer <token>`, or `?access_token=<token>`
//! on `GET /api/ws` only (a browser cannot set headers on a WebSocket;
//! anywhere else a token in a URL would only end up in histories and proxy
//! logs), or the web app's session cookie.
//!
//! A browser attaches the cookie on its own, whichever site's page made the
//! request, so a request the cookie authenticates that could change
//! anything must come from the app's own origin. That rule lives here,
//! once, for every route; a token the client presents itself is never
//! subject to it (another site cannot know it).

use std::future::Future;
use std::pin::Pin;

use actix_web::cookie::{time, Cookie, SameSite};
use actix_web::http::{header, Method};
use actix_web::{dev::Payload, web, FromRequest, HttpRequest};

use super::{ApiError, AppState};
use crate::domain::{accounts, Caller};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "ferry_session";

/// An authenticated caller, and how they authenticated; extracting it
/// answers 401 without a valid token, and 403 `cross_site` for a cookie
/// request from another origin that could change anything.
pub struct Auth(pub Caller, pub Credential);

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A token the client presented itself: the header or `?access_token=`.
    Bearer,
    /// The session cookie, which the browser sends by itself.
    Cookie,
}

/// The token presented, and how. A Bearer header wins over the cookie.
fn presented_token(req: &HttpRequest) -> Option<(String, Credential)> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if let Some((scheme, token)) = value.split_once(' ') {
            if scheme.eq_ignore_ascii_case("bearer") {
                return Some((token.trim().to_owned(), Credential::Bearer));
            }
        }
        // Another scheme (say, Basic for a proxy in front of us) is not
        // ours: the cookie may still authenticate the request.
    }
    if req.path() == WEBSOCKET_PATH {
        let query = web::Query::<AccessToken>::from_query(req.query_string()).ok();
        if let Some(token) = query.and_then(|q| q.0.access_token) {
            return Some((token, Credential::Bearer));
        }
    }
    // An unreadable Cookie header is no cookie.
    req.cookie(SESSION_COOKIE).map(|c| (c.value().to_owned(), Credential::Cookie))
}

/// The one route that takes `?access_token=`.
const WEBSOCKET_PATH: &str = "/api/ws";

#[derive(serde::Deserialize)]
struct AccessToken {
    access_token: Option<String>,
}

/// Whether a request could change anything. The WebSocket upgrade is a GET,
/// but the channel it opens acts for the caller (subscribes, reads every
/// event), so it counts.
fn changes_state(req: &HttpRequest) -> bool {
    !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) || req.path() == WEBSOCKET_PATH
}

/// Refuses (403 `cross_site`) a request that is not from a page of this
/// server's own origin.
///
/// `Sec-Fetch-Site`, when present, decides: it is the browser's own
/// verdict, no page can forge it, and a proxy rewriting `Host` does not
/// upset it. Otherwise `Origin` must be this server's own
/// `scheme://host[:port]`. With neither, the request is refused: every
/// browser sends `Origin` on a POST, PUT, PATCH or DELETE and on a
/// WebSocket handshake, so a request without either is not from a browser
/// page, and a client that is not a browser has no business riding on a
/// browser's cookie; it presents its token as a Bearer header.
pub(crate) fn require_same_origin(req: &HttpRequest) -> Result<(), ApiError> {
    let headers = req.headers();
    let same_origin = if let Some(site) = headers.get("sec-fetch-site") {
        matches!(site.as_bytes(), b"same-origin" | b"none")
    } else if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        is_own_origin(req, origin)
    } else {
        false
    };
    if same_origin {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "cross_site",
            "a request signed in by the session cookie must come from this server's own pages; \
             other clients send `Authorization: Bearer <token>`",
        ))
    }
}

/// Whether `origin` (an `Origin` header) is this server's origin, as the
/// request addressed it. Compared as URL origins, so case and a default
/// port written out make no difference; `null` is no one's origin.
fn is_own_origin(req: &HttpRequest, origin: &str) -> bool {
    let info = req.connection_info();
    let own = format!("{}://{}", info.scheme(), info.host());
    match (url::Url::parse(origin), url::Url::parse(&own)) {
        (Ok(theirs), Ok(ours)) => theirs.origin().is_tuple() && theirs.origin() == ours.origin(),
        _ => false,
    }
}

/// The cookie that carries a session's user token: for every path, out of
/// JavaScript's reach, not sent along by other sites' subresources or
/// forms, only over TLS when the app is served over https, and kept as
/// long as an unused token lives.
pub(crate) fn session_cookie(req: &HttpRequest, token: String, idle: chrono::Duration) -> Cookie<'static> {
    Cookie::build(SESSION_COOKIE, token)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(req.connection_info().scheme() == "https")
        .max_age(time::Duration::seconds(idle.num_seconds()))
        .finish()
}

/// The same cookie, expired: the browser drops it.
pub(crate) fn removed_session_cookie(req: &HttpRequest) -> Cookie<'static> {
    let mut cookie = session_cookie(req, String::new(), chrono::Duration::zero());
    cookie.make_removal();
    cookie
}

impl FromRequest for Auth {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let presented = presented_token(req);
        // Checked before the token: a forged request costs no database
        // call, and its answer says nothing about the cookie.
        let cross_site = match presented {
            Some((_, Credential::Cookie)) if changes_state(req) => require_same_origin(req).err(),
            _ => None,
        };
        let state = req.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            if let Some(refusal) = cross_site {
                return Err(refusal);
            }
            let state = state.ok_or_else(|| ApiError::Internal("application state missing".into()))?;
            let (token, credential) =
                presented.ok_or_else(|| ApiError::unauthorized("a bearer token or a session cookie is required"))?;
            accounts::authenticate(&state.pool, &state.accounts, &token)
                .await?
                .map(|caller| Auth(caller, credential))
                .ok_or_else(|| ApiError::unauthorized("the token is invalid or revoked"))
        })
    }
}
