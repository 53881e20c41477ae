//! `GET .../transfers/:transferId/content`: a transfer's file as one HTTP
//! response for the browser, streamed from the relay chunk by chunk as the
//! owner's device uploads them. Each chunk is verified before any of its
//! bytes go out (read back from the store, it is hashed again; handed over
//! by an upload to this server, it was as it came), and the whole file's
//! BLAKE3 before its last bytes do, so a damaged stream ends short (the
//! browser sees a failed download), never complete. The next chunks already
//! on the relay are read and hashed (on blocking threads) while one goes
//! out. Memory per stream is bounded: the chunk being sent, those read
//! ahead, and those handed over for the next few.

use std::collections::VecDeque;
use std::ops::Range;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use tokio_util::task::AbortOnDropHandle;
use uuid::Uuid;

use super::{resource, ApiError, AppState, Auth};
use crate::domain::{self, transfers, DomainError};
use crate::protocol::files::{Blake3Hash, ChunkRef};
use crate::protocol::transfers::{TransferReport, TransferRoute, TransferStatus, VerifyRequest};
use crate::protocol::ErrorBody;
use crate::relay::arrivals::Waiter;
use crate::relay::{parse_range, ChunkStore, RelayError};

/// Chunks ahead of the one being sent that a stream waits for at once (so
/// an upload to this server hands them over), at most this many and about
/// this many bytes.
const AHEAD_CHUNKS: usize = 16;
const AHEAD_BYTES: i64 = 16 * 1024 * 1024;
/// Of those, how many are read from the store while the one before goes
/// out: the disk's wait and their hashing are then off the stream's path.
const READ_AHEAD: usize = 2;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/projects/{project_id}/transfers/{transfer_id}/content").get(transfer_content));
}

