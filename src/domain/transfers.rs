//! Transfers: from the download request to verified completion. This moves
//! no bytes; it keeps the life of each transfer exact, observable and
//! durable. Every transition is an event carrying the transfer's whole
//! state; the `file_transfers` projection is the latest of them.

use std::collections::HashSet;
use std::sync::LazyLock;

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::presence::online_sql;
use super::projects::{access, lock_for};
use super::{Caller, Command, DomainError, Rejection};
use crate::protocol::events::data::{TransferRequested, TransferState};
use crate::protocol::files::{Blake3Hash, ChunkRef, Cursor, FilePath};
use crate::protocol::projects::Role;
use crate::protocol::transfers::{
    DirectToken, DownloadFile, DownloadRequest, DownloadResponse, Endpoint, FailureReason, RequestMode, SourceDevice,
    Transfer, TransferInfo, TransferProtocol, TransferReport, TransferStatus, TransfersPage,
};
use crate::protocol::validate::ValidationError;
use crate::protocol::EventData;
use crate::store::{self, EventMeta, GenericClient, Pool};

use TransferStatus::{Cancelled, Completed, Expired, Failed, InProgress, Pending};

/// How transfers behave; set from the server's settings.
#[derive(Debug, Clone, Copy)]
pub struct TransferPolicy {
    /// A pending transfer expires this long after it was requested (or retried).
    pub ttl: Duration,
    /// Attempts allowed, the first included.
    pub max_attempts: i32,
    /// An in-progress transfer with no activity for this long fails as `stalled`.
    pub stall_after: Duration,
    /// Progress events of one transfer are at least this far apart.
    pub progress_interval: Duration,
}

impl Default for TransferPolicy {
    fn default() -> Self {
        Self {
            ttl: Duration::hours(1),
            max_attempts: 3,
            stall_after: Duration::minutes(2),
            progress_interval: Duration::seconds(1),
        }
    }
}

/// The span of the moving window speed and ETA are computed over.
const WINDOW: Duration = Duration::seconds(10);
const WINDOW_SAMPLES: usize = 10;
const MAX_ERROR_MESSAGE: usize = 1000;

/// A transfer as stored, with what the commands need.
struct Row {
    project_id: Uuid,
    file_hash: String,
    source_device_id: Uuid,
    state: TransferState,
}

const ROW_COLUMNS: &str = "t.id, t.project_id, t.requester_id, t.file_path, t.status, t.bytes_transferred,
    t.total_bytes, t.percent, t.speed_mbps, t.eta_seconds, t.attempts, t.error_message, t.started_at,
    t.completed_at, t.expires_at, t.last_activity_at, t.last_progress_at, t.\"window\", t.file_hash,
    t.source_device_id";

fn row_from(r: &tokio_postgres::Row) -> Row {
    let window: serde_json::Value = r.get(17);
    Row {
        project_id: r.get(1),
        file_hash: r.get(18),
        source_device_id: r.get(19),
        state: TransferState {
            transfer_id: r.get(0),
            requester_id: r.get(2),
            file_path: r.get(3),
            status: TransferStatus::parse(r.get(4)).unwrap_or(Failed),
            bytes_transferred: r.get(5),
            total_bytes: r.get(6),
            percent: r.get(7),
            speed_mbps: r.get(8),
            eta_seconds: r.get(9),
            attempts: r.get(10),
            error_message: r.get(11),
            started_at: r.get(12),
            completed_at: r.get(13),
            expires_at: r.get(14),
            last_activity_at: r.get(15),
            last_progress_at: r.get(16),
            window: serde_json::from_value(window).unwrap_or_default(),
        },
    }
}

fn rejected(kind: Rejection, code: &'static str, message: impl Into<String>) -> DomainError {
    DomainError::rejected(kind, code, message)
}

/// 409 naming the state that forbids the move.
fn illegal(from: TransferStatus, to: &str) -> DomainError {
    let code = match from {
        Pending => "transfer_pending",
        InProgress => "transfer_in_progress",
        Completed => "transfer_completed",
        Failed => "transfer_failed",
        Cancelled => "transfer_cancelled",
        Expired => "transfer_expired",
    };
    rejected(Rejection::Conflict, code, format!("a {} transfer cannot become {to}", from.as_str()))
}

