//! `cargo bench --bench pull`: one large file from the owner's `ferry share`
//! agent to a member's `ferry pull`, both the real release `ferry` binary,
//! against the real server in-process (its relay a folder store), in two
//! modes: direct (the agent's default: it listens on its own HTTPS port,
//! pinned TLS, and the member fetches from it), the same over plain HTTP
//! (`FERRY_INSECURE_PLAIN_DIRECT_FOR_BENCHMARKS=1` for both, only to show
//! what TLS costs: goal < 15%) and relayed (`ferry share --no-direct`:
//! agent → relay → member). MB/s is the file's bytes over the wall time of
//! the `ferry pull` command, into a fresh empty folder, with the agent
//! started beforehand and done with its first scan. Beside them, a raw
//! baseline in the same run, before each mode and after the last (so drift
//! shows; the ratios take the median): a plain loopback copy of the same
//! file, a std `TcpListener` on 127.0.0.1 reading the file into a socket and
//! a client writing the socket into a file in a target folder and fsyncing
//! it, timed end to end; and the ratios ours/raw. Since `ferry pull` writes
//! a large file past the page cache (`O_DIRECT`), one more raw copy whose
//! client writes the same way runs after the last, and the ratios against
//! it are printed beside.
//!
//! Then the delta, in each mode: one byte in the middle of the source is
//! flipped; once the agent has pushed the change, `ferry pull` again into
//! the same folder. Printed: the bytes it moved, the chunks that changed
//! (from the file's chunk lists in the event log) against the goal of at
//! most two chunks (≤ 2 × the 4 MiB FastCDC maximum = 8 MiB), and its wall
//! time (it still writes and fsyncs the whole file anew).
//!
//! Memory and disk, for each full pull: the peak RSS growth of the server
//! (this process: its peak is reset just before the pull, through
//! `/proc/self/clear_refs`), of the agent (reset likewise) and of `ferry
//! pull` (its peak over its own start), and the peak extra disk in the
//! member's folder (blocks in use beyond the finished file), sampled every
//! 20 ms while the pull runs. Goals: each RSS growth < 64 MiB, extra disk
//! ≈ 0 (the part file is the file).
//!
//! And for each full pull and each raw copy, what the whole machine did
//! meanwhile: the bytes its disks read and wrote, and how its CPU time was
//! spent (busy, waiting for the disk, taken by the hypervisor, idle). A
//! relayed pull writes every byte twice (the relay's store, the member's
//! file) where the raw copy writes it once, so on a slow disk this says
//! which of the two set the pace.
//!
//! Every pulled file must hash (BLAKE3) to the source's, `bytes_direct`
//! must be all the bytes in direct mode and none in relayed mode, and a
//! delta's bytes must be exactly its new chunks: otherwise the bench fails.
//!
//! Environment: `FERRY_BENCH_PULL_MB` (default 1024) is the file's size in
//! MiB; `FERRY_BENCH_PULL_MODES` (default `relayed,direct-plain,direct`)
//! the modes to run; `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) names the server, where
//! the bench makes its own `ferry_bench_<random>` database and drops it at
//! the end; `FERRY_WORKERS`, `FERRY_DB_POOL_SIZE` as for `ferryd serve`.
//! Files live in a folder under `target/tmp`, removed at the end.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use common::cli::{path_str, Agent, Person};
use common::{App, BoxError};
use serde_json::Value;
use uuid::Uuid;

const MIB: u64 = 1024 * 1024;
const FILE: &str = "big.bin";
/// The FastCDC maximum chunk (src/client/scan.rs).
const MAX_CHUNK: u64 = ferry::client::scan::MAX_CHUNK as u64;
/// The delta goal: a one-byte change costs at most this many chunks.
const GOAL_CHUNKS: usize = 2;
/// Copy buffer of the raw baseline.
const RAW_BUFFER: usize = 1 << 20;
/// Label column of the printed table.
const W: usize = 58;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Direct,
    /// Direct over plain HTTP: the baseline TLS is measured against.
    DirectPlain,
    Relayed,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::DirectPlain => "direct-plain",
            Mode::Relayed => "relayed",
        }
    }

    /// `FERRY_BENCH_PULL_MODES` (comma-separated names; default all), in
    /// the order they run: relayed first, since stopping a --no-direct
    /// agent leaves no direct endpoint behind.
    fn chosen() -> Result<Vec<Mode>, BoxError> {
        let all = [Mode::Relayed, Mode::DirectPlain, Mode::Direct];
        let Ok(names) = std::env::var("FERRY_BENCH_PULL_MODES") else { return Ok(all.to_vec()) };
        let names: Vec<&str> = names.split(',').map(str::trim).collect();
        if let Some(unknown) = names.iter().find(|n| !all.iter().any(|m| m.name() == **n)) {
            return Err(format!("FERRY_BENCH_PULL_MODES: no mode {unknown:?} (relayed, direct-plain, direct)").into());
        }
        Ok(all.into_iter().filter(|m| names.contains(&m.name())).collect())
    }

    fn direct(self) -> bool {
        self != Mode::Relayed
    }
}

