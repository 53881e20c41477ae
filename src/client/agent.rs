//! The owner's agent (`ferry share`): registers this machine as a source
//! device, scans DIR and pushes the deltas against what the server holds,
//! then watches DIR and pushes changes as they settle, while it holds a
//! WebSocket as the device (online presence) and serves each transfer it
//! is asked for by uploading the needed chunks to the relay.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::time::Instant;
use uuid::Uuid;

use super::api::{Api, Flow};
use super::cli::{resolve_project, Session};
use super::config::DeviceIdentity;
use super::output::{human_bytes, Output};
use super::scan::{self, Files, Index};
use super::ClientError;
use crate::protocol::accounts::RegisterDeviceRequest;
use crate::protocol::events::data::{TransferRequested, TransferState};
use crate::protocol::files::{ChunkRef, FileChange};
use crate::protocol::transfers::{TransferReport, TransferStatus};

/// Changes per `files/update` call (the server takes up to 10,000).
const BATCH_CHANGES: usize = 1000;
/// Chunk references per call, to keep each body well under its limit.
const BATCH_CHUNKS: usize = 50_000;
/// Hashes per `chunks/missing` call.
const MISSING_BATCH: usize = 500;
/// Chunks uploaded at once per transfer.
const UPLOADS_AT_ONCE: usize = 4;
/// Quiet time after the last file event before DIR is rescanned.
const QUIET: Duration = Duration::from_millis(300);
/// Longest a rescan waits while events keep coming.
const MAX_DELAY: Duration = Duration::from_secs(3);
/// When a file was still being written, look again after this.
const SETTLE_RETRY: Duration = Duration::from_secs(1);
/// Least time between two progress reports of a transfer.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// What a remote file is, for the diff: size and hash.
pub type RemoteState = (u64, String);

/// `ferry share PROJECT DIR [--once]`.
pub async fn share(
    session: &mut Session,
    out: Output,
    project: &str,
    dir: &Path,
    once: bool,
) -> Result<(), ClientError> {
    let dir = dir.canonicalize().map_err(|e| ClientError::io(dir, e))?;
    if !dir.is_dir() {
        return Err(ClientError::Usage(format!("{} is not a folder", dir.display())));
    }
    let user = session.user()?;
    let project = resolve_project(&user, project).await?;
    let device = ensure_device(session, &user).await?;
    user.attach_device(project, device.id).await?;
    let api = user.with_token(&device.token);
    let mut agent = Agent::new(api, project, device.id, dir, out);
    let report = agent.sync().await?;
    if once {
        out.result(
            json!({"files": report.files, "changes_applied": report.applied, "hashed": report.hashed, "hashed_bytes": report.hashed_bytes}),
            || {
                format!(
                    "Shared {} files: {} changes applied, {} files ({}) hashed.",
                    report.files,
                    report.applied,
                    report.hashed,
                    human_bytes(report.hashed_bytes)
                )
            },
        );
        return Ok(());
    }
    agent.event_synced(&report, true);
    agent.run().await
}