fn percent(bytes: i64, total: i64) -> f64 {
    if total == 0 {
        100.0
    } else {
        (bytes as f64 * 100.0 / total as f64 * 100.0).round() / 100.0
    }
}

/// Adds a progress sample and recomputes speed and ETA over the window.
fn record_progress(state: &mut TransferState, bytes: i64, now: DateTime<Utc>) {
    let now_ms = now.timestamp_millis();
    state.window.retain(|[t, _]| now_ms - t <= WINDOW.num_milliseconds());
    state.window.push([now_ms, bytes]);
    if state.window.len() > WINDOW_SAMPLES {
        state.window.remove(0);
    }
    state.bytes_transferred = bytes;
    state.percent = percent(bytes, state.total_bytes);
    let ([t0, b0], [t1, b1]) = (state.window[0], state.window[state.window.len() - 1]);
    let bytes_per_second = if t1 > t0 { (b1 - b0) as f64 * 1000.0 / (t1 - t0) as f64 } else { 0.0 };
    if state.window.len() >= 2 {
        state.speed_mbps = Some((bytes_per_second * 8.0 / 1e6 * 1000.0).round() / 1000.0);
        state.eta_seconds =
            (bytes_per_second > 0.0).then(|| ((state.total_bytes - bytes) as f64 / bytes_per_second).ceil() as i64);
    }
    state.last_activity_at = now;
    state.last_progress_at = Some(now);
}

/// Requests a file: picks the source device, works out the chunks needed,
/// appends `transfer_requested`.
pub async fn request(
    client: &impl GenericClient,
    cmd: &Command,
    policy: &TransferPolicy,
    project_id: Uuid,
    req: DownloadRequest,
) -> Result<DownloadResponse, DomainError> {
    let path = FilePath::parse(&req.file_path)?;
    let expected_hash = req.file_hash.as_deref().map(Blake3Hash::parse).transpose()?;
    let have: HashSet<String> = req
        .have_chunks
        .iter()
        .map(|h| Blake3Hash::parse(h).map(|h| h.as_str().to_owned()))
        .collect::<Result<_, _>>()?;

    lock_for(client, project_id, &cmd.caller, false).await?;
    let file = client
        .query_opt(
            "SELECT size, hash, mime_type, chunks FROM remote_files
             WHERE project_id = $1 AND path = $2 AND NOT deleted",
            &[&project_id, &path.as_str()],
        )
        .await?
        .ok_or_else(|| {
            rejected(Rejection::NotFound, "file_not_found", format!("{} is not in the project", path.as_str()))
        })?;
    let (size, hash, mime_type): (i64, String, String) = (file.get(0), file.get(1), file.get(2));
    if expected_hash.is_some_and(|h| h.as_str() != hash) {
        return Err(rejected(Rejection::Conflict, "file_changed", "the file's current hash is not the one asked for"));
    }
    if let Some(target) = req.target_device_id {
        check_target(client, project_id, &cmd.caller, target).await?;
    }
    let source = choose_source(client, project_id).await?;

    let chunks: Option<Vec<ChunkRef>> =
        file.get::<_, Option<serde_json::Value>>(3).and_then(|c| serde_json::from_value(c).ok());
    // A file sent without a chunk list travels as one chunk: itself.
    let chunks: Vec<ChunkRef> = match chunks {
        Some(chunks) => chunks,
        None if size > 0 => vec![ChunkRef { hash: hash.clone(), size }],
        None => vec![],
    };
    let mut seen = HashSet::new();
    let chunks_needed: Vec<String> = chunks
        .iter()
        .map(|c| c.hash.clone())
        .filter(|h| seen.insert(h.clone()))
        .filter(|h| req.request_mode == RequestMode::Full || !have.contains(h))
        .collect();

    let now = Utc::now();
    let id = Uuid::now_v7();
    let expires_at = now + policy.ttl;
    // Direct first when the source's agent advertises itself; the relay always.
    let mut endpoints = direct_endpoints(client, source, id, expires_at).await?;
    let protocol = if endpoints.is_empty() { TransferProtocol::Relay } else { TransferProtocol::Http };
    // The relay is the server itself: where it listens is for the HTTP
    // edge to say.
    endpoints.push(Endpoint { protocol: TransferProtocol::Relay, url: String::new(), token: None });
    let state = TransferState {
        transfer_id: id,
        requester_id: cmd.caller.user_id,
        file_path: path.as_str().to_owned(),
        status: Pending,
        bytes_transferred: 0,
        total_bytes: size,
        percent: percent(0, size),
        speed_mbps: None,
        eta_seconds: None,
        attempts: 1,
        error_message: None,
        started_at: None,
        completed_at: None,
        expires_at,
        last_activity_at: now,
        last_progress_at: None,
        window: vec![],
    };
    let requested = TransferRequested {
        state: state.clone(),
        file_hash: hash.clone(),
        mime_type: mime_type.clone(),
        source_device_id: source,
        target_device_id: req.target_device_id,
        protocol,
        request_mode: req.request_mode,
        chunks_needed: chunks_needed.clone(),
    };
    store::append(client, project_id, &cmd.meta, &[EventData::TransferRequested(requested)]).await?;
    Ok(DownloadResponse {
        success: true,
        download_id: id,
        file: DownloadFile { path: path.into_inner(), size, hash, mime_type, chunks },
        transfer_info: TransferInfo {
            protocol,
            source_device_id: source,
            expires_at: state.expires_at,
            endpoints,
            chunks_needed,
        },
    })
}

