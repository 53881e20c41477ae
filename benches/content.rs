//! `cargo bench --bench content`: one large file into a "browser" through
//! `GET .../transfers/:id/content` while the owner's real `ferry share
//! --no-direct` uploads it to the relay, against the real `ferryd serve`
//! binary (a separate process, so its memory is measured alone; its relay a
//! folder store). The member requests the file and at once opens the
//! content stream (reqwest, hashing what comes and keeping nothing, as a
//! browser writing to disk would keep nothing in memory); MB/s is the
//! file's bytes over the time from the request to the stream's verified
//! end. Printed beside it: when the agent had finished uploading (so
//! "download ≈ upload" shows), ferryd's resident memory before the stream
//! and its peak during it (VmRSS sampled every 20 ms, and VmHWM, from
//! /proc/<pid>/status), and a raw loopback copy of the same file (file →
//! 127.0.0.1 socket → reader that hashes and keeps nothing) measured in the
//! same run, before and after, with the ratio ours/raw. For the stream and
//! each raw copy, what the whole machine did meanwhile (disk bytes read and
//! written, CPU busy, waiting for the disk, taken by the hypervisor, idle):
//! the relay writes every byte to its store, the raw copy writes nothing.
//!
//! The stream must end cleanly, hash (BLAKE3) to the file's hash, and the
//! transfer must be `completed` by the server: otherwise the bench fails.
//!
//! Environment: `FERRY_BENCH_MB` (default 1024) is the file's size in MiB;
//! `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! names the server, where the bench makes its own `ferry_bench_<random>`
//! database and drops it at the end. Files live under `target/tmp`,
//! removed at the end.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use common::cli::{Agent, Person};
use common::BoxError;
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use uuid::Uuid;

const MIB: u64 = 1024 * 1024;
const FILE: &str = "big.bin";
const PASSWORD: &str = "correct horse battery";

#[tokio::main]
async fn main() -> ExitCode {
    common::with_database(run).await
}