/// This machine's device on the server: registered once, kept in the
/// config; registered again if its token no longer works.
async fn ensure_device(session: &mut Session, user: &Api) -> Result<DeviceIdentity, ClientError> {
    let server = session.server.clone();
    if let Some(device) = session.config.profile(&server).and_then(|p| p.device.clone()) {
        match user.with_token(&device.token).me().await {
            Ok(me) if me.device.as_ref().is_some_and(|d| d.id == device.id) => return Ok(device),
            Ok(_) | Err(ClientError::Api { status: 401, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let name = hostname();
    let registered = user
        .register_device(&RegisterDeviceRequest { name: name.clone(), platform: Some(std::env::consts::OS.to_owned()) })
        .await?;
    let device = DeviceIdentity { id: registered.device.id, token: registered.device_token, name };
    session.config.profile_mut(&server).device = Some(device.clone());
    session.save()?;
    Ok(device)
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.chars().count() <= 100)
        .unwrap_or_else(|| "ferry agent".to_owned())
}

/// The changes that make `remote` what `local` is. A remote file gone
/// from DIR whose content (hash and size) appears at a new path is a move;
/// `unsettled` paths are left alone.
pub fn diff(local: &Files, remote: &BTreeMap<String, RemoteState>, unsettled: &HashSet<String>) -> Vec<FileChange> {
    let mut gone: HashMap<(u64, &str), Vec<&str>> = HashMap::new();
    let mut deletes = Vec::new();
    for (path, (size, hash)) in remote {
        if !local.contains_key(path) && !unsettled.contains(path) {
            if *size > 0 {
                gone.entry((*size, hash.as_str())).or_default().push(path);
            } else {
                deletes.push(path.clone());
            }
        }
    }
    let mut moves = Vec::new();
    let mut upserts = Vec::new();
    for (path, entry) in local {
        match remote.get(path) {
            Some((size, hash)) if *size == entry.size && *hash == entry.hash => {}
            Some(_) => upserts.push(upsert(path, entry)),
            None => match gone.get_mut(&(entry.size, entry.hash.as_str())).and_then(Vec::pop) {
                Some(from) => moves.push(FileChange::Move { from: from.to_owned(), to: path.clone() }),
                None => upserts.push(upsert(path, entry)),
            },
        }
    }
    deletes.extend(gone.into_values().flatten().map(str::to_owned));
    deletes.sort();
    let mut changes = moves;
    changes.extend(upserts);
    changes.extend(deletes.into_iter().map(|path| FileChange::Delete { path }));
    changes
}

fn upsert(path: &str, e: &scan::Entry) -> FileChange {
    FileChange::Upsert {
        path: path.to_owned(),
        size: e.size as i64,
        hash: e.hash.clone(),
        mime_type: None,
        modified_at: e.modified_at(),
        chunks: Some(e.chunks.iter().map(|c| ChunkRef { hash: c.hash.clone(), size: c.size as i64 }).collect()),
    }
}

/// Splits changes into calls small enough for the server.
fn batches(changes: Vec<FileChange>) -> Vec<Vec<FileChange>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut chunks = 0;
    for change in changes {
        let weight = match &change {
            FileChange::Upsert { chunks: Some(c), .. } => c.len(),
            _ => 0,
        };
        if !current.is_empty() && (current.len() >= BATCH_CHANGES || chunks + weight > BATCH_CHUNKS) {
            out.push(std::mem::take(&mut current));
            chunks = 0;
        }
        chunks += weight;
        current.push(change);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// What a scan-and-push did.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub files: usize,
    pub applied: usize,
    pub hashed: usize,
    pub hashed_bytes: u64,
    pub unsettled: usize,
}

/// State shared by the agent's tasks.
struct Ctx {
    api: Api,
    project: Uuid,
    device_id: Uuid,
    dir: PathBuf,
    out: Output,
    /// DIR as last scanned: what transfers are served from.
    files: Mutex<Arc<Files>>,
    /// Transfers being served → their cancel flag.
    active: Mutex<HashMap<Uuid, Arc<AtomicBool>>>,
    /// Transfers already taken up (so a replayed request is not served twice).
    seen: Mutex<HashSet<Uuid>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Agent {
    ctx: Arc<Ctx>,
    /// The server's live files, as last read or pushed.
    remote: Option<BTreeMap<String, RemoteState>>,
    head_seq: i64,
}

impl Agent {
    fn new(api: Api, project: Uuid, device_id: Uuid, dir: PathBuf, out: Output) -> Self {
        let index = Index::load(&dir);
        let ctx = Ctx {
            api,
            project,
            device_id,
            dir,
            out,
            files: Mutex::new(Arc::new(index.files)),
            active: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashSet::new()),
        };
        Self { ctx: Arc::new(ctx), remote: None, head_seq: 0 }
    }

    /// Scans DIR (hashing only what changed), then pushes what the server
    /// lacks.
    async fn sync(&mut self) -> Result<SyncReport, ClientError> {
        let ctx = &self.ctx;
        let known = lock(&ctx.files).clone();
        let dir = ctx.dir.clone();
        let bar = ctx.out.bytes_bar("hashing");
        let outcome = tokio::task::spawn_blocking(move || scan::scan(&dir, &known, &bar))
            .await
            .map_err(|e| ClientError::Other(format!("the scan stopped: {e}")))?;
        for warning in &outcome.warnings {
            ctx.out.warn(warning);
        }
        if let Err(e) = Index::save(&ctx.dir, &outcome.files) {
            ctx.out.warn(&format!("cannot save the local index in {}: {e}", ctx.dir.join(scan::STATE_DIR).display()));
        }
        *lock(&ctx.files) = Arc::new(outcome.files.clone());

        if self.remote.is_none() {
            let (files, head) = ctx.api.all_files(ctx.project).await?;
            self.head_seq = head;
            self.remote = Some(files.into_iter().map(|f| (f.path, (f.size.max(0) as u64, f.hash))).collect());
        }
        let remote = self.remote.as_mut().expect("loaded above");
        let unsettled: HashSet<String> = outcome.unsettled.iter().cloned().collect();
        let changes = diff(&outcome.files, remote, &unsettled);
        let mut applied = 0;
        for batch in batches(changes) {
            let response = match ctx.api.update_files(ctx.project, batch.clone()).await {
                Ok(r) => r,
                Err(e) => {
                    // Read the server's state again before the next try.
                    self.remote = None;
                    return Err(e);
                }
            };
            applied += response.applied;
            for change in batch {
                match change {
                    FileChange::Upsert { path, size, hash, .. } => {
                        remote.insert(path, (size as u64, hash));
                    }
                    FileChange::Delete { path } => {
                        remote.remove(&path);
                    }
                    FileChange::Move { from, to } => {
                        if let Some(state) = remote.remove(&from) {
                            remote.insert(to, state);
                        }
                    }
                }
            }
        }
        Ok(SyncReport {
            files: outcome.files.len(),
            applied,
            hashed: outcome.hashed_files,
            hashed_bytes: outcome.hashed_bytes,
            unsettled: outcome.unsettled.len(),
        })
    }

    fn event_synced(&self, r: &SyncReport, always: bool) {
        if always || r.applied > 0 || r.hashed > 0 {
            self.ctx.out.event(
                json!({"event": "synced", "files": r.files, "changes_applied": r.applied, "hashed": r.hashed, "hashed_bytes": r.hashed_bytes}),
                || format!("{} files; {} changes pushed; {} files ({}) hashed", r.files, r.applied, r.hashed, human_bytes(r.hashed_bytes)),
            );
        }
    }

    /// Watches DIR and serves transfers until stopped.
    async fn run(mut self) -> Result<(), ClientError> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let dir = self.ctx.dir.clone();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(event) = res else { return };
            if matches!(event.kind, notify::EventKind::Access(_)) {
                return;
            }
            if !event.paths.is_empty() && event.paths.iter().all(|p| scan::is_own_state(&dir, p)) {
                return;
            }
            let _ = tx.send(());
        })
        .map_err(|e| ClientError::Other(format!("cannot watch {}: {e}", self.ctx.dir.display())))?;
        notify::Watcher::watch(&mut watcher, &self.ctx.dir, notify::RecursiveMode::Recursive)
            .map_err(|e| ClientError::Other(format!("cannot watch {}: {e}", self.ctx.dir.display())))?;

        let socket = tokio::spawn(hold_socket(self.ctx.clone(), self.head_seq));
        let pending = tokio::spawn(serve_pending(self.ctx.clone()));
        self.ctx.out.note(&format!("Watching {} and serving transfers; Ctrl-C stops.", self.ctx.dir.display()));

        // One more look once the watch is on: whatever changed between the
        // first scan and now is caught (unchanged files are not re-hashed).
        let mut due: Option<Instant> = Some(Instant::now() + QUIET);
        let mut first_event: Option<Instant> = None;
        let stop = stop_signal();
        tokio::pin!(stop);
        loop {
            let wake = due.map(|d| first_event.map_or(d, |f| d.min(f + MAX_DELAY)));
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut stop => break,
                Some(()) = rx.recv() => {
                    due = Some(Instant::now() + QUIET);
                    first_event.get_or_insert_with(Instant::now);
                }
                _ = sleep => {
                    due = None;
                    first_event = None;
                    match self.sync().await {
                        Ok(report) => {
                            self.event_synced(&report, false);
                            if report.unsettled > 0 {
                                due = Some(Instant::now() + SETTLE_RETRY);
                            }
                        }
                        Err(e) => {
                            self.ctx.out.warn(&format!("pushing changes failed, trying again soon: {e}"));
                            due = Some(Instant::now() + Duration::from_secs(5));
                        }
                    }
                }
            }
        }
        socket.abort();
        pending.abort();
        drop(watcher);
        Ok(())
    }
}