/// The source device's advertised direct endpoints, each with a token for
/// this transfer that its agent can check with its key.
async fn direct_endpoints(
    client: &impl GenericClient,
    source: Uuid,
    transfer_id: Uuid,
    expires_at: DateTime<Utc>,
) -> Result<Vec<Endpoint>, DomainError> {
    let row = client.query_opt("SELECT direct_urls, direct_key FROM devices WHERE id = $1", &[&source]).await?;
    let Some((Some(urls), Some(key))) =
        row.map(|r| (r.get::<_, Option<serde_json::Value>>(0), r.get::<_, Option<String>>(1)))
    else {
        return Ok(vec![]);
    };
    let (Ok(urls), Some(key)) = (serde_json::from_value::<Vec<String>>(urls), DirectToken::key(&key)) else {
        return Ok(vec![]);
    };
    let token = DirectToken::mint(&key, transfer_id, expires_at);
    Ok(urls
        .into_iter()
        .map(|url| Endpoint { protocol: TransferProtocol::Http, url, token: Some(token.clone()) })
        .collect())
}

/// A target must be one of the caller's devices attached to the project.
async fn check_target(
    client: &impl GenericClient,
    project_id: Uuid,
    caller: &Caller,
    device: Uuid,
) -> Result<(), DomainError> {
    let row = client
        .query_opt(
            "SELECT d.user_id, pd.device_id IS NOT NULL FROM devices d
             LEFT JOIN project_devices pd ON pd.device_id = d.id AND pd.project_id = $2
             WHERE d.id = $1 AND d.deleted_at IS NULL",
            &[&device, &project_id],
        )
        .await?
        .ok_or_else(|| DomainError::not_found("device"))?;
    if row.get::<_, Uuid>(0) != caller.user_id {
        return Err(rejected(Rejection::Forbidden, "not_your_device", "the target must be one of your devices"));
    }
    if !row.get::<_, bool>(1) {
        return Err(rejected(
            Rejection::Invalid,
            "device_not_attached",
            "attach the target device to the project first",
        ));
    }
    Ok(())
}

/// The source device to serve a transfer: online ones first, then the most
/// recently seen, then the most recently attached.
async fn choose_source(client: &impl GenericClient, project_id: Uuid) -> Result<Uuid, DomainError> {
    client
        .query_opt(
            &format!(
                "SELECT pd.device_id FROM project_devices pd
                 LEFT JOIN device_presence p ON p.device_id = pd.device_id
                 WHERE pd.project_id = $1 AND pd.role = 'source'
                 ORDER BY {} DESC, p.last_seen_at DESC NULLS LAST, pd.attached_at DESC
                 LIMIT 1",
                online_sql("pd.device_id")
            ),
            &[&project_id],
        )
        .await?
        .map(|r| r.get(0))
        .ok_or_else(|| {
            rejected(Rejection::Unavailable, "no_source_device", "the project has no source device to serve files")
        })
}

