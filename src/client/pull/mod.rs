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

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use indicatif::ProgressBar;
use serde::Serialize;
use uuid::Uuid;

mod assemble;
mod fetch;
mod local;
mod manifest;
mod tracked;

pub use manifest::{Manifest, ManifestEntry};

use self::assemble::attempt;
use self::fetch::Stop;
use self::local::LocalChunks;
use self::tracked::Tracked;
use super::api::Api;
use super::cli::{resolve_project, Session};
use super::direct::{Peer, Refresh};
use super::output::{human_bytes, Output};
use super::part::{Part, Pos, PARTS_DIR};
use super::scan::{self, Files, Index, STATE_DIR};
use super::ClientError;
use crate::protocol::files::{ChunkRef, FilePath, RemoteFile};
use crate::protocol::transfers::{
    DownloadRequest, DownloadResponse, RequestMode, Transfer, TransferReport, TransferRoute, TransferStatus,
};

/// Left behind by pulls before parts: removed when found.
const OLD_CHUNKS_DIR: &str = "chunks";
/// Files pulled at once.
const FILES_AT_ONCE: usize = 3;
/// What `ferry pull` was asked.
#[derive(Debug, Clone)]
pub struct PullRequest {
    pub project: String,
    pub paths: Vec<String>,
    pub to: PathBuf,
    /// Longest wait for the source to put a chunk on the relay.
    pub wait: Duration,
}

struct Ctx {
    api: Api,
    project: Uuid,
    dir: PathBuf,
    out: Output,
    /// The chunks DIR's files hold.
    local: LocalChunks,
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
    /// How this pull's transfers ended, as the project's events tell.
    tracked: Tracked,
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
    let (listed, head) = api.files_under(project, prefix).await?;
    let remote: Vec<RemoteFile> = listed.into_iter().filter(|f| !f.deleted && wanted(&paths, &f.path)).collect();
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
    let local = LocalChunks::of(&dir, &scanned.files);

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
        tracked: Tracked::new(&api, project, head),
        api,
        project,
        dir: dir.clone(),
        out,
        local,
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

    let refresh: Refresh = {
        let (api, project, transfer) = (ctx.api.clone(), ctx.project, res.download_id);
        Box::new(move || {
            let api = api.clone();
            Box::pin(async move {
                api.refresh_direct_token(project, transfer).await.map(|d| d.endpoints).map_err(|e| e.to_string())
            })
        })
    };
    let mut peer = Peer::for_transfer(&res.transfer_info, &ctx.api.limits().download, Some(refresh)).map(Arc::new);
    // Which way this transfer's bytes came (a fallback after some came
    // directly re-asks, in a new transfer, for only what is still lacking).
    let mut leg = Leg::default();
    let (mut transferred, mut direct) = (0u64, 0u64);
    let hash = loop {
        let transfer = res.download_id;
        let needed: HashSet<String> = res.transfer_info.chunks_needed.iter().cloned().collect();
        let (written, outcome) =
            attempt(ctx, file, &part, &positions, &done, &needed, transfer, peer.clone(), size).await;
        transferred += written.transferred;
        direct += written.direct;
        leg.bytes_direct += written.direct;
        leg.bytes_relay += written.transferred - written.direct;
        if let Some(url) = peer.as_ref().and_then(|p| p.reached()) {
            leg.endpoint = Some(url);
        }
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
            Err(Stop::Fallback { why, unverified }) => {
                let what = if unverified {
                    why.clone()
                } else {
                    format!("the owner's machine cannot be reached directly ({why})")
                };
                ctx.bar.suspend(|| ctx.out.note(&format!("{}: {what}; using the relay", file.path)));
                peer = None;
                if leg.bytes_direct > 0 || unverified {
                    // Part of it came directly, or the agent counts a chunk
                    // sent that was not kept: a new request, saying what is
                    // here now, so the rest goes on the relay.
                    let _ = ctx.api.cancel_transfer(ctx.project, transfer).await;
                    res = request(ctx, file, &done).await?;
                    leg = Leg::default();
                }
                leg.abandoned = Some(why);
            }
            Err(Stop::Failed(why)) => match fail_and_retry(ctx, transfer, &why, leg.route()).await {
                Ok(t) => {
                    ctx.tracked.retried(transfer, t.attempts);
                    // The server's record of the route starts afresh too.
                    (leg.bytes_relay, leg.bytes_direct, leg.endpoint) = (0, 0, None);
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
        let _ = ctx.api.verify_transfer(ctx.project, transfer, &hash, leg.route()).await;
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
        .verify_transfer(ctx.project, transfer, &hash, leg.route())
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

/// Which way a transfer's bytes came, as this pull saw it, for the
/// server's record of the transfer's route.
#[derive(Debug, Default)]
struct Leg {
    bytes_relay: u64,
    bytes_direct: u64,
    endpoint: Option<String>,
    abandoned: Option<String>,
}

impl Leg {
    fn route(&self) -> Option<TransferRoute> {
        Some(TransferRoute {
            bytes_relay: self.bytes_relay as i64,
            bytes_direct: self.bytes_direct as i64,
            direct_endpoint: self.endpoint.clone(),
            direct_abandoned: self.abandoned.clone(),
        })
    }
}

/// Asks for the file as a delta against DIR's chunks and those `done`.
async fn request(ctx: &Ctx, file: &RemoteFile, done: &HashMap<u64, Pos>) -> Result<DownloadResponse, String> {
    let mut have: HashSet<String> = ctx.local.hashes().iter().cloned().collect();
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
            ctx.tracked.asked(res.download_id, res.transfer_info.source_device_id);
        })
        .map_err(|e| e.to_string())
}

/// Records that this attempt failed on the member's side (the source may
/// have failed it already), then asks for another.
async fn fail_and_retry(
    ctx: &Ctx,
    transfer: Uuid,
    why: &str,
    route: Option<TransferRoute>,
) -> Result<Transfer, ClientError> {
    let failed = TransferReport {
        status: Some(TransferStatus::Failed),
        error_message: Some(why.to_owned()),
        route,
        ..Default::default()
    };
    match ctx.api.report_transfer(ctx.project, transfer, &failed).await {
        Ok(_) | Err(ClientError::Api { status: 409, .. }) => {}
        Err(e) => return Err(e),
    }
    ctx.api.retry_transfer(ctx.project, transfer).await
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