/// Longest the agent may take to push a one-byte change (a re-hash of the file).
const DELTA_PUSHED_WITHIN: Duration = Duration::from_secs(120);

/// The TLS cost goal: direct over TLS within this share of plain HTTP's throughput.
const GOAL_TLS_COST: f64 = 0.15;

#[tokio::main]
async fn main() -> ExitCode {
    common::with_database(run).await
}

/// The RSS growth goal of each process.
const GOAL_RSS: u64 = 64 * MIB;

/// Peak figures of one pull, in bytes.
#[derive(Debug, Default, Clone)]
struct Peaks {
    server_growth: u64,
    agent_growth: u64,
    pull_growth: u64,
    pull_peak: u64,
    disk_extra: u64,
    /// CPU seconds (user + system) each spent during the pull: where the
    /// time goes on a machine with few cores.
    cpu_server: f64,
    cpu_agent: f64,
    cpu_pull: f64,
    /// What the whole machine did meanwhile (disks, CPU by kind).
    machine: String,
}

/// A `/proc/PID/status` figure (`VmRSS`, `VmHWM`) in bytes.
fn proc_status(pid: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    let kib: u64 = line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// Resets the process's peak RSS (VmHWM) to its current RSS.
fn reset_peak(pid: &str) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// Bytes of disk blocks in use under `dir`.
fn disk_used(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_used(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// `ferry pull PROJECT --to DIR --json`, timed from spawn to exit, with the
/// peaks of memory (server, agent, pull) and of the member's folder on disk.
async fn measured_pull(
    member: &Person,
    project: &str,
    to: &Path,
    agent: u32,
    size: u64,
) -> Result<(Value, Duration, Peaks), BoxError> {
    // CPU time of a process (this one is the server), 0 once it is gone.
    let cpu_seconds = |pid: u32| common::cpu_seconds(pid).unwrap_or(0.0);
    let server = std::process::id();
    let agent_pid = agent;
    let agent = agent.to_string();
    reset_peak("self");
    reset_peak(&agent);
    let server_base = proc_status("self", "VmRSS").unwrap_or(0);
    let agent_base = proc_status(&agent, "VmRSS").unwrap_or(0);
    std::fs::create_dir_all(to)?;
    let disk_base = disk_used(to);
    let (server_cpu0, agent_cpu0) = (cpu_seconds(server), cpu_seconds(agent_pid));
    let machine = common::Machine::now();

    let started = Instant::now();
    let child = member
        .command(&["pull", project, "--to", path_str(to)?, "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let pull = child.id().ok_or("pull exited at once")?;
    let pid = pull.to_string();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (stop, to) = (stop.clone(), to.to_path_buf());
        std::thread::spawn(move || {
            // (pull's first RSS, pull's peak, disk peak)
            let (mut first, mut peak, mut disk, mut cpu) = (None, 0u64, 0u64, 0f64);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                cpu = cpu.max(cpu_seconds(pull));
                if let Some(rss) = proc_status(&pid, "VmRSS") {
                    first.get_or_insert(rss);
                }
                peak = peak.max(proc_status(&pid, "VmHWM").unwrap_or(0));
                disk = disk.max(disk_used(&to));
                std::thread::sleep(Duration::from_millis(20));
            }
            (first.unwrap_or(0), peak, disk, cpu)
        })
    };
    let output = child.wait_with_output().await?;
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (pull_first, pull_peak, disk_peak, pull_cpu) = sampler.join().map_err(|_| "the sampler panicked")?;
    let peaks = Peaks {
        server_growth: proc_status("self", "VmHWM").unwrap_or(0).saturating_sub(server_base),
        agent_growth: proc_status(&agent, "VmHWM").unwrap_or(0).saturating_sub(agent_base),
        pull_growth: pull_peak.saturating_sub(pull_first),
        pull_peak,
        disk_extra: disk_peak.saturating_sub(disk_base).saturating_sub(size),
        cpu_server: cpu_seconds(server) - server_cpu0,
        cpu_agent: cpu_seconds(agent_pid) - agent_cpu0,
        // As last sampled (up to 20 ms short of its end).
        cpu_pull: pull_cpu,
        machine: common::Machine::now().since(&machine),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout.lines().last().and_then(|l| serde_json::from_str::<Value>(l).ok()) {
        Some(v) if output.status.success() => Ok((v, took, peaks)),
        _ => Err(format!(
            "`ferry pull` failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
        .into()),
    }
}

/// A folder under `target/tmp`, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<Self> {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-pull-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn run(url: String) -> Result<bool, BoxError> {
    let mib: u64 = common::env_num("FERRY_BENCH_PULL_MB", 1024)?;
    let size = mib * MIB;
    let modes = Mode::chosen()?;
    let load_before = common::load();
    let root = TempDir::new()?;
    let src = root.0.join("src");
    let relay = root.0.join("relay");
    std::fs::create_dir_all(&src)?;

    let started = Instant::now();
    let source = src.join(FILE);
    let mut source_hash = blocking({
        let source = source.clone();
        move || common::noise_file(&source, size)
    })
    .await?;
    let generated = started.elapsed();

    let quota = (3 * size).max(10 * 1024 * MIB).to_string();
    let app = App::start_with(&url, &["--relay-store", path_str(&relay)?, "--relay-quota-bytes", &quota]).await?;
    let db = common::connect(&url).await?;
    let pg: String = db.query_one("SHOW server_version", &[]).await?.get(0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "pull bench: PostgreSQL {pg}, load {load_before}, {cores} cores, server in-process ({} HTTP workers, {} database connections shared out between them and the background), \
         relay in a folder store; one {mib} MiB file of noise ({size} bytes, generated in {:.1} s); \
         real `ferry share` → `ferry pull` ({})",
        app.workers,
        app.pool_size,
        generated.as_secs_f64(),
        env!("CARGO_BIN_EXE_ferry"),
    );

    let mut owner = Person::new(&root.0, "owner", &app.address)?;
    let mut member = Person::new(&root.0, "member", &app.address)?;
    owner.signup().await?;
    member.signup().await?;
    let project = field(&owner.json(&["project", "create", "Pull"]).await?["id"])?;
    let invite = field(&owner.json(&["invite", "create", &project]).await?["token"])?;
    member.json(&["join", &invite]).await?;
    let project_id: Uuid = project.parse()?;

    let mut ok = true;
    let mut fail = |what: String| {
        println!("  FAILED: {what}");
        ok = false;
    };

    // The raw copy before each mode and after the last: this machine's disk
    // and page cache swing it by a factor of three between runs, so the
    // ratios take the median.
    let mut raws = Vec::new();
    let raw_dir = root.0.join("raw");

    let mut pulls = Vec::new();
    let mut deltas = Vec::new();
    for (round, mode) in modes.into_iter().enumerate() {
        raw_run(&mut raws, &source, &raw_dir, size, &format!("before the {} pull", mode.name())).await?;
        let plain = (mode == Mode::DirectPlain).then_some("1");
        owner.set_env(ferry::client::direct::INSECURE_PLAIN_DIRECT, plain);
        member.set_env(ferry::client::direct::INSECURE_PLAIN_DIRECT, plain);
        settle().await;
        let started = Instant::now();
        let extra: &[&str] = if mode == Mode::Relayed { &["--no-direct"] } else { &[] };
        let mut agent = Agent::start(&owner, &project, &src, extra)?;
        let synced = agent.wait_for("its first push", |v| v["event"] == "synced").await?;
        let scanned = started.elapsed();
        if mode.direct() {
            agent.wait_for("listening", |v| v["event"] == "listening").await?;
        }
        owner.wait_online(&project, true).await?;
        println!(
            "  {} agent up: first scan and push in {:.2} s ({} hashed, {} changes applied)",
            mode.name(),
            scanned.as_secs_f64(),
            synced["hashed"],
            synced["changes_applied"],
        );

        // The full pull, into a fresh empty folder.
        settle().await;
        let target = root.0.join(format!("to-{}", mode.name()));
        let pull_started = Instant::now();
        let handed_before = ferry::telemetry::CHUNKS_HANDED_OVER.get();
        let (result, took, peaks) = measured_pull(&member, &project, &target, agent.pid(), size).await?;
        if mode == Mode::Relayed {
            // How the member's requests met the uploads: handed over by the
            // upload as it landed, or read back from the store.
            println!(
                "  relayed chunks handed over by their upload (not read back from the store): {}",
                ferry::telemetry::CHUNKS_HANDED_OVER.get() - handed_before
            );
            // Which leg sets the pace: the agent's uploads, or the member's downloads.
            let (at, served) = agent.wait_for_at("serving the pull", |v| v["event"] == "transfer_served").await?;
            let upload = at.saturating_duration_since(pull_started);
            println!(
                "  relayed upload leg: the agent had put {} bytes on the relay {:.2} s after the pull started ({:.0} MB/s)",
                served["bytes_uploaded"],
                upload.as_secs_f64(),
                mb_per_s(size, upload)
            );
            // The download leg alone: a second member-side pull, every chunk already on the relay.
            let again = root.0.join("to-relayed-again");
            let (_, took) = member.pull(&project, &again).await?;
            println!(
                "  relayed download leg alone (every chunk already on the relay): {:.0} MB/s ({:.2} s)",
                mb_per_s(size, took),
                took.as_secs_f64()
            );
        }
        let pulled = target.join(FILE);
        let hash = blocking({
            let pulled = pulled.clone();
            move || hash_file(&pulled)
        })
        .await?;
        let direct_want = if mode.direct() { size } else { 0 };
        let fields = (result["files"].as_u64(), result["bytes_transferred"].as_u64(), result["bytes_direct"].as_u64());
        if fields != (Some(1), Some(size), Some(direct_want)) {
            fail(format!(
                "{} pull reported {result}; expected 1 file, {size} bytes, {direct_want} direct",
                mode.name()
            ));
        }
        if hash != source_hash {
            fail(format!("{} pull: BLAKE3 {hash}, the source's is {source_hash}", mode.name()));
        }
        println!("  {} pull: {:.0} MB/s ({:.2} s)", mode.name(), mb_per_s(size, took), took.as_secs_f64());
        println!(
            "  {} pull: peak RSS growth: server {:.1} MiB, agent {:.1} MiB, pull {:.1} MiB (its peak {:.1} MiB); \
             peak extra disk in the member's folder {:.1} MiB; CPU seconds server {:.2}, agent {:.2}, pull {:.2} \
             (wall {:.2} s, {cores} cores)",
            mode.name(),
            peaks.server_growth as f64 / MIB as f64,
            peaks.agent_growth as f64 / MIB as f64,
            peaks.pull_growth as f64 / MIB as f64,
            peaks.pull_peak as f64 / MIB as f64,
            peaks.disk_extra as f64 / MIB as f64,
            peaks.cpu_server,
            peaks.cpu_agent,
            peaks.cpu_pull,
            took.as_secs_f64(),
        );
        println!("  {} pull: the machine meanwhile: {}", mode.name(), peaks.machine);
        for (who, grew) in [("server", peaks.server_growth), ("agent", peaks.agent_growth), ("pull", peaks.pull_growth)]
        {
            if grew >= GOAL_RSS {
                println!(
                    "  note: {} {who} RSS growth {:.1} MiB is over the 64 MiB goal",
                    mode.name(),
                    grew as f64 / MIB as f64
                );
            }
        }
        pulls.push((mode, took, result, peaks));

        // The delta: one byte flipped in the middle of the source.
        let chunks_before = chunk_lists(&db, project_id).await?;
        let started = Instant::now();
        // One bit of its own per round: the byte differs from every earlier
        // version (a mask that XORs to nothing leaves no change to wait for).
        let mask = 1u8 << round;
        blocking({
            let source = source.clone();
            move || flip_byte(&source, size / 2, mask)
        })
        .await?;
        let pushed = agent
            .wait_for_within("the flipped byte pushed (`synced` with changes_applied >= 1)", DELTA_PUSHED_WITHIN, |v| {
                v["event"] == "synced" && v["changes_applied"].as_u64().is_some_and(|n| n >= 1)
            })
            .await?;
        let propagated = started.elapsed();
        source_hash = blocking({
            let source = source.clone();
            move || hash_file(&source)
        })
        .await?;
        let chunk_lists_after = chunk_lists(&db, project_id).await?;
        if chunk_lists_after.len() != chunks_before.len() + 1 {
            fail(format!(
                "{} delta: {} versions of the file in the log after the change, {} before",
                mode.name(),
                chunk_lists_after.len(),
                chunks_before.len()
            ));
        }
        let (old, new) = match chunk_lists_after.as_slice() {
            [.., old, new] => (old.clone(), new.clone()),
            _ => return Err("the file has fewer than two versions in the log".into()),
        };
        let changed: Vec<&(String, u64)> = new.iter().filter(|c| !old.iter().any(|o| o.0 == c.0)).collect();
        let changed_bytes: u64 = changed.iter().map(|c| c.1).sum();

        settle().await;
        let (delta, delta_took) = member.pull(&project, &target).await?;
        let hash = blocking(move || hash_file(&pulled)).await?;
        let moved = delta["bytes_transferred"].as_u64().unwrap_or(u64::MAX);
        let direct_want = if mode.direct() { moved } else { 0 };
        if delta["files"].as_u64() != Some(1)
            || moved != changed_bytes
            || delta["bytes_direct"].as_u64() != Some(direct_want)
        {
            fail(format!(
                "{} delta pull reported {delta}; expected 1 file and exactly the {} new chunks' {changed_bytes} bytes, \
                 {} of them direct",
                mode.name(),
                changed.len(),
                if mode.direct() { "all" } else { "none" }
            ));
        }
        if hash != source_hash {
            fail(format!("{} delta pull: BLAKE3 {hash}, the source's is {source_hash}", mode.name()));
        }
        deltas.push(Delta {
            mode,
            old_chunks: old.len(),
            new_chunks: new.len(),
            changed: changed.iter().map(|c| c.1).collect(),
            moved,
            took: delta_took,
            propagated,
            rehashed: pushed["hashed_bytes"].as_u64().unwrap_or(0),
        });

        agent.stop().await?;
        owner.wait_online(&project, false).await?;
        // Keep the disk to the folders still needed.
        let _ = std::fs::remove_dir_all(&target);
    }

    raw_run(&mut raws, &source, &raw_dir, size, "after the pulls").await?;
    raws.sort_by(f64::total_cmp);
    let raw = raws[raws.len() / 2];
    // The same copy written as pull writes a large file (past the page
    // cache), once: a reference, so the ratio above is not read as the
    // same writes done faster.
    settle().await;
    let raw_direct = mb_per_s(size, raw_copy(&source, &raw_dir, size, true).await?);

    println!("full pull of {mib} MiB into an empty folder (`ferry pull` wall time, agent already up):");
    for mode in [Mode::Direct, Mode::DirectPlain, Mode::Relayed] {
        let Some((_, took, result, peaks)) = pulls.iter().find(|p| p.0 == mode) else { continue };
        let how = match mode {
            Mode::Direct => "(a) direct:  agent's listener → member (TLS)",
            Mode::DirectPlain => "(a') direct over plain HTTP (insecure, bench only)",
            Mode::Relayed => "(b) relayed: agent → server relay (folder store) → member",
        };
        println!(
            "  {how:<W$} {:>6.0} MB/s  ({:.2} s; bytes_transferred {}, bytes_direct {})  ratio ours/raw {:.2} \
             (/raw past the cache {:.2})",
            mb_per_s(size, *took),
            took.as_secs_f64(),
            result["bytes_transferred"],
            result["bytes_direct"],
            mb_per_s(size, *took) / raw,
            mb_per_s(size, *took) / raw_direct,
        );
        println!(
            "  {:<W$} peak RSS growth server {:.1} / agent {:.1} / pull {:.1} MiB (goal < 64 each); peak extra disk {:.1} MiB",
            "",
            peaks.server_growth as f64 / MIB as f64,
            peaks.agent_growth as f64 / MIB as f64,
            peaks.pull_growth as f64 / MIB as f64,
            peaks.disk_extra as f64 / MIB as f64,
        );
    }
    let took = |mode: Mode| pulls.iter().find(|p| p.0 == mode).map(|p| p.1);
    if let (Some(tls), Some(plain)) = (took(Mode::Direct), took(Mode::DirectPlain)) {
        let cost = 1.0 - mb_per_s(size, tls) / mb_per_s(size, plain);
        println!(
            "  TLS costs {:.1}% of direct throughput (TLS {:.0} MB/s vs plain HTTP {:.0} MB/s; goal < {:.0}%: {})",
            cost * 100.0,
            mb_per_s(size, tls),
            mb_per_s(size, plain),
            GOAL_TLS_COST * 100.0,
            if cost < GOAL_TLS_COST { "met" } else { "NOT met" }
        );
    }
    println!(
        "  {:<W$} {raw:>6.0} MB/s  (the median of {} runs, {:.0}–{:.0} MB/s)",
        "raw: std TCP on 127.0.0.1, file → socket → file + fsync",
        raws.len(),
        raws[0],
        raws[raws.len() - 1],
    );
    println!(
        "  {:<W$} {raw_direct:>6.0} MB/s  (one run, for reference: the client writes as pull writes a large file)",
        "raw past the page cache (O_DIRECT whole blocks + fsync)",
    );

    println!(
        "delta: one byte flipped at offset {} (FastCDC chunks 256 KiB–1 MiB avg–4 MiB max; goal ≤ {GOAL_CHUNKS} chunks, \
         i.e. ≤ {} MiB):",
        size / 2,
        GOAL_CHUNKS as u64 * MAX_CHUNK / MIB
    );
    for d in &deltas {
        let met = d.changed.len() <= GOAL_CHUNKS && d.moved <= GOAL_CHUNKS as u64 * MAX_CHUNK;
        println!(
            "  {:<8} pulled {} bytes ({:.2} MiB) = {} new chunk(s) of {} [{}]; pull wall time {:.2} s; \
             goal {}; (the agent pushed the change {:.2} s after the flip, re-hashing {} MiB; {} → {} chunks)",
            d.mode.name(),
            d.moved,
            d.moved as f64 / MIB as f64,
            d.changed.len(),
            d.new_chunks,
            d.changed.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(" + "),
            d.took.as_secs_f64(),
            if met { "met" } else { "NOT met" },
            d.propagated.as_secs_f64(),
            d.rehashed / MIB,
            d.old_chunks,
            d.new_chunks,
        );
    }
    println!(
        "check: every pulled file's BLAKE3 equals the source's; bytes_direct all (direct) / none (relayed); \
         delta bytes = the new chunks' — {}",
        if ok { "OK" } else { "FAILED" }
    );
    println!("load after: {}", common::load());
    drop(db);
    app.stop().await;
    Ok(ok)
}

struct Delta {
    mode: Mode,
    old_chunks: usize,
    new_chunks: usize,
    /// Sizes of the chunks of the new version the old one lacked.
    changed: Vec<u64>,
    moved: u64,
    took: Duration,
    propagated: Duration,
    rehashed: u64,
}

/// The file's chunk lists (hash, size), oldest version first, from the
/// project's event log.
async fn chunk_lists(db: &tokio_postgres::Client, project: Uuid) -> Result<Vec<Vec<(String, u64)>>, BoxError> {
    let rows = db
        .query(
            "SELECT data->'chunks' FROM project_events
             WHERE project_id = $1 AND type IN ('file_added', 'file_updated') AND data->>'path' = $2
             ORDER BY seq",
            &[&project, &format!("/{FILE}")],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let chunks: Value = row.get(0);
            chunks
                .as_array()
                .ok_or_else(|| BoxError::from(format!("an event without a chunk list: {chunks}")))?
                .iter()
                .map(|c| match (c["hash"].as_str(), c["size"].as_u64()) {
                    (Some(h), Some(s)) => Ok((h.to_owned(), s)),
                    _ => Err(format!("a malformed chunk: {c}").into()),
                })
                .collect()
        })
        .collect()
}

fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 8 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize().to_hex().to_string());
        }
        hasher.update(&buf[..n]);
    }
}

