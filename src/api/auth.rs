//! The bearer-token extractor: `Authorization: Bearer <token>`, or
//! `?access_token=<token>` on `GET /api/ws` only (a browser cannot set
//! headers on a WebSocket; anywhere else a token in a URL would only end up
//! in histories and proxy logs).

use std::future::Future;
use std::pin::Pin;

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};

use super::{ApiError, AppState};
use crate::domain::{accounts, Caller};

/// An authenticated caller; extracting it answers 401 without a valid token.
pub struct Auth(pub Caller);

fn presented_token(req: &HttpRequest) -> Option<String> {
    if let Some(header) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        let value = header.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned());
    }
    if req.path() != WEBSOCKET_PATH {
        return None;
    }
    web::Query::<AccessToken>::from_query(req.query_string()).ok()?.0.access_token
}

/// The one route that takes `?access_token=`.
const WEBSOCKET_PATH: &str = "/api/ws";

#[derive(serde::Deserialize)]
struct AccessToken {
    access_token: Option<String>,
}

impl FromRequest for Auth {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = presented_token(req);
        let state = req.app_data::<web::Data<AppState>>().cloned();
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::Internal("application state missing".into()))?;
            let token = token.ok_or_else(|| ApiError::unauthorized("a bearer token is required"))?;
            accounts::authenticate(&state.pool, state.accounts.token_idle, &token)
                .await?
                .map(Auth)
                .ok_or_else(|| ApiError::unauthorized("the token is invalid or revoked"))
        })
    }
}