/// Ctrl-C, or SIGTERM on Unix.
pub(crate) async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Keeps a WebSocket open as the device, reconnecting and resuming after
/// the last seq seen.
async fn hold_socket(ctx: Arc<Ctx>, mut after_seq: i64) {
    let mut backoff = Duration::from_millis(500);
    loop {
        match socket_session(&ctx, &mut after_seq).await {
            Ok(()) => backoff = Duration::from_millis(500),
            Err(e) => ctx.out.warn(&format!("the live connection dropped ({e}); reconnecting")),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(15));
    }
}

async fn socket_session(ctx: &Arc<Ctx>, after_seq: &mut i64) -> Result<(), String> {
    let from = *after_seq;
    ctx.api
        .follow(ctx.project, from, |value| {
            on_message(ctx, &value, after_seq);
            Ok(Flow::Continue)
        })
        .await
}

/// Reacts to one server message: a transfer to serve, one to stop.
fn on_message(ctx: &Arc<Ctx>, message: &Value, after_seq: &mut i64) {
    if let (Some(seq), Some(_)) = (message["seq"].as_i64(), message.get("data")) {
        *after_seq = (*after_seq).max(seq);
    }
    let data = &message["data"];
    match message["type"].as_str().unwrap_or_default() {
        "transfer_requested" => {
            let Ok(req) = serde_json::from_value::<TransferRequested>(data.clone()) else {
                return;
            };
            if req.source_device_id != ctx.device_id || !req.state.status.is_active() {
                return;
            }
            if !lock(&ctx.seen).insert(req.state.transfer_id) {
                return;
            }
            start(
                ctx,
                Job {
                    id: req.state.transfer_id,
                    file_path: req.state.file_path,
                    file_hash: req.file_hash,
                    total_bytes: req.state.total_bytes,
                    chunks_needed: Some(req.chunks_needed),
                },
            );
        }
        "file_transfer_cancelled" | "file_transfer_failed" | "file_transfer_expired" => {
            if let Ok(state) = serde_json::from_value::<TransferState>(data.clone()) {
                if let Some(flag) = lock(&ctx.active).get(&state.transfer_id) {
                    flag.store(true, Ordering::SeqCst);
                }
            }
        }
        "transfer_retried" => {
            if let Ok(state) = serde_json::from_value::<TransferState>(data.clone()) {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let path = format!("/api/projects/{}/transfers/{}", ctx.project, state.transfer_id);
                    if let Ok(t) = ctx.api.get::<crate::protocol::transfers::Transfer>(&path).await {
                        if t.source_device.id == ctx.device_id && t.status.is_active() {
                            start(
                                &ctx,
                                Job {
                                    id: t.id,
                                    file_path: t.file_path,
                                    file_hash: t.file_hash,
                                    total_bytes: t.total_bytes,
                                    chunks_needed: None,
                                },
                            );
                        }
                    }
                });
            }
        }
        "error" => ctx.out.warn(&format!("the server said: {}", message["message"].as_str().unwrap_or("an error"))),
        _ => {}
    }
}

