//! The agent as a transfer source: it takes up each transfer asked of its
//! device once, and provides the chunks the member needs — directly, from
//! its own listener, to a member holding the transfer's token; through the
//! relay when the member has not fetched directly for a short while (it
//! cannot reach this machine, or is a client without direct transfers).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

use super::api::Api;
use super::direct::{Chunks, Refusal};
use super::output::{human_bytes, Output};
use super::scan::{self, Files};
use super::ClientError;
use crate::protocol::realtime::EventMessage;
use crate::protocol::transfers::{FailureReason, Transfer, TransferReport, TransferStatus};
use crate::protocol::EventData;

/// Hashes per `chunks/missing` call.
const MISSING_BATCH: usize = 500;
/// Chunks read, hashed, compressed and uploaded at once per transfer (over
/// reused connections): enough that reading, CPU work and the network
/// overlap; few enough that memory stays flat (≤ 4 MiB a chunk).
const UPLOADS_AT_ONCE: usize = 8;
/// Bytes of a chunk compressed to see whether compressing it pays.
const PROBE_BYTES: usize = 64 * 1024;
/// Compression pays when it saves at least a tenth.
const WORTH_IT: f64 = 0.9;
/// zstd level: fast (the link, not the CPU, should set the pace).
const ZSTD_LEVEL: i32 = 1;
/// Least time between two progress reports of a transfer.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// How long a member that may fetch directly has before the relay is used.
const DIRECT_GRACE: Duration = Duration::from_secs(2);
/// How often a transfer served directly is looked at.
const DIRECT_TICK: Duration = Duration::from_millis(100);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// This device as the source of a project's transfers.
pub struct Source {
    api: Api,
    /// The project's name, for people.
    name: String,
    project: Uuid,
    device_id: Uuid,
    dir: PathBuf,
    out: Output,
    /// DIR as last scanned: what transfers are served from.
    files: Mutex<Arc<Files>>,
    /// Whether members may fetch directly (the listener runs and is advertised).
    direct: AtomicBool,
    transfers: Mutex<Transfers>,
    /// The project's people by user id, as last listed: who a file went to.
    people: Mutex<HashMap<Uuid, String>>,
    /// Files found to hold other bytes than their scan says (replaced with
    /// the same size and mtime, which the scan takes as unchanged): to be
    /// hashed again at the next scan, which `rescan` asks for.
    changed_here: Mutex<HashSet<String>>,
    rescan: tokio::sync::Notify,
}

#[derive(Default)]
struct Transfers {
    /// Being served, until the serving ends.
    active: HashMap<Uuid, Arc<Serving>>,
    /// Every transfer taken up (a replayed request is not served twice).
    seen: HashSet<Uuid>,
}

/// A transfer to serve.
#[derive(Debug, Clone)]
struct Job {
    id: Uuid,
    file_path: String,
    file_hash: String,
    total_bytes: i64,
    /// The member who asked (None: not known).
    requester: Option<Uuid>,
    /// None: every chunk of the file.
    chunks_needed: Option<Vec<String>>,
}

impl From<Transfer> for Job {
    fn from(t: Transfer) -> Self {
        Job {
            id: t.id,
            file_path: t.file_path,
            file_hash: t.file_hash,
            total_bytes: t.total_bytes,
            requester: Some(t.requester_id),
            chunks_needed: None,
        }
    }
}

/// How a transfer ended, as the agent learns it from the live events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Completed,
    /// Cancelled, failed or expired: stop providing.
    Stopped,
}

/// A transfer being served: what its serving task and the direct listener
/// share.
struct Serving {
    job: Job,
    abs: PathBuf,
    /// Every chunk of the file (and the file itself, as one) → (offset, size).
    table: HashMap<String, (u64, u64)>,
    /// What the member asked for, each once.
    needed: Vec<String>,
    end: Mutex<Option<End>>,
    /// When the member last fetched directly.
    last_direct: Mutex<Option<Instant>>,
    /// Chunks the member fetched directly, with their bytes.
    sent_direct: Mutex<HashMap<String, u64>>,
    progress: Progress,
}