/// The transfer, if the caller may see it: the owner sees all, a member
/// their own.
async fn load_visible(
    client: &impl GenericClient,
    caller: &Caller,
    role: Role,
    project_id: Uuid,
    transfer_id: Uuid,
) -> Result<Row, DomainError> {
    let row = client
        .query_opt(
            &format!("SELECT {ROW_COLUMNS} FROM file_transfers t WHERE t.id = $1 AND t.project_id = $2"),
            &[&transfer_id, &project_id],
        )
        .await?
        .map(|r| row_from(&r))
        .filter(|row| role == Role::Owner || row.state.requester_id == caller.user_id)
        .ok_or_else(|| DomainError::not_found("transfer"))?;
    Ok(row)
}

/// Appends one transfer event and answers the transfer as it now is.
async fn transition(
    client: &impl GenericClient,
    meta: &EventMeta,
    row: Row,
    events: &[EventData],
) -> Result<Transfer, DomainError> {
    store::append(client, row.project_id, meta, events).await?;
    let project_id = row.project_id;
    let id = row.state.transfer_id;
    get_one(client, project_id, id).await
}

/// `PATCH`: the source device reports a start, bytes, or a failure; the
/// requester, only a failure.
pub async fn report(
    client: &impl GenericClient,
    cmd: &Command,
    policy: &TransferPolicy,
    project_id: Uuid,
    transfer_id: Uuid,
    report: TransferReport,
) -> Result<Transfer, DomainError> {
    if report.error_message.as_ref().is_some_and(|m| m.chars().count() > MAX_ERROR_MESSAGE) {
        return Err(ValidationError::new("invalid_error_message", "error_message is at most 1000 characters").into());
    }
    if report.bytes_transferred.is_some_and(|b| b < 0) {
        return Err(ValidationError::new("invalid_bytes", "bytes_transferred must not be negative").into());
    }
    // Most progress reports fall inside the coalescing interval: answer those
    // from a plain read, without the project's head lock or a write.
    if matches!(report.status, None | Some(InProgress)) {
        if let Some(bytes) = report.bytes_transferred {
            let role = access(client, project_id, &cmd.caller, false).await?;
            let row = load_visible(client, &cmd.caller, role, project_id, transfer_id).await?;
            let s = &row.state;
            let coalesced = cmd.caller.device_id == Some(row.source_device_id)
                && s.status == InProgress
                && (s.bytes_transferred..s.total_bytes).contains(&bytes)
                && s.last_progress_at.is_some_and(|at| Utc::now() - at < policy.progress_interval);
            if coalesced {
                return get_one(client, project_id, transfer_id).await;
            }
        }
    }
    let role = lock_for(client, project_id, &cmd.caller, false).await?;
    let row = load_visible(client, &cmd.caller, role, project_id, transfer_id).await?;
    let from_source = cmd.caller.device_id == Some(row.source_device_id);
    // The requester may say an attempt failed on its side (bytes that never
    // verified, say), so that it can be retried; nothing else.
    let requester_fails = row.state.requester_id == cmd.caller.user_id
        && report.status == Some(Failed)
        && report.bytes_transferred.is_none();
    if !from_source && !requester_fails {
        return Err(rejected(
            Rejection::Forbidden,
            "not_source_device",
            "only the transfer's source device reports its progress (its requester may only report a failure)",
        ));
    }
    let now = Utc::now();
    let from = row.state.status;
    let mut state = row.state.clone();
    let mut events = Vec::new();
    match report.status {
        Some(Failed) => {
            if !from.is_active() {
                return Err(illegal(from, "failed"));
            }
            if let Some(bytes) = report.bytes_transferred {
                check_bytes(&state, bytes)?;
                state.bytes_transferred = bytes;
                state.percent = percent(bytes, state.total_bytes);
            }
            state.status = Failed;
            let side = if from_source { FailureReason::FailedAtSource } else { FailureReason::FailedAtRequester };
            state.error_message = Some(report.error_message.unwrap_or_else(|| side.to_string()));
            state.last_activity_at = now;
            events.push(EventData::FileTransferFailed(state));
        }
        Some(InProgress) | None => {
            if report.status.is_none() && report.bytes_transferred.is_none() {
                return Err(ValidationError::new("empty_report", "report a status or bytes_transferred").into());
            }
            if !from.is_active() {
                return Err(illegal(from, "in_progress"));
            }
            if from == Pending {
                state.status = InProgress;
                state.started_at = Some(now);
                state.last_activity_at = now;
                // The start is the window's first sample.
                state.window = vec![[now.timestamp_millis(), state.bytes_transferred]];
                events.push(EventData::FileTransferStarted(state.clone()));
            }
            if let Some(bytes) = report.bytes_transferred {
                check_bytes(&state, bytes)?;
                let coalesced = events.is_empty()
                    && bytes < state.total_bytes
                    && state.last_progress_at.is_some_and(|at| now - at < policy.progress_interval);
                if bytes > state.bytes_transferred && !coalesced {
                    record_progress(&mut state, bytes, now);
                    events.push(EventData::FileTransferProgress(state));
                }
            }
        }
        Some(other) => {
            return Err(ValidationError::new(
                "invalid_status",
                format!("a source device reports in_progress or failed, not {}", other.as_str()),
            )
            .into())
        }
    }
    if events.is_empty() {
        // Nothing new, or a progress report inside the coalescing interval:
        // the transfer as last recorded.
        return get_one(client, project_id, transfer_id).await;
    }
    transition(client, &cmd.meta, row, &events).await
}