/// Transfers asked of this device while it was away.
async fn serve_pending(ctx: Arc<Ctx>) {
    let mut cursor: Option<String> = None;
    loop {
        let page = match ctx.api.transfers_page(ctx.project, Some(TransferStatus::Pending), cursor.as_deref()).await {
            Ok(page) => page,
            Err(e) => {
                ctx.out.warn(&format!("cannot list pending transfers: {e}"));
                return;
            }
        };
        for t in page.transfers {
            if t.source_device.id == ctx.device_id && lock(&ctx.seen).insert(t.id) {
                start(
                    &ctx,
                    Job {
                        id: t.id,
                        file_path: t.file_path,
                        file_hash: t.file_hash,
                        total_bytes: t.total_bytes,
                        chunks_needed: None,
                    },
                );
            }
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return,
        }
    }
}

/// A transfer to serve.
#[derive(Debug, Clone)]
struct Job {
    id: Uuid,
    file_path: String,
    file_hash: String,
    total_bytes: i64,
    /// None: every chunk of the file.
    chunks_needed: Option<Vec<String>>,
}

#[derive(Debug)]
enum Stop {
    Cancelled,
    /// Not ours to serve any more (the server refused the start).
    Refused(ClientError),
    Failed(String),
}

fn start(ctx: &Arc<Ctx>, job: Job) {
    let flag = Arc::new(AtomicBool::new(false));
    lock(&ctx.active).insert(job.id, flag.clone());
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let result = serve(&ctx, &job, &flag).await;
        lock(&ctx.active).remove(&job.id);
        match result {
            Ok((uploaded, bytes)) => ctx.out.event(
                json!({"event": "transfer_served", "transfer_id": job.id, "file_path": job.file_path, "chunks_uploaded": uploaded, "bytes_uploaded": bytes}),
                || format!("served {} ({} chunks, {} uploaded)", job.file_path, uploaded, human_bytes(bytes)),
            ),
            Err(Stop::Cancelled) => ctx.out.event(
                json!({"event": "transfer_cancelled", "transfer_id": job.id, "file_path": job.file_path}),
                || format!("transfer of {} cancelled", job.file_path),
            ),
            Err(Stop::Refused(e)) => ctx.out.warn(&format!("transfer of {} not served: {e}", job.file_path)),
            Err(Stop::Failed(why)) => {
                ctx.out.warn(&format!("transfer of {} failed: {why}", job.file_path));
                let report = TransferReport { status: Some(TransferStatus::Failed), bytes_transferred: None, error_message: Some(why) };
                let _ = ctx.api.report_transfer(ctx.project, job.id, &report).await;
            }
        }
    });
}