/// XORs the byte at `offset` with `mask` (not 0) in place, and fsyncs.
fn flip_byte(path: &Path, offset: u64, mask: u8) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
    assert_ne!(mask, 0, "a zero mask changes nothing");
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut byte)?;
    byte[0] ^= mask;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(&byte)?;
    file.sync_all()
}

/// One raw copy after the previous phase's writes are out (as before every
/// timed phase), printed and added to `raws` (MB/s).
async fn raw_run(raws: &mut Vec<f64>, source: &Path, dir: &Path, size: u64, when: &str) -> Result<(), BoxError> {
    settle().await;
    let machine = common::Machine::now();
    let took = raw_copy(source, dir, size, false).await?;
    let machine = common::Machine::now().since(&machine);
    let speed = mb_per_s(size, took);
    println!(
        "  raw copy, run {} ({when}): {speed:.0} MB/s ({:.2} s); the machine meanwhile: {machine}",
        raws.len() + 1,
        took.as_secs_f64()
    );
    raws.push(speed);
    Ok(())
}

/// The raw baseline: a listener on 127.0.0.1 reads `source` into the socket;
/// a client reads the socket into a file in `dir` and fsyncs it. Timed from
/// the connect to the fsync; the copy is checked, then removed.
async fn raw_copy(source: &Path, dir: &Path, size: u64, past_cache: bool) -> Result<Duration, BoxError> {
    let (source, dir) = (source.to_path_buf(), dir.to_path_buf());
    blocking(move || {
        std::fs::create_dir_all(&dir)?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let sender = std::thread::spawn(move || -> std::io::Result<u64> {
            let (mut socket, _) = listener.accept()?;
            let mut file = std::fs::File::open(&source)?;
            let mut buf = vec![0u8; RAW_BUFFER];
            let mut sent = 0;
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    return Ok(sent);
                }
                socket.write_all(&buf[..n])?;
                sent += n as u64;
            }
        });
        let target = dir.join(FILE);
        let started = Instant::now();
        let mut socket = TcpStream::connect(address)?;
        let mut file = std::fs::File::create(&target)?;
        let received = if past_cache {
            receive_past_cache(&mut socket, &target)?
        } else {
            let mut buf = vec![0u8; RAW_BUFFER];
            let mut received = 0u64;
            loop {
                let n = socket.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                file.write_all(&buf[..n])?;
                received += n as u64;
            }
            received
        };
        file.sync_all()?;
        let took = started.elapsed();
        let sent = sender.join().map_err(|_| std::io::Error::other("the raw sender panicked"))??;
        if (sent, received) != (size, size) {
            return Err(std::io::Error::other(format!("raw copy: sent {sent}, received {received}, of {size}")));
        }
        std::fs::remove_dir_all(&dir)?;
        Ok(took)
    })
    .await
    .map_err(Into::into)
}