fn check_bytes(state: &TransferState, bytes: i64) -> Result<(), DomainError> {
    if bytes < state.bytes_transferred {
        return Err(rejected(
            Rejection::Conflict,
            "bytes_backwards",
            format!("bytes_transferred cannot go back from {} to {bytes}", state.bytes_transferred),
        ));
    }
    if bytes > state.total_bytes {
        return Err(rejected(
            Rejection::Conflict,
            "bytes_past_total",
            format!("bytes_transferred cannot pass total_bytes ({})", state.total_bytes),
        ));
    }
    Ok(())
}

/// The requester reports the BLAKE3 of what it received.
pub async fn verify(
    client: &impl GenericClient,
    cmd: &Command,
    project_id: Uuid,
    transfer_id: Uuid,
    hash: &str,
) -> Result<Transfer, DomainError> {
    let hash = Blake3Hash::parse(hash)?;
    let role = lock_for(client, project_id, &cmd.caller, false).await?;
    let row = load_visible(client, &cmd.caller, role, project_id, transfer_id).await?;
    if row.state.requester_id != cmd.caller.user_id {
        return Err(rejected(Rejection::Forbidden, "requester_only", "only the requester verifies a transfer"));
    }
    let from = row.state.status;
    if !from.is_active() {
        return Err(illegal(from, "completed"));
    }
    let now = Utc::now();
    let mut state = row.state.clone();
    state.last_activity_at = now;
    let event = if hash.as_str() == row.file_hash {
        state.status = Completed;
        state.bytes_transferred = state.total_bytes;
        state.percent = 100.0;
        state.eta_seconds = Some(0);
        state.completed_at = Some(now);
        EventData::FileTransferComplete
    } else {
        state.status = Failed;
        state.error_message = Some(FailureReason::HashMismatch.to_string());
        EventData::FileTransferFailed
    };
    transition(client, &cmd.meta, row, &[event(state)]).await
}

/// The requester or the owner cancels a pending or in-progress transfer.
pub async fn cancel(
    client: &impl GenericClient,
    cmd: &Command,
    project_id: Uuid,
    transfer_id: Uuid,
) -> Result<Transfer, DomainError> {
    let role = lock_for(client, project_id, &cmd.caller, false).await?;
    let row = load_visible(client, &cmd.caller, role, project_id, transfer_id).await?;
    let from = row.state.status;
    if !from.is_active() {
        return Err(illegal(from, "cancelled"));
    }
    let mut state = row.state.clone();
    state.status = Cancelled;
    state.last_activity_at = Utc::now();
    transition(client, &cmd.meta, row, &[EventData::FileTransferCancelled(state)]).await
}

