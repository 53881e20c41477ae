//! The relay's rules: who uploads and downloads which chunks, the per-project
//! quota, and retention. The bytes themselves are `relay::ChunkStore`'s.

use chrono::Duration;
use uuid::Uuid;

use super::files::{not_a_source, require_source_device};
use super::projects::{access, allowed};
use super::{Caller, DomainError, Rejection};
use crate::protocol::files::Blake3Hash;
use crate::store::{GenericClient, Pool};

/// The channel chunk arrivals are announced on; payload `<project_id>:<hash>`.
pub const CHUNKS_CHANNEL: &str = "ferry_chunks";

/// What an upload stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub size: i64,
    /// Size of the zstd variant kept beside it, when it is smaller.
    pub zstd_size: Option<i64>,
}

/// Most hashes one `chunks/missing` call asks about.
pub const MAX_HASHES: usize = 10_000;

#[derive(Debug, Clone, Copy)]
pub struct RelayPolicy {
    /// Bytes of chunks (with their zstd variants) a project may keep.
    pub quota_bytes: i64,
    /// A chunk no current file or open transfer needs is removed once
    /// unused this long.
    pub retention: Duration,
}

impl Default for RelayPolicy {
    fn default() -> Self {
        Self { quota_bytes: 10 * 1024 * 1024 * 1024, retention: Duration::hours(24) }
    }
}

fn quota_exceeded(policy: &RelayPolicy) -> DomainError {
    DomainError::rejected(
        Rejection::InsufficientStorage,
        "quota_exceeded",
        format!("the project's relay quota of {} bytes is used up", policy.quota_bytes),
    )
}

/// The hashes of `hashes` the relay does not hold for the project.
pub async fn missing(
    client: &impl GenericClient,
    caller: &Caller,
    project_id: Uuid,
    hashes: &[String],
) -> Result<Vec<String>, DomainError> {
    if hashes.len() > MAX_HASHES {
        return Err(DomainError::rejected(
            Rejection::TooLarge,
            "too_many_hashes",
            format!("at most {MAX_HASHES} hashes per call"),
        ));
    }
    for hash in hashes {
        Blake3Hash::parse(hash)?;
    }
    access(client, project_id, caller, false).await?;
    require_source_device(client, project_id, caller).await?;
    let rows = client
        .query(
            "SELECT h FROM unnest($2::text[]) WITH ORDINALITY AS u(h, i)
             WHERE NOT EXISTS (SELECT 1 FROM relay_chunks r WHERE r.project_id = $1 AND r.hash = u.h)
             ORDER BY i",
            &[&project_id, &hashes],
        )
        .await?;
    let mut seen = std::collections::HashSet::new();
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).filter(|h| seen.insert(h.clone())).collect())
}

/// Before an upload: may the caller upload, and is the chunk new? Answers
/// the stored size when the relay has it already (nothing to write).
pub async fn plan_upload(
    client: &impl GenericClient,
    caller: &Caller,
    policy: &RelayPolicy,
    project_id: Uuid,
    hash: &str,
    declared_size: Option<i64>,
) -> Result<Option<i64>, DomainError> {
    let hash = Blake3Hash::parse(hash)?;
    let stmt = client.prepare_cached(PLAN_UPLOAD).await?;
    let row = client.query_one(&stmt, &[&project_id, &hash.as_str(), &caller.user_id, &caller.device_id]).await?;
    allowed(row.get(0), false)?;
    if !row.get::<_, bool>(1) {
        return Err(not_a_source());
    }
    if let Some(size) = row.get::<_, Option<i64>>(2) {
        return Ok(Some(size));
    }
    if row.get::<_, i64>(3) + declared_size.unwrap_or(0) > policy.quota_bytes {
        return Err(quota_exceeded(policy));
    }
    Ok(None)
}

/// [`plan_upload`] in one round trip: the caller's role, whether it came
/// with a source device's token, the use of the chunk when the relay holds
/// it (recorded only for an allowed caller), and the project's usage (kept
/// in `relay_usage`, migration V0021).
const PLAN_UPLOAD: &str = "
    WITH role AS (
        SELECT m.role FROM project_members m JOIN projects p ON p.id = m.project_id
        WHERE m.project_id = $1 AND m.user_id = $3 AND p.archived_at IS NULL
    ), source AS (
        SELECT EXISTS (SELECT 1 FROM project_devices
                       WHERE project_id = $1 AND device_id = $4 AND role = 'source') AS ok
    ), known AS (
        UPDATE relay_chunks SET last_used_at = now()
        WHERE project_id = $1 AND hash = $2 AND EXISTS (SELECT 1 FROM role) AND (SELECT ok FROM source)
        RETURNING size
    )
    SELECT (SELECT role FROM role), (SELECT ok FROM source), (SELECT size FROM known),
           coalesce((SELECT bytes FROM relay_usage WHERE project_id = $1), 0)";

