//! `ferry pull`, the member's side: request each file as a delta against
//! the chunks already in DIR (its files, and the part written by an
//! earlier, interrupted pull), fetch the missing chunks (directly from the
//! owner's machine, else from the relay) several at once, verify each one
//! and write it straight to its offset in the file's part (see
//! [`super::part`]), hashing the whole file as it goes; then one fsync, an
//! atomic rename, the server's verification, and `DIR/.ferry/manifest.json`.
//!
//! DIR/.ferry holds: `index.json` (the scanner's index of DIR, so unchanged
//! files are not hashed again), `parts/` (what each unfinished part holds:
//! a killed pull resumes from it) and `manifest.json`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use uuid::Uuid;

use super::api::Api;
use super::cli::{resolve_project, Session};
use super::direct::Peer;
use super::output::{human_bytes, Output};
use super::part::{Part, Pos, Writer, PARTS_DIR};
use super::scan::{self, Files, Index, STATE_DIR};
use super::ClientError;
use crate::protocol::files::{Blake3Hash, ChunkRef, FilePath, RemoteFile};
use crate::protocol::transfers::{
    DownloadRequest, DownloadResponse, RequestMode, Transfer, TransferReport, TransferStatus,
};

const MANIFEST_FILE: &str = "manifest.json";
/// Left behind by pulls before parts: removed when found.
const OLD_CHUNKS_DIR: &str = "chunks";
/// Files pulled at once.
const FILES_AT_ONCE: usize = 3;
/// Chunks of one file in flight at once (fetched, or read from a local
/// copy), ahead of the one being written: enough to keep the network busy,
/// few enough that memory stays flat (at most this many chunks of ≤ 4 MiB).
const CHUNKS_AT_ONCE: usize = 8;
/// Verified chunks queued for the writer.
const WRITE_QUEUE: usize = 4;
/// A `--json` progress line of one file.
#[derive(Serialize)]
#[serde(tag = "event", rename = "progress")]
struct Progress<'a> {
    file_path: &'a str,
    bytes: u64,
    total_bytes: u64,
}

/// Least time between two `--json` progress lines of a file.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
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