/// The requester or the owner retries a failed transfer: pending again, one
/// more attempt, a fresh expiry.
pub async fn retry(
    client: &impl GenericClient,
    cmd: &Command,
    policy: &TransferPolicy,
    project_id: Uuid,
    transfer_id: Uuid,
) -> Result<Transfer, DomainError> {
    let role = lock_for(client, project_id, &cmd.caller, false).await?;
    let row = load_visible(client, &cmd.caller, role, project_id, transfer_id).await?;
    let from = row.state.status;
    if from != Failed {
        return Err(illegal(from, "pending (retry)"));
    }
    if row.state.attempts >= policy.max_attempts {
        return Err(rejected(
            Rejection::Conflict,
            "retry_limit_reached",
            format!("this transfer was tried {} times, the most allowed", row.state.attempts),
        ));
    }
    let now = Utc::now();
    let mut state = row.state.clone();
    state.status = Pending;
    state.attempts += 1;
    state.bytes_transferred = 0;
    state.percent = percent(0, state.total_bytes);
    state.speed_mbps = None;
    state.eta_seconds = None;
    state.error_message = None;
    state.started_at = None;
    state.expires_at = now + policy.ttl;
    state.last_activity_at = now;
    state.last_progress_at = None;
    state.window.clear();
    transition(client, &cmd.meta, row, &[EventData::TransferRetried(state)]).await
}

/// Events cancelling a removed member's open transfers, for the removal's batch.
pub(crate) async fn cancel_open_of(
    client: &impl GenericClient,
    project_id: Uuid,
    requester_id: Uuid,
) -> Result<Vec<EventData>, DomainError> {
    let rows = client
        .query(
            &format!(
                "SELECT {ROW_COLUMNS} FROM file_transfers t
                 WHERE t.project_id = $1 AND t.requester_id = $2 AND t.status IN ('pending', 'in_progress', 'failed')
                 ORDER BY t.id"
            ),
            &[&project_id, &requester_id],
        )
        .await?;
    let now = Utc::now();
    Ok(rows
        .iter()
        .map(|r| {
            let mut state = row_from(r).state;
            state.status = Cancelled;
            state.error_message = Some(FailureReason::MemberRemoved.to_string());
            state.last_activity_at = now;
            EventData::FileTransferCancelled(state)
        })
        .collect())
}

/// Events failing open transfers of paths a file batch changed: `current`
/// is each touched path's new hash, or None when it no longer exists.
pub(crate) async fn fail_changed(
    client: &impl GenericClient,
    project_id: Uuid,
    current: &[(String, Option<String>)],
) -> Result<Vec<EventData>, DomainError> {
    let paths: Vec<&str> = current.iter().map(|(p, _)| p.as_str()).collect();
    let rows = client
        .query(
            &format!(
                "SELECT {ROW_COLUMNS} FROM file_transfers t
                 WHERE t.project_id = $1 AND t.status IN ('pending', 'in_progress') AND t.file_path = ANY($2)
                 ORDER BY t.id"
            ),
            &[&project_id, &paths],
        )
        .await?;
    let now = Utc::now();
    Ok(rows
        .iter()
        .map(row_from)
        .filter(|row| {
            let now_hash = current.iter().rev().find(|(p, _)| *p == row.state.file_path).and_then(|(_, h)| h.as_ref());
            now_hash != Some(&row.file_hash)
        })
        .map(|row| {
            let mut state = row.state;
            state.status = Failed;
            state.error_message = Some(FailureReason::FileChanged.to_string());
            state.last_activity_at = now;
            EventData::FileTransferFailed(state)
        })
        .collect())
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub expired: usize,
    pub stalled: usize,
}

/// Expires pending transfers past `expires_at` and fails in-progress ones
/// idle past the stall time. Each project is handled under its head lock
/// and rechecked there, so servers sweeping together never double an event.
pub async fn sweep(pool: &Pool, policy: &TransferPolicy) -> Result<Swept, DomainError> {
    let now = Utc::now();
    let stalled_before = now - policy.stall_after;
    const DUE: &str = "((t.status = 'pending' AND t.expires_at <= $1)
                        OR (t.status = 'in_progress' AND t.last_activity_at <= $2))";
    let projects: Vec<Uuid> = pool
        .get()
        .await?
        .query(
            &format!("SELECT DISTINCT t.project_id FROM file_transfers t WHERE {DUE} LIMIT 100"),
            &[&now, &stalled_before],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut swept = Swept::default();
    for project_id in projects {
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        if store::lock_stream(&tx, project_id).await?.is_none() {
            continue;
        }
        let rows = tx
            .query(
                &format!("SELECT {ROW_COLUMNS} FROM file_transfers t WHERE t.project_id = $3 AND {DUE} ORDER BY t.id"),
                &[&now, &stalled_before, &project_id],
            )
            .await?;
        let mut events = Vec::with_capacity(rows.len());
        for row in rows.iter().map(row_from) {
            let mut state = row.state;
            state.last_activity_at = now;
            if state.status == Pending {
                state.status = Expired;
                swept.expired += 1;
                events.push(EventData::FileTransferExpired(state));
            } else {
                state.status = Failed;
                state.error_message = Some(FailureReason::Stalled.to_string());
                swept.stalled += 1;
                events.push(EventData::FileTransferFailed(state));
            }
        }
        if !events.is_empty() {
            let meta =
                EventMeta { actor: crate::protocol::Actor { user_id: None, device_id: None }, idempotency_key: None };
            store::append(&tx, project_id, &meta, &events).await?;
        }
        tx.commit().await?;
    }
    Ok(swept)
}

