//! Shared by the benchmarks (`mod common;` in each): on top of the test
//! support they share with the integration tests (a scratch database, the
//! real server in process, the calls that set a scene up), environment
//! knobs, generated files and figures.
//!
//! Not a bench itself: cargo only discovers `benches/*.rs` and
//! `benches/*/main.rs`. Each bench uses part of it.

#![allow(dead_code)]

pub mod cli;
#[path = "../../tests/support/mod.rs"]
pub mod support;

pub use support::{connect, BoxError, Calls};

use std::error::Error;
use std::future::Future;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use ferry::config::ServeSettings;
use ferry::store::Pool;
use futures_util::FutureExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

/// A positive number from the environment, or `default`.
pub fn env_num<T>(name: &str, default: T) -> Result<T, BoxError>
where
    T: FromStr + PartialOrd + Default + Copy,
{
    match std::env::var(name) {
        Ok(s) => match s.trim().replace('_', "").parse::<T>() {
            Ok(v) if v > T::default() => Ok(v),
            _ => Err(format!("{name} must be a positive number, not {s:?}").into()),
        },
        Err(_) => Ok(default),
    }
}

/// A comma-separated list of positive numbers from the environment, or `default`.
pub fn env_list(name: &str, default: &[usize]) -> Result<Vec<usize>, BoxError> {
    match std::env::var(name) {
        Ok(s) => s
            .split(',')
            .map(|part| match part.trim().replace('_', "").parse::<usize>() {
                Ok(v) if v > 0 => Ok(v),
                _ => Err(format!("{name} must list positive numbers separated by commas, not {s:?}").into()),
            })
            .collect(),
        Err(_) => Ok(default.to_vec()),
    }
}

/// The 1/5/15-minute load averages, as `uptime` prints them.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// The whole machine's counters: bytes its disks read and wrote
/// (`/sys/block/*/stat`) and CPU time by kind (`/proc/stat`). Taken before
/// and after a measurement, they say whether the disk or the hypervisor set
/// its pace, which the processes' own figures cannot show.
#[derive(Debug, Clone, Copy, Default)]
pub struct Machine {
    read: u64,
    written: u64,
    busy: u64,
    iowait: u64,
    steal: u64,
    idle: u64,
}

impl Machine {
    pub fn now() -> Self {
        let mut machine = Machine::default();
        for entry in std::fs::read_dir("/sys/block").into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Whole disks only: not loop or RAM devices, nor device-mapper
            // volumes (their disks count their bytes already).
            if ["loop", "ram", "zram", "dm-", "sr"].iter().any(|p| name.starts_with(p)) {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            let fields: Vec<u64> = stat.split_whitespace().filter_map(|f| f.parse().ok()).collect();
            // Sectors (512 bytes) read are the 3rd field, written the 7th.
            if fields.len() > 6 {
                machine.read += fields[2] * 512;
                machine.written += fields[6] * 512;
            }
        }
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        // cpu  user nice system idle iowait irq softirq steal ...
        let cpu: Vec<u64> =
            stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
        if cpu.len() > 7 {
            machine.busy = cpu[0] + cpu[1] + cpu[2] + cpu[5] + cpu[6];
            machine.idle = cpu[3];
            machine.iowait = cpu[4];
            machine.steal = cpu[7];
        }
        machine
    }

    /// What the machine did since `before`, as one line.
    pub fn since(&self, before: &Machine) -> String {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        // Saturating: a disk that went away meanwhile takes its counts along.
        let [read, written, busy, iowait, steal, idle] = [
            (self.read, before.read),
            (self.written, before.written),
            (self.busy, before.busy),
            (self.iowait, before.iowait),
            (self.steal, before.steal),
            (self.idle, before.idle),
        ]
        .map(|(now, then)| now.saturating_sub(then));
        let total = (busy + iowait + steal + idle).max(1) as f64;
        let share = |t: u64| 100.0 * t as f64 / total;
        format!(
            "disks read {:.0} MiB, wrote {:.0} MiB; CPU busy {:.0}%, waiting for the disk {:.0}%, \
             taken by the hypervisor {:.0}%, idle {:.0}%",
            mib(read),
            mib(written),
            share(busy),
            share(iowait),
            share(steal),
            share(idle),
        )
    }
}

