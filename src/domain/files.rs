//! File metadata: batches of changes from a source device, applied in one
//! transaction, and the keyset-paginated listing.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::Object;
use uuid::Uuid;

use super::projects::LockFor;
use super::{Caller, Command, DomainError, Rejection};
use crate::protocol::events::data::{FileMoved, FileState};
use crate::protocol::files::{
    Blake3Hash, ChunkRef, Cursor, FileChange, FilePath, FilesPage, RemoteFile, UpdateFilesResponse,
};
use crate::protocol::validate::ValidationError;
use crate::protocol::EventData;
use crate::store::{self, GenericClient};

/// Most changes in one `files/update` call.
pub const MAX_CHANGES: usize = 10_000;
/// Largest chunk the relay accepts.
pub const MAX_CHUNK_BYTES: i64 = 16 * 1024 * 1024;
/// Largest file size: 2^53, the largest integer every JSON client reads exactly.
pub const MAX_FILE_BYTES: i64 = 1 << 53;

/// A change whose fields passed validation.
enum Checked {
    Upsert(FileState),
    Delete(FilePath),
    Move(FilePath, FilePath),
}

fn at(index: usize, e: ValidationError) -> DomainError {
    DomainError::rejected(Rejection::Invalid, e.code, format!("changes[{index}]: {}", e.message))
}

fn check(change: FileChange) -> Result<Checked, ValidationError> {
    Ok(match change {
        FileChange::Upsert { path, size, hash, mime_type, modified_at, chunks } => {
            let path = FilePath::parse(&path)?;
            let hash = Blake3Hash::parse(&hash)?;
            if !(0..=MAX_FILE_BYTES).contains(&size) {
                return Err(ValidationError::new("invalid_size", "size must be 0 to 2^53 bytes"));
            }
            match &chunks {
                Some(chunks) => check_chunks(chunks, size)?,
                // Without a chunk list the file is one chunk, and the relay
                // takes none larger: it could never be sent.
                None if size > MAX_CHUNK_BYTES => {
                    return Err(ValidationError::new(
                        "chunks_required",
                        "a file over 16 MiB must come with its chunk list",
                    ))
                }
                None => {}
            }
            let mime_type = match mime_type {
                Some(m) if m.len() <= 255 && m.contains('/') && !m.chars().any(char::is_control) => m,
                Some(m) => return Err(ValidationError::new("invalid_mime_type", format!("{m:?} is not a MIME type"))),
                None => mime_guess::from_path(path.as_str()).first_or_octet_stream().essence_str().to_owned(),
            };
            Upsert(FileState {
                path: path.into_inner(),
                size,
                hash: hash.as_str().to_owned(),
                mime_type,
                modified_at,
                chunks,
                version: 0,
            })
        }
        FileChange::Delete { path } => Delete(FilePath::parse(&path)?),
        FileChange::Move { from, to } => {
            let (from, to) = (FilePath::parse(&from)?, FilePath::parse(&to)?);
            if from == to {
                return Err(ValidationError::new("invalid_move", "a move needs two different paths"));
            }
            Move(from, to)
        }
    })
}
use Checked::{Delete, Move, Upsert};

fn check_chunks(chunks: &[ChunkRef], size: i64) -> Result<(), ValidationError> {
    let mut total: i64 = 0;
    for chunk in chunks {
        Blake3Hash::parse(&chunk.hash)?;
        if chunk.size <= 0 || chunk.size > MAX_CHUNK_BYTES {
            return Err(ValidationError::new("invalid_chunk_size", "each chunk is 1 byte to 16 MiB"));
        }
        total = total.saturating_add(chunk.size);
    }
    if total != size {
        return Err(ValidationError::new(
            "chunk_sizes_mismatch",
            format!("chunk sizes add up to {total}, not the file's size {size}"),
        ));
    }
    Ok(())
}

/// The state of one path as the batch sees it: as stored, then as changed
/// by the batch's earlier changes.
#[derive(Clone)]
struct Known {
    state: FileState,
    deleted: bool,
}