static TRANSFER_SELECT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT t.id, t.project_id, t.file_path, t.file_hash, t.status, t.requester_id,
            t.target_device_id, t.source_device_id, d.name, {}, t.protocol,
            t.bytes_transferred, t.total_bytes, t.percent, t.speed_mbps, t.eta_seconds, t.attempts,
            t.error_message, t.requested_at, t.started_at, t.completed_at, t.expires_at
        FROM file_transfers t
        JOIN devices d ON d.id = t.source_device_id",
        online_sql("t.source_device_id")
    )
});

fn transfer_from(r: &tokio_postgres::Row) -> Transfer {
    Transfer {
        id: r.get(0),
        project_id: r.get(1),
        file_path: r.get(2),
        file_hash: r.get(3),
        status: TransferStatus::parse(r.get(4)).unwrap_or(Failed),
        requester_id: r.get(5),
        target_device_id: r.get(6),
        source_device: SourceDevice { id: r.get(7), name: r.get(8), online: r.get(9) },
        protocol: TransferProtocol::parse(r.get(10)).unwrap_or(TransferProtocol::Relay),
        bytes_transferred: r.get(11),
        total_bytes: r.get(12),
        percent_complete: r.get(13),
        speed_mbps: r.get(14),
        eta_seconds: r.get(15),
        attempts: r.get(16),
        error_message: r.get(17),
        requested_at: r.get(18),
        started_at: r.get(19),
        completed_at: r.get(20),
        expires_at: r.get(21),
    }
}

async fn get_one(client: &impl GenericClient, project_id: Uuid, transfer_id: Uuid) -> Result<Transfer, DomainError> {
    client
        .query_opt(&format!("{} WHERE t.id = $1 AND t.project_id = $2", *TRANSFER_SELECT), &[&transfer_id, &project_id])
        .await?
        .map(|r| transfer_from(&r))
        .ok_or_else(|| DomainError::not_found("transfer"))
}

/// One transfer: the owner's or the requester's to see.
pub async fn get(
    client: &impl GenericClient,
    caller: &Caller,
    project_id: Uuid,
    transfer_id: Uuid,
) -> Result<Transfer, DomainError> {
    let role = access(client, project_id, caller, false).await?;
    let transfer = get_one(client, project_id, transfer_id).await?;
    if role == Role::Owner || transfer.requester_id == caller.user_id {
        Ok(transfer)
    } else {
        Err(DomainError::not_found("transfer"))
    }
}

/// Newest first: the owner sees every transfer, a member their own.
pub async fn list(
    client: &impl GenericClient,
    caller: &Caller,
    project_id: Uuid,
    status: Option<TransferStatus>,
    cursor: Option<&str>,
    limit: i64,
) -> Result<TransfersPage, DomainError> {
    let role = access(client, project_id, caller, false).await?;
    let before: Option<Uuid> = cursor
        .filter(|c| !c.is_empty())
        .map(|c| {
            Cursor::decode(c)?
                .0
                .parse()
                .map_err(|_| ValidationError::new("invalid_cursor", "the cursor is not one this server gave out"))
        })
        .transpose()?;
    let requester = (role != Role::Owner).then_some(caller.user_id);
    let rows = client
        .query(
            &format!(
                "{}
                 WHERE t.project_id = $1 AND ($2::uuid IS NULL OR t.requester_id = $2)
                   AND ($3::text IS NULL OR t.status = $3) AND ($4::uuid IS NULL OR t.id < $4)
                 ORDER BY t.id DESC LIMIT $5",
                *TRANSFER_SELECT
            ),
            &[&project_id, &requester, &status.map(TransferStatus::as_str), &before, &(limit + 1)],
        )
        .await?;
    let more = rows.len() as i64 > limit;
    let transfers: Vec<Transfer> = rows.iter().take(limit as usize).map(transfer_from).collect();
    let next_cursor = more.then(|| Cursor(transfers.last().expect("a full page").id.to_string()).encode());
    Ok(TransfersPage { transfers, next_cursor })
}