struct Ctx {
    api: Api,
    project: Uuid,
    dir: PathBuf,
    out: Output,
    /// Chunk hash → a local file holding it, at (offset, size).
    local: HashMap<String, (PathBuf, u64, u64)>,
    /// Every chunk hash DIR's files hold.
    have: Vec<String>,
    wait: Duration,
    bar: ProgressBar,
    /// `--json` progress lines.
    progress: bool,
    manifest: Mutex<Manifest>,
    index: Mutex<Files>,
    /// The owner's computer as last said to be offline (its name and
    /// since when), so a wait says what it waits for, once.
    offline: Mutex<Option<String>>,
    /// This pull's transfers still open, for Ctrl-C to cancel.
    open: OpenTransfers,
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
    let open = OpenTransfers::default();
    let pulled = tokio::select! {
        pulled = pull_files(&api, project, &req.to, &req.paths, req.wait, out, Reporting { progress: true, open: open.clone() }) => pulled,
        _ = super::agent::stop_signal() => return Err(interrupted(&api, project, &req.to, &open).await),
    };
    let s = pulled?;
    out.result(&s, || {
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

/// The transfers a pull has asked for and not yet finished.
pub type OpenTransfers = Arc<Mutex<HashSet<Uuid>>>;

/// What a pull tells beyond its result: `--json` progress lines (`pull`,
/// not `sync`), and the transfers it has open (for Ctrl-C to cancel).
#[derive(Default)]
struct Reporting {
    progress: bool,
    open: OpenTransfers,
}

/// Ctrl-C (or SIGTERM) on a pull: its open transfers are cancelled, so the
/// owner's machine stops sending for no one; what arrived stays in part
/// files, which the same command takes up again.
async fn interrupted(api: &Api, project: Uuid, to: &Path, open: &OpenTransfers) -> ClientError {
    let asked: Vec<Uuid> = lock(open).drain().collect();
    let mut cancelled = 0;
    for transfer in asked {
        // One that ended meanwhile (given up on, say) answers 409: not counted.
        if api.cancel_transfer(project, transfer).await.is_ok() {
            cancelled += 1;
        }
    }
    let parts = std::fs::read_dir(to.join(STATE_DIR).join(PARTS_DIR)).map(|d| d.count()).unwrap_or(0);
    ClientError::Refused {
        code: "interrupted",
        message: format!(
            "stopped: {cancelled} open transfer(s) cancelled; what arrived is kept ({parts} file(s) in part), \
             and the same `ferry pull` resumes from it"
        ),
    }
}

/// What one pull did.
/// With `--json`, the `pull`'s result (without `dir`).
#[derive(Debug, Clone, Serialize)]
pub struct PullSummary {
    #[serde(skip)]
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
    // `ferry sync` prints one JSON line per applied change, nothing between.
    pull_files(api, project, to, paths, wait, out, Reporting::default()).await
}

/// [`pull_into`]; with `reporting.progress`, `--json` also prints each
/// file's progress as its bytes arrive (`{"event": "progress", ...}` lines).
async fn pull_files(
    api: &Api,
    project: Uuid,
    to: &Path,
    paths: &[String],
    wait: Duration,
    out: Output,
    reporting: Reporting,
) -> Result<PullSummary, ClientError> {
    let api = api.clone();
    let dir = to.to_path_buf();
    let parts = dir.join(STATE_DIR).join(PARTS_DIR);
    std::fs::create_dir_all(&parts).map_err(|e| ClientError::io(&parts, e))?;
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
    let mut have: Vec<String> = local.keys().cloned().collect();
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
        have,
        wait,
        bar,
        progress: reporting.progress && out.json,
        manifest: Mutex::new(manifest),
        index: Mutex::new(scanned.files),
        offline: Mutex::new(None),
        open: reporting.open,
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
    // Chunks kept by pulls before parts existed are of no use now.
    let _ = std::fs::remove_dir_all(dir.join(STATE_DIR).join(OLD_CHUNKS_DIR));
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
    /// The owner's machine stopped answering directly: the relay's turn.
    Fallback(String),
    /// Not worth retrying.
    Fatal(String),
}

/// Where a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Direct,
    Relay,
}

/// What to do for one position of the file, in order.
enum Step {
    /// Already in the part at this offset (resumed) or at another (the same
    /// bytes earlier in the file).
    InPart(Pos, u64),
    /// Copied from a file DIR holds, at (path, offset).
    Local(Pos, PathBuf, u64),
    Fetch(Pos),
}

/// A step done, for the writer.
enum Item {
    Arrived(Pos, bytes::Bytes, Option<Via>),
    InPart(Pos, u64),
}

/// What one attempt's writer did.
#[derive(Default)]
struct Written {
    /// Positions newly written (now in the part).
    positions: Vec<Pos>,
    transferred: u64,
    direct: u64,
}

async fn pull_file(ctx: &Ctx, file: &RemoteFile) -> Result<Pulled, String> {
    let local_rel = FilePath::parse(&file.path).map_err(|e| e.to_string())?;
    let target = ctx.dir.join(local_rel.as_str().trim_start_matches('/'));
    let size = file.size.max(0) as u64;
    let part = Arc::new(Part::for_target(&target, &file.path, &ctx.dir.join(STATE_DIR)));

    // What an earlier, interrupted pull of this version already wrote.
    let mut done: HashMap<u64, Pos> = {
        let (part, hash) = (part.clone(), file.hash.clone());
        tokio::task::spawn_blocking(move || part.resumable(&hash, size)).await.map_err(|e| e.to_string())?
    };
    if done.is_empty() {
        part.start(&file.hash, size, &file.path).map_err(|e| format!("{}: {e}", part.path.display()))?;
    }

    let mut res = request(ctx, file, &done).await?;
    // The file's chunks in order (a file pushed without a list is one chunk).
    let order: Vec<ChunkRef> = if res.file.chunks.is_empty() && size > 0 {
        vec![ChunkRef { hash: file.hash.clone(), size: size as i64 }]
    } else {
        res.file.chunks.clone()
    };
    let mut positions = Vec::with_capacity(order.len());
    let mut offset = 0u64;
    for c in &order {
        let len = u64::try_from(c.size).ok().filter(|n| *n > 0).ok_or("the server sent a chunk without a size")?;
        positions.push(Pos { offset, size: len, hash: c.hash.clone() });
        offset += len;
    }
    if offset != size {
        let _ = ctx.api.cancel_transfer(ctx.project, res.download_id).await;
        return Err(format!("the server's chunk list adds up to {offset} bytes, the file has {size}"));
    }

    let mut peer = Peer::for_transfer(&res.transfer_info).map(Arc::new);
    // Bytes of this transfer fetched directly (a fallback then re-asks for
    // only what is still lacking).
    let mut direct_now = 0u64;
    let (mut transferred, mut direct) = (0u64, 0u64);
    let hash = loop {
        let transfer = res.download_id;
        let needed: HashSet<String> = res.transfer_info.chunks_needed.iter().cloned().collect();
        let (written, outcome) =
            attempt(ctx, file, &part, &positions, &done, &needed, transfer, peer.clone(), size).await;
        transferred += written.transferred;
        direct += written.direct;
        direct_now += written.direct;
        for p in written.positions {
            done.insert(p.offset, p);
        }
        match outcome {
            Ok(hash) => break hash,
            Err(Stop::Fatal(why)) => {
                // Given up: the source need not provide the rest.
                let _ = ctx.api.cancel_transfer(ctx.project, transfer).await;
                return Err(why);
            }
            Err(Stop::Fallback(why)) => {
                ctx.bar.suspend(|| {
                    ctx.out.note(&format!(
                        "{}: the owner's machine cannot be reached directly ({why}); using the relay",
                        file.path
                    ))
                });
                peer = None;
                if direct_now > 0 {
                    // Part of it came directly: a new request, saying what
                    // is here now, so only the rest goes on the relay.
                    let _ = ctx.api.cancel_transfer(ctx.project, transfer).await;
                    res = request(ctx, file, &done).await?;
                    direct_now = 0;
                }
            }
            Err(Stop::Failed(why)) => match fail_and_retry(ctx, transfer, &why).await {
                Ok(t) => {
                    ctx.out.note(&format!("{}: transfer failed ({why}); retrying (attempt {})", file.path, t.attempts))
                }
                Err(e) => return Err(format!("{why} (no retry: {e})")),
            },
        }
    };
    let transfer = res.download_id;

    if hash != file.hash {
        // Every chunk checked, the whole does not: start afresh next time.
        part.remove();
        // The server records the mismatch (the transfer fails).
        let _ = ctx.api.verify_transfer(ctx.project, transfer, &hash).await;
        return Err(format!("the written file does not match (BLAKE3 {hash}; expected {})", file.hash));
    }
    if let Some(modified) = file.modified_at {
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&part.path) {
            let _ = f.set_modified(modified.into());
        }
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::rename(&part.path, &target).map_err(|e| format!("{}: {e}", target.display()))?;
    part.remove();

    // The index knows the new file: the next pull does not hash it again.
    if let Ok((s, mtime_ns, ino)) = scan::stat_path(&target) {
        if s == size {
            let chunks = positions
                .iter()
                .map(|p| scan::Chunk { hash: p.hash.clone(), offset: p.offset, size: p.size })
                .collect::<Vec<_>>();
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
    lock(&ctx.open).remove(&transfer);
    Ok(Pulled { transferred, direct, reused: size.saturating_sub(transferred) })
}

/// Asks for the file as a delta against DIR's chunks and those `done`.
async fn request(ctx: &Ctx, file: &RemoteFile, done: &HashMap<u64, Pos>) -> Result<DownloadResponse, String> {
    let mut have: HashSet<String> = ctx.have.iter().cloned().collect();
    have.extend(done.values().map(|p| p.hash.clone()));
    let mut have: Vec<String> = have.into_iter().collect();
    have.sort();
    ctx.api
        .request_download(
            ctx.project,
            &DownloadRequest {
                file_path: file.path.clone(),
                file_hash: Some(file.hash.clone()),
                request_mode: RequestMode::Delta,
                target_device_id: None,
                have_chunks: have,
            },
        )
        .await
        .inspect(|res| {
            lock(&ctx.open).insert(res.download_id);
        })
        .map_err(|e| e.to_string())
}

/// One pass over the file's positions in order: what is in the part stays,
/// what DIR holds is copied, the rest is fetched (several at once) and
/// written as it verifies, in order, by a writer on a blocking thread. The
/// whole file's BLAKE3 when every byte is in.
#[allow(clippy::too_many_arguments)]
async fn attempt(
    ctx: &Ctx,
    file: &RemoteFile,
    part: &Arc<Part>,
    positions: &[Pos],
    done: &HashMap<u64, Pos>,
    needed: &HashSet<String>,
    transfer: Uuid,
    peer: Option<Arc<Peer>>,
    size: u64,
) -> (Written, Result<String, Stop>) {
    // Where each chunk's bytes will already be in the part when the writer
    // reaches a later position holding the same chunk.
    let mut placed: HashMap<&str, u64> = done.values().map(|p| (p.hash.as_str(), p.offset)).collect();
    let mut steps = Vec::with_capacity(positions.len());
    for p in positions {
        let step = if done.contains_key(&p.offset) {
            Step::InPart(p.clone(), p.offset)
        } else if let Some(from) = placed.get(p.hash.as_str()) {
            Step::InPart(p.clone(), *from)
        } else if needed.contains(&p.hash) {
            Step::Fetch(p.clone())
        } else if let Some((path, offset, _)) = ctx.local.get(&p.hash) {
            Step::Local(p.clone(), path.clone(), *offset)
        } else {
            // The server thinks it is here and it is not: fetch it anyway.
            Step::Fetch(p.clone())
        };
        placed.entry(p.hash.as_str()).or_insert(p.offset);
        steps.push(step);
    }

    let (tx, rx) = tokio::sync::mpsc::channel::<Item>(WRITE_QUEUE);
    let writer = {
        let (part, bar, path) = (part.clone(), ctx.bar.clone(), file.path.clone());
        let events = ctx.progress.then_some(ctx.out);
        tokio::task::spawn_blocking(move || write_part(&part, size, rx, &bar, events, &path))
    };

    let mut stop = None;
    {
        let peer = peer.as_deref();
        let mut items = futures_util::stream::iter(steps)
            .map(|step| async move {
                Ok::<_, Stop>(match step {
                    Step::InPart(pos, from) => Item::InPart(pos, from),
                    Step::Local(pos, path, offset) => match read_local(&path, offset, &pos).await {
                        Some(bytes) => Item::Arrived(pos, bytes, None),
                        // Changed since it was scanned: the relay may still have it.
                        None => {
                            let (bytes, via) = fetch_chunk(ctx, transfer, peer, &pos.hash, false).await?;
                            Item::Arrived(pos, bytes, Some(via))
                        }
                    },
                    Step::Fetch(pos) => {
                        let (bytes, via) = fetch_chunk(ctx, transfer, peer, &pos.hash, true).await?;
                        Item::Arrived(pos, bytes, Some(via))
                    }
                })
            })
            .buffered(CHUNKS_AT_ONCE);
        while let Some(item) = items.next().await {
            match item {
                // The writer stopped (it says why below).
                Ok(item) => {
                    if tx.send(item).await.is_err() {
                        break;
                    }
                }
                Err(s) => {
                    stop = Some(s);
                    break;
                }
            }
        }
    }
    drop(tx);
    let (written, result) = match writer.await {
        Ok(v) => v,
        Err(e) => (Written::default(), Err(std::io::Error::other(e.to_string()))),
    };
    let outcome = match (stop, result) {
        (_, Err(e)) => Err(Stop::Fatal(format!("{}: {e}", part.path.display()))),
        (Some(s), _) => Err(s),
        (None, Ok(Some(hash))) => Ok(hash),
        (None, Ok(None)) => Err(Stop::Fatal("the file's chunks ended short of its size".into())),
    };
    (written, outcome)
}

/// The writer: takes the items in order, writes and records them, hashes
/// the whole file; fsyncs once when every byte is in.
fn write_part(
    part: &Part,
    size: u64,
    mut rx: tokio::sync::mpsc::Receiver<Item>,
    bar: &ProgressBar,
    events: Option<Output>,
    path: &str,
) -> (Written, std::io::Result<Option<String>>) {
    let mut written = Written::default();
    let mut w = match Writer::open(part, size) {
        Ok(w) => w,
        Err(e) => return (written, Err(e)),
    };
    let mut bytes_in = 0u64;
    // The first chunk is reported at once: progress shows from the start.
    let mut reported = None::<std::time::Instant>;
    let mut reported_bytes = 0;
    while let Some(item) = rx.blocking_recv() {
        let (pos, r) = match item {
            Item::Arrived(pos, bytes, via) => {
                let r = w.put(&pos, &bytes);
                if r.is_ok() {
                    if let Some(via) = via {
                        written.transferred += pos.size;
                        if via == Via::Direct {
                            written.direct += pos.size;
                        }
                    }
                    written.positions.push(pos.clone());
                }
                (pos, r)
            }
            Item::InPart(pos, from) => {
                let r = w.copy_from_part(&pos, from);
                if r.is_ok() && from != pos.offset {
                    written.positions.push(pos.clone());
                }
                (pos, r)
            }
        };
        if let Err(e) = r {
            return (written, Err(e));
        }
        bytes_in += pos.size;
        bar.inc(pos.size);
        if let Some(out) = events.filter(|_| reported.map_or(true, |at| at.elapsed() >= PROGRESS_EVERY)) {
            reported = Some(std::time::Instant::now());
            reported_bytes = bytes_in;
            out.event(Progress { file_path: path, bytes: bytes_in, total_bytes: size }, String::new);
        }
    }
    if !w.complete() {
        return (written, Ok(None));
    }
    if let Some(out) = events.filter(|_| reported_bytes != size) {
        out.event(Progress { file_path: path, bytes: size, total_bytes: size }, String::new);
    }
    let hash = w.finish().map(Some);
    (written, hash)
}

/// A chunk from a file DIR holds, when it still holds it.
async fn read_local(path: &Path, offset: u64, pos: &Pos) -> Option<bytes::Bytes> {
    let (path, size, hash) = (path.to_path_buf(), pos.size, pos.hash.clone());
    tokio::task::spawn_blocking(move || {
        let bytes = scan::read_at(&path, offset, size).ok()?;
        (Blake3Hash::of(&bytes) == *hash).then(|| bytes::Bytes::from(bytes))
    })
    .await
    .ok()
    .flatten()
}

/// Whether `bytes` hash to `hash`, worked out on a blocking thread (the
/// network tasks keep running).
async fn verified(bytes: bytes::Bytes, hash: &str) -> Option<bytes::Bytes> {
    let hash = hash.to_owned();
    tokio::task::spawn_blocking(move || (Blake3Hash::of(&bytes) == *hash).then_some(bytes)).await.ok().flatten()
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

/// One chunk, verified: directly from the owner's machine while that works
/// (its first failure ends the attempt: [`Stop::Fallback`]), else from the
/// relay — waiting there, when `wait`, for the source to put it there: the
/// server holds the request until it lands (`?wait=`), so nothing is asked
/// again and again.
async fn fetch_chunk(
    ctx: &Ctx,
    transfer: Uuid,
    peer: Option<&Peer>,
    hash: &str,
    wait: bool,
) -> Result<(bytes::Bytes, Via), Stop> {
    let deadline = Instant::now() + if wait { ctx.wait } else { Duration::ZERO };
    let mut bad = 0;
    let mut delay = Duration::from_millis(20);
    let mut next_status = Instant::now() + STATUS_EVERY;
    loop {
        let asked = Instant::now();
        let fetched = match peer {
            Some(peer) => match peer.fetch(hash).await {
                Ok(bytes) => Some((bytes, Via::Direct)),
                Err(why) => return Err(Stop::Fallback(why)),
            },
            None => {
                let wait = wait.then(|| relay_wait(deadline));
                match ctx.api.get_chunk(ctx.project, hash, Some(transfer), wait).await {
                    Ok(bytes) => bytes.map(|b| (b, Via::Relay)),
                    Err(e @ ClientError::Api { status: 401 | 403, .. }) => return Err(Stop::Fatal(e.to_string())),
                    // A network hiccup: wait and try again, within the deadline.
                    Err(_) => None,
                }
            }
        };
        if let Some((bytes, via)) = fetched {
            if let Some(bytes) = verified(bytes, hash).await {
                return Ok((bytes, via));
            }
            bad += 1;
            if bad >= BAD_CHUNK_TRIES {
                return Err(Stop::Failed(format!("chunk {hash} failed verification {bad} times")));
            }
            continue;
        }
        if !wait {
            return Err(Stop::Failed(format!("chunk {hash} is neither here nor on the relay")));
        }
        if Instant::now() >= deadline {
            if let Some(offline) = lock(&ctx.offline).clone() {
                return Err(Stop::Fatal(format!(
                    "waited {}s (--wait) for {offline}; the same command resumes once it is back",
                    ctx.wait.as_secs()
                )));
            }
            return Err(Stop::Fatal(format!(
                "the source did not provide chunk {hash} within {:?} (is the owner's `ferry share` running?)",
                ctx.wait
            )));
        }
        if Instant::now() >= next_status {
            next_status = Instant::now() + STATUS_EVERY;
            if let Ok(t) = ctx.api.transfer(ctx.project, transfer).await {
                say_whether_offline(ctx, &t.source_device).await;
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

/// Says once that the owner's computer is offline, and since when, and
/// again once it is back; a wait then says what it waited for.
async fn say_whether_offline(ctx: &Ctx, source: &crate::protocol::transfers::SourceDevice) {
    let said = lock(&ctx.offline).is_some();
    if source.online {
        if said {
            *lock(&ctx.offline) = None;
            ctx.bar.suspend(|| ctx.out.note(&format!("{} is back online", source.name)));
        }
        return;
    }
    if said {
        return;
    }
    let seen = match ctx.api.project_devices(ctx.project).await {
        Ok(d) => d.devices.into_iter().find(|d| d.device_id == source.id).and_then(|d| d.last_seen_at),
        Err(_) => None,
    };
    let since = seen
        .map(|t| format!(", offline since {}", t.format("%Y-%m-%d %H:%M UTC")))
        .unwrap_or_else(|| ", offline".into());
    let what = format!("the owner's computer “{}”{since}", source.name);
    ctx.bar.suspend(|| ctx.out.note(&format!("waiting for {what} (up to {}s, --wait)", ctx.wait.as_secs())));
    *lock(&ctx.offline) = Some(what);
}

/// Longest one relay request waits on the server for a chunk to land: short
/// enough to look at the transfer's state (failed, cancelled) between.
const RELAY_WAIT: Duration = Duration::from_secs(5);

/// The server-side wait for the next relay request: whole seconds, within
/// the pull's own deadline.
fn relay_wait(deadline: Instant) -> Duration {
    RELAY_WAIT.min(deadline.saturating_duration_since(Instant::now())).max(Duration::from_secs(1))
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
