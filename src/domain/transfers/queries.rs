//! Reads of the `file_transfers` read model: one query shape, one row
//! mapper, and the queries callers make (a transfer, a page of them, the
//! file a transfer is for).

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::machine::illegal;
use super::rejected;
use crate::domain::presence::online_sql;
use crate::domain::projects::access;
use crate::domain::{Caller, DomainError, Rejection};
use crate::protocol::events::data::TransferState;
use crate::protocol::files::{ChunkRef, Cursor};
use crate::protocol::projects::Role;
use crate::protocol::transfers::{SourceDevice, Transfer, TransferProtocol, TransferStatus, TransfersPage};
use crate::protocol::validate::ValidationError;
use crate::store::GenericClient;

/// Every read of `file_transfers` starts here; callers add `WHERE` on `t`.
pub(super) static SELECT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT t.id, t.project_id, t.file_path, t.file_hash, t.status, t.requester_id,
            t.target_device_id, t.source_device_id, d.name, {}, t.protocol,
            t.bytes_transferred, t.total_bytes, t.percent, t.speed_mbps, t.eta_seconds, t.attempts,
            t.error_message, t.requested_at, t.started_at, t.completed_at, t.expires_at,
            t.last_activity_at, t.last_progress_at, t.\"window\", t.route
        FROM file_transfers t
        JOIN devices d ON d.id = t.source_device_id",
        online_sql("t.source_device_id")
    )
});

/// A transfer as stored: as answered, plus the state the commands move.
pub(super) struct TransferRow {
    pub transfer: Transfer,
    last_activity_at: DateTime<Utc>,
    last_progress_at: Option<DateTime<Utc>>,
    window: Vec<[i64; 2]>,
}

impl From<&tokio_postgres::Row> for TransferRow {
    fn from(r: &tokio_postgres::Row) -> Self {
        let window: serde_json::Value = r.get(24);
        TransferRow {
            transfer: Transfer {
                id: r.get(0),
                project_id: r.get(1),
                file_path: r.get(2),
                file_hash: r.get(3),
                status: TransferStatus::parse(r.get(4)).unwrap_or(TransferStatus::Failed),
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
                route: serde_json::from_value(r.get(25)).unwrap_or_default(),
            },
            last_activity_at: r.get(22),
            last_progress_at: r.get(23),
            window: serde_json::from_value(window).unwrap_or_default(),
        }
    }
}

impl TransferRow {
    pub fn project_id(&self) -> Uuid {
        self.transfer.project_id
    }

    pub fn file_hash(&self) -> &str {
        &self.transfer.file_hash
    }

    pub fn source_device_id(&self) -> Uuid {
        self.transfer.source_device.id
    }

    pub fn requester_id(&self) -> Uuid {
        self.transfer.requester_id
    }

    /// The state its last event carried.
    pub fn state(&self) -> TransferState {
        let t = &self.transfer;
        TransferState {
            transfer_id: t.id,
            requester_id: t.requester_id,
            file_path: t.file_path.clone(),
            status: t.status,
            bytes_transferred: t.bytes_transferred,
            total_bytes: t.total_bytes,
            percent: t.percent_complete,
            speed_mbps: t.speed_mbps,
            eta_seconds: t.eta_seconds,
            attempts: t.attempts,
            error_message: t.error_message.clone(),
            started_at: t.started_at,
            completed_at: t.completed_at,
            expires_at: t.expires_at,
            last_activity_at: self.last_activity_at,
            last_progress_at: self.last_progress_at,
            window: self.window.clone(),
            route: t.route.clone(),
        }
    }
}

/// A file's chunks from its `chunks` column: a file sent without a chunk
/// list travels as one chunk, itself.
pub(super) fn chunks_of(chunks: Option<serde_json::Value>, hash: &str, size: i64) -> Vec<ChunkRef> {
    match chunks.and_then(|c| serde_json::from_value(c).ok()) {
        Some(chunks) => chunks,
        None if size > 0 => vec![ChunkRef { hash: hash.to_owned(), size }],
        None => vec![],
    }
}

/// The transfer, if the caller may see it: the owner sees all, a member
/// their own.
pub(super) async fn load_visible(
    client: &impl GenericClient,
    caller: &Caller,
    role: Role,
    project_id: Uuid,
    transfer_id: Uuid,
) -> Result<TransferRow, DomainError> {
    let row = client
        .query_opt(&format!("{} WHERE t.id = $1 AND t.project_id = $2", *SELECT), &[&transfer_id, &project_id])
        .await?
        .map(|r| TransferRow::from(&r))
        .filter(|row| role == Role::Owner || row.requester_id() == caller.user_id)
        .ok_or_else(|| DomainError::not_found("transfer"))?;
    Ok(row)
}

pub(super) async fn get_one(
    client: &impl GenericClient,
    project_id: Uuid,
    transfer_id: Uuid,
) -> Result<Transfer, DomainError> {
    client
        .query_opt(&format!("{} WHERE t.id = $1 AND t.project_id = $2", *SELECT), &[&transfer_id, &project_id])
        .await?
        .map(|r| TransferRow::from(&r).transfer)
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
                *SELECT
            ),
            &[&project_id, &requester, &status.map(TransferStatus::as_str), &before, &(limit + 1)],
        )
        .await?;
    let more = rows.len() as i64 > limit;
    let transfers: Vec<Transfer> = rows.iter().take(limit as usize).map(|r| TransferRow::from(r).transfer).collect();
    let next_cursor = more.then(|| Cursor(transfers.last().expect("a full page").id.to_string()).encode());
    Ok(TransfersPage { transfers, next_cursor })
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
    if row.requester_id() != caller.user_id {
        return Err(rejected(
            Rejection::Forbidden,
            "requester_only",
            "only the requester downloads a transfer's bytes",
        ));
    }
    let status = row.transfer.status;
    if matches!(status, TransferStatus::Cancelled | TransferStatus::Expired) {
        return Err(illegal(status, "downloaded"));
    }
    let file = client
        .query_opt(
            "SELECT size, mime_type, chunks FROM remote_files
             WHERE project_id = $1 AND path = $2 AND hash = $3 AND NOT deleted",
            &[&project_id, &row.transfer.file_path, &row.transfer.file_hash],
        )
        .await?
        .ok_or_else(|| {
            rejected(Rejection::Conflict, "file_changed", "the file changed or went away since it was requested")
        })?;
    let size: i64 = file.get(0);
    let chunks = chunks_of(file.get(2), &row.transfer.file_hash, size);
    let Transfer { file_path, file_hash, .. } = row.transfer;
    Ok(Content { file_path, file_hash, mime_type: file.get(1), size, chunks, status })
}
