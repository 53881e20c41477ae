use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use uuid::Uuid;

use super::{resource, ApiError, AppState, Auth};
use crate::domain::{self, relay, DomainError};
use crate::protocol::relay::{HashesRequest, MissingResponse, StoredChunk};
use crate::protocol::ErrorBody;
use crate::relay::arrivals::Waiter;
use crate::relay::{parse_range, RelayError, MAX_CHUNK_BYTES};

/// Largest `chunks/missing` body: 10,000 quoted hashes and their commas.
const MISSING_LIMIT: usize = 1024 * 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        // Room for the 10,000 hashes a call may ask about.
        resource("/projects/{project_id}/chunks/missing")
            .app_data(super::json_config().limit(MISSING_LIMIT))
            .post(missing_chunks),
    )
    .service(resource("/projects/{project_id}/chunks/{hash}").put(upload_chunk).get(download_chunk));
}

/// Which of these chunks the relay lacks (source device).
#[utoipa::path(
    post,
    path = "/api/projects/{project_id}/chunks/missing",
    tag = "relay",
    security(("bearer" = [])),
    params(("project_id" = Uuid, Path, description = "The project")),
    request_body = HashesRequest,
    responses(
        (status = 200, description = "The hashes not held", body = MissingResponse),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "Not a source device of the project", body = ErrorBody),
        (status = 404, description = "Unknown project, or the caller is not in it", body = ErrorBody),
        (status = 413, description = "More than 10,000 hashes", body = ErrorBody),
        (status = 422, description = "A malformed hash", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, project_id = %path), err(level = "debug"))]
async fn missing_chunks(
    state: web::Data<AppState>,
    auth: Auth,
    path: web::Path<Uuid>,
    body: web::Json<HashesRequest>,
) -> Result<HttpResponse, ApiError> {
    let client = state.pool.get().await.map_err(DomainError::from)?;
    let missing = relay::missing(&client, &auth.0, path.into_inner(), &body.hashes).await?;
    Ok(HttpResponse::Ok().json(MissingResponse { missing }))
}

fn relay_error(e: RelayError) -> ApiError {
    use actix_web::http::StatusCode;
    match e {
        RelayError::TooLarge => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "chunk_too_large", e.to_string()),
        RelayError::HashMismatch { .. } => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "hash_mismatch", e.to_string())
        }
        RelayError::BadEncoding(_) => ApiError::bad_request("invalid_encoding", e.to_string()),
        RelayError::Body(_) => ApiError::bad_request("body_unreadable", e.to_string()),
        RelayError::Store(_) | RelayError::BadSpec(_) => ApiError::Internal(Box::new(e)),
    }
}

/// Uploads a chunk's bytes (source device): verified against `hash` while
/// streaming, at most 16 MiB, optionally `Content-Encoding: zstd`.
#[utoipa::path(
    put,
    path = "/api/projects/{project_id}/chunks/{hash}",
    tag = "relay",
    security(("bearer" = [])),
    params(
        ("project_id" = Uuid, Path, description = "The project"),
        ("hash" = crate::protocol::files::Blake3Hash, Path, description = "The chunk's BLAKE3, 64 lowercase hex characters"),
        ("Content-Encoding" = Option<String>, Header, nullable = false, pattern = "^(zstd|identity)$", description = "`zstd` for a compressed body (another encoding is 415)"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "Stored", body = StoredChunk),
        (status = 200, description = "Already there: nothing written", body = StoredChunk),
        (status = 400, description = "A body that is not valid zstd", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "Not a source device of the project", body = ErrorBody),
        (status = 404, description = "Unknown project, or the caller is not in it", body = ErrorBody),
        (status = 413, description = "Larger than 16 MiB", body = ErrorBody),
        (status = 415, description = "An encoding other than zstd", body = ErrorBody),
        (status = 422, description = "The bytes do not hash to `hash`, or a malformed hash", body = ErrorBody),
        (status = 507, description = "The project's relay quota is used up", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err(level = "debug"))]
