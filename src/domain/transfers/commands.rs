//! The commands on transfers: each loads the transfer under the project's
//! head lock, checks who asks, lets the state machine decide the events,
//! and appends them.

use std::collections::HashSet;

use chrono::Utc;
use uuid::Uuid;

use super::queries::{chunks_of, get_one, load_visible, TransferRow, SELECT};
use super::source::{choose_source, direct_endpoints};
use super::{machine, rejected, TransferPolicy};
use crate::domain::projects::{access, lock_for};
use crate::domain::{Caller, Command, DomainError, Rejection};
use crate::protocol::events::data::TransferRequested;
use crate::protocol::files::{Blake3Hash, FilePath};
use crate::protocol::transfers::{
    DirectEndpoints, DirectGrant, DownloadFile, DownloadRequest, DownloadResponse, Endpoint, RequestMode, Transfer,
    TransferInfo, TransferProtocol, TransferReport, TransferStatus, VerifyRequest,
};
use crate::protocol::validate::ValidationError;
use crate::protocol::EventData;
use crate::store::{self, EventMeta, GenericClient};

const MAX_ERROR_MESSAGE: usize = 1000;

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
    let have: HashSet<Blake3Hash> = req.have_chunks.iter().map(|h| Blake3Hash::parse(h)).collect::<Result<_, _>>()?;

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

    let chunks = chunks_of(file.get(3), &hash, size);
    let mut seen = HashSet::new();
    let chunks_needed: Vec<String> = chunks
        .iter()
        .map(|c| c.hash.clone())
        .filter(|h| seen.insert(h.clone()))
        .filter(|h| req.request_mode == RequestMode::Full || !have.contains(h.as_str()))
        .collect();

    let now = Utc::now();
    let id = Uuid::now_v7();
    let expires_at = now + policy.ttl;
    // Direct first when the source's agent advertises itself; the relay always.
    let grant = DirectGrant { transfer_id: id, requester_id: cmd.caller.user_id };
    let token_expiry = expires_at.min(now + policy.direct_token_ttl);
    let mut endpoints = direct_endpoints(client, source, project_id, grant, token_expiry).await?;
    let protocol = if endpoints.is_empty() { TransferProtocol::Relay } else { TransferProtocol::Http };
    // The relay is the server itself: where it listens is for the HTTP
    // edge to say.
    endpoints.push(Endpoint { protocol: TransferProtocol::Relay, url: String::new(), token: None, cert_sha256: None });
    let state = machine::requested(id, cmd.caller.user_id, path.as_str().to_owned(), size, expires_at, now);
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

/// Appends the transfer's events and answers the transfer as it now is.
async fn transition(
    client: &impl GenericClient,
    meta: &EventMeta,
    row: &TransferRow,
    events: &[EventData],
) -> Result<Transfer, DomainError> {
    store::append(client, row.project_id(), meta, events).await?;
    get_one(client, row.project_id(), row.transfer.id).await
}

/// The transfer under the project's head lock, if the caller may see it.
async fn load_locked(
    client: &impl GenericClient,
    cmd: &Command,
    project_id: Uuid,
    transfer_id: Uuid,
) -> Result<TransferRow, DomainError> {
    let role = lock_for(client, project_id, &cmd.caller, false).await?;
    load_visible(client, &cmd.caller, role, project_id, transfer_id).await
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
    if matches!(report.status, None | Some(TransferStatus::InProgress)) {
        if let Some(bytes) = report.bytes_transferred {
            let role = access(client, project_id, &cmd.caller, false).await?;
            let row = load_visible(client, &cmd.caller, role, project_id, transfer_id).await?;
            let coalesced = cmd.caller.device_id == Some(row.source_device_id())
                && machine::coalesces(&row.state(), bytes, Utc::now(), policy.progress_interval);
            if coalesced {
                return Ok(row.transfer);
            }
        }
    }
    let row = load_locked(client, cmd, project_id, transfer_id).await?;
    let from_source = cmd.caller.device_id == Some(row.source_device_id());
    // The requester may say an attempt failed on its side (bytes that never
    // verified, say), so that it can be retried; nothing else.
    let requester_fails = row.requester_id() == cmd.caller.user_id
        && report.status == Some(TransferStatus::Failed)
        && report.bytes_transferred.is_none();
    if !from_source && !requester_fails {
        return Err(rejected(
            Rejection::Forbidden,
            "not_source_device",
            "only the transfer's source device reports its progress (its requester may only report a failure)",
        ));
    }
    let events = machine::report(&row.state(), report, from_source, Utc::now(), policy.progress_interval)?;
    if events.is_empty() {
        // Nothing new, or a progress report inside the coalescing interval:
        // the transfer as last recorded (under the lock, as just read).
        return Ok(row.transfer);
    }
    transition(client, &cmd.meta, &row, &events).await
}