/// Applies a batch of changes from a source device of the project: one
/// transaction, all or nothing. An upsert equal (hash and size) to the
/// current file, or a delete of a path already absent, appends nothing.
pub async fn update(
    client: &impl GenericClient,
    cmd: &Command,
    project_id: Uuid,
    changes: Vec<FileChange>,
) -> Result<UpdateFilesResponse, DomainError> {
    if changes.len() > MAX_CHANGES {
        return Err(DomainError::rejected(
            Rejection::TooLarge,
            "too_many_changes",
            format!("at most {MAX_CHANGES} changes per call, got {}", changes.len()),
        ));
    }
    let checked =
        changes.into_iter().enumerate().map(|(i, c)| check(c).map_err(|e| at(i, e))).collect::<Result<Vec<_>, _>>()?;

    // The lock, the access check, the source check and the load of the
    // current state go together, in this order (one round trip).
    let checks = LockFor::prepare(client).await?;
    let source = source_statement(client).await?;
    let load_stmt = client.prepare_cached(LOAD).await?;
    let (_, is_source, mut known) = futures_util::try_join!(
        checks.run(client, project_id, &cmd.caller, false),
        is_source_device(client, &source, project_id, &cmd.caller),
        load(client, &load_stmt, project_id, &checked),
    )?;
    if !is_source {
        return Err(not_a_source());
    }

    let mut events = Vec::new();
    let mut known_changed: Vec<String> = Vec::new();
    for (i, change) in checked.into_iter().enumerate() {
        match change {
            Upsert(mut state) => {
                let previous = known.get(&state.path);
                if previous.is_some_and(|p| !p.deleted && p.state.hash == state.hash && p.state.size == state.size) {
                    continue;
                }
                let event = match previous {
                    Some(p) if !p.deleted => EventData::FileUpdated,
                    _ => EventData::FileAdded,
                };
                state.version = previous.map_or(0, |p| p.state.version) + 1;
                events.push(event(state.clone()));
                known_changed.push(state.path.clone());
                known.insert(state.path.clone(), Known { state, deleted: false });
            }
            Delete(path) => {
                let Some(previous) = known.get_mut(path.as_str()).filter(|p| !p.deleted) else { continue };
                previous.state.version += 1;
                previous.deleted = true;
                events.push(EventData::FileDeleted(previous.state.clone()));
                known_changed.push(path.into_inner());
            }
            Move(from, to) => {
                let source = known.get_mut(from.as_str()).filter(|p| !p.deleted).ok_or_else(|| {
                    at(i, ValidationError::new("not_found", format!("{} does not exist", from.as_str())))
                })?;
                source.state.version += 1;
                source.deleted = true;
                let from_version = source.state.version;
                let mut moved = source.state.clone();
                moved.path = to.as_str().to_owned();
                moved.version = known.get(to.as_str()).map_or(0, |p| p.state.version) + 1;
                events.push(EventData::FileMoved(FileMoved {
                    from: from.as_str().to_owned(),
                    to: moved.path.clone(),
                    from_version,
                    size: moved.size,
                    hash: moved.hash.clone(),
                    mime_type: moved.mime_type.clone(),
                    modified_at: moved.modified_at,
                    chunks: moved.chunks.clone(),
                    version: moved.version,
                }));
                known_changed.push(from.as_str().to_owned());
                known_changed.push(moved.path.clone());
                known.insert(moved.path.clone(), Known { state: moved, deleted: false });
            }
        }
    }

    // Open transfers of a path whose content changed under them fail, in
    // the same batch.
    let applied = events.len();
    let changed: HashSet<&str> = known_changed.iter().map(String::as_str).collect();
    let touched: Vec<(String, Option<String>)> = known
        .iter()
        .filter(|(path, _)| changed.contains(path.as_str()))
        .map(|(path, k)| (path.clone(), (!k.deleted).then(|| k.state.hash.clone())))
        .collect();
    if !touched.is_empty() {
        events.extend(super::transfers::fail_changed(client, project_id, &touched).await?);
    }
    if events.is_empty() {
        let head = store::lock_stream(client, project_id).await?.unwrap_or_default();
        return Ok(UpdateFilesResponse { applied: 0, from_seq: None, to_seq: None, head_seq: head });
    }
    let appended = store::append(client, project_id, &cmd.meta, &events).await?;
    Ok(UpdateFilesResponse {
        applied,
        from_seq: Some(appended.from_seq),
        to_seq: Some(appended.to_seq),
        head_seq: appended.to_seq,
    })
}

/// File deltas come from a source device of the project, so the log
/// records which machine changed what.
pub(crate) async fn require_source_device(
    client: &impl GenericClient,
    project_id: Uuid,
    caller: &Caller,
) -> Result<(), DomainError> {
    let stmt = source_statement(client).await?;
    if is_source_device(client, &stmt, project_id, caller).await? {
        Ok(())
    } else {
        Err(not_a_source())
    }
}

pub(crate) fn not_a_source() -> DomainError {
    DomainError::rejected(
        Rejection::Forbidden,
        "source_device_required",
        "file changes are sent with the device token of a source device of the project",
    )
}

async fn source_statement(client: &impl GenericClient) -> Result<tokio_postgres::Statement, DomainError> {
    Ok(client
        .prepare_cached("SELECT 1 FROM project_devices WHERE project_id = $1 AND device_id = $2 AND role = 'source'")
        .await?)
}

/// Whether the caller came with the token of a source device of the project.
async fn is_source_device(
    client: &impl GenericClient,
    stmt: &tokio_postgres::Statement,
    project_id: Uuid,
    caller: &Caller,
) -> Result<bool, DomainError> {
    let Some(device) = caller.device_id else { return Ok(false) };
    Ok(client.query_opt(stmt, &[&project_id, &device]).await?.is_some())
}

const LOAD: &str = "SELECT path, size, hash, mime_type, modified_at, chunks, version, deleted
                    FROM remote_files WHERE project_id = $1 AND path = ANY($2)";