/// The transfer's file as one response (its requester): `Content-Type`,
/// `Content-Disposition: attachment`, `Content-Length`, `ETag` of its hash,
/// `Range` (206). Streamed from the relay as the owner's device uploads:
/// the response starts at once; it waits (a bounded, configurable time) for
/// each chunk to land, and aborts rather than finishing when the owner's
/// device stops sending or the bytes do not verify. A complete, verified
/// stream completes the transfer. Asking again after an abort with a
/// `Range` (a browser resuming) retries the failed transfer and resumes;
/// asking for the whole file of a failed transfer is a 409 until it is
/// retried.
#[utoipa::path(
    get,
    path = "/api/projects/{project_id}/transfers/{transfer_id}/content",
    tag = "transfers",
    security(("bearer" = [])),
    params(
        ("project_id" = Uuid, Path, description = "The project"),
        ("transfer_id" = Uuid, Path, description = "The transfer"),
        ("Range" = Option<String>, Header, nullable = false, description = "One byte range, `bytes=a-b`, to resume"),
        ("If-Range" = Option<String>, Header, nullable = false, description = "The `ETag` the range is for; another answers the whole file"),
    ),
    responses(
        (status = 200, description = "The whole file", body = Vec<u8>, content_type = "application/octet-stream",
         headers(("Content-Disposition" = String, description = "`attachment` with the file's name (RFC 6266 `filename*`)"),
                 ("ETag" = String, description = "The file's BLAKE3, quoted"))),
        (status = 206, description = "The asked range", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "`requester_only`: the owner sees the transfer, only its requester downloads it", body = ErrorBody),
        (status = 404, description = "Unknown project or transfer, or not visible to the caller", body = ErrorBody),
        (status = 409, description = "The transfer was cancelled or expired, the file changed, no retry is left, or it failed and the request is not a resume (`transfer_failed`: retry it first)", body = ErrorBody),
        (status = 416, description = "`range_not_satisfiable`: the range starts past the end", body = ErrorBody),
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %auth.0.user_id, transfer_id = %path.1), err(level = "debug"))]
async fn transfer_content(
    state: web::Data<AppState>,
    auth: Auth,
    req: HttpRequest,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (project_id, transfer_id) = path.into_inner();
    let caller = auth.0;
    let content = {
        let client = state.pool.get().await.map_err(DomainError::from)?;
        transfers::content(&client, &caller, project_id, transfer_id).await?
    };
    let size = content.size as u64;
    let etag = format!("\"{}\"", content.file_hash);
    // A range is for the version it names: another version gets it whole.
    let if_range = req.headers().get(header::IF_RANGE).map(|v| v.as_bytes() == etag.as_bytes());
    let range_header =
        req.headers().get(header::RANGE).and_then(|v| v.to_str().ok()).filter(|_| if_range != Some(false));
    let range = parse_range(range_header, size).map_err(|_| {
        ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable", format!("the file has {size} bytes"))
            .with_header(header::CONTENT_RANGE, format!("bytes */{size}"))
    })?;

    let mut active = content.status.is_active();
    if content.status == TransferStatus::Failed {
        // An earlier stream aborted (and said why on the transfer). A
        // browser resuming by `Range` retries it and goes on where it
        // stopped. Asked whole, it is not retried behind the person's back
        // (a browser restarting on its own would use every retry up while
        // the owner's device is away): the page's Retry does that.
        if range_header.is_none() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "transfer_failed",
                "this download failed: retry it (POST .../retry, the page's Retry), or resume it with a Range",
            ));
        }
        let policy = state.transfers;
        domain::execute(&state.pool, caller.clone(), None, move |tx, cmd| {
            Box::pin(async move { transfers::retry(tx, cmd, &policy, project_id, transfer_id).await })
        })
        .await?;
        active = true;
    }

    let mut response = super::ranged(range.as_ref(), size);
    let mime = HeaderValue::from_str(&content.mime_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    let name = content.file_path.rsplit('/').next().unwrap_or_default();
    let range = range.unwrap_or(0..size);
    response
        .insert_header((header::CONTENT_TYPE, mime))
        .insert_header((header::CONTENT_DISPOSITION, content_disposition(name)))
        .insert_header((header::ETAG, etag))
        .insert_header((header::ACCEPT_RANGES, "bytes"))
        .insert_header((header::CACHE_CONTROL, "private, no-cache"))
        .no_chunking(range.end - range.start);
    let streamer = Streamer {
        // The whole file is hashed (the chunks before the range read, not
        // sent) whenever the response runs to its end.
        whole: (range.end == size).then(blake3::Hasher::new),
        verified: false,
        state,
        caller,
        project_id,
        transfer_id,
        file_hash: content.file_hash,
        chunks: content.chunks,
        next: 0,
        offset: 0,
        ahead: VecDeque::new(),
        ahead_next: 0,
        ahead_offset: 0,
        sending: Bytes::new(),
        range,
        active,
        finished: false,
    };
    Ok(response.streaming(futures_util::stream::unfold(streamer, |mut s| async move {
        let item = s.step().await?;
        Some((item, s))
    })))
}

/// `attachment; filename="<ASCII stand-in>"; filename*=UTF-8''<name>`
/// (RFC 6266, RFC 8187): the name whole for browsers that read
/// `filename*` (all current ones), a safe stand-in for the rest.
fn content_disposition(name: &str) -> String {
    let name = if name.is_empty() { "download" } else { name };
    let fallback: String = name
        .chars()
        .map(|c| if c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '%') || c == ' ' { c } else { '_' })
        .collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        // attr-char of RFC 8187; everything else percent-encoded.
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// Why a stream stopped short.
#[derive(Debug, thiserror::Error)]
enum Abort {
    #[error("the owner's device did not put chunk {0} on the relay in time")]
    Timeout(String),
    #[error("relay chunk {0} is damaged: its bytes do not hash to its name")]
    Damaged(String),
    #[error("the file's bytes do not hash to its hash")]
    Mismatch,
    #[error("the relay store failed: {0}")]
    Store(String),
    #[error("the transfer is {0}")]
    Ended(&'static str),
}

impl Abort {
    /// The reason recorded on the transfer, or None when it is the
    /// server's own trouble (nothing the transfer did).
    fn reason(&self, source_online: bool) -> Option<&'static str> {
        match self {
            Abort::Timeout(_) if source_online => Some("source_not_sending"),
            Abort::Timeout(_) => Some("source_offline"),
            Abort::Damaged(_) => Some("relay_chunk_damaged"),
            Abort::Mismatch => Some("hash_mismatch"),
            Abort::Store(_) | Abort::Ended(_) => None,
        }
    }
}

