//! `ferry pull`, the member's side: request each file as a delta against
//! the chunks already in DIR (its files and the chunks kept from an earlier,
//! interrupted pull), fetch the missing chunks from the relay, verify each
//! one, assemble the file atomically, verify it whole, report it, and keep
//! `DIR/.ferry/manifest.json`.
//!
//! DIR/.ferry holds: `index.json` (the scanner's index of DIR, so unchanged
//! files are not hashed again), `chunks/` (verified chunks fetched but not
//! yet part of a finished pull: a killed pull resumes from them), `tmp/`
//! (files being assembled) and `manifest.json`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;
use uuid::Uuid;

use super::api::Api;
use super::cli::{resolve_project, Session};
use super::direct::Peer;
use super::output::{human_bytes, Output};
use super::scan::{self, Files, Index, STATE_DIR};
use super::ClientError;
use crate::protocol::files::{ChunkRef, FilePath, RemoteFile};
use crate::protocol::transfers::{DownloadRequest, RequestMode, Transfer, TransferReport, TransferStatus};

const MANIFEST_FILE: &str = "manifest.json";
const CHUNKS_DIR: &str = "chunks";
const TMP_DIR: &str = "tmp";
/// Files pulled at once.
const FILES_AT_ONCE: usize = 3;
/// Chunks of one file fetched at once.
const CHUNKS_AT_ONCE: usize = 8;
/// A chunk whose bytes do not hash to its name is fetched again this often.
const BAD_CHUNK_TRIES: u32 = 3;
/// How often the transfer's state is looked at while its chunks are awaited.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// What `ferry pull` was asked.
#[derive(Debug, Clone)]
pub struct PullRequest {
    pub project: String,
    pub paths: Vec<String>,
    pub to: PathBuf,
    /// Longest wait for the source to put a chunk on the relay.
    pub wait: Duration,
}

/// `DIR/.ferry/manifest.json`: what was pulled, by project path.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(default)]
    pub version: u32,
    #[serde(default)]
    pub files: BTreeMap<String, ManifestEntry>,
    /// `ferry sync`: the seq of the last project event applied to DIR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub project_id: Uuid,
    pub path: String,
    pub local_path: PathBuf,
    pub hash: String,
    pub size: u64,
    pub synced_at: DateTime<Utc>,
}

impl Manifest {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_DIR).join(MANIFEST_FILE)
    }

    pub fn load(dir: &Path) -> Self {
        std::fs::read(Self::path(dir)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let path = Self::path(dir);
        let tmp = dir.join(STATE_DIR).join(format!("{MANIFEST_FILE}.{}.tmp", Uuid::new_v4().simple()));
        let bytes =
            serde_json::to_vec_pretty(&Manifest { version: 1, files: self.files.clone(), last_seq: self.last_seq })
                .map_err(std::io::Error::other)?;
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(tmp, path)
    }
}

/// Verified chunks kept in `DIR/.ferry/chunks/<hash>`.
struct ChunkStore {
    dir: PathBuf,
}

