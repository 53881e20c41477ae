//! The HTTP edge: routes per resource, the auth extractor, `ApiError`.
//! Handlers parse input into domain types, call `domain`, shape the answer.
//! No SQL here.

mod accounts;
mod admin;
mod auth;
mod content;
mod error;
mod files;
mod folders;
mod health;
mod membership;
mod openapi;
mod projects;
mod relay;
mod transfers;
mod ws;

pub use auth::Auth;
pub use error::ApiError;
pub use openapi::document;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::HttpServiceFactory;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::{header, StatusCode};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers, Next};
use actix_web::{error::JsonPayloadError, web, FromRequest, Handler, HttpRequest, HttpResponse, Responder};
use serde::Serialize;

use crate::domain::IdempotencyKey;
use crate::store::Pool;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// This HTTP worker's pool.
    pub pool: Pool,
    /// Every pool of the process, for its figures.
    pub pools: crate::store::Pools,
    pub transfers: crate::domain::transfers::TransferPolicy,
    pub realtime: std::sync::Arc<crate::realtime::Realtime>,
    pub chunks: crate::relay::ChunkStore,
    pub relay: crate::domain::relay::RelayPolicy,
    pub accounts: std::sync::Arc<crate::domain::accounts::Accounts>,
    /// Relayed bytes not yet counted as transfer progress.
    pub relayed: crate::domain::transfers::RelayedBytes,
    /// Readers waiting for relay chunks, woken as they land.
    pub arrivals: std::sync::Arc<crate::relay::ChunkArrivals>,
    /// How long a browser download waits for the next chunk.
    pub content_wait: std::time::Duration,
}

/// Largest JSON body of an ordinary command.
const JSON_LIMIT: usize = 64 * 1024;

/// Registers every API route and the JSON error shapes of its extractors.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(json_config())
        .app_data(web::PayloadConfig::new(JSON_LIMIT))
        .app_data(web::PathConfig::default().error_handler(|err, _| {
            ApiError::bad_request("invalid_path", format!("malformed path parameter: {err}")).into()
        }))
        .app_data(web::QueryConfig::default().error_handler(|err, _| {
            ApiError::bad_request("invalid_query", format!("malformed query string: {err}")).into()
        }))
        .configure(health::routes)
        .service(
            web::scope("/api")
                // The byte routes first: actix tries resources in order, a
                // regex each, and these take a request per relay chunk.
                .configure(relay::routes)
                .configure(content::routes)
                .configure(accounts::routes)
                .configure(projects::routes)
                .configure(membership::routes)
                .configure(files::routes)
                .configure(folders::routes)
                .configure(transfers::routes)
                .configure(admin::routes)
                .configure(openapi::routes)
                .configure(ws::routes),
        );
}

/// The JSON 404 of an unknown `/api/...` route (the server's default
/// service chooses between it and the web app's page).
pub fn no_such_route() -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::not_found("no such route"))
}

pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default().limit(JSON_LIMIT).error_handler(|err, _| {
        let api = match &err {
            JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", err.to_string())
            }
            JsonPayloadError::ContentType => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be application/json",
            ),
            JsonPayloadError::Deserialize(e) if e.is_data() => ApiError::bad_request("invalid_body", e.to_string()),
            _ => ApiError::bad_request("malformed_json", err.to_string()),
        };
        api.into()
    })
}

/// A route's resource: a method it does not take answers a JSON 405 with
/// `Allow` naming the ones it does.
pub(crate) fn resource(path: &str) -> Resource {
    Resource { inner: web::resource(path), allow: Vec::new() }
}

/// An actix resource that remembers its methods for `Allow`.
pub(crate) struct Resource {
    inner: actix_web::Resource,
    allow: Vec<Method>,
}

macro_rules! method_routes {
    ($($name:ident => $method:ident),*) => {
        $(
            pub(crate) fn $name<F, Args>(self, handler: F) -> Self
            where
                F: Handler<Args>,
                Args: FromRequest + 'static,
                F::Output: Responder + 'static,
            {
                self.route(Method::$method, handler)
            }
        )*
    };
}

impl Resource {
    method_routes!(get => GET, post => POST, put => PUT, patch => PATCH, delete => DELETE);

    fn route<F, Args>(mut self, method: Method, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.inner = self.inner.route(web::method(method.clone()).to(handler));
        self.allow.push(method);
        self
    }

    pub(crate) fn app_data<U: 'static>(mut self, data: U) -> Self {
        self.inner = self.inner.app_data(data);
        self
    }
}