/// A chunk ahead of the one being sent.
enum Ahead {
    /// Interest registered (an upload here hands it over), not looked for.
    Waiting(Waiter),
    /// Being read from the store, early.
    Reading(AbortOnDropHandle<Result<Early, Abort>>),
}

/// What an early read of a chunk found.
enum Early {
    /// Its verified bytes.
    Found(Bytes),
    /// Nothing on the relay yet: the interest, to wait with once it is due.
    NotYet(Waiter),
}

/// A chunk's bytes from the store, verified (hashed on a blocking thread);
/// None when the relay does not hold it (yet).
async fn stored(chunks: &ChunkStore, project_id: Uuid, chunk: &ChunkRef) -> Result<Option<Bytes>, Abort> {
    match chunks.get_verified(project_id, &chunk.hash).await {
        Ok(Some(bytes)) if bytes.len() as i64 == chunk.size => Ok(Some(bytes)),
        Ok(Some(_)) | Err(RelayError::HashMismatch { .. }) => Err(Abort::Damaged(chunk.hash.clone())),
        Ok(None) => Ok(None),
        Err(e) => Err(Abort::Store(e.to_string())),
    }
}

/// Reads a chunk early, on a task of its own: its bytes when an upload
/// here handed them over or the relay holds them, else the interest back.
fn read_early(
    chunks: ChunkStore,
    project_id: Uuid,
    chunk: ChunkRef,
    waiter: Waiter,
) -> AbortOnDropHandle<Result<Early, Abort>> {
    AbortOnDropHandle::new(actix_web::rt::spawn(async move {
        if let Some(bytes) = waiter.handed() {
            crate::telemetry::CHUNKS_HANDED_OVER.inc();
            return Ok(Early::Found(bytes));
        }
        Ok(match stored(&chunks, project_id, &chunk).await? {
            Some(bytes) => Early::Found(bytes),
            None => Early::NotYet(waiter),
        })
    }))
}

/// The state of one response's body.
struct Streamer {
    state: web::Data<AppState>,
    caller: domain::Caller,
    project_id: Uuid,
    transfer_id: Uuid,
    file_hash: String,
    chunks: Vec<ChunkRef>,
    /// The next chunk, and where it starts in the file.
    next: usize,
    offset: u64,
    /// The chunks about to be sent, by index; `ahead_next` is the first
    /// chunk not looked at yet, starting at `ahead_offset`.
    ahead: VecDeque<(usize, Ahead)>,
    ahead_next: usize,
    ahead_offset: u64,
    /// What is left to send of the current chunk.
    sending: Bytes,
    range: Range<u64>,
    /// The whole file's hash so far, when the response runs to its end.
    whole: Option<blake3::Hasher>,
    /// The whole file hashed to its hash before its last bytes went out.
    verified: bool,
    /// The transfer is open: its bytes count, and it completes.
    active: bool,
    finished: bool,
}

