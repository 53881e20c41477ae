//! The owner's agent (`ferry share`): registers this machine as a source
//! device, scans DIR and pushes the deltas against what the server holds,
//! then watches DIR and pushes changes as they settle, while it holds a
//! WebSocket as the device (online presence) and serves each transfer it
//! is asked for (`source`), directly from its own listener (`direct`) or
//! through the relay.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

use futures_util::StreamExt;

use super::api::{Api, Live};
use super::cli::{resolve_project, Session};
use super::config::DeviceIdentity;
use super::direct::Listener;
use super::output::{human_bytes, Output};
use super::scan::{self, Files, Index};
use super::source::{DirectChunks, Source};
use super::tls::Identity;
use super::ClientError;
use crate::protocol::accounts::RegisterDeviceRequest;
use crate::protocol::files::{ChunkRef, FileChange};
use crate::protocol::transfers::{DirectAdvert, DirectWithdrawal};

/// Changes per `files/update` call (the server takes up to 10,000).
const BATCH_CHANGES: usize = 1000;
/// Chunk references per call, to keep each body well under its limit.
const BATCH_CHUNKS: usize = 50_000;
/// Quiet time after the last file event before DIR is rescanned.
const QUIET: Duration = Duration::from_millis(300);
/// Longest a rescan waits while events keep coming.
const MAX_DELAY: Duration = Duration::from_secs(3);
/// When a file was still being written, look again after this.
const SETTLE_RETRY: Duration = Duration::from_secs(1);

/// What a remote file is, for the diff: size and hash.
pub type RemoteState = (u64, String);

/// How `ferry share` runs, beyond the project and its folder.
#[derive(Debug, Clone)]
pub struct ShareOptions {
    /// Scan, push and exit.
    pub once: bool,
    /// Serve directly too (else through the relay only).
    pub direct: Option<DirectOptions>,
    pub guard: DeleteGuard,
    /// The project's files now live in this folder, not the one it was
    /// shared from before on this machine.
    pub move_folder: bool,
}

/// `ferry share PROJECT DIR [PROJECT DIR]... [--once]`: one agent process
/// for every pair, with one direct listener for all of them.
pub async fn share(
    session: &mut Session,
    out: Output,
    shares: &[(String, PathBuf)],
    options: ShareOptions,
) -> Result<(), ClientError> {
    let user = session.user()?;
    // Every pair checked before anything is scanned or pushed.
    let mut checked: Vec<(String, Uuid, PathBuf)> = Vec::new();
    // Held until this process ends: one agent per project on this machine.
    let mut held = Vec::new();
    for (project, dir) in shares {
        let dir = dir.canonicalize().map_err(|e| ClientError::io(dir, e))?;
        if !dir.is_dir() {
            return Err(ClientError::Usage(format!("{} is not a folder", dir.display())));
        }
        let project_id = resolve_project(&user, project).await?;
        if checked.iter().any(|(_, id, _)| *id == project_id) {
            return Err(ClientError::Usage(format!("{project:?} is named twice: share each project from one folder")));
        }
        check_folder(session, project, project_id, &dir, options.move_folder)?;
        held.push(ShareLock::take(&session.dir, project, project_id)?);
        // Its name, as people read it in what the agent prints.
        let name = user.project(project_id).await?.name;
        checked.push((name, project_id, dir));
    }
    let device = ensure_device(session, &user).await?;
    let api = user.with_token(&device.token);
    let mut agents = Vec::new();
    for (name, project_id, dir) in checked {
        user.attach_device(project_id, device.id).await?;
        let mut agent = Agent::new(api.clone(), name, project_id, device.id, dir.clone(), out, options.guard);
        let report = agent.sync().await?;
        // Pushed from this folder: from now on, the project's folder here.
        let server = session.server.clone();
        session.config.profile_mut(&server).shared_folders.insert(project_id, dir);
        session.save()?;
        if options.once {
            out.result(Pushed::new(project_id, &report), || {
                format!(
                    "Shared {} files of {}: {} changes applied, {} files ({}) hashed.",
                    report.files,
                    agent.ctx.name,
                    report.applied,
                    report.hashed,
                    human_bytes(report.hashed_bytes)
                )
            });
        } else {
            agent.event_synced(&report, true);
        }
        agents.push(agent);
    }
    if options.once {
        return Ok(());
    }
    let direct = options.direct.map(|options| (options, session.dir.clone()));
    serve(agents, direct, &api, device.id, out).await
}