/// The stored state of every path the batch touches, in one query.
async fn load(
    client: &impl GenericClient,
    stmt: &tokio_postgres::Statement,
    project_id: Uuid,
    changes: &[Checked],
) -> Result<HashMap<String, Known>, DomainError> {
    let mut paths: Vec<&str> = Vec::with_capacity(changes.len());
    for change in changes {
        match change {
            Upsert(s) => paths.push(&s.path),
            Delete(p) => paths.push(p.as_str()),
            Move(from, to) => paths.extend([from.as_str(), to.as_str()]),
        }
    }
    let rows = client.query(stmt, &[&project_id, &paths]).await?;
    let mut known = HashMap::with_capacity(rows.len() + changes.len());
    for row in rows {
        let chunks: Option<serde_json::Value> = row.get(5);
        let state = FileState {
            path: row.get(0),
            size: row.get(1),
            hash: row.get(2),
            mime_type: row.get(3),
            modified_at: row.get(4),
            chunks: chunks.and_then(|c| serde_json::from_value(c).ok()),
            version: row.get(6),
        };
        known.insert(state.path.clone(), Known { state, deleted: row.get(7) });
    }
    Ok(known)
}

/// What a page of files asks for, checked.
#[derive(Debug, Clone)]
pub struct FilesQuery {
    pub prefix: Option<String>,
    pub cursor: Option<Cursor>,
    pub limit: i64,
    pub include_deleted: bool,
}

impl FilesQuery {
    pub const MAX_LIMIT: i64 = 1000;

    pub fn parse(
        prefix: Option<String>,
        cursor: Option<&str>,
        limit: Option<i64>,
        include_deleted: bool,
    ) -> Result<Self, ValidationError> {
        let limit = limit.unwrap_or(100);
        if !(1..=Self::MAX_LIMIT).contains(&limit) {
            return Err(ValidationError::new("invalid_limit", "limit must be 1 to 1000"));
        }
        let prefix = prefix.filter(|p| !p.is_empty());
        if let Some(p) = &prefix {
            if !p.starts_with('/') || p.len() > FilePath::MAX_BYTES || p.contains('\0') {
                return Err(ValidationError::new(
                    "invalid_prefix",
                    "prefix must start with / and be a path's beginning",
                ));
            }
        }
        let cursor = cursor.filter(|c| !c.is_empty()).map(Cursor::decode).transpose()?;
        Ok(Self { prefix, cursor, limit, include_deleted })
    }
}

/// One page of files in path order, and the head it was read at: the page
/// and the head come from one snapshot, so following the log from that
/// head misses nothing. One statement (the caller's access, the head and the
/// page together), so one round trip and one snapshot without a
/// transaction around it.
pub async fn list(
    client: &mut Object,
    caller: &Caller,
    project_id: Uuid,
    q: &FilesQuery,
) -> Result<FilesPage, DomainError> {
    let prefix = q.prefix.as_deref().unwrap_or("");
    // An upper bound lets the index scan stop at the end of the prefix.
    let upper: Option<String> = prefix.as_bytes().last().filter(|b| **b < 0x7f).map(|b| {
        let mut upper = prefix[..prefix.len() - 1].to_owned();
        upper.push((b + 1) as char);
        upper
    });
    let after = q.cursor.as_ref().map_or("", |c| c.0.as_str());
    let live_only = if q.include_deleted { "" } else { "AND NOT deleted" };
    // No row: the caller may not see the project. One row with no path: a
    // page with no files.
    let stmt = client
        .prepare_cached(&format!(
            "SELECT h.head_seq, f.path, f.size, f.hash, f.mime_type, f.modified_at, f.version, f.updated_seq, f.deleted
             FROM project_members m
             JOIN projects p ON p.id = m.project_id AND p.archived_at IS NULL
             JOIN project_heads h ON h.project_id = m.project_id
             LEFT JOIN LATERAL (
                 SELECT path, size, hash, mime_type, modified_at, version, updated_seq, deleted
                 FROM remote_files
                 WHERE project_id = $1 AND path > $2 AND path >= $3 AND ($4::text IS NULL OR path < $4)
                   AND starts_with(path, $3) {live_only}
                 ORDER BY path
                 LIMIT $5) f ON true
             WHERE m.project_id = $1 AND m.user_id = $6
             ORDER BY f.path"
        ))
        .await?;
    let rows = client.query(&stmt, &[&project_id, &after, &prefix, &upper, &(q.limit + 1), &caller.user_id]).await?;
    let head_seq: i64 = rows.first().ok_or_else(|| DomainError::not_found("project"))?.get(0);
    let files: Vec<RemoteFile> = rows
        .iter()
        .filter(|r| r.get::<_, Option<&str>>(1).is_some())
        .map(|r| RemoteFile {
            path: r.get(1),
            size: r.get(2),
            hash: r.get(3),
            mime_type: r.get(4),
            modified_at: r.get::<_, Option<DateTime<Utc>>>(5),
            version: r.get(6),
            updated_seq: r.get(7),
            deleted: r.get(8),
        })
        .collect();
    let more = files.len() as i64 > q.limit;
    let files: Vec<RemoteFile> = files.into_iter().take(q.limit as usize).collect();
    let next_cursor = more.then(|| Cursor(files.last().expect("a full page").path.clone()).encode());
    Ok(FilesPage { files, next_cursor, head_seq })
}