impl Serving {
    /// The transfer's file as DIR holds it; an error when it does not.
    fn new(files: &Files, dir: &std::path::Path, job: Job, bar: indicatif::ProgressBar) -> Result<Self, String> {
        let entry = match files.get(&job.file_path) {
            Some(e) if e.hash == job.file_hash => e,
            Some(_) => return Err(FailureReason::FileChangedAtSource.to_string()),
            None => return Err(FailureReason::FileNotFoundAtSource.to_string()),
        };
        let mut table = HashMap::new();
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
            return Err(format!("chunk {unknown} is not part of the file at the source"));
        }
        let total = job.total_bytes.max(0) as u64;
        bar.set_length(total);
        Ok(Self {
            abs: scan::local_path(dir, &job.file_path),
            progress: Progress {
                transfer: job.id,
                total,
                done: AtomicU64::new(0),
                reported: Mutex::new((Instant::now() - PROGRESS_EVERY, 0)),
                bar,
            },
            job,
            table,
            needed,
            end: Mutex::new(None),
            last_direct: Mutex::new(None),
            sent_direct: Mutex::new(HashMap::new()),
        })
    }

    fn ended(&self) -> Option<End> {
        *lock(&self.end)
    }

    /// What the member fetched directly.
    fn served_direct(&self) -> Served {
        let sent = lock(&self.sent_direct);
        Served { direct_chunks: sent.len(), direct_bytes: sent.values().sum(), ..Served::default() }
    }

    fn touch(&self) {
        *lock(&self.last_direct) = Some(Instant::now());
    }
}

#[derive(Debug)]
enum Stop {
    Cancelled,
    /// Not ours to serve any more (the server refused the start).
    Refused(ClientError),
    Failed(String),
}

/// What serving a transfer moved.
#[derive(Debug, Default)]
struct Served {
    direct_chunks: usize,
    direct_bytes: u64,
    uploaded_chunks: usize,
    uploaded_bytes: u64,
}

impl Served {
    /// How much went, and which way: "5.0 MiB, direct".
    fn how(&self) -> String {
        let total = human_bytes(self.direct_bytes + self.uploaded_bytes);
        match (self.direct_bytes, self.uploaded_bytes) {
            (0, 0) => "nothing new: the relay or the member had every chunk".into(),
            (_, 0) => format!("{total}, direct"),
            (0, _) => format!("{total}, through the relay"),
            (direct, relayed) => {
                format!("{total}: {} direct, {} through the relay", human_bytes(direct), human_bytes(relayed))
            }
        }
    }
}

/// The `--json` lines of a transfer served.
#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum News<'a> {
    TransferServed {
        transfer_id: Uuid,
        file_path: &'a str,
        chunks_direct: usize,
        bytes_direct: u64,
        chunks_uploaded: usize,
        bytes_uploaded: u64,
    },
    TransferCancelled {
        transfer_id: Uuid,
        file_path: &'a str,
    },
}

impl Source {
    pub fn new(
        api: Api,
        name: String,
        project: Uuid,
        device_id: Uuid,
        dir: PathBuf,
        out: Output,
        files: Arc<Files>,
    ) -> Self {
        Self {
            api,
            name,
            project,
            device_id,
            dir,
            out,
            files: Mutex::new(files),
            direct: AtomicBool::new(false),
            transfers: Mutex::default(),
            people: Mutex::default(),
            changed_here: Mutex::default(),
            rescan: tokio::sync::Notify::new(),
        }
    }