async fn upload_chunk(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<(Uuid, String)>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (project_id, hash) = path.into_inner();
    let zstd = match req.headers().get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?").trim()) {
        None | Some("identity") => false,
        Some("zstd") => true,
        Some(other) => {
            return Err(ApiError::new(
                actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                format!("Content-Encoding {other:?} is not accepted: send zstd or plain bytes"),
            ))
        }
    };
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<i64>().ok());
    if !zstd && declared.is_some_and(|n| n as u64 > MAX_CHUNK_BYTES) {
        return Err(relay_error(RelayError::TooLarge));
    }
    let known = {
        let client = state.pool.get().await.map_err(DomainError::from)?;
        relay::plan_upload(&client, &auth.0, &state.relay, project_id, &hash, declared).await?
    };
    if let Some(size) = known {
        return Ok(HttpResponse::Ok().json(StoredChunk { hash, size }));
    }
    let hint = declared.filter(|_| !zstd).and_then(|n| u64::try_from(n).ok());
    let received = state.chunks.receive(&hash, zstd, hint, body).await.map_err(relay_error)?;
    // Readers here that wait for this chunk, or ask for it until it is
    // recorded, take it at once, verified, with no read back from the store.
    let landing = state.arrivals.land(project_id, &hash, received.bytes.clone());
    let saved = state.chunks.keep(project_id, &hash, received).await.map_err(relay_error)?;
    if let Err(e) = relay::record_upload(&state.pool, &state.relay, project_id, &hash, saved).await {
        state.chunks.delete(project_id, &hash).await;
        return Err(e.into());
    }
    // Recorded: readers from now on find it in the store; other servers
    // hear the NOTIFY that committed with its row.
    drop(landing);
    Ok(HttpResponse::Created().json(StoredChunk { hash, size: saved.size }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DownloadParams {
    /// The transfer these bytes are for: the server counts them as its progress.
    transfer_id: Option<Uuid>,
    /// Seconds (at most 60) to wait for a chunk of the project's files that
    /// the owner's device has not put on the relay yet; then 404 as without.
    #[param(minimum = 0, maximum = 60)]
    wait: Option<u32>,
}

/// Longest `?wait=` of a chunk download.
const MAX_CHUNK_WAIT: u32 = 60;

/// A chunk to serve: held by the relay, or handed over by an upload to this
/// server while the download waited for it.
enum Found {
    Stored(relay::ChunkInfo),
    Handed(bytes::Bytes),
}

/// The chunk to serve, waiting up to `wait` for one that belongs to the
/// project's files (or open transfers) but has not landed yet: woken as it
/// lands, on this server or another.
async fn plan_or_wait(
    state: &AppState,
    caller: &domain::Caller,
    project_id: Uuid,
    hash: &str,
    wait: std::time::Duration,
) -> Result<Found, DomainError> {
    let deadline = tokio::time::Instant::now() + wait;
    // Registered before the first look, so an arrival in between is not lost.
    let mut waiter = (!wait.is_zero()).then(|| state.arrivals.register(project_id, hash));
    loop {
        let lookup = {
            let client = state.pool.get().await?;
            relay::plan_download(&client, caller, project_id, hash).await?
        };
        // Landed here and not yet recorded (or just recorded): the look
        // says the caller may have it, and it came verified.
        if let Some(bytes) = waiter.as_ref().and_then(Waiter::handed) {
            crate::telemetry::CHUNKS_HANDED_OVER.inc();
            return Ok(Found::Handed(bytes));
        }
        let Some(waiter) = waiter.as_mut().filter(|_| matches!(lookup, relay::Lookup::Expected)) else {
            return lookup.held().map(Found::Stored);
        };
        if !waiter.wait(deadline).await {
            return lookup.held().map(Found::Stored);
        }
        // The caller may have this chunk (it is expected), and it came
        // verified: served before it is even recorded.
        if let Some(bytes) = waiter.handed() {
            crate::telemetry::CHUNKS_HANDED_OVER.inc();
            return Ok(Found::Handed(bytes));
        }
    }
}

/// Downloads a chunk of a file (or open transfer) of the project. Honours
/// `Range` (206) and `Accept-Encoding: zstd`; with `?wait=SECONDS`, waits
/// for a chunk of the project's files that has not landed yet.
#[utoipa::path(
    get,
    path = "/api/projects/{project_id}/chunks/{hash}",
    tag = "relay",
    security(("bearer" = [])),
    params(
        ("project_id" = Uuid, Path, description = "The project"),
        ("hash" = crate::protocol::files::Blake3Hash, Path, description = "The chunk's BLAKE3"),
        DownloadParams,
        ("Range" = Option<String>, Header, nullable = false, description = "One byte range, `bytes=a-b`"),
        ("Accept-Encoding" = Option<String>, Header, nullable = false, description = "`zstd` to receive the compressed variant"),
    ),
    responses(
        (status = 200, description = "The chunk's bytes", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 206, description = "The asked range", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 404, description = "Unknown project or chunk, or not one of the project's files (after `wait` seconds when asked)", body = ErrorBody),
        (status = 416, description = "`range_not_satisfiable`: the range starts past the end", body = ErrorBody),
        (status = 422, description = "A malformed hash", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id), err(level = "debug"))]
async fn download_chunk(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<(Uuid, String)>,
    params: web::Query<DownloadParams>,
) -> Result<HttpResponse, ApiError> {
    let (project_id, hash) = path.into_inner();
    let caller = auth.0;
    let wait = std::time::Duration::from_secs(params.wait.unwrap_or(0).min(MAX_CHUNK_WAIT).into());
    let found = plan_or_wait(&state, &caller, project_id, &hash, wait).await?;
    let (size, zstd_size) = match &found {
        Found::Stored(chunk) => (chunk.size as u64, chunk.zstd_size),
        Found::Handed(bytes) => (bytes.len() as u64, None),
    };
    let range_header = req.headers().get(header::RANGE).and_then(|v| v.to_str().ok());
    let range = parse_range(range_header, size).map_err(|_| {
        ApiError::new(
            actix_web::http::StatusCode::RANGE_NOT_SATISFIABLE,
            "range_not_satisfiable",
            format!("the chunk has {size} bytes"),
        )
        .with_header(header::CONTENT_RANGE, format!("bytes */{size}"))
    })?;
    let accepts_zstd = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.split(';').next().is_some_and(|e| e.trim() == "zstd")));
    let zstd = range.is_none() && accepts_zstd && zstd_size.is_some();

    let bytes = match found {
        Found::Stored(_) => state.chunks.read(project_id, &hash, zstd, range.clone()).await.map_err(relay_error)?,
        Found::Handed(bytes) => match &range {
            Some(r) => bytes.slice(r.start as usize..r.end as usize),
            None => bytes,
        },
    };
    let stream = crate::relay::pieces(bytes);
    let served = range.as_ref().map_or(size, |r| r.end - r.start);
    let stream = count_progress(stream, state.clone(), caller, project_id, params.transfer_id, served as i64);
    let mut response = super::ranged(range.as_ref(), size);
    response
        .content_type("application/octet-stream")
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::VARY, "Accept-Encoding"))
        .no_chunking(if zstd { zstd_size.unwrap_or_default() as u64 } else { served });
    if zstd {
        response.insert_header((header::CONTENT_ENCODING, "zstd"));
    }
    Ok(response.streaming(stream))
}

/// Passes the bytes through; once all were sent for a transfer, counts them
/// as its progress.
fn count_progress(
    stream: impl futures_util::Stream<Item = Result<bytes::Bytes, object_store::Error>> + 'static,
    state: web::Data<AppState>,
    caller: domain::Caller,
    project_id: Uuid,
    transfer_id: Option<Uuid>,
    bytes: i64,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, actix_web::Error>> {
    let body = stream.map(|piece| piece.map_err(|e| actix_web::error::ErrorInternalServerError(e.to_string())));
    let done = futures_util::stream::once(async move {
        if let Some(transfer_id) = transfer_id {
            state.relayed.add(caller, project_id, transfer_id, bytes);
        }
    })
    .filter_map(|()| async { None });
    body.chain(done)
}