impl Streamer {
    /// The next piece of the body: of one chunk (or its part in the range).
    async fn step(&mut self) -> Option<Result<Bytes, actix_web::Error>> {
        if let Some(piece) = crate::relay::next_piece(&mut self.sending) {
            return Some(Ok(piece));
        }
        while !self.finished {
            let Some(chunk) = self.chunks.get(self.next).cloned() else { break };
            if self.offset >= self.range.end {
                break;
            }
            let (start, end) = (self.offset, self.offset + chunk.size as u64);
            let index = self.next;
            self.next += 1;
            self.offset = end;
            let before_range = end <= self.range.start;
            if before_range && self.whole.is_none() {
                continue;
            }
            let loaded = if before_range {
                self.load(&chunk, None).await
            } else {
                let ahead = self.take_ahead(index, &chunk);
                self.read_ahead();
                match ahead {
                    Ahead::Waiting(waiter) => self.load(&chunk, Some(waiter)).await,
                    Ahead::Reading(read) => match read.await {
                        Ok(Ok(Early::Found(bytes))) => Ok(Some(bytes)),
                        Ok(Ok(Early::NotYet(waiter))) => self.load(&chunk, Some(waiter)).await,
                        Ok(Err(abort)) => Err(abort),
                        Err(e) => Err(Abort::Store(e.to_string())),
                    },
                }
            };
            let bytes = match loaded {
                Ok(Some(bytes)) => bytes,
                // A chunk before the range gone from the relay: the whole
                // file cannot be hashed, only what is sent.
                Ok(None) => {
                    self.whole = None;
                    continue;
                }
                Err(abort) => return Some(Err(self.abort(abort).await)),
            };
            if let Some(whole) = &mut self.whole {
                whole.update(&bytes);
            }
            if before_range {
                continue;
            }
            if self.next == self.chunks.len() {
                if let Some(whole) = self.whole.take() {
                    if Blake3Hash::from(whole.finalize()) != *self.file_hash {
                        return Some(Err(self.abort(Abort::Mismatch).await));
                    }
                    self.verified = true;
                }
            }
            let from = (self.range.start.max(start) - start) as usize;
            let to = (self.range.end.min(end) - start) as usize;
            if self.active {
                self.state.relayed.add(self.caller.clone(), self.project_id, self.transfer_id, (to - from) as i64);
            }
            self.sending = bytes.slice(from..to);
            return crate::relay::next_piece(&mut self.sending).map(Ok);
        }
        if !self.finished {
            self.finished = true;
            // An empty file has no chunk to verify on the way: its hash is
            // the empty input's.
            let empty = self.chunks.is_empty()
                && self.whole.take().is_some_and(|h| Blake3Hash::from(h.finalize()) == *self.file_hash);
            if (self.verified || empty) && self.active {
                self.complete().await;
            }
        }
        None
    }

    /// Chunk `index` (to send now), with interest registered ahead in the
    /// chunks after it: an arrival between the look and the wait, or while
    /// earlier chunks are sent, is then not lost.
    fn take_ahead(&mut self, index: usize, chunk: &ChunkRef) -> Ahead {
        let mut bytes: i64 = self.ahead.iter().map(|(i, _)| self.chunks[*i].size).sum();
        while self.ahead.len() < AHEAD_CHUNKS && (self.ahead.is_empty() || bytes < AHEAD_BYTES) {
            let Some(next) = self.chunks.get(self.ahead_next) else { break };
            if self.ahead_offset >= self.range.end {
                break;
            }
            let end = self.ahead_offset + next.size as u64;
            if end > self.range.start {
                let waiter = self.state.arrivals.register(self.project_id, &next.hash);
                self.ahead.push_back((self.ahead_next, Ahead::Waiting(waiter)));
                bytes += next.size;
            }
            self.ahead_next += 1;
            self.ahead_offset = end;
        }
        while self.ahead.front().is_some_and(|(i, _)| *i < index) {
            self.ahead.pop_front();
        }
        match self.ahead.front() {
            Some((i, _)) if *i == index => self.ahead.pop_front().expect("a front").1,
            _ => Ahead::Waiting(self.state.arrivals.register(self.project_id, &chunk.hash)),
        }
    }

    /// Starts reading the next [`READ_AHEAD`] chunks (those on the relay
    /// already), each on a task of its own.
    fn read_ahead(&mut self) {
        let due: Vec<_> = self.ahead.drain(..READ_AHEAD.min(self.ahead.len())).collect();
        for (index, ahead) in due.into_iter().rev() {
            let ahead = match ahead {
                Ahead::Waiting(waiter) => {
                    let chunk = self.chunks[index].clone();
                    Ahead::Reading(read_early(self.state.chunks.clone(), self.project_id, chunk, waiter))
                }
                reading => reading,
            };
            self.ahead.push_front((index, ahead));
        }
    }

    /// A chunk's verified bytes: with a waiter, waiting (up to the content
    /// wait) for one not on the relay yet; without, None for it.
    async fn load(&self, chunk: &ChunkRef, mut waiter: Option<Waiter>) -> Result<Option<Bytes>, Abort> {
        let deadline = tokio::time::Instant::now() + self.state.content_wait;
        loop {
            // Handed over by an upload to this server: verified as it came.
            if let Some(bytes) = waiter.as_ref().and_then(Waiter::handed) {
                crate::telemetry::CHUNKS_HANDED_OVER.inc();
                return Ok(Some(bytes));
            }
            if let Some(bytes) = stored(&self.state.chunks, self.project_id, chunk).await? {
                return Ok(Some(bytes));
            }
            let Some(waiter) = waiter.as_mut() else { return Ok(None) };
            if !waiter.wait(deadline).await {
                return Err(Abort::Timeout(chunk.hash.clone()));
            }
            // Still not there (the safety net's look, at most every few
            // seconds): a transfer cancelled or ended meanwhile stops the wait.
            if let Some(status) = self.ended().await {
                return Err(Abort::Ended(status.as_str()));
            }
        }
    }