/// Creates `ferry_bench_<random>` (see [`support::admin_url`] for where),
/// runs `bench` with its URL (catching a panic, so the database is still
/// dropped), drops it WITH (FORCE).
/// `bench` answers whether its checks passed.
pub async fn with_database<F, Fut>(bench: F) -> ExitCode
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<bool, BoxError>>,
{
    let (db_name, url) = match support::scratch_database("ferry_bench").await {
        Ok(created) => created,
        Err(e) => {
            eprintln!("cannot create the bench's database: {}", chain(e.as_ref()));
            return ExitCode::FAILURE;
        }
    };

    let result = AssertUnwindSafe(bench(url)).catch_unwind().await;

    if let Err(e) = support::drop_database(&db_name).await {
        eprintln!("could not drop database {db_name}: {e}");
    }
    match result {
        Ok(Ok(true)) => ExitCode::SUCCESS,
        Ok(Ok(false)) => ExitCode::FAILURE,
        Ok(Err(e)) => {
            eprintln!("bench failed: {}", chain(e.as_ref()));
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("bench panicked");
            ExitCode::FAILURE
        }
    }
}

/// A pool on the bench database, migrated, with every projection built.
pub async fn prepare(url: &str, pool_size: usize) -> Result<Pool, BoxError> {
    let pool = ferry::store::connect(url, pool_size)?;
    ferry::store::migrate::run(&pool).await?;
    ferry::projections::ensure_up_to_date(&pool).await?;
    Ok(pool)
}

pub async fn server_version(pool: &Pool) -> Result<String, BoxError> {
    Ok(pool.get().await?.query_one("SHOW server_version", &[]).await?.get(0))
}