/// Runs the agents until stopped: each watches its folder and serves its
/// project's transfers; one listener serves the direct transfers of all,
/// advertised for each project with the one key it checks tokens with
/// (`direct`: how, and the config folder keeping the device's certificate).
async fn serve(
    agents: Vec<Agent>,
    direct: Option<(DirectOptions, PathBuf)>,
    api: &Api,
    device_id: Uuid,
    out: Output,
) -> Result<(), ClientError> {
    // Every folder watched before any agent runs: one that cannot be is an
    // error at the start, not a project silently left unserved.
    let mut watched = Vec::new();
    for agent in agents {
        let watch = agent.watch()?;
        watched.push((agent, watch));
    }
    let sources: Vec<Arc<Source>> = watched.iter().map(|(a, _)| a.ctx.source.clone()).collect();
    let listener = match &direct {
        Some((options, config_dir)) => listen(options, config_dir, api, device_id, &sources, out).await,
        None => None,
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running: Vec<_> =
        watched.into_iter().map(|(agent, watch)| tokio::spawn(agent.run(watch, stopped.clone()))).collect();
    stop_signal().await;
    let _ = stop.send(true);
    for task in running {
        if let Err(e) = task.await {
            out.warn(&format!("an agent stopped abnormally: {e}"));
        }
    }
    if let Some(listener) = listener {
        for source in &sources {
            source.set_direct(false);
            let which = DirectWithdrawal { project_id: Some(source.project()) };
            if let Err(e) = api.withdraw_direct(device_id, &which).await {
                out.warn(&format!("cannot withdraw the direct endpoints: {e}"));
            }
        }
        listener.stop().await;
    }
    Ok(())
}

/// Starts the direct listener and advertises it for each project; a
/// project the server refuses it for is served through the relay only, and
/// without a listener at all (it cannot listen, or no project takes it)
/// every transfer goes through the relay.
async fn listen(
    options: &DirectOptions,
    config_dir: &Path,
    api: &Api,
    device_id: Uuid,
    sources: &[Arc<Source>],
    out: Output,
) -> Option<Listener> {
    let identity = match Identity::load_or_create(config_dir, device_id) {
        Ok(identity) => identity,
        Err(e) => {
            out.warn(&format!("no certificate for direct transfers ({e}); using the relay only"));
            return None;
        }
    };
    let chunks = Arc::new(DirectChunks(sources.to_vec()));
    let upload = api.limits().upload.clone();
    let listener = match Listener::start(options.listen, &options.advertise, api.base(), &identity, chunks, upload) {
        Ok(l) => l,
        Err(e) => {
            out.warn(&format!("cannot listen on {} for direct transfers ({e}); using the relay only", options.listen));
            return None;
        }
    };
    if let Some(why) = &listener.everywhere {
        out.warn(why);
    }
    let mut advertised = false;
    for source in sources {
        let project_id = source.project();
        let advert = DirectAdvert {
            urls: listener.urls.clone(),
            key: listener.key_hex(),
            cert_sha256: Some(listener.cert_sha256.clone()),
            project_id: Some(project_id),
        };
        if let Err(e) = api.advertise_direct(device_id, &advert).await {
            out.warn(&format!("cannot advertise direct transfers for {} ({e}); using the relay only", source.name()));
            continue;
        }
        source.set_direct(true);
        advertised = true;
        out.event(News::Listening { project_id, urls: &listener.urls, cert_sha256: &listener.cert_sha256 }, || {
            format!(
                "Members of {} on reachable networks fetch directly from {} (TLS, certificate sha256 {})",
                source.name(),
                listener.urls.join(", "),
                listener.cert_sha256
            )
        });
    }
    if !advertised {
        listener.stop().await;
        return None;
    }
    Some(listener)
}

/// Refuses to share a project from another folder than the one it was
/// shared from on this machine: a slip of the path (a subfolder, a
/// sibling) would otherwise replace the project's files for every member.
fn check_folder(session: &Session, project: &str, id: Uuid, dir: &Path, moving: bool) -> Result<(), ClientError> {
    let before = session.config.profile(&session.server).and_then(|p| p.shared_folders.get(&id));
    match before {
        Some(before) if before != dir && !moving => Err(ClientError::Refused {
            code: "another_folder",
            message: format!(
                "{project:?} is shared from {} on this machine, not {}: nothing was scanned or pushed. \
                 If the project's files now live in {}, run again with --move-folder.",
                before.display(),
                dir.display(),
                dir.display()
            ),
        }),
        _ => Ok(()),
    }
}

/// This machine's one `ferry share` of a project: two agents sharing one
/// project from one device would replace each other's direct entry (the
/// first to stop takes it away from the other) and upload the same chunks
/// twice. An advisory lock on a file in the config folder, which the
/// kernel releases when the process ends, however it ends.
struct ShareLock {
    _held: std::fs::File,
}

impl ShareLock {
    fn take(config_dir: &Path, project: &str, id: Uuid) -> Result<Self, ClientError> {
        let folder = config_dir.join("shares");
        std::fs::create_dir_all(&folder).map_err(|e| ClientError::io(&folder, e))?;
        let path = folder.join(format!("{id}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ClientError::io(&path, e))?;
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: flock on a descriptor this function owns.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let error = std::io::Error::last_os_error();
                if error.kind() == std::io::ErrorKind::WouldBlock {
                    return Err(ClientError::Refused {
                        code: "already_shared",
                        message: format!(
                            "{project:?} is already shared by another `ferry share` on this machine: nothing was \
                             scanned or pushed. Stop that one first, or share every project from one command \
                             (ferry share PROJECT DIR PROJECT DIR...)."
                        ),
                    });
                }
                return Err(ClientError::io(&path, error));
            }
        }
        Ok(Self { _held: file })
    }
}

/// How much of the project one scan may delete before it stops and asks:
/// a folder emptied or swapped by mistake must not empty every member's.
#[derive(Debug, Clone, Copy)]
pub struct DeleteGuard {
    /// `--allow-deletes`: push whatever the scan found.
    pub allow: bool,
    /// The share of the project's files a scan may delete (0 to 1).
    pub share: f64,
}

impl DeleteGuard {
    /// Fewer deletions than this always go through.
    const MIN_FILES: usize = 50;
    /// How many of the paths the refusal names.
    const LISTED: usize = 20;

    /// Refuses `changes` when they delete more than the allowed share of
    /// the project's `total` files, and at least 50 of them.
    fn check(&self, changes: &[FileChange], total: usize, dir: &Path) -> Result<(), ClientError> {
        let deletes: Vec<&str> = changes
            .iter()
            .filter_map(|c| match c {
                FileChange::Delete { path } => Some(path.as_str()),
                _ => None,
            })
            .collect();
        if self.allow || deletes.len() < Self::MIN_FILES || deletes.len() as f64 <= self.share * total as f64 {
            return Ok(());
        }
        let mut listed: Vec<String> = deletes.iter().take(Self::LISTED).map(|p| format!("  {p}")).collect();
        if deletes.len() > Self::LISTED {
            listed.push(format!("  … and {} more", deletes.len() - Self::LISTED));
        }
        Err(ClientError::Refused {
            code: "too_many_deletes",
            message: format!(
                "the files in {} would delete {} of the project's {} files, more than {:.0}% of them: \
                 nothing was pushed. If that is what you mean, run again with --allow-deletes. \
                 It would delete:\n{}",
                dir.display(),
                deletes.len(),
                total,
                self.share * 100.0,
                listed.join("\n")
            ),
        })
    }
}

/// Where `ferry share` listens for direct transfers and what it advertises.
#[derive(Debug, Clone)]
pub struct DirectOptions {
    pub listen: SocketAddr,
    /// URLs members reach the listener at; empty: found from the listener.
    pub advertise: Vec<String>,
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

/// A push as `--json` tells it.
#[derive(Serialize)]
struct Pushed {
    project_id: Uuid,
    files: usize,
    changes_applied: usize,
    hashed: usize,
    hashed_bytes: u64,
}

impl Pushed {
    fn new(project_id: Uuid, r: &SyncReport) -> Self {
        Self { project_id, files: r.files, changes_applied: r.applied, hashed: r.hashed, hashed_bytes: r.hashed_bytes }
    }
}

/// The agent's `--json` lines as it runs.
#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum News<'a> {
    Synced(Pushed),
    Listening { project_id: Uuid, urls: &'a [String], cert_sha256: &'a str },
    Reconnected { project_id: Uuid },
}

/// State shared by the agent's tasks.
struct Ctx {
    api: Api,
    /// The project's name, for people.
    name: String,
    project: Uuid,
    dir: PathBuf,
    out: Output,
    source: Arc<Source>,
}

struct Agent {
    ctx: Arc<Ctx>,
    /// The server's live files, as last read or pushed.
    remote: Option<BTreeMap<String, RemoteState>>,
    head_seq: i64,
    guard: DeleteGuard,
    /// The scan's warnings already given.
    warned: HashSet<String>,
}

impl Agent {
    fn new(
        api: Api,
        name: String,
        project: Uuid,
        device_id: Uuid,
        dir: PathBuf,
        out: Output,
        guard: DeleteGuard,
    ) -> Self {
        let index = Index::load(&dir);
        let source =
            Source::new(api.clone(), name.clone(), project, device_id, dir.clone(), out, Arc::new(index.files));
        let ctx = Ctx { api, name, project, dir, out, source: Arc::new(source) };
        Self { ctx: Arc::new(ctx), remote: None, head_seq: 0, guard, warned: HashSet::new() }
    }

    /// Scans DIR (hashing only what changed), then pushes what the server
    /// lacks.
    async fn sync(&mut self) -> Result<SyncReport, ClientError> {
        let ctx = &self.ctx;
        let mut known = ctx.source.files();
        let changed = ctx.source.take_changed();
        if !changed.is_empty() {
            // Not known: hashed again, whatever their size and mtime say.
            let mut fresh = (*known).clone();
            fresh.retain(|path, _| !changed.contains(path));
            known = Arc::new(fresh);
        }
        let dir = ctx.dir.clone();
        let bar = ctx.out.bytes_bar("hashing");
        let outcome = tokio::task::spawn_blocking(move || scan::scan(&dir, &known, &bar))
            .await
            .map_err(|e| ClientError::Other(format!("the scan stopped: {e}")))?;
        // Each said once a run, not again at every rescan.
        for warning in outcome.warnings {
            if !self.warned.contains(&warning) {
                ctx.out.warn(&warning);
                self.warned.insert(warning);
            }
        }
        if let Err(e) = Index::save(&ctx.dir, &outcome.files) {
            ctx.out.warn(&format!("cannot save the local index in {}: {e}", ctx.dir.join(scan::STATE_DIR).display()));
        }
        ctx.source.set_files(Arc::new(outcome.files.clone()));

        if self.remote.is_none() {
            let (files, head) = ctx.api.all_files(ctx.project).await?;
            self.head_seq = head;
            self.remote = Some(files.into_iter().map(|f| (f.path, (f.size.max(0) as u64, f.hash))).collect());
        }
        let remote = self.remote.as_mut().expect("loaded above");
        let unsettled: HashSet<String> = outcome.unsettled.iter().cloned().collect();
        let changes = diff(&outcome.files, remote, &unsettled);
        self.guard.check(&changes, remote.len(), &ctx.dir)?;
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
            self.ctx.out.event(News::Synced(Pushed::new(self.ctx.project, r)), || {
                format!(
                    "{}: {} files; {} changes pushed; {} files ({}) hashed",
                    self.ctx.name,
                    r.files,
                    r.applied,
                    r.hashed,
                    human_bytes(r.hashed_bytes)
                )
            });
        }
    }

    /// Watches DIR: a wake-up on the channel for every change in it (but
    /// for Ferry's own state files), until the watcher is dropped.
    fn watch(&self) -> Result<Watch, ClientError> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<()>();
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
        Ok(Watch { _watcher: watcher, changes: rx })
    }

    /// Pushes DIR's changes and serves the project's transfers until
    /// `stop` turns true.
    async fn run(mut self, mut watch: Watch, mut stop: tokio::sync::watch::Receiver<bool>) {
        let socket = tokio::spawn(hold_socket(self.ctx.clone(), self.head_seq));
        let pending = tokio::spawn(self.ctx.source.clone().serve_open());
        self.ctx.out.note(&format!(
            "Watching {} for {} and serving transfers; Ctrl-C stops.",
            self.ctx.dir.display(),
            self.ctx.name
        ));

        // One more look once the watch is on: whatever changed between the
        // first scan and now is caught (unchanged files are not re-hashed).
        let mut due: Option<Instant> = Some(Instant::now() + QUIET);
        let mut first_event: Option<Instant> = None;
        let source = self.ctx.source.clone();
        loop {
            let wake = due.map(|d| first_event.map_or(d, |f| d.min(f + MAX_DELAY)));
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.changed() => break,
                Some(()) = watch.changes.recv() => {
                    due = Some(Instant::now() + QUIET);
                    first_event.get_or_insert_with(Instant::now);
                }
                // A transfer found a file changed behind the scan's back.
                () = source.rescan_asked() => due = Some(Instant::now()),
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
                        Err(e @ ClientError::Refused { .. }) => {
                            // Said once; looked at again at the next change in the folder.
                            self.ctx.out.warn(&e.to_string());
                        }
                        Err(e) => {
                            self.ctx.out.warn(&format!("pushing changes of {} failed, trying again soon: {e}", self.ctx.name));
                            due = Some(Instant::now() + Duration::from_secs(5));
                        }
                    }
                }
            }
        }
        socket.abort();
        pending.abort();
    }
}