    /// The transfer's status when it is no longer open (cancelled, expired,
    /// failed by the sweeper) though it was when the stream began.
    async fn ended(&self) -> Option<TransferStatus> {
        if !self.active {
            return None;
        }
        let client = self.state.pool.get().await.ok()?;
        let transfer = transfers::get(&client, &self.caller, self.project_id, self.transfer_id).await.ok()?;
        (!transfer.status.is_active()).then_some(transfer.status)
    }

    /// Ends the stream short: logs why, and records it on the transfer
    /// (failed, with the reason) so the page shows it; asking again retries
    /// and resumes by `Range`.
    async fn abort(&mut self, abort: Abort) -> actix_web::Error {
        self.finished = true;
        let (project_id, transfer_id) = (self.project_id, self.transfer_id);
        tracing::warn!(%transfer_id, error = %abort, "a download into the browser stopped short");
        if self.active {
            let state = self.state.clone();
            let caller = self.caller.clone();
            let reason = match &abort {
                Abort::Timeout(_) => {
                    let online = match state.pool.get().await {
                        Ok(client) => transfers::get(&client, &caller, project_id, transfer_id)
                            .await
                            .is_ok_and(|t| t.source_device.online),
                        Err(_) => false,
                    };
                    abort.reason(online)
                }
                other => other.reason(false),
            };
            if let Some(reason) = reason {
                // Spawned: a client gone meanwhile does not cut the write short.
                let failed = actix_web::rt::spawn(async move {
                    let report = TransferReport {
                        status: Some(TransferStatus::Failed),
                        error_message: Some(reason.to_owned()),
                        ..Default::default()
                    };
                    let policy = state.transfers;
                    domain::execute(&state.pool, caller, None, move |tx, cmd| {
                        Box::pin(
                            async move { transfers::report(tx, cmd, &policy, project_id, transfer_id, report).await },
                        )
                    })
                    .await
                });
                if let Ok(Err(e)) = failed.await {
                    tracing::info!(%transfer_id, error = %e, "the stopped download was not recorded on its transfer");
                }
            }
        }
        actix_web::error::ErrorInternalServerError(abort.to_string())
    }

    /// A complete, verified stream completes the transfer, as a requester's
    /// `verify` with the hash the server computed.
    async fn complete(&self) {
        let (state, caller, hash) = (self.state.clone(), self.caller.clone(), self.file_hash.clone());
        let (project_id, transfer_id) = (self.project_id, self.transfer_id);
        // A browser's download comes through the relay, every byte of it.
        let size = self.chunks.iter().map(|c| c.size).sum();
        let route = TransferRoute { bytes_relay: size, ..Default::default() };
        let completed = actix_web::rt::spawn(async move {
            domain::execute(&state.pool, caller, None, move |tx, cmd| {
                let verified = VerifyRequest { hash, route: Some(route) };
                Box::pin(async move { transfers::verify(tx, cmd, project_id, transfer_id, verified).await })
            })
            .await
        });
        match completed.await {
            Ok(Ok(_)) => tracing::debug!(%transfer_id, "streamed into the browser, verified"),
            // Cancelled meanwhile, say: the bytes went out all the same.
            Ok(Err(e)) => {
                tracing::info!(%transfer_id, error = %e, "a verified download could not complete its transfer")
            }
            Err(e) => tracing::warn!(%transfer_id, error = %e, "completing a transfer failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::content_disposition;

    #[test]
    fn names_survive_in_filename_star() {
        assert_eq!(
            content_disposition("my \"report\" résumé.pdf"),
            "attachment; filename=\"my _report_ r_sum_.pdf\"; filename*=UTF-8''my%20%22report%22%20r%C3%A9sum%C3%A9.pdf"
        );
        assert_eq!(content_disposition(""), "attachment; filename=\"download\"; filename*=UTF-8''download");
    }
}