/// The requester reports the BLAKE3 of what it received, and how its
/// direct leg went.
pub async fn verify(
    client: &impl GenericClient,
    cmd: &Command,
    project_id: Uuid,
    transfer_id: Uuid,
    req: VerifyRequest,
) -> Result<Transfer, DomainError> {
    let hash = Blake3Hash::parse(&req.hash)?;
    let row = load_locked(client, cmd, project_id, transfer_id).await?;
    if row.requester_id() != cmd.caller.user_id {
        return Err(rejected(Rejection::Forbidden, "requester_only", "only the requester verifies a transfer"));
    }
    let event = machine::verify(&row.state(), hash.as_str() == row.file_hash(), req.route, Utc::now())?;
    transition(client, &cmd.meta, &row, &[event]).await
}

/// The requester of an open transfer whose direct token ran out gets the
/// source's direct endpoints with fresh tokens (short-lived, so a token
/// that leaks is worth little).
pub async fn direct_token(
    client: &impl GenericClient,
    cmd: &Command,
    policy: &TransferPolicy,
    project_id: Uuid,
    transfer_id: Uuid,
) -> Result<DirectEndpoints, DomainError> {
    let role = access(client, project_id, &cmd.caller, false).await?;
    let row = load_visible(client, &cmd.caller, role, project_id, transfer_id).await?;
    if row.requester_id() != cmd.caller.user_id {
        return Err(rejected(Rejection::Forbidden, "requester_only", "only the requester fetches directly"));
    }
    let state = row.state();
    if !matches!(state.status, TransferStatus::Pending | TransferStatus::InProgress) {
        return Err(rejected(Rejection::Conflict, "transfer_not_active", "the transfer is over"));
    }
    let grant = DirectGrant { transfer_id, requester_id: cmd.caller.user_id };
    let expires_at = state.expires_at.min(Utc::now() + policy.direct_token_ttl);
    let endpoints = direct_endpoints(client, row.source_device_id(), project_id, grant, expires_at).await?;
    Ok(DirectEndpoints { endpoints })
}

/// The requester or the owner cancels a pending or in-progress transfer.
pub async fn cancel(
    client: &impl GenericClient,
    cmd: &Command,
    project_id: Uuid,
    transfer_id: Uuid,
) -> Result<Transfer, DomainError> {
    let row = load_locked(client, cmd, project_id, transfer_id).await?;
    let event = machine::cancel(&row.state(), Utc::now())?;
    transition(client, &cmd.meta, &row, &[event]).await
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
    let row = load_locked(client, cmd, project_id, transfer_id).await?;
    let event = machine::retry(&row.state(), policy, Utc::now())?;
    transition(client, &cmd.meta, &row, &[event]).await
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
    let row = load_locked(client, cmd, project_id, transfer_id).await?;
    // Only the requester's own fetches are the transfer's bytes: anyone
    // else (the owner, say) fetching the same chunk moves nothing.
    if row.requester_id() != cmd.caller.user_id {
        return Ok(());
    }
    let events = machine::advance(&row.state(), bytes, Utc::now());
    if !events.is_empty() {
        transition(client, &cmd.meta, &row, &events).await?;
    }
    Ok(())
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
                "{}
                 WHERE t.project_id = $1 AND t.requester_id = $2 AND t.status IN ('pending', 'in_progress', 'failed')
                 ORDER BY t.id",
                *SELECT
            ),
            &[&project_id, &requester_id],
        )
        .await?;
    let now = Utc::now();
    Ok(rows.iter().filter_map(|r| machine::member_removed(&TransferRow::from(r).state(), now)).collect())
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
                "{}
                 WHERE t.project_id = $1 AND t.status IN ('pending', 'in_progress') AND t.file_path = ANY($2)
                 ORDER BY t.id",
                *SELECT
            ),
            &[&project_id, &paths],
        )
        .await?;
    let now = Utc::now();
    Ok(rows
        .iter()
        .map(TransferRow::from)
        .filter(|row| {
            let now_hash =
                current.iter().rev().find(|(p, _)| *p == row.transfer.file_path).and_then(|(_, h)| h.as_ref());
            now_hash.map(String::as_str) != Some(row.file_hash())
        })
        .filter_map(|row| machine::file_changed(&row.state(), now))
        .collect())
}