pub fn chain(error: &(dyn Error + 'static)) -> String {
    ferry::telemetry::error_chain(error)
}

/// The `q`-quantile (0..=1) of sorted samples, nearest rank.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The real server, in-process on 127.0.0.1:0, as `ferryd serve` runs it;
/// its calls through `Deref`.
pub struct App {
    pub workers: usize,
    pub pool_size: usize,
    calls: Calls,
    serving: support::Serving,
}

impl std::ops::Deref for App {
    type Target = Calls;

    fn deref(&self) -> &Calls {
        &self.calls
    }
}

impl App {
    /// Starts the server with the settings `ferryd serve` would take from
    /// its defaults and `FERRY_*` environment (one HTTP worker per core, a
    /// pool of 16, unless `FERRY_WORKERS`/`FERRY_DB_POOL_SIZE` say otherwise),
    /// on `database_url`, listening on 127.0.0.1:0.
    pub async fn start(database_url: &str) -> Result<Self, BoxError> {
        Self::start_with(database_url, &[]).await
    }

    /// [`App::start`] with more `ferryd serve` flags after those (say
    /// `--relay-store DIR`).
    pub async fn start_with(database_url: &str, flags: &[&str]) -> Result<Self, BoxError> {
        #[derive(clap::Parser)]
        struct Serve {
            #[command(flatten)]
            settings: ServeSettings,
        }
        let args = ["bench", "--database-url", database_url, "--bind", "127.0.0.1:0"];
        let settings = <Serve as clap::Parser>::try_parse_from(args.iter().chain(flags).copied())?.settings;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = settings.workers.unwrap_or(cores);
        let pool_size = settings.database.pool_size;
        let serving = support::Serving::start(&settings).await?;
        let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
        let calls = Calls { address: serving.address.clone(), http };
        Ok(Self { workers, pool_size, calls, serving })
    }

    /// Stops the server gracefully and waits for it (its pool closes).
    pub async fn stop(self) {
        self.serving.stop().await;
    }
}

/// BLAKE3 of `seed`, hex: a well-formed file or chunk hash.
pub fn hash_of(seed: impl AsRef<[u8]>) -> String {
    blake3::hash(seed.as_ref()).to_hex().to_string()
}

/// One file as a source device describes it: a path, a size, its BLAKE3,
/// and its 4 MiB chunks (1–3 of them).
#[derive(Debug, Clone)]
pub struct FileRow {
    pub path: String,
    pub size: i64,
    pub hash: String,
    pub mime_type: &'static str,
    pub modified_at: chrono::DateTime<chrono::Utc>,
    pub chunks: Vec<(String, i64)>,
}

const KINDS: &[(&str, &str)] = &[
    ("jpg", "image/jpeg"),
    ("pdf", "application/pdf"),
    ("txt", "text/plain"),
    ("mp4", "video/mp4"),
    ("png", "image/png"),
];
pub const CHUNK_BYTES: i64 = 4 * 1024 * 1024;

impl FileRow {
    /// A file at `stem` plus an extension (the MIME type follows it).
    pub fn new(rng: &mut impl rand::Rng, stem: &str) -> Self {
        let (ext, mime_type) = KINDS[rng.gen_range(0..KINDS.len())];
        let path = format!("{stem}.{ext}");
        let size = rng.gen_range(1..=3 * CHUNK_BYTES);
        let chunks = (0..(size + CHUNK_BYTES - 1) / CHUNK_BYTES)
            .map(|i| {
                let len = (size - i * CHUNK_BYTES).min(CHUNK_BYTES);
                (hash_of(format!("{path}#{i}#{}", rng.gen::<u64>())), len)
            })
            .collect();
        let modified_at = chrono::DateTime::from_timestamp(1_700_000_000 + rng.gen_range(0..50_000_000), 0)
            .expect("a valid timestamp");
        Self { hash: hash_of(format!("{path}#{}", rng.gen::<u64>())), path, size, mime_type, modified_at, chunks }
    }

    pub fn chunks_json(&self) -> Value {
        Value::Array(self.chunks.iter().map(|(hash, size)| json!({"hash": hash, "size": size})).collect())
    }

    /// The `upsert` change of a `files/update` body.
    pub fn upsert(&self) -> Value {
        json!({"op": "upsert", "path": self.path, "size": self.size, "hash": self.hash,
               "mime_type": self.mime_type, "modified_at": self.modified_at, "chunks": self.chunks_json()})
    }

    /// The `file_added` payload ferry appends for it.
    pub fn state(&self) -> ferry::protocol::events::data::FileState {
        ferry::protocol::events::data::FileState {
            path: self.path.clone(),
            size: self.size,
            hash: self.hash.clone(),
            mime_type: self.mime_type.to_owned(),
            modified_at: Some(self.modified_at),
            chunks: Some(
                self.chunks
                    .iter()
                    .map(|(hash, size)| ferry::protocol::files::ChunkRef { hash: hash.clone(), size: *size })
                    .collect(),
            ),
            version: 1,
        }
    }
}

/// A `files/update` body, serialised ahead so the client's JSON work is
/// not timed.
pub fn update_body(files: &[FileRow]) -> Vec<u8> {
    let changes: Vec<Value> = files.iter().map(FileRow::upsert).collect();
    serde_json::to_vec(&json!({ "changes": changes })).expect("JSON")
}

/// Pushes a prepared `files/update` body with a device token; answers the
/// response (which must be 200).
pub async fn push_body(app: &App, device_token: &str, project: Uuid, body: Vec<u8>) -> Result<Value, BoxError> {
    let res = app
        .http
        .post(app.url(&format!("/api/projects/{project}/files/update")))
        .bearer_auth(device_token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await?;
    let status = res.status();
    let bytes = res.bytes().await?;
    if status != StatusCode::OK {
        return Err(format!("files/update answered {status}: {}", String::from_utf8_lossy(&bytes)).into());
    }
    Ok(serde_json::from_slice(&bytes)?)
}

/// Writes `size` bytes of xorshift noise (neither compressible nor
/// repeating) and fsyncs them; answers their BLAKE3.
pub fn noise_file(path: &Path, size: u64) -> std::io::Result<String> {
    let mut file = std::fs::File::create(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut block = vec![0u8; 8 << 20];
    let mut left = size;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n])?;
        hasher.update(&block[..n]);
        left -= n as u64;
    }
    file.sync_all()?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// CPU time (user + system) a process has used so far, in seconds, from
/// `/proc/<pid>/stat`: compared before and after a phase, it says what the
/// phase cost each process whatever else the machine was doing.
pub fn cpu_seconds(pid: u32) -> Result<f64, BoxError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces), counted from
    // field 3: utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').ok_or("a malformed /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields.get(11).ok_or("no utime")?.parse::<u64>()? + fields.get(12).ok_or("no stime")?.parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 / per_second)
}

/// The CPU seconds of a set of processes, summed (those gone count 0).
pub fn cpu_seconds_of(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|&pid| cpu_seconds(pid).ok()).sum()
}

/// Times this process's threads have gone to sleep (given up the CPU
/// waiting for something), summed over `/proc/self/task/*/status`: each is
/// a wake-up to come.
pub fn context_switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
        })
        .sum()
}

/// The server processes of the connections to `url`'s database (the pool's
/// backends, while they are connected).
pub async fn backend_pids(url: &str) -> Result<Vec<u32>, BoxError> {
    let client = connect(url).await?;
    let rows = client
        .query("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()", &[])
        .await?;
    Ok(rows.iter().map(|r| r.get::<_, i32>(0) as u32).collect())
}