/// A folder under `target/tmp`, removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn run(url: String) -> Result<bool, BoxError> {
    let mib: u64 = common::env_num("FERRY_BENCH_MB", 1024)?;
    let size = mib * MIB;
    let load_before = common::load();
    let root =
        TempDir(Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-content-{}", Uuid::new_v4().simple())));
    let src = root.0.join("src");
    std::fs::create_dir_all(&src)?;
    let source = src.join(FILE);
    let source_hash = tokio::task::spawn_blocking({
        let source = source.clone();
        move || common::noise_file(&source, size)
    })
    .await??;

    let server = Ferryd::start(&url, &root.0, size).await?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "content bench: load {load_before}, {cores} cores; real `ferryd serve` (pid {}) with a folder relay; \
         one {mib} MiB file of noise ({size} bytes); real `ferry share --no-direct` uploads while a client streams \
         `GET .../transfers/:id/content`",
        server.pid
    );

    let http = reqwest::Client::new();
    let owner = Person::new(&root.0, "owner", &server.address)?;
    owner.signup().await?;
    let project = field(&owner.json(&["project", "create", "Content"]).await?["id"])?;
    let invite = field(&owner.json(&["invite", "create", &project]).await?["token"])?;
    let member = post(
        &http,
        &server.address,
        "/api/auth/signup",
        None,
        json!({
            "email": format!("member-{}@example.org", Uuid::new_v4().simple()), "password": PASSWORD
        }),
    )
    .await?;
    let member_token = field(&member["token"])?;
    post(&http, &server.address, "/api/invites/accept", Some(&member_token), json!({"token": invite})).await?;

    let machine = common::Machine::now();
    let raw1 = raw_copy(&source, size).await?;
    println!(
        "  raw copy, run 1 (before): {:.0} MB/s ({:.2} s); the machine meanwhile: {}",
        mb_per_s(size, raw1),
        raw1.as_secs_f64(),
        common::Machine::now().since(&machine)
    );

    let mut agent = Agent::start(&owner, &project, &src, &["--no-direct"])?;
    agent.wait_for("its first push", |v| v["event"] == "synced").await?;

    settle().await;
    let rss_before = server.status("VmRSS")?;
    let hwm_before = server.status("VmHWM")?;
    let cpu = Cpu::of(server.pid, agent.pid(), &url).await?;
    let cpu_before = cpu.now();
    let machine = common::Machine::now();
    let started = Instant::now();
    let requested = post(
        &http,
        &server.address,
        &format!("/api/projects/{project}/files/download"),
        Some(&member_token),
        json!({"file_path": format!("/{FILE}")}),
    )
    .await?;
    let transfer = field(&requested["download_id"])?;
    let res = http
        .get(format!("{}/api/projects/{project}/transfers/{transfer}/content", server.address))
        .bearer_auth(&member_token)
        .send()
        .await?;
    let first_byte_headers = started.elapsed();
    if !res.status().is_success() {
        return Err(format!("content answered {}: {}", res.status(), res.text().await?).into());
    }
    // Sample ferryd's resident memory while the stream runs.
    let sampling = tokio::spawn({
        let pid = server.pid;
        async move {
            let mut peak = 0u64;
            loop {
                match proc_status(pid, "VmRSS") {
                    Ok(rss) => peak = peak.max(rss),
                    Err(_) => return peak,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let mut hasher = blake3::Hasher::new();
    let mut received = 0u64;
    let mut res = res;
    let mut clean = true;
    loop {
        match res.chunk().await {
            Ok(Some(piece)) => {
                received += piece.len() as u64;
                hasher.update(&piece);
            }
            Ok(None) => break,
            Err(e) => {
                println!("  the stream ended short: {e}");
                clean = false;
                break;
            }
        }
    }
    let took = started.elapsed();
    let cpu_during = cpu.now().since(&cpu_before);
    let machine_during = common::Machine::now().since(&machine);
    sampling.abort();
    let peak_sampled = sampling.await.unwrap_or(0).max(server.status("VmRSS")?);
    let hwm_after = server.status("VmHWM")?;
    let (uploaded_at, served) = agent.wait_for_at("serving the transfer", |v| v["event"] == "transfer_served").await?;
    let upload = uploaded_at.saturating_duration_since(started);
    let status = transfer_status(&http, &server.address, &project, &transfer, &member_token).await?;

    settle().await;
    let machine = common::Machine::now();
    let raw2 = raw_copy(&source, size).await?;
    println!(
        "  raw copy, run 2 (after): {:.0} MB/s ({:.2} s); the machine meanwhile: {}",
        mb_per_s(size, raw2),
        raw2.as_secs_f64(),
        common::Machine::now().since(&machine)
    );
    let raw = mb_per_s(2 * size, raw1 + raw2);
    let hash = hasher.finalize().to_hex().to_string();
    let ok = clean && received == size && hash == source_hash && status == "completed";

    println!("into the browser through /content, {mib} MiB, while the agent uploads (request → verified end):");
    println!(
        "  /content stream:   {:>6.0} MB/s  ({:.2} s; headers after {:.0} ms; {received} bytes)  ratio ours/raw {:.3}",
        mb_per_s(size, took),
        took.as_secs_f64(),
        first_byte_headers.as_secs_f64() * 1000.0,
        mb_per_s(size, took) / raw,
    );
    println!("  the machine meanwhile: {machine_during}");
    println!(
        "  agent upload leg:  {:>6.0} MB/s  ({:.2} s after the request the agent had put {} bytes on the relay; \
         the stream ended {:+.2} s from then)",
        mb_per_s(size, upload),
        upload.as_secs_f64(),
        served["bytes_uploaded"],
        took.as_secs_f64() - upload.as_secs_f64(),
    );
    println!("  raw loopback copy: {raw:>6.0} MB/s  (file → socket → reader, both runs)");
    println!(
        "  ferryd memory: VmRSS {} MiB before, peak {} MiB during (growth {} MiB); VmHWM {} → {} MiB",
        rss_before / 1024,
        peak_sampled / 1024,
        peak_sampled.saturating_sub(rss_before) / 1024,
        hwm_before / 1024,
        hwm_after / 1024,
    );
    cpu_during.print(size, cores);
    println!(
        "check: the stream ended cleanly with the file's BLAKE3 and the transfer is {status} — {}",
        if ok { "OK" } else { "FAILED" }
    );
    println!("load after: {}", common::load());
    agent.stop().await?;
    server.stop().await;
    Ok(ok)
}

/// The processes whose CPU time the stream costs.
struct Cpu {
    ferryd: u32,
    agent: u32,
    postgres: Vec<u32>,
}

/// CPU seconds of each, at one moment (or between two).
struct CpuTimes {
    ferryd: f64,
    agent: f64,
    postgres: f64,
    client: f64,
}

impl Cpu {
    async fn of(ferryd: u32, agent: u32, url: &str) -> Result<Self, BoxError> {
        Ok(Self { ferryd, agent, postgres: common::backend_pids(url).await? })
    }

    fn now(&self) -> CpuTimes {
        CpuTimes {
            ferryd: common::cpu_seconds_of(&[self.ferryd]),
            agent: common::cpu_seconds_of(&[self.agent]),
            postgres: common::cpu_seconds_of(&self.postgres),
            client: common::cpu_seconds_of(&[std::process::id()]),
        }
    }
}

impl CpuTimes {
    fn since(&self, before: &CpuTimes) -> CpuTimes {
        CpuTimes {
            ferryd: self.ferryd - before.ferryd,
            agent: self.agent - before.agent,
            postgres: self.postgres - before.postgres,
            client: self.client - before.client,
        }
    }

    /// Per GiB moved, and the rate the machine's cores would allow if the
    /// processes used nothing but this CPU time, perfectly overlapped.
    fn print(&self, size: u64, cores: usize) {
        let gib = size as f64 / (1024.0 * MIB as f64);
        let total = self.ferryd + self.agent + self.postgres + self.client;
        println!(
            "  CPU seconds per GiB: ferryd {:.2}, agent {:.2}, PostgreSQL backends {:.2}, this client (hashing) {:.2}; \
             total {:.2}, so at most {:.0} MB/s on {cores} cores",
            self.ferryd / gib,
            self.agent / gib,
            self.postgres / gib,
            self.client / gib,
            total / gib,
            size as f64 / 1e6 / (total / cores as f64),
        );
    }
}

/// `ferryd serve` as a child process, its log in a file.
struct Ferryd {
    child: tokio::process::Child,
    pid: u32,
    address: String,
}

impl Ferryd {
    async fn start(url: &str, root: &Path, size: u64) -> Result<Self, BoxError> {
        let relay = root.join("relay");
        let quota = (3 * size).max(10 * 1024 * MIB).to_string();
        let log = root.join("ferryd.log");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ferryd"))
            .args(["serve", "--database-url", url, "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(root.join("data"))
            .arg("--relay-store")
            .arg(&relay)
            .args(["--relay-quota-bytes", &quota])
            .env("FERRY_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(root.join("ferryd.out"))?)
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().ok_or("ferryd has no pid")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut file = std::fs::File::create(&log)?;
        let address = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                writeln!(file, "{line}")?;
                if let Some((_, rest)) = line.split_once("listening on ") {
                    let address: String =
                        rest.chars().take_while(|c| c.is_ascii_alphanumeric() || ".:[]".contains(*c)).collect();
                    return Ok::<_, BoxError>(format!("http://{address}"));
                }
            }
            Err("ferryd ended before listening".into())
        })
        .await
        .map_err(|_| "ferryd did not listen within 60 s")??;
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = writeln!(file, "{line}");
            }
        });
        Ok(Self { child, pid, address })
    }

    /// A `/proc/<pid>/status` figure, in KiB.
    fn status(&self, key: &str) -> Result<u64, BoxError> {
        proc_status(self.pid, key)
    }

    async fn stop(mut self) {
        // SAFETY: signalling our own child, which has not been reaped.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}

fn proc_status(pid: u32, key: &str) -> Result<u64, BoxError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
        .ok_or_else(|| format!("no {key} in /proc/{pid}/status").into())
}

async fn post(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> Result<Value, BoxError> {
    let mut req = http.post(format!("{base}{path}")).json(&body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = req.send().await?;
    let status = res.status();
    let value: Value = res.json().await?;
    if !status.is_success() {
        return Err(format!("POST {path}: {status} {value}").into());
    }
    Ok(value)
}

/// The transfer's status once the server has had a moment to record the end.
async fn transfer_status(
    http: &reqwest::Client,
    base: &str,
    project: &str,
    transfer: &str,
    token: &str,
) -> Result<String, BoxError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t: Value = http
            .get(format!("{base}/api/projects/{project}/transfers/{transfer}"))
            .bearer_auth(token)
            .send()
            .await?
            .json()
            .await?;
        let status = field(&t["status"])?;
        if status == "completed" || Instant::now() > deadline {
            return Ok(status);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The raw baseline: a listener on 127.0.0.1 reads the file into a socket;
/// a reader hashes what comes and keeps nothing (as the stream's client).
async fn raw_copy(source: &Path, size: u64) -> Result<Duration, BoxError> {
    let source = source.to_path_buf();
    let took = tokio::task::spawn_blocking(move || -> std::io::Result<Duration> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let sender = std::thread::spawn(move || -> std::io::Result<()> {
            let (mut socket, _) = listener.accept()?;
            let mut file = std::fs::File::open(&source)?;
            std::io::copy(&mut file, &mut socket)?;
            Ok(())
        });
        let started = Instant::now();
        let mut socket = TcpStream::connect(address)?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut received = 0u64;
        loop {
            let n = socket.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            received += n as u64;
        }
        let took = started.elapsed();
        sender.join().map_err(|_| std::io::Error::other("the raw sender panicked"))??;
        if received != size {
            return Err(std::io::Error::other(format!("raw copy: received {received} of {size}")));
        }
        Ok(took)
    })
    .await??;
    Ok(took)
}

/// Between phases: dirty pages written out, a moment's quiet.
async fn settle() {
    let _ = tokio::task::spawn_blocking(|| {
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
}

fn mb_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

fn field(v: &Value) -> Result<String, BoxError> {
    v.as_str().map(str::to_owned).ok_or_else(|| format!("expected a string, got {v}").into())
}