/// A folder being watched: the watcher, and the wake-ups it sends.
struct Watch {
    _watcher: notify::RecommendedWatcher,
    changes: tokio::sync::mpsc::UnboundedReceiver<()>,
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

/// Follows the project live as the device. After a loss, the first
/// subscription says the agent is back and takes up again every open
/// transfer of this device (one asked meanwhile, or one whose bytes stopped
/// with the connection).
async fn hold_socket(ctx: Arc<Ctx>, after_seq: i64) {
    let mut live = ctx.api.live(ctx.project, after_seq);
    let mut lost = false;
    while let Some(item) = live.next().await {
        match item {
            Live::Subscribed if lost => {
                lost = false;
                ctx.out.event(News::Reconnected { project_id: ctx.project }, || {
                    format!("reconnected to the server ({})", ctx.name)
                });
                tokio::spawn(ctx.source.clone().serve_open());
            }
            Live::Subscribed | Live::Presence(_) => {}
            Live::Event(event) => ctx.source.on_event(&event),
            Live::Lost(None) => {}
            Live::Lost(Some(e)) => {
                if !lost {
                    ctx.out.warn(&format!("lost the server ({e}); reconnecting"));
                }
                lost = true;
            }
        }
    }
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

    #[test]
    fn the_delete_guard_lets_few_or_a_small_share_through() {
        let deletes =
            |n: usize| -> Vec<FileChange> { (0..n).map(|i| FileChange::Delete { path: format!("/f{i}") }).collect() };
        let guard = DeleteGuard { allow: false, share: 0.5 };
        let dir = std::path::Path::new("/photos");
        assert!(guard.check(&deletes(49), 60, dir).is_ok(), "fewer than 50 always go");
        assert!(guard.check(&deletes(50), 100, dir).is_ok(), "half goes");
        assert!(guard.check(&deletes(51), 100, dir).is_err(), "more than half, and 50 or more, stops");
        assert!(DeleteGuard { allow: true, share: 0.5 }.check(&deletes(100), 100, dir).is_ok());
        assert!(DeleteGuard { allow: false, share: 1.0 }.check(&deletes(100), 100, dir).is_ok());
    }
}