impl HttpServiceFactory for Resource {
    fn register(self, config: &mut actix_web::dev::AppService) {
        let allow = self.allow.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
        let refuse = move || {
            let allow = allow.clone();
            async move {
                Err::<HttpResponse, _>(
                    ApiError::new(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "method_not_allowed",
                        format!("this route takes {allow}"),
                    )
                    .with_header(header::ALLOW, allow),
                )
            }
        };
        self.inner.default_service(web::to(refuse)).register(config)
    }
}

/// A safety net: an error answered by the framework itself (an oversized
/// raw body, say) gets the same JSON shape as ours. Our own answers, JSON
/// or the web app's HTML pages, pass as they are.
pub fn json_errors<B: MessageBody + 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(|res: ServiceResponse<B>| {
        let ours = res
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json") || v.as_bytes().starts_with(b"text/html"));
        if ours {
            return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
        }
        let status = res.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::BAD_REQUEST => "bad_request",
            s if s.is_server_error() => "internal_error",
            _ => "request_refused",
        };
        let message = status.canonical_reason().unwrap_or("error").to_owned();
        let (req, _) = res.into_parts();
        let res = actix_web::ResponseError::error_response(&ApiError::new(status, code, message));
        Ok(ErrorHandlerResponse::Response(ServiceResponse::new(req, res).map_into_right_body()))
    })
}

/// Largest JSON body any route takes (`files/update`'s batches).
const LARGEST_JSON: usize = files::UPDATE_LIMIT;

/// Longest URL (path and query) taken: room for the longest query a route
/// takes (a 4096-byte path prefix and a cursor, percent-encoded). A longer
/// one answers 414 here, in our JSON, before actix's own limit on a
/// request's head (64 KiB), past which it answers a bare 400 of its own.
const LONGEST_URL: usize = 32 * 1024;

/// Screens every request before a route sees it. Refuses a URL longer than
/// [`LONGEST_URL`], and, before anything reaches SQL, what PostgreSQL
/// cannot store: a NUL character, in the path, the query string (`%00`)
/// or a JSON body (`\u0000`). Any other text that arrives as valid UTF-8 it
/// stores. A JSON body is read here whole (it is bounded: 413 past the
/// largest a route takes) and handed on to the route's extractor.
pub async fn screen_requests(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let url_length = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if url_length > LONGEST_URL {
        let refusal =
            ApiError::new(StatusCode::URI_TOO_LONG, "uri_too_long", format!("a URL is at most {LONGEST_URL} bytes"));
        return Ok(req.error_response(refusal).map_into_right_body());
    }
    // actix decodes path parameters and queries later: look at the raw URL.
    if req.uri().path().contains("%00") || req.query_string().contains("%00") {
        let refusal = ApiError::bad_request("invalid_characters", "the URL holds a NUL character (%00)");
        return Ok(req.error_response(refusal).map_into_right_body());
    }
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json") || v.trim().ends_with("+json"));
    if is_json {
        let mut body = web::BytesMut::new();
        let mut payload = actix_web::HttpMessage::take_payload(&mut req);
        while let Some(piece) = futures_util::StreamExt::next(&mut payload).await {
            body.extend_from_slice(&piece?);
            if body.len() > LARGEST_JSON {
                let refusal = ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("a JSON body is at most {LARGEST_JSON} bytes"),
                );
                return Ok(req.error_response(refusal).map_into_right_body());
            }
        }
        if let Err(refusal) = screen_json(&body) {
            return Ok(req.error_response(refusal).map_into_right_body());
        }
        req.set_payload(actix_web::dev::Payload::from(body.freeze()));
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// What a JSON body must be before it is parsed: an object (every body
/// this API takes is one, and serde would read an array into a struct
/// field by field) without a NUL character.
fn screen_json(body: &[u8]) -> Result<(), ApiError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| *b != b'{') {
        return Err(ApiError::bad_request("invalid_body", "the body must be a JSON object"));
    }
    if has_escaped_nul(body) {
        return Err(ApiError::bad_request("invalid_characters", "a JSON string holds a NUL character (\\u0000)"));
    }
    Ok(())
}

/// Whether JSON text holds the escape `\u0000` (not a backslash followed
/// by the letters `u0000`, which is `\\u0000`).
fn has_escaped_nul(json: &[u8]) -> bool {
    let mut i = 0;
    while i < json.len() {
        if json[i] == b'\\' {
            if json[i + 1..].starts_with(b"u0000") {
                return true;
            }
            i += 2; // the escaped character, whatever it is
        } else {
            i += 1;
        }
    }
    false
}