    pub fn project(&self) -> Uuid {
        self.project
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// DIR as just scanned.
    pub fn set_files(&self, files: Arc<Files>) {
        *lock(&self.files) = files;
    }

    pub fn files(&self) -> Arc<Files> {
        lock(&self.files).clone()
    }

    /// The files found changed here since they were scanned (each said
    /// once), for the next scan to hash again.
    pub fn take_changed(&self) -> HashSet<String> {
        std::mem::take(&mut lock(&self.changed_here))
    }

    /// Ends when a file was found changed here since its scan (at once
    /// when one was since the last call).
    pub async fn rescan_asked(&self) {
        self.rescan.notified().await
    }

    /// `path` holds other bytes than its scan says: hashed again soon, so
    /// its new version is pushed and the next transfer of it can succeed.
    fn found_changed(&self, path: &str) {
        lock(&self.changed_here).insert(path.to_owned());
        self.rescan.notify_one();
    }

    /// Members may now fetch directly (or no longer).
    pub fn set_direct(&self, on: bool) {
        self.direct.store(on, Ordering::SeqCst);
    }

    /// Reacts to a live project event: a transfer to serve, one that ended.
    pub fn on_event(self: &Arc<Self>, event: &EventMessage) {
        let (end, state) = match &event.data {
            EventData::TransferRequested(req) => {
                if req.source_device_id == self.device_id && req.state.status.is_active() {
                    self.take_up(
                        Job {
                            id: req.state.transfer_id,
                            file_path: req.state.file_path.clone(),
                            file_hash: req.file_hash.clone(),
                            total_bytes: req.state.total_bytes,
                            requester: event.actor.user_id,
                            chunks_needed: Some(req.chunks_needed.clone()),
                        },
                        false,
                    );
                }
                return;
            }
            EventData::TransferRetried(state) => {
                let source = self.clone();
                let transfer_id = state.transfer_id;
                tokio::spawn(async move {
                    if let Ok(t) = source.api.transfer(source.project, transfer_id).await {
                        if t.source_device.id == source.device_id && t.status.is_active() {
                            source.take_up(t.into(), true);
                        }
                    }
                });
                return;
            }
            EventData::FileTransferComplete(state) => (End::Completed, state),
            EventData::FileTransferCancelled(state)
            | EventData::FileTransferFailed(state)
            | EventData::FileTransferExpired(state) => (End::Stopped, state),
            _ => return,
        };
        if let Some(s) = lock(&self.transfers).active.get(&state.transfer_id) {
            *lock(&s.end) = Some(end);
        }
    }

    /// Serves every open transfer asked of this device: those asked while
    /// it was away, and those an earlier run of the agent (or this one,
    /// before its connection dropped) left half sent. One already being
    /// served is left alone.
    pub async fn serve_open(self: Arc<Self>) {
        for status in [TransferStatus::Pending, TransferStatus::InProgress] {
            let mut cursor: Option<String> = None;
            loop {
                let page = match self.api.transfers_page(self.project, Some(status), cursor.as_deref()).await {
                    Ok(page) => page,
                    Err(e) => {
                        self.out.warn(&format!("cannot list the open transfers: {e}"));
                        return;
                    }
                };
                for t in page.transfers {
                    if t.source_device.id == self.device_id {
                        self.take_up(t.into(), false);
                    }
                }
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
    }

    /// Starts serving `job` unless it is being served, or was taken up
    /// before and this is not a retry (whose failed attempt may still be
    /// winding down); answers it when it starts.
    fn take_up(self: &Arc<Self>, job: Job, retry: bool) -> Option<Arc<Serving>> {
        let prepared = {
            let mut transfers = lock(&self.transfers);
            let serving = transfers.active.get(&job.id).map(|s| s.ended().is_none());
            if serving == Some(true) || (serving == Some(false) && !retry) {
                return None;
            }
            if !transfers.seen.insert(job.id) && !retry {
                return None;
            }
            let bar = self.out.bytes_bar(&format!("sending {}", job.file_path));
            let prepared = Serving::new(&self.files(), &self.dir, job.clone(), bar).map(Arc::new);
            if let Ok(s) = &prepared {
                transfers.active.insert(job.id, s.clone());
            }
            prepared
        };
        let source = self.clone();
        match prepared {
            Ok(serving) => {
                let s = serving.clone();
                tokio::spawn(async move {
                    let result = source.serve(&s).await;
                    {
                        let mut transfers = lock(&source.transfers);
                        // Unless a retry took its place meanwhile.
                        if transfers.active.get(&s.job.id).is_some_and(|a| Arc::ptr_eq(a, &s)) {
                            transfers.active.remove(&s.job.id);
                        }
                    }
                    s.progress.bar.finish_and_clear();
                    source.finished(&s.job, result).await;
                });
                Some(serving)
            }
            Err(why) => {
                tokio::spawn(async move { source.finished(&job, Err(Stop::Failed(why))).await });
                None
            }
        }
    }

    async fn finished(&self, job: &Job, result: Result<Served, Stop>) {
        match result {
            Ok(s) => {
                let to = self.person(job.requester).await;
                self.out.event(
                    News::TransferServed {
                        transfer_id: job.id,
                        file_path: &job.file_path,
                        chunks_direct: s.direct_chunks,
                        bytes_direct: s.direct_bytes,
                        chunks_uploaded: s.uploaded_chunks,
                        bytes_uploaded: s.uploaded_bytes,
                    },
                    || format!("sent {} of {} to {to} ({})", job.file_path, self.name, s.how()),
                )
            }
            Err(Stop::Cancelled) => {
                self.out.event(News::TransferCancelled { transfer_id: job.id, file_path: &job.file_path }, || {
                    format!("transfer of {} cancelled", job.file_path)
                })
            }
            Err(Stop::Refused(e)) => self.out.warn(&format!("transfer of {} not served: {e}", job.file_path)),
            Err(Stop::Failed(why)) => {
                self.out.warn(&format!("transfer of {} failed: {why}", job.file_path));
                let report = TransferReport {
                    status: Some(TransferStatus::Failed),
                    error_message: Some(why),
                    ..Default::default()
                };
                let _ = self.api.report_transfer(self.project, job.id, &report).await;
            }
        }
    }

    /// The display name of `user` in the project (listed again when it is
    /// not known yet, e.g. a member who just joined); "a member" when it
    /// cannot be had.
    async fn person(&self, user: Option<Uuid>) -> String {
        let Some(user) = user else { return "a member".into() };
        if let Some(name) = lock(&self.people).get(&user) {
            return name.clone();
        }
        if let Ok(listed) = self.api.members(self.project).await {
            let mut people = lock(&self.people);
            people.extend(listed.members.into_iter().map(|m| (m.user_id, m.display_name)));
            if let Some(name) = people.get(&user) {
                return name.clone();
            }
        }
        "a member".into()
    }

    /// Serves one transfer: directly while the member fetches so, else
    /// through the relay.
    async fn serve(&self, s: &Serving) -> Result<Served, Stop> {
        let started = TransferReport { status: Some(TransferStatus::InProgress), ..Default::default() };
        match self.api.report_transfer(self.project, s.job.id, &started).await {
            Ok(_) => {}
            // It ended before this start was reported (a member fetching
            // directly need not wait for it).
            Err(ClientError::Api { status: 409, code, .. }) if code == "transfer_completed" => {
                return Ok(s.served_direct())
            }
            Err(ClientError::Api { status: 409, code, .. })
                if matches!(code.as_str(), "transfer_cancelled" | "transfer_failed" | "transfer_expired") =>
            {
                return Err(Stop::Cancelled)
            }
            Err(e) => return Err(Stop::Refused(e)),
        }
        if self.direct.load(Ordering::SeqCst) {
            if let Some(served) = self.while_direct(s).await? {
                return Ok(served);
            }
        }
        self.upload_to_relay(s).await
    }

    /// Waits while the member fetches directly, reporting progress. Answers
    /// what moved when the transfer completes, or None once the member has
    /// not fetched for a while with chunks still missing (the relay's turn).
    async fn while_direct(&self, s: &Serving) -> Result<Option<Served>, Stop> {
        let since = Instant::now();
        loop {
            match s.ended() {
                Some(End::Stopped) => return Err(Stop::Cancelled),
                Some(End::Completed) => return Ok(Some(s.served_direct())),
                None => {}
            }
            s.progress.report(&self.api, self.project, false).await;
            let idle = lock(&s.last_direct).unwrap_or(since).elapsed();
            let all_sent = {
                let sent = lock(&s.sent_direct);
                s.needed.iter().all(|h| sent.contains_key(h))
            };
            // Everything sent: the member is assembling and verifying.
            if idle >= DIRECT_GRACE && !all_sent {
                return Ok(None);
            }
            tokio::time::sleep(DIRECT_TICK).await;
        }
    }

    /// Uploads the needed chunks the relay lacks, reporting progress.
    async fn upload_to_relay(&self, s: &Serving) -> Result<Served, Stop> {
        let mut missing = Vec::new();
        for batch in s.needed.chunks(MISSING_BATCH) {
            missing
                .extend(self.api.missing_chunks(self.project, batch).await.map_err(|e| Stop::Failed(e.to_string()))?);
        }
        let missing_set: HashSet<&String> = missing.iter().collect();
        let present: u64 = s.needed.iter().filter(|h| !missing_set.contains(h)).map(|h| s.table[h].1).sum();
        s.progress.advance_to(present);
        s.progress.report(&self.api, self.project, true).await;

        let mut queue = missing.into_iter();
        let mut running = futures_util::stream::FuturesUnordered::new();
        let mut served = Served::default();
        let mut result = Ok(());
        loop {
            while result.is_ok() && running.len() < UPLOADS_AT_ONCE {
                let Some(hash) = queue.next() else { break };
                if let Some(end) = s.ended() {
                    if end == End::Stopped {
                        result = Err(Stop::Cancelled);
                    }
                    break;
                }
                running.push(self.upload(s, hash));
            }
            match running.next().await {
                None => break,
                Some(Ok(size)) => {
                    served.uploaded_chunks += 1;
                    served.uploaded_bytes += size;
                }
                Some(Err(e)) => {
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
            }
        }
        result?;
        match s.ended() {
            Some(End::Stopped) => return Err(Stop::Cancelled),
            Some(End::Completed) => {}
            None => {
                // Every needed chunk is on the relay.
                s.progress.advance_to(s.progress.total);
                s.progress.report(&self.api, self.project, true).await;
            }
        }
        Ok(served)
    }

    /// Re-reads one chunk from the file by offset, compresses it when that
    /// pays, uploads it. It is not hashed here: the server hashes every
    /// upload and stores only a chunk that hashes to its name, so a chunk
    /// changed since the scan comes back as `hash_mismatch`, which means
    /// the file changed here (a second pass over every byte saved).
    async fn upload(&self, s: &Serving, hash: String) -> Result<u64, Stop> {
        let (offset, size) =
            *s.table.get(&hash).ok_or_else(|| Stop::Failed(format!("chunk {hash} is not part of the file")))?;
        let abs = s.abs.clone();
        let (body, zstd) = tokio::task::spawn_blocking(move || {
            let bytes = read_unhashed(&abs, offset, size)?;
            Ok::<_, String>(match compressed(&bytes) {
                Some(smaller) => (Bytes::from(smaller), true),
                None => (Bytes::from(bytes), false),
            })
        })
        .await
        .map_err(|e| Stop::Failed(e.to_string()))?
        .map_err(Stop::Failed)?;
        if let Err(e) = self.api.put_chunk(self.project, &hash, body, zstd).await {
            if changed_here(&e) {
                self.found_changed(&s.job.file_path);
            }
            return Err(upload_refused(e));
        }
        s.progress.add(size);
        s.progress.report(&self.api, self.project, false).await;
        Ok(size)
    }

    /// One chunk of the transfer's file, read at its offset (on a blocking
    /// thread: the network tasks keep running). It is not hashed here: the
    /// member verifies every chunk, and takes one that does not verify (the
    /// file changed here since the scan) to the relay, which hashes every
    /// upload and fails the transfer as changed at the source.
    async fn read_chunk(&self, s: &Serving, hash: &str) -> Result<Bytes, String> {
        let (offset, size) = *s.table.get(hash).ok_or_else(|| format!("chunk {hash} is not part of the file"))?;
        let abs = s.abs.clone();
        tokio::task::spawn_blocking(move || read_unhashed(&abs, offset, size).map(Bytes::from))
            .await
            .map_err(|e| e.to_string())?
    }

    /// The transfer, while it is being served here.
    fn active(&self, transfer: Uuid) -> Option<Arc<Serving>> {
        lock(&self.transfers).active.get(&transfer).cloned().filter(|s| s.ended().is_none())
    }

    /// A transfer a member asks for directly that is not (or no longer)
    /// served here, looked up on the server: its request, or its retry, may
    /// not have reached this agent over the WebSocket yet. None when it is
    /// not an open transfer of this project and device.
    async fn take_up_asked(self: &Arc<Self>, transfer: Uuid) -> Option<Arc<Serving>> {
        let t = self.api.transfer(self.project, transfer).await.ok()?;
        if t.source_device.id != self.device_id || !t.status.is_active() {
            return None;
        }
        self.take_up(t.into(), true).or_else(|| lock(&self.transfers).active.get(&transfer).cloned())
    }
}

/// The chunk at (offset, size) of `abs` as the file holds it now, not
/// hashed (whoever receives it does); an error naming the failure.
fn read_unhashed(abs: &std::path::Path, offset: u64, size: u64) -> Result<Vec<u8>, String> {
    scan::read_at(abs, offset, size).map_err(|e| format!("file_unreadable_at_source: {e}"))
}

/// Whether the server refused an upload as `hash_mismatch`: the bytes read
/// are not the chunk scanned, so the file changed here since.
fn changed_here(e: &ClientError) -> bool {
    matches!(e, ClientError::Api { status: 422, code, .. } if code == "hash_mismatch")
}

/// Why an upload failed, as the transfer's failure.
fn upload_refused(e: ClientError) -> Stop {
    if changed_here(&e) {
        return Stop::Failed(FailureReason::FileChangedAtSource.to_string());
    }
    Stop::Failed(e.to_string())
}

/// The chunk zstd-compressed, when that saves at least a tenth: a sample
/// is tried first, so incompressible data (media, archives) costs little.
/// The compressor is kept per thread: a new one for each chunk costs as
/// much as the sample.
fn compressed(bytes: &[u8]) -> Option<Vec<u8>> {
    thread_local! {
        static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    let worth = |raw: usize, packed: usize| (packed as f64) < raw as f64 * WORTH_IT;
    COMPRESSOR.with_borrow_mut(|compressor| {
        if compressor.is_none() {
            *compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
        }
        let compressor = compressor.as_mut()?;
        let sample = &bytes[..bytes.len().min(PROBE_BYTES)];
        if !worth(sample.len(), compressor.compress(sample).ok()?.len()) {
            return None;
        }
        let packed = compressor.compress(bytes).ok()?;
        worth(bytes.len(), packed.len()).then_some(packed)
    })
}

/// The direct listener's view of the agent: the sources of every project
/// the process serves (one listener, one key, for all of them).
pub struct DirectChunks(pub Vec<Arc<Source>>);

impl DirectChunks {
    /// The project source serving `transfer`, and its serving: one being
    /// served here, else one a project's server knows as open.
    async fn serving(&self, transfer: Uuid) -> Result<(&Arc<Source>, Arc<Serving>), Refusal> {
        if let Some(found) = self.0.iter().find_map(|source| source.active(transfer).map(|s| (source, s))) {
            return Ok(found);
        }
        for source in &self.0 {
            if let Some(s) = source.take_up_asked(transfer).await {
                return Ok((source, s));
            }
        }
        Err(Refusal::TransferOver)
    }
}

#[async_trait::async_trait]
impl Chunks for DirectChunks {
    async fn chunk(&self, transfer: Uuid, hash: &str) -> Result<Bytes, Refusal> {
        let (source, s) = self.serving(transfer).await?;
        if s.ended().is_some() {
            return Err(Refusal::TransferOver);
        }
        if !s.table.contains_key(hash) {
            return Err(Refusal::NotInTransfer);
        }
        s.touch();
        let bytes = source.read_chunk(&s, hash).await.map_err(Refusal::Unavailable)?;
        s.touch();
        if lock(&s.sent_direct).insert(hash.to_owned(), bytes.len() as u64).is_none() {
            s.progress.add(bytes.len() as u64);
        }
        Ok(bytes)
    }
}

/// A transfer's progress: bytes provided, reported now and then.
struct Progress {
    transfer: Uuid,
    total: u64,
    done: AtomicU64,
    /// When, and with what, the last report went.
    reported: Mutex<(Instant, u64)>,
    bar: indicatif::ProgressBar,
}

impl Progress {
    fn add(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::SeqCst);
        self.bar.inc(bytes);
    }

    fn advance_to(&self, bytes: u64) {
        let before = self.done.fetch_max(bytes, Ordering::SeqCst);
        self.bar.inc(bytes.saturating_sub(before));
    }

    async fn report(&self, api: &Api, project: Uuid, force: bool) {
        let bytes = self.done.load(Ordering::SeqCst).min(self.total);
        {
            let mut reported = lock(&self.reported);
            if reported.1 == bytes || (!force && reported.0.elapsed() < PROGRESS_EVERY) {
                return;
            }
            *reported = (Instant::now(), bytes);
        }
        let report = TransferReport { bytes_transferred: Some(bytes as i64), ..Default::default() };
        // A 409 (the relay's own count ran ahead, or the transfer ended
        // meanwhile) is not this transfer's failure.
        let _ = api.report_transfer(project, self.transfer, &report).await;
    }
}

#[cfg(test)]
mod tests {
    use super::{compressed, upload_refused, ClientError, FailureReason, Stop};

    #[test]
    fn a_chunk_the_server_finds_changed_fails_the_transfer_as_changed_at_source() {
        let refused = |status, code: &str| {
            upload_refused(ClientError::Api { status, code: code.into(), message: "the bytes hash to ...".into() })
        };
        let changed = FailureReason::FileChangedAtSource.to_string();
        assert!(matches!(refused(422, "hash_mismatch"), Stop::Failed(why) if why == changed));
        assert!(
            matches!(refused(507, "quota_exceeded"), Stop::Failed(why) if why != changed && why.contains("quota_exceeded"))
        );
        assert!(matches!(refused(422, "invalid_hash"), Stop::Failed(why) if why != changed));
    }

    #[test]
    fn chunks_are_compressed_only_when_it_pays() {
        let text: Vec<u8> = (0..50_000).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        let packed = compressed(&text).expect("text compresses");
        assert!(packed.len() < text.len() / 2);
        assert_eq!(zstd::bulk::decompress(&packed, text.len()).unwrap(), text);
        // Noise does not: sent as it is.
        let mut state = 7u64;
        let noise: Vec<u8> = (0..300_000)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 33) as u8
            })
            .collect();
        assert!(compressed(&noise).is_none());
    }
}
