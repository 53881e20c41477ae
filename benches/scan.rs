//! The owner's initial scan: walk, BLAKE3 per file, FastCDC chunks each
//! with its BLAKE3, on all cores — beside a `b3sum`-style baseline (plain
//! BLAKE3 of each file, the same threads) over the same files in the same
//! run, and the ratio. Then a rescan with the index (nothing to hash).
//!
//! `FERRY_BENCH_SCAN_FILES` (10,000) files holding `FERRY_BENCH_SCAN_MIB`
//! (2048) MiB in all, sizes spread log-uniformly (a few big files hold
//! most bytes, as in real trees), generated in a temporary folder. Both
//! runs read from the page cache: this measures hashing and chunking, not
//! the disk. `cargo bench --bench scan`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use ferry::client::scan;
use indicatif::ProgressBar;

fn env_num(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(s) => s
            .trim()
            .replace('_', "")
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{name} must be a positive number, not {s:?}")),
        Err(_) => Ok(default),
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// File sizes summing to `total`, log-uniform between 1 KiB and 64 MiB.
fn sizes(files: u64, total: u64, rng: &mut Rng) -> Vec<u64> {
    let raw: Vec<f64> = (0..files)
        .map(|_| {
            (1024f64.ln() + (rng.next() % 10_000) as f64 / 10_000.0 * (64.0 * 1024.0 * 1024.0f64).ln() - 1024f64.ln())
                .exp()
        })
        .collect();
    let sum: f64 = raw.iter().sum();
    let mut sizes: Vec<u64> = raw.iter().map(|r| (r / sum * total as f64) as u64).collect();
    let short = total - sizes.iter().sum::<u64>();
    sizes[0] += short;
    sizes
}

fn generate(dir: &Path, files: u64, total: u64) -> std::io::Result<Vec<PathBuf>> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut paths = Vec::new();
    let mut buf = Vec::new();
    for (i, size) in sizes(files, total, &mut rng).into_iter().enumerate() {
        let path = dir.join(format!("d{:02}/e{:02}/file-{i:05}.bin", i % 37, i % 11));
        std::fs::create_dir_all(path.parent().expect("a parent"))?;
        buf.clear();
        buf.reserve(size as usize);
        while (buf.len() as u64) < size {
            buf.extend_from_slice(&rng.next().to_le_bytes());
        }
        buf.truncate(size as usize);
        std::fs::write(&path, &buf)?;
        paths.push(path);
    }
    Ok(paths)
}

/// `b3sum`: BLAKE3 of each file, nothing else.
fn plain_hash(path: &Path) -> std::io::Result<u64> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    loop {
        let read = file.read(&mut buf)?;
        if read == 0 {
            break;
        }
        hasher.update(&buf[..read]);
        n += read as u64;
    }
    std::hint::black_box(hasher.finalize());
    Ok(n)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scan bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let files = env_num("FERRY_BENCH_SCAN_FILES", 10_000)?;
    let mib = env_num("FERRY_BENCH_SCAN_MIB", 2048)?;
    let total = mib * 1024 * 1024;
    let threads = scan::threads();
    let dir = std::env::temp_dir().join(format!("ferry-bench-scan-{}", std::process::id()));
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    let started = Instant::now();
    let paths = generate(&dir, files, total)?;
    println!("generated {files} files, {mib} MiB in {:.1?} ({threads} threads)", started.elapsed());

    let mb = total as f64 / 1e6;
    // Baseline first, then ours: both from a warm page cache.
    let started = Instant::now();
    let hashed: u64 =
        scan::parallel_map(&paths, threads, |_| 0, |p| plain_hash(p)).into_iter().sum::<std::io::Result<u64>>()?;
    let base = started.elapsed().as_secs_f64();
    assert_eq!(hashed, total);

    let started = Instant::now();
    let outcome = scan::scan(&dir, &scan::Files::new(), &ProgressBar::hidden());
    let ours = started.elapsed().as_secs_f64();
    assert_eq!((outcome.hashed_files as u64, outcome.hashed_bytes), (files, total));
    let chunks: usize = outcome.files.values().map(|e| e.chunks.len()).sum();

    let started = Instant::now();
    let again = scan::scan(&dir, &outcome.files, &ProgressBar::hidden());
    let rescan = started.elapsed().as_secs_f64();
    assert_eq!(again.hashed_files, 0);

    println!("initial scan (walk + BLAKE3 + FastCDC + chunk BLAKE3): {:>9.0} files/s {:>8.0} MB/s  ({ours:.2} s, {chunks} chunks)", files as f64 / ours, mb / ours);
    println!(
        "baseline (b3sum-style BLAKE3 per file, same threads):  {:>9.0} files/s {:>8.0} MB/s  ({base:.2} s)",
        files as f64 / base,
        mb / base
    );
    println!("ratio ours/baseline: {:.2} of the baseline's throughput", base / ours);
    println!(
        "rescan with the index (stat only, nothing hashed):     {:>9.0} files/s  ({rescan:.3} s)",
        files as f64 / rescan
    );
    Ok(())
}