impl ChunkStore {
    fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(hash)
    }

    fn hashes(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return vec![];
        };
        entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .collect()
    }

    /// The chunk's bytes when kept and still sound.
    fn get(&self, hash: &str) -> Option<Vec<u8>> {
        let bytes = self.read(hash)?;
        if blake3::hash(&bytes).to_hex().as_str() == hash {
            Some(bytes)
        } else {
            let _ = std::fs::remove_file(self.path(hash));
            None
        }
    }

    /// The chunk's bytes when kept, unchecked: for chunks verified as they
    /// were kept by this pull (the whole file's hash is checked in the end).
    fn read(&self, hash: &str) -> Option<Vec<u8>> {
        std::fs::read(self.path(hash)).ok()
    }

    fn put(&self, hash: &str, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = self.dir.join(format!("{hash}.{}.tmp", Uuid::new_v4().simple()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(tmp, self.path(hash))
    }

    fn clear(&self) {
        for hash in self.hashes() {
            let _ = std::fs::remove_file(self.path(&hash));
        }
    }
}

struct Ctx {
    api: Api,
    project: Uuid,
    dir: PathBuf,
    out: Output,
    /// Chunk hash → a local file holding it, at (offset, size).
    local: HashMap<String, (PathBuf, u64, u64)>,
    store: ChunkStore,
    have: Vec<String>,
    wait: Duration,
    bar: ProgressBar,
    manifest: Mutex<Manifest>,
    index: Mutex<Files>,
}

#[derive(Debug, Default)]
struct Pulled {
    transferred: u64,
    /// Of `transferred`: fetched from the owner's machine directly.
    direct: u64,
    reused: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `file` is one of the asked `paths` (a file, or a folder prefix).
fn wanted(paths: &[String], file: &str) -> bool {
    paths.is_empty()
        || paths.iter().any(|p| {
            let p = p.trim_end_matches('/');
            p.is_empty() || file == p || file.strip_prefix(p).is_some_and(|r| r.starts_with('/'))
        })
}

fn normalize(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}

pub async fn pull(session: &Session, out: Output, req: PullRequest) -> Result<(), ClientError> {
    let api = session.user()?;
    let project = resolve_project(&api, &req.project).await?;
    let s = pull_into(&api, project, &req.to, &req.paths, req.wait, out).await?;
    out.result(
        json!({"files": s.files, "unchanged": s.unchanged, "bytes_transferred": s.bytes_transferred,
               "bytes_direct": s.bytes_direct, "bytes_reused": s.bytes_reused}),
        || {
            format!(
                "Pulled {} file(s) into {} ({} transferred, {} of it directly from the owner's machine; {} reused from local copies); {} already up to date.",
                s.files,
                s.dir.display(),
                human_bytes(s.bytes_transferred),
                human_bytes(s.bytes_direct),
                human_bytes(s.bytes_reused),
                s.unchanged
            )
        },
    );
    Ok(())
}

/// What one pull did.
#[derive(Debug, Clone)]
pub struct PullSummary {
    pub dir: PathBuf,
    pub files: usize,
    pub unchanged: usize,
    pub bytes_transferred: u64,
    /// Of `bytes_transferred`: fetched from the owner's machine directly.
    pub bytes_direct: u64,
    pub bytes_reused: u64,
}

/// Pulls the files of `project` matching `paths` (all when empty) into
/// `to`; prints only notes and warnings (the caller reports the result).
/// Nothing matching `paths` is a `ClientError::Usage`.
pub async fn pull_into(
    api: &Api,
    project: Uuid,
    to: &Path,
    paths: &[String],
    wait: Duration,
    out: Output,
) -> Result<PullSummary, ClientError> {
    let api = api.clone();
    let dir = to.to_path_buf();
    let state = dir.join(STATE_DIR);
    for sub in [CHUNKS_DIR, TMP_DIR] {
        let d = state.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| ClientError::io(&d, e))?;
    }
    let dir = dir.canonicalize().map_err(|e| ClientError::io(&dir, e))?;

    let paths: Vec<String> = paths.iter().map(|p| normalize(p)).collect();
    // One path (a file, or a folder; `sync` pulls one file per change): list
    // only what starts with it, not the whole project.
    let prefix = match paths.as_slice() {
        [one] => Some(one.trim_end_matches('/')).filter(|p| !p.is_empty()),
        _ => None,
    };
    let remote: Vec<RemoteFile> =
        api.files_under(project, prefix).await?.into_iter().filter(|f| !f.deleted && wanted(&paths, &f.path)).collect();
    if remote.is_empty() && !paths.is_empty() {
        return Err(ClientError::Usage(format!("nothing in the project matches {}", paths.join(", "))));
    }

    // What DIR already holds, chunk by chunk.
    let scan_dir = dir.clone();
    let scanned = tokio::task::spawn_blocking(move || {
        let index = Index::load(&scan_dir);
        scan::scan(&scan_dir, &index.files, &ProgressBar::hidden())
    })
    .await
    .map_err(|e| ClientError::Other(e.to_string()))?;
    for w in &scanned.warnings {
        out.warn(w);
    }
    let mut local = HashMap::new();
    for (path, entry) in &scanned.files {
        let abs = dir.join(path.trim_start_matches('/'));
        for c in &entry.chunks {
            local.entry(c.hash.clone()).or_insert((abs.clone(), c.offset, c.size));
        }
        if entry.size > 0 {
            local.entry(entry.hash.clone()).or_insert((abs.clone(), 0, entry.size));
        }
    }
    let store = ChunkStore { dir: state.join(CHUNKS_DIR) };
    let mut have: HashSet<String> = local.keys().cloned().collect();
    have.extend(store.hashes());
    let mut have: Vec<String> = have.into_iter().collect();
    have.sort();

    let mut manifest = Manifest::load(&dir);
    let mut todo = Vec::new();
    let mut unchanged = 0usize;
    for f in remote {
        match scanned.files.get(&f.path) {
            Some(e) if e.hash == f.hash && e.size == f.size as u64 => {
                unchanged += 1;
                manifest.files.entry(f.path.clone()).or_insert(ManifestEntry {
                    project_id: project,
                    local_path: dir.join(f.path.trim_start_matches('/')),
                    path: f.path.clone(),
                    hash: f.hash.clone(),
                    size: f.size as u64,
                    synced_at: Utc::now(),
                });
            }
            _ => todo.push(f),
        }
    }
    let total: u64 = todo.iter().map(|f| f.size.max(0) as u64).sum();
    let bar = out.bytes_bar("pulling");
    bar.set_length(total);

    let ctx = Arc::new(Ctx {
        api,
        project,
        dir: dir.clone(),
        out,
        local,
        store,
        have,
        wait,
        bar,
        manifest: Mutex::new(manifest),
        index: Mutex::new(scanned.files),
    });
    let count = todo.len();
    let results: Vec<(String, Result<Pulled, String>)> = futures_util::stream::iter(todo)
        .map(|f| {
            let ctx = ctx.clone();
            async move {
                let path = f.path.clone();
                let r = pull_file(&ctx, &f).await;
                match &r {
                    Ok(p) => ctx.bar.suspend(|| {
                        ctx.out.note(&format!(
                            "pulled {path} ({} transferred, {} directly; {} reused)",
                            human_bytes(p.transferred),
                            human_bytes(p.direct),
                            human_bytes(p.reused)
                        ))
                    }),
                    Err(why) => ctx.bar.suspend(|| ctx.out.warn(&format!("{path}: not pulled: {why}"))),
                }
                (path, r)
            }
        })
        .buffer_unordered(FILES_AT_ONCE)
        .collect()
        .await;
    ctx.bar.finish_and_clear();

    let (mut transferred, mut direct, mut reused, mut done) = (0u64, 0u64, 0u64, 0usize);
    let mut failed = Vec::new();
    for (path, r) in results {
        match r {
            Ok(p) => {
                transferred += p.transferred;
                direct += p.direct;
                reused += p.reused;
                done += 1;
            }
            Err(why) => failed.push(format!("{path}: {why}")),
        }
    }
    {
        let m = lock(&ctx.manifest);
        m.save(&dir).map_err(|e| ClientError::io(&Manifest::path(&dir), e))?;
    }
    let _ = Index::save(&dir, &lock(&ctx.index));
    if !failed.is_empty() {
        return Err(ClientError::Other(format!(
            "{} of {count} files could not be pulled (run `ferry pull` again to resume):\n  {}",
            failed.len(),
            failed.join("\n  ")
        )));
    }
    // Every chunk kept for resuming is now part of a file in DIR.
    ctx.store.clear();
    Ok(PullSummary {
        dir,
        files: done,
        unchanged,
        bytes_transferred: transferred,
        bytes_direct: direct,
        bytes_reused: reused,
    })
}

/// Why fetching stopped short.
enum Stop {
    /// The transfer failed: worth a retry through the API.
    Failed(String),
    /// Not worth retrying.
    Fatal(String),
}

async fn pull_file(ctx: &Ctx, file: &RemoteFile) -> Result<Pulled, String> {
    let local_rel = FilePath::parse(&file.path).map_err(|e| e.to_string())?;
    let target = ctx.dir.join(local_rel.as_str().trim_start_matches('/'));
    let size = file.size.max(0) as u64;

    let mut res = ctx
        .api
        .request_download(
            ctx.project,
            &DownloadRequest {
                file_path: file.path.clone(),
                file_hash: Some(file.hash.clone()),
                request_mode: RequestMode::Delta,
                target_device_id: None,
                have_chunks: ctx.have.clone(),
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    // A server that does not say the file's chunk order: ask for all of it
    // and take `chunks_needed` as the order.
    let order: Vec<ChunkRef> = if !res.file.chunks.is_empty() || size == 0 {
        res.file.chunks.clone()
    } else {
        let _ = ctx.api.cancel_transfer(ctx.project, res.download_id).await;
        res = ctx
            .api
            .request_download(
                ctx.project,
                &DownloadRequest {
                    file_path: file.path.clone(),
                    file_hash: Some(file.hash.clone()),
                    request_mode: RequestMode::Full,
                    target_device_id: None,
                    have_chunks: vec![],
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        res.transfer_info.chunks_needed.iter().map(|h| ChunkRef { hash: h.clone(), size: -1 }).collect()
    };
    let transfer = res.download_id;
    let peer = Peer::for_transfer(&res.transfer_info);

    // Fetch what is needed and not already kept (directly from the owner's
    // machine while that works, else from the relay), retrying the transfer
    // through the API when it fails.
    let mut fetched: HashMap<String, Via> = HashMap::new();
    loop {
        let needed: Vec<String> = res
            .transfer_info
            .chunks_needed
            .iter()
            .filter(|h| !fetched.contains_key(*h) && !ctx.store.path(h).is_file())
            .cloned()
            .collect();
        let results: Vec<Result<(String, Via), Stop>> = futures_util::stream::iter(needed)
            .map(|h| fetch_chunk(ctx, &file.path, transfer, peer.as_ref(), h))
            .buffer_unordered(CHUNKS_AT_ONCE)
            .collect()
            .await;
        let mut stop = None;
        for r in results {
            match r {
                Ok((hash, via)) => {
                    fetched.insert(hash, via);
                }
                Err(s) => {
                    if stop.is_none() || matches!(s, Stop::Fatal(_)) {
                        stop = Some(s);
                    }
                }
            }
        }
        match stop {
            None => break,
            Some(Stop::Fatal(why)) => {
                // Given up: the source need not provide the rest.
                let _ = ctx.api.cancel_transfer(ctx.project, transfer).await;
                return Err(why);
            }
            Some(Stop::Failed(why)) => match fail_and_retry(ctx, transfer, &why).await {
                Ok(t) => {
                    ctx.out.note(&format!("{}: transfer failed ({why}); retrying (attempt {})", file.path, t.attempts))
                }
                Err(e) => return Err(format!("{why} (no retry: {e})")),
            },
        }
    }

    // Assemble in DIR/.ferry/tmp, hashing as it goes.
    let tmp = ctx.dir.join(STATE_DIR).join(TMP_DIR).join(Uuid::new_v4().simple().to_string());
    let assembled = assemble(ctx, transfer, &order, &fetched, &tmp).await;
    let (hash, written, transferred, direct) = match assembled {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if hash != file.hash || written != size {
        let _ = std::fs::remove_file(&tmp);
        // The server records the mismatch (the transfer fails).
        let _ = ctx.api.verify_transfer(ctx.project, transfer, &hash).await;
        return Err(format!(
            "the assembled file does not match (BLAKE3 {hash}, {written} bytes; expected {}, {size} bytes)",
            file.hash
        ));
    }
    if let Some(modified) = file.modified_at {
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&tmp) {
            let _ = f.set_modified(modified.into());
        }
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::rename(&tmp, &target).map_err(|e| format!("{}: {e}", target.display()))?;

    // The index knows the new file: the next pull does not hash it again.
    if let Ok((s, mtime_ns, ino)) = scan::stat_path(&target) {
        let mut offset = 0;
        let chunks = order
            .iter()
            .filter(|c| c.size >= 0)
            .map(|c| {
                let chunk = scan::Chunk { hash: c.hash.clone(), offset, size: c.size as u64 };
                offset += c.size as u64;
                chunk
            })
            .collect::<Vec<_>>();
        if offset == s {
            lock(&ctx.index)
                .insert(file.path.clone(), scan::Entry { size: s, mtime_ns, ino, hash: hash.clone(), chunks });
        }
    }

    let t = ctx
        .api
        .verify_transfer(ctx.project, transfer, &hash)
        .await
        .map_err(|e| format!("written, but the server did not take the verification: {e}"))?;
    if t.status != TransferStatus::Completed {
        return Err(format!(
            "written, but the server says the transfer is {} ({})",
            t.status.as_str(),
            t.error_message.unwrap_or_default()
        ));
    }
    {
        let mut m = lock(&ctx.manifest);
        m.files.insert(
            file.path.clone(),
            ManifestEntry {
                project_id: ctx.project,
                path: file.path.clone(),
                local_path: target,
                hash,
                size,
                synced_at: Utc::now(),
            },
        );
        let _ = m.save(&ctx.dir);
    }
    Ok(Pulled { transferred, direct, reused: size.saturating_sub(transferred) })
}

/// Records that this attempt failed on the member's side (the source may
/// have failed it already), then asks for another.
async fn fail_and_retry(ctx: &Ctx, transfer: Uuid, why: &str) -> Result<Transfer, ClientError> {
    let failed = TransferReport {
        status: Some(TransferStatus::Failed),
        bytes_transferred: None,
        error_message: Some(why.to_owned()),
    };
    match ctx.api.report_transfer(ctx.project, transfer, &failed).await {
        Ok(_) | Err(ClientError::Api { status: 409, .. }) => {}
        Err(e) => return Err(e),
    }
    ctx.api.retry_transfer(ctx.project, transfer).await
}

/// Where a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Direct,
    Relay,
}

/// Fetches one chunk into the store: directly from the owner's machine
/// while that works, else from the relay, waiting for the source to put it
/// there.
async fn fetch_chunk(
    ctx: &Ctx,
    path: &str,
    transfer: Uuid,
    peer: Option<&Peer>,
    hash: String,
) -> Result<(String, Via), Stop> {
    let deadline = Instant::now() + ctx.wait;
    let mut bad = 0;
    let mut delay = Duration::from_millis(20);
    let mut next_status = Instant::now() + STATUS_EVERY;
    loop {
        let asked = Instant::now();
        let fetched = match peer.filter(|p| !p.given_up()) {
            Some(peer) => match peer.fetch(&hash).await {
                Ok(bytes) => Some((bytes, Via::Direct)),
                Err(why) => {
                    if peer.announce_fallback() {
                        ctx.bar.suspend(|| {
                            ctx.out.note(&format!(
                                "{path}: the owner's machine cannot be reached directly ({why}); using the relay"
                            ))
                        });
                    }
                    continue;
                }
            },
            None => match ctx.api.get_chunk(ctx.project, &hash, Some(transfer), Some(relay_wait(deadline))).await {
                Ok(bytes) => bytes.map(|b| (b, Via::Relay)),
                Err(e @ ClientError::Api { status: 401 | 403, .. }) => return Err(Stop::Fatal(e.to_string())),
                // A network hiccup: wait and try again, within the deadline.
                Err(_) => None,
            },
        };
        if let Some((bytes, via)) = fetched {
            if blake3::hash(&bytes).to_hex().as_str() == hash {
                ctx.store.put(&hash, &bytes).map_err(|e| Stop::Fatal(format!("cannot keep chunk {hash}: {e}")))?;
                return Ok((hash, via));
            }
            bad += 1;
            if bad >= BAD_CHUNK_TRIES {
                return Err(Stop::Failed(format!("chunk {hash} failed verification {bad} times")));
            }
            continue;
        }
        if Instant::now() >= deadline {
            return Err(Stop::Fatal(format!(
                "the source did not provide chunk {hash} within {:?} (is the owner's `ferry share` running?)",
                ctx.wait
            )));
        }
        if Instant::now() >= next_status {
            next_status = Instant::now() + STATUS_EVERY;
            if let Ok(t) = ctx.api.transfer(ctx.project, transfer).await {
                let why = || t.error_message.clone().unwrap_or_else(|| t.status.as_str().to_owned());
                match t.status {
                    TransferStatus::Failed => return Err(Stop::Failed(why())),
                    TransferStatus::Cancelled | TransferStatus::Expired => {
                        return Err(Stop::Fatal(format!("the transfer was {}", why())))
                    }
                    _ => {}
                }
            }
        }
        // The server waited for the chunk to land (`?wait=`): ask again at
        // once. A miss that came back fast (a network error, an older
        // server without `wait`) backs off instead of spinning.
        if asked.elapsed() < RELAY_WAIT / 2 {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(250));
        }
    }
}

/// Longest one relay request waits on the server for a chunk to land: short
/// enough to look at the transfer's state (failed, cancelled) between.
const RELAY_WAIT: Duration = Duration::from_secs(5);

/// The server-side wait for the next relay request: whole seconds, within
/// the pull's own deadline.
fn relay_wait(deadline: Instant) -> Duration {
    RELAY_WAIT.min(deadline.saturating_duration_since(Instant::now())).max(Duration::from_secs(1))
}

/// Writes the file at `tmp` from kept, local and (as a last resort) relay
/// chunks in order; answers its BLAKE3, its size, the bytes fetched now and
/// of those the bytes fetched directly.
async fn assemble(
    ctx: &Ctx,
    transfer: Uuid,
    order: &[ChunkRef],
    fetched: &HashMap<String, Via>,
    tmp: &Path,
) -> Result<(String, u64, u64, u64), String> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(tmp).map_err(|e| format!("{}: {e}", tmp.display()))?);
    let mut hasher = blake3::Hasher::new();
    let (mut written, mut transferred, mut direct) = (0u64, 0u64, 0u64);
    for c in order {
        let mut via = fetched.get(&c.hash).copied();
        let mut bytes = if via.is_some() { ctx.store.read(&c.hash) } else { ctx.store.get(&c.hash) };
        if bytes.is_none() {
            bytes = ctx.local.get(&c.hash).and_then(|(path, offset, size)| {
                scan::read_at(path, *offset, *size).ok().filter(|b| blake3::hash(b).to_hex().as_str() == c.hash)
            });
        }
        if bytes.is_none() {
            // A local copy changed since it was scanned: the relay may still have it.
            bytes = ctx
                .api
                .get_chunk(ctx.project, &c.hash, Some(transfer), None)
                .await
                .ok()
                .flatten()
                .filter(|b| blake3::hash(b).to_hex().as_str() == c.hash)
                .map(Vec::from);
            via = Some(Via::Relay);
        }
        let Some(bytes) = bytes else {
            return Err(format!("chunk {} is neither here nor on the relay", c.hash));
        };
        if let Some(via) = via {
            transferred += bytes.len() as u64;
            if via == Via::Direct {
                direct += bytes.len() as u64;
            }
        }
        hasher.update(&bytes);
        out.write_all(&bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
        written += bytes.len() as u64;
        ctx.bar.inc(bytes.len() as u64);
    }
    let file = out.into_inner().map_err(|e| format!("{}: {e}", tmp.display()))?;
    file.sync_all().map_err(|e| format!("{}: {e}", tmp.display()))?;
    Ok((hasher.finalize().to_hex().to_string(), written, transferred, direct))
}

#[cfg(test)]
mod tests {
    use super::wanted;

    #[test]
    fn paths_select_files_and_folders() {
        let p = vec!["/docs".to_owned(), "/a.txt".to_owned()];
        assert!(wanted(&p, "/docs/x.md"));
        assert!(wanted(&p, "/a.txt"));
        assert!(!wanted(&p, "/docsx/y"));
        assert!(!wanted(&p, "/a.txt.bak"));
        assert!(wanted(&[], "/anything"));
        assert!(wanted(&["/".to_owned()], "/anything"));
    }
}