/// Bytes the relay served for a transfer advance it, as the server saw
/// them: started if pending, never past the total. Only the requester's
/// downloads count. The caller batches them (at most one call
/// a second per transfer), so none is coalesced away here.
pub async fn advance_relayed(
    client: &impl GenericClient,
    cmd: &Command,
    project_id: Uuid,
    transfer_id: Uuid,
    bytes: i64,
) -> Result<(), DomainError> {
    let role = lock_for(client, project_id, &cmd.caller, false).await?;
    let row = load_visible(client, &cmd.caller, role, project_id, transfer_id).await?;
    // Only the requester's own fetches are the transfer's bytes: anyone
    // else (the owner, say) fetching the same chunk moves nothing.
    if !row.state.status.is_active() || bytes <= 0 || row.state.requester_id != cmd.caller.user_id {
        return Ok(());
    }
    let now = Utc::now();
    let mut state = row.state.clone();
    let mut events = Vec::new();
    if state.status == Pending {
        state.status = InProgress;
        state.started_at = Some(now);
        state.window = vec![[now.timestamp_millis(), state.bytes_transferred]];
        events.push(EventData::FileTransferStarted(state.clone()));
    }
    let total = (state.bytes_transferred + bytes).min(state.total_bytes);
    if total > state.bytes_transferred {
        record_progress(&mut state, total, now);
        events.push(EventData::FileTransferProgress(state));
    }
    if !events.is_empty() {
        transition(client, &cmd.meta, row, &events).await?;
    }
    Ok(())
}

/// What the server needs to stream a transfer's file to its requester.
#[derive(Debug, Clone)]
pub struct Content {
    pub file_path: String,
    pub file_hash: String,
    pub mime_type: String,
    pub size: i64,
    /// The file's chunks in order (a file sent without a list is its own one chunk).
    pub chunks: Vec<ChunkRef>,
    pub status: TransferStatus,
}

/// The transfer's file, for its requester only: the owner, who sees the
/// transfer, is refused (403, as for `verify`); anyone else does not see
/// it (404). A transfer that is over answers 409, but a completed one may
/// be fetched again and a failed one is fetched after a retry.
pub async fn content(
    client: &impl GenericClient,
    caller: &Caller,
    project_id: Uuid,
    transfer_id: Uuid,
) -> Result<Content, DomainError> {
    let role = access(client, project_id, caller, false).await?;
    let row = load_visible(client, caller, role, project_id, transfer_id).await?;
    if row.state.requester_id != caller.user_id {
        return Err(rejected(
            Rejection::Forbidden,
            "requester_only",
            "only the requester downloads a transfer's bytes",
        ));
    }
    let status = row.state.status;
    if matches!(status, Cancelled | Expired) {
        return Err(illegal(status, "downloaded"));
    }
    let file = client
        .query_opt(
            "SELECT size, mime_type, chunks FROM remote_files
             WHERE project_id = $1 AND path = $2 AND hash = $3 AND NOT deleted",
            &[&project_id, &row.state.file_path, &row.file_hash],
        )
        .await?
        .ok_or_else(|| {
            rejected(Rejection::Conflict, "file_changed", "the file changed or went away since it was requested")
        })?;
    let size: i64 = file.get(0);
    let chunks: Option<Vec<ChunkRef>> =
        file.get::<_, Option<serde_json::Value>>(2).and_then(|c| serde_json::from_value(c).ok());
    let chunks = match chunks {
        Some(chunks) => chunks,
        None if size > 0 => vec![ChunkRef { hash: row.file_hash.clone(), size }],
        None => vec![],
    };
    Ok(Content {
        file_path: row.state.file_path,
        file_hash: row.file_hash,
        mime_type: file.get(1),
        size,
        chunks,
        status,
    })
}