/// Counts and times every request by route pattern and status, and logs
/// it in one short line: by route pattern, never the path or query (they
/// can hold invite tokens or `access_token`), nor any header. A client's
/// refusal is not a server error: 4xx at info, 5xx at warn (the cause of a
/// 500 is logged where it happened), the rest at debug.
pub async fn observe_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    use tracing::Instrument;
    let started = std::time::Instant::now();
    let method = req.method().to_string();
    let span = tracing::info_span!("request", method = %method, id = %uuid::Uuid::new_v4().simple());
    let res = next.call(req).instrument(span.clone()).await?;
    let route = res.request().match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    let status = res.status();
    let elapsed = started.elapsed();
    let code = status.as_u16().to_string();
    let labels = [route.as_str(), method.as_str(), code.as_str()];
    crate::telemetry::HTTP_REQUESTS.with_label_values(&labels).inc();
    crate::telemetry::HTTP_LATENCY.with_label_values(&labels).observe(elapsed.as_secs_f64());
    let ms = elapsed.as_millis() as u64;
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!(%route, status = status.as_u16(), ms, "request failed");
        } else if status.is_client_error() {
            tracing::info!(%route, status = status.as_u16(), ms, "request refused");
        } else {
            tracing::debug!(%route, status = status.as_u16(), ms, "request answered");
        }
    });
    Ok(res)
}

/// The request's `Idempotency-Key`, bound to a fingerprint of the request
/// (method, path, body) so a key reused for another request is refused.
pub fn idempotency_key(req: &HttpRequest, body: &impl Serialize) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else { return Ok(None) };
    let key = value.to_str().ok().filter(|k| !k.is_empty() && k.len() <= 255).ok_or_else(|| {
        ApiError::bad_request("invalid_idempotency_key", "Idempotency-Key must be 1 to 255 visible ASCII characters")
    })?;
    let mut hasher = blake3::Hasher::new();
    hasher.update(req.method().as_str().as_bytes());
    hasher.update(b"\n");
    hasher.update(req.path().as_bytes());
    hasher.update(b"\n");
    hasher.update(&serde_json::to_vec(body).map_err(|e| ApiError::Internal(Box::new(e)))?);
    Ok(Some(IdempotencyKey { key: key.to_owned(), request_hash: *hasher.finalize().as_bytes() }))
}

/// A JSON body that may be left out: empty means all defaults.
pub fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &web::Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return Ok(T::default());
    }
    screen_json(body)?;
    serde_json::from_slice(body).map_err(|e| {
        let code = if e.is_data() { "invalid_body" } else { "malformed_json" };
        ApiError::bad_request(code, e.to_string())
    })
}

/// `201 Created` with a JSON body.
pub fn created(body: &impl Serialize) -> HttpResponse {
    HttpResponse::Created().json(body)
}

/// A response that carries a secret (a token): never kept by a cache.
pub fn secret(mut builder: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    builder.insert_header((header::CACHE_CONTROL, "no-store"));
    builder
}

/// 200 for a whole object of `size` bytes, or 206 with its `Content-Range`
/// for one range of it.
pub fn ranged(range: Option<&std::ops::Range<u64>>, size: u64) -> actix_web::HttpResponseBuilder {
    match range {
        Some(r) => {
            let mut res = HttpResponse::PartialContent();
            res.insert_header((header::CONTENT_RANGE, format!("bytes {}-{}/{size}", r.start, r.end - 1)));
            res
        }
        None => HttpResponse::Ok(),
    }
}

/// `204 No Content`.
pub fn no_content() -> HttpResponse {
    HttpResponse::NoContent().insert_header((header::CACHE_CONTROL, "no-store")).finish()
}

#[cfg(test)]
mod tests {
    use super::has_escaped_nul;

    #[test]
    fn an_escaped_nul_is_found_and_an_escaped_backslash_is_not_one() {
        assert!(has_escaped_nul(br#"{"a": "x\u0000y"}"#));
        assert!(has_escaped_nul(br#"{"a\u0000": 1}"#));
        assert!(has_escaped_nul(br#"["\\\u0000"]"#), "an escaped backslash, then the NUL escape");
        assert!(!has_escaped_nul(br#"{"a": "x\\u0000y"}"#), "a backslash and the letters u0000");
        assert!(!has_escaped_nul(br#"{"a": "\u0041"}"#));
        assert!(!has_escaped_nul(br#"{"a": "\"}"#));
        assert!(!has_escaped_nul(b"\\"));
    }
}