/// Uploads the chunks the relay lacks, reporting progress; answers how
/// many chunks and bytes went up.
async fn serve(ctx: &Arc<Ctx>, job: &Job, cancelled: &AtomicBool) -> Result<(usize, u64), Stop> {
    let entry = lock(&ctx.files).get(&job.file_path).cloned();
    let entry = match entry {
        Some(e) if e.hash == job.file_hash => e,
        Some(_) => return Err(Stop::Failed("file_changed_at_source".into())),
        None => return Err(Stop::Failed("file_not_found_at_source".into())),
    };
    let abs = ctx.dir.join(job.file_path.trim_start_matches('/'));
    let mut table: HashMap<String, (u64, u64)> = HashMap::new();
    for c in &entry.chunks {
        table.entry(c.hash.clone()).or_insert((c.offset, c.size));
    }
    if entry.size > 0 {
        table.entry(entry.hash.clone()).or_insert((0, entry.size));
    }
    let needed: Vec<String> = match &job.chunks_needed {
        Some(list) => list.clone(),
        None => {
            let mut seen = HashSet::new();
            entry.chunks.iter().map(|c| c.hash.clone()).filter(|h| seen.insert(h.clone())).collect()
        }
    };
    if let Some(unknown) = needed.iter().find(|h| !table.contains_key(*h)) {
        return Err(Stop::Failed(format!("chunk {unknown} is not part of the file at the source")));
    }

    let started = TransferReport { status: Some(TransferStatus::InProgress), ..Default::default() };
    ctx.api.report_transfer(ctx.project, job.id, &started).await.map_err(Stop::Refused)?;

    let mut missing = Vec::new();
    for batch in needed.chunks(MISSING_BATCH) {
        missing.extend(ctx.api.missing_chunks(ctx.project, batch).await.map_err(|e| Stop::Failed(e.to_string()))?);
    }
    let missing_set: HashSet<&String> = missing.iter().collect();
    let present: u64 = needed.iter().filter(|h| !missing_set.contains(h)).map(|h| table[h].1).sum();
    let total = job.total_bytes.max(0) as u64;
    let progress = Arc::new(Progress {
        ctx: ctx.clone(),
        transfer: job.id,
        total,
        done: AtomicU64::new(present),
        last: Mutex::new(Instant::now() - PROGRESS_EVERY),
        bar: ctx.out.bytes_bar(&format!("sending {}", job.file_path)),
    });
    progress.bar.set_length(total);
    progress.bar.set_position(present.min(total));
    if present > 0 {
        progress.report(true).await;
    }

    let table = Arc::new(table);
    let mut queue = missing.into_iter();
    let mut running = futures_util::stream::FuturesUnordered::new();
    let (mut chunks, mut bytes) = (0usize, 0u64);
    let mut result = Ok(());
    loop {
        while result.is_ok() && running.len() < UPLOADS_AT_ONCE {
            let Some(hash) = queue.next() else { break };
            if cancelled.load(Ordering::SeqCst) {
                result = Err(Stop::Cancelled);
                break;
            }
            running.push(upload(ctx.clone(), abs.clone(), table.clone(), hash, progress.clone()));
        }
        match running.next().await {
            None => break,
            Some(Ok(size)) => {
                chunks += 1;
                bytes += size;
            }
            Some(Err(e)) => {
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
    }
    progress.bar.finish_and_clear();
    result?;
    if cancelled.load(Ordering::SeqCst) {
        return Err(Stop::Cancelled);
    }
    // Every needed chunk is on the relay.
    progress.done.store(total, Ordering::SeqCst);
    progress.report(true).await;
    Ok((chunks, bytes))
}

/// A transfer's progress: bytes on the relay, reported now and then.
struct Progress {
    ctx: Arc<Ctx>,
    transfer: Uuid,
    total: u64,
    done: AtomicU64,
    last: Mutex<Instant>,
    bar: indicatif::ProgressBar,
}

impl Progress {
    async fn report(&self, force: bool) {
        let bytes = self.done.load(Ordering::SeqCst).min(self.total);
        {
            let mut last = lock(&self.last);
            if !force && last.elapsed() < PROGRESS_EVERY {
                return;
            }
            *last = Instant::now();
        }
        let report = TransferReport { bytes_transferred: Some(bytes as i64), ..Default::default() };
        // A 409 (the relay's own count ran ahead, or the transfer ended
        // meanwhile) is not this upload's failure.
        let _ = self.ctx.api.report_transfer(self.ctx.project, self.transfer, &report).await;
    }
}

/// Re-reads one chunk from the file by offset, checks it, uploads it.
async fn upload(
    ctx: Arc<Ctx>,
    abs: PathBuf,
    table: Arc<HashMap<String, (u64, u64)>>,
    hash: String,
    progress: Arc<Progress>,
) -> Result<u64, Stop> {
    let (offset, size) = table[&hash];
    let bytes = tokio::task::spawn_blocking(move || scan::read_at(&abs, offset, size))
        .await
        .map_err(|e| Stop::Failed(e.to_string()))?
        .map_err(|e| Stop::Failed(format!("file_unreadable_at_source: {e}")))?;
    if blake3::hash(&bytes).to_hex().as_str() != hash {
        return Err(Stop::Failed("file_changed_at_source".into()));
    }
    ctx.api.put_chunk(ctx.project, &hash, bytes).await.map_err(|e| Stop::Failed(e.to_string()))?;
    progress.done.fetch_add(size, Ordering::SeqCst);
    progress.bar.inc(size);
    progress.report(false).await;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(size: u64, hash: &str) -> scan::Entry {
        scan::Entry { size, mtime_ns: 0, ino: 0, hash: hash.into(), chunks: vec![] }
    }

    #[test]
    fn a_vanished_file_whose_content_reappears_is_a_move() {
        let local: Files = [
            ("/new/a.txt".to_owned(), entry(5, "h1")),
            ("/b.txt".to_owned(), entry(6, "h2x")),
            ("/c".to_owned(), entry(0, "e")),
        ]
        .into_iter()
        .collect();
        let remote: BTreeMap<String, RemoteState> = [
            ("/a.txt".to_owned(), (5, "h1".to_owned())),
            ("/b.txt".to_owned(), (6, "h2".to_owned())),
            ("/gone".to_owned(), (7, "h3".to_owned())),
            ("/busy".to_owned(), (7, "h4".to_owned())),
        ]
        .into_iter()
        .collect();
        let unsettled: HashSet<String> = ["/busy".to_owned()].into_iter().collect();
        let changes = serde_json::to_value(diff(&local, &remote, &unsettled)).unwrap();
        let ops: Vec<String> = changes
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                format!("{} {}", c["op"].as_str().unwrap(), c.get("path").or(c.get("to")).unwrap().as_str().unwrap())
            })
            .collect();
        assert_eq!(ops, ["move /new/a.txt", "upsert /b.txt", "upsert /c", "delete /gone"]);
    }
}