/// After the bytes are stored: records the chunk, unless that would pass
/// the quota (then the caller removes the bytes). Uploads to one project
/// take turns in `relay_record_chunk` (migrations V0008, V0021), so racing uploads
/// cannot both slip under it; one statement, committed at once.
pub async fn record_upload(
    pool: &Pool,
    policy: &RelayPolicy,
    project_id: Uuid,
    hash: &str,
    stored: Stored,
) -> Result<(), DomainError> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached("SELECT relay_record_chunk($1, $2, $3, $4, $5, $6)").await?;
    let recorded: bool = client
        .query_one(&stmt, &[&project_id, &hash, &stored.size, &stored.zstd_size, &policy.quota_bytes, &CHUNKS_CHANNEL])
        .await?
        .get(0);
    if !recorded {
        return Err(quota_exceeded(policy));
    }
    Ok(())
}

/// A chunk the caller may download: it belongs to a current file of the
/// project or to one of its open transfers, and the relay holds it.
#[derive(Debug, Clone, Copy)]
pub struct ChunkInfo {
    pub size: i64,
    pub zstd_size: Option<i64>,
}

/// What a download finds of a chunk of the project.
#[derive(Debug, Clone, Copy)]
pub enum Lookup {
    /// The relay holds it, and the caller may have it.
    Held(ChunkInfo),
    /// Not on the relay yet, but it belongs to a current file or an open
    /// transfer of the project: worth waiting for.
    Expected,
}

impl Lookup {
    /// The chunk, or 404 when the relay does not hold it (yet).
    pub fn held(self) -> Result<ChunkInfo, DomainError> {
        match self {
            Lookup::Held(info) => Ok(info),
            Lookup::Expected => Err(chunk_not_found()),
        }
    }
}

fn chunk_not_found() -> DomainError {
    DomainError::rejected(Rejection::NotFound, "chunk_not_found", "the relay has no such chunk for you")
}

/// A chunk for a download, in one round trip (it runs for every relayed
/// chunk, often twice: before and after waiting for it): whether the
/// caller is in the project, whether the chunk belongs to its files or open
/// transfers, and, when the relay holds it, its sizes. 404 for a project
/// the caller is not in and for a chunk that is not the project's.
pub async fn plan_download(
    client: &impl GenericClient,
    caller: &Caller,
    project_id: Uuid,
    hash: &str,
) -> Result<Lookup, DomainError> {
    let hash = Blake3Hash::parse(hash)?;
    let stmt = client.prepare_cached(PLAN_DOWNLOAD).await?;
    let row = client.query_one(&stmt, &[&project_id, &hash.as_str(), &caller.user_id]).await?;
    allowed(row.get(0), false)?;
    if !row.get::<_, bool>(1) {
        return Err(chunk_not_found());
    }
    Ok(match row.get::<_, Option<i64>>(2) {
        Some(size) => Lookup::Held(ChunkInfo { size, zstd_size: row.get(3) }),
        None => Lookup::Expected,
    })
}

/// [`plan_download`]'s statement. The use of a held chunk is recorded at
/// most once a minute (retention counts in hours): most downloads write
/// nothing, so commit no WAL.
const PLAN_DOWNLOAD: &str = "
    WITH role AS (
        SELECT m.role FROM project_members m JOIN projects p ON p.id = m.project_id
        WHERE m.project_id = $1 AND m.user_id = $3 AND p.archived_at IS NULL
    ), wanted AS (
        SELECT EXISTS (SELECT 1 FROM role)
           AND (EXISTS (SELECT 1 FROM file_chunks f WHERE f.hash = decode($2, 'hex') AND f.project_id = $1)
                OR EXISTS (SELECT 1 FROM file_transfers t
                           WHERE t.project_id = $1 AND t.status IN ('pending', 'in_progress')
                             AND t.chunks_needed ? $2)) AS ok
    ), chunk AS (
        SELECT r.size, r.zstd_size, r.last_used_at FROM relay_chunks r
        WHERE r.project_id = $1 AND r.hash = $2 AND (SELECT ok FROM wanted)
    ), used AS (
        UPDATE relay_chunks SET last_used_at = now()
        WHERE project_id = $1 AND hash = $2
          AND EXISTS (SELECT 1 FROM chunk WHERE last_used_at < now() - interval '1 minute')
    )
    SELECT (SELECT role FROM role), (SELECT ok FROM wanted), (SELECT size FROM chunk), (SELECT zstd_size FROM chunk)";

/// Forgets chunks nothing needs any more; answers them, for the caller to
/// delete their bytes. Safe with several servers: each row is deleted once.
pub async fn expire(pool: &Pool, policy: &RelayPolicy) -> Result<Vec<(Uuid, String)>, DomainError> {
    let cutoff = chrono::Utc::now() - policy.retention;
    let rows = pool
        .get()
        .await?
        .query(
            "DELETE FROM relay_chunks r
             WHERE r.last_used_at < $1
               AND NOT EXISTS (SELECT 1 FROM file_chunks f WHERE f.hash = decode(r.hash, 'hex') AND f.project_id = r.project_id)
               AND NOT EXISTS (SELECT 1 FROM file_transfers t
                               WHERE t.project_id = r.project_id AND t.status IN ('pending', 'in_progress')
                                 AND t.chunks_needed ? r.hash)
             RETURNING r.project_id, r.hash",
            &[&cutoff],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