/// Between phases: the previous one's dirty pages written out, a moment's
/// quiet, so that one phase's writeback is not timed in the next.
async fn settle() {
    let _ = tokio::task::spawn_blocking(|| {
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(std::io::Error::other)?
}

/// The socket into `target` as `ferry pull` writes a large file: whole
/// 4 KiB blocks with `O_DIRECT` from an aligned buffer, the last partial
/// block through the page cache. Answers the bytes received.
fn receive_past_cache(socket: &mut TcpStream, target: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    const BLOCK: usize = 4096;
    let direct = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(target)?;
    let mut space = vec![0u8; RAW_BUFFER + BLOCK];
    let start = space.as_ptr().align_offset(BLOCK);
    let buf = &mut space[start..start + RAW_BUFFER];
    let (mut filled, mut written) = (0usize, 0u64);
    loop {
        let n = socket.read(&mut buf[filled..])?;
        filled += n;
        if n == 0 || filled == RAW_BUFFER {
            let whole = filled / BLOCK * BLOCK;
            direct.write_all_at(&buf[..whole], written)?;
            written += whole as u64;
            buf.copy_within(whole..filled, 0);
            filled -= whole;
        }
        if n == 0 {
            std::fs::OpenOptions::new().write(true).open(target)?.write_all_at(&buf[..filled], written)?;
            return Ok(written + filled as u64);
        }
    }
}

fn mb_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

fn field(v: &Value) -> Result<String, BoxError> {
    v.as_str().map(str::to_owned).ok_or_else(|| format!("expected a string, got {v}").into())
}
