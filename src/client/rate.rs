//! Bandwidth limits: a [`Rate`] as people write it (`5MiB/s`, `40Mbit/s`),
//! and a [`Limiter`] every transfer of the process shares, so the limit
//! holds for all of them together. The limits in force can be changed
//! without a restart: `ferry limit` writes them to [`LIMITS_FILE`] in the
//! config folder, and [`Limits::follow`] picks up each change.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::pieces::Pieces;

/// Bytes per second, at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate(u64);

impl Rate {
    pub fn bytes_per_second(self) -> u64 {
        self.0
    }
}

impl FromStr for Rate {
    type Err = String;

    /// `5MiB/s`, `500KB/s`, `40Mbit/s`, `1Gbit`, `250000` (bytes per
    /// second); decimal (`KB`, `MB`, `GB`) and binary (`KiB`, `MiB`, `GiB`)
    /// byte units, bit units (`kbit`, `Mbit`, `Gbit`); `/s` optional.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a rate: write it like 5MiB/s, 500KB/s or 40Mbit/s");
        let spec = text.trim();
        let spec = spec.strip_suffix("/s").unwrap_or(spec).trim_end();
        let split = spec.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(spec.len());
        let (number, unit) = spec.split_at(split);
        let number: f64 = number.parse().map_err(|_| bad())?;
        let per_unit = match unit.trim() {
            "" | "B" => 1.0,
            "KB" | "kB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            "KiB" => 1024.0,
            "MiB" => 1024.0 * 1024.0,
            "GiB" => 1024.0 * 1024.0 * 1024.0,
            "bit" => 1.0 / 8.0,
            "kbit" | "Kbit" => 1e3 / 8.0,
            "Mbit" => 1e6 / 8.0,
            "Gbit" => 1e9 / 8.0,
            _ => return Err(bad()),
        };
        let bytes = number * per_unit;
        if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
            return Err(format!("{text:?} is not a rate of at least one byte per second"));
        }
        Ok(Rate(bytes as u64))
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/s", super::output::human_bytes(self.0))
    }
}

/// A rate limit shared by every transfer of one direction: a token bucket
/// that lets a short burst through and then `rate` bytes a second, over
/// all its users together. Cloning shares it.
#[derive(Clone, Default)]
pub struct Limiter(Arc<Shared>);

#[derive(Default)]
struct Shared {
    /// Bytes per second; 0: no limit.
    rate: AtomicU64,
    bucket: tokio::sync::Mutex<Bucket>,
}

#[derive(Default)]
struct Bucket {
    /// Bytes that may pass now (negative: owed).
    available: f64,
    refilled: Option<Instant>,
}

/// The most a limiter lets through at once after a quiet spell: a quarter
/// of a second's worth, so a limit holds over any second.
const BURST: f64 = 0.25;

impl Limiter {
    pub fn new(rate: Option<Rate>) -> Self {
        let limiter = Self::default();
        limiter.set(rate);
        limiter
    }

    /// Changes the limit; transfers under way follow it from their next
    /// piece.
    pub fn set(&self, rate: Option<Rate>) {
        self.0.rate.store(rate.map_or(0, Rate::bytes_per_second), Ordering::Relaxed);
    }

    pub fn rate(&self) -> Option<Rate> {
        Some(self.0.rate.load(Ordering::Relaxed)).filter(|r| *r > 0).map(Rate)
    }

    /// Waits until `bytes` more may pass. Callers take turns, so the limit
    /// is shared fairly; each takes what it sends or reads, piece by piece.
    pub async fn take(&self, bytes: usize) {
        let Some(rate) = self.rate() else { return };
        let rate = rate.bytes_per_second() as f64;
        let mut bucket = self.0.bucket.lock().await;
        let now = Instant::now();
        let elapsed = bucket.refilled.map_or(BURST, |t| now.duration_since(t).as_secs_f64());
        bucket.available = (bucket.available + elapsed * rate).min(rate * BURST);
        bucket.refilled = Some(now);
        bucket.available -= bytes as f64;
        if bucket.available < 0.0 {
            // Held while waiting: the next caller waits behind this one.
            tokio::time::sleep(Duration::from_secs_f64(-bucket.available / rate)).await;
        }
    }
}

/// Reads a response's body through `limiter`, piece by piece, into pieces
/// (not copied into one buffer): a limited reader reads no faster than the
/// limit, and TCP slows the sender.
pub async fn read_limited(mut res: reqwest::Response, limiter: &Limiter) -> Result<Pieces, reqwest::Error> {
    let mut body = Pieces::default();
    while let Some(piece) = res.chunk().await? {
        limiter.take(piece.len()).await;
        body.push(piece);
    }
    Ok(body)
}

/// `bytes` as pieces that keep to `limiter` (sent as the consumer asks for
/// them): a limited request or response body.
pub fn limited_pieces(
    bytes: bytes::Bytes,
    limiter: Limiter,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::convert::Infallible>> {
    use futures_util::StreamExt;
    let pieces = (0..bytes.len()).step_by(PIECE).map(move |at| bytes.slice(at..(at + PIECE).min(bytes.len())));
    futures_util::stream::iter(pieces).then(move |piece| {
        let limiter = limiter.clone();
        async move {
            limiter.take(piece.len()).await;
            Ok(piece)
        }
    })
}

/// The piece a limited body is sent in.
const PIECE: usize = 64 * 1024;

/// `<config folder>/limits.json`: the limits `ferry limit` set last.
pub const LIMITS_FILE: &str = "limits.json";

/// The limits as `ferry limit` writes them and `--json` prints them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsFile {
    /// Bytes per second; none: unlimited.
    pub max_upload: Option<u64>,
    pub max_download: Option<u64>,
}

impl LimitsFile {
    pub fn path(config: &Path) -> PathBuf {
        config.join(LIMITS_FILE)
    }

    /// The file's limits; none set when there is no file.
    pub fn load(config: &Path) -> Result<Self, String> {
        let path = Self::path(config);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Writes the file whole (a temporary file renamed over it), so a
    /// running process never reads half of it.
    pub fn save(&self, config: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(config)?;
        let path = Self::path(config);
        let temporary = path.with_extension("json.tmp");
        std::fs::write(&temporary, serde_json::to_vec_pretty(self).expect("limits serialize"))?;
        std::fs::rename(&temporary, &path)
    }
}

/// The upload and download limiters of one process.
#[derive(Clone, Default)]
pub struct Limits {
    pub upload: Limiter,
    pub download: Limiter,
}

/// How often a running process looks whether `ferry limit` changed the
/// limits.
const LOOK_EVERY: Duration = Duration::from_secs(1);

impl Limits {
    /// The limits to start with: each flag given, else the file's.
    pub fn start(config: &Path, upload: Option<Rate>, download: Option<Rate>) -> Result<Self, String> {
        let file = LimitsFile::load(config)?;
        Ok(Self {
            upload: Limiter::new(upload.or(file.max_upload.map(Rate))),
            download: Limiter::new(download.or(file.max_download.map(Rate))),
        })
    }

    /// Follows `ferry limit` for as long as the process runs: each time the
    /// file changes, its limits replace those in force (`say` is told).
    pub async fn follow(self, config: PathBuf, say: impl Fn(String)) {
        let path = LimitsFile::path(&config);
        let stamp = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mut seen = stamp(&path);
        loop {
            tokio::time::sleep(LOOK_EVERY).await;
            let now = stamp(&path);
            if now == seen {
                continue;
            }
            seen = now;
            match LimitsFile::load(&config) {
                Ok(file) => {
                    self.upload.set(file.max_upload.map(Rate));
                    self.download.set(file.max_download.map(Rate));
                    say(format!("limits now: {}", describe(&file)));
                }
                Err(e) => say(format!("limits unchanged: {e}")),
            }
        }
    }
}

/// `upload 5.0 MiB/s, download unlimited`.
pub fn describe(file: &LimitsFile) -> String {
    let one = |r: Option<u64>| r.map_or("unlimited".to_owned(), |r| Rate(r).to_string());
    format!("upload {}, download {}", one(file.max_upload), one(file.max_download))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_read_as_people_write_them() {
        let bytes = |s: &str| s.parse::<Rate>().map(Rate::bytes_per_second);
        assert_eq!(bytes("5MiB/s"), Ok(5 * 1024 * 1024));
        assert_eq!(bytes("500KB/s"), Ok(500_000));
        assert_eq!(bytes("40Mbit/s"), Ok(5_000_000));
        assert_eq!(bytes("1Gbit"), Ok(125_000_000));
        assert_eq!(bytes("1.5 MiB/s"), Ok(1_572_864));
        assert_eq!(bytes("250000"), Ok(250_000));
        assert_eq!(bytes("8bit/s"), Ok(1));
        for bad in ["", "fast", "5 parsecs", "-1MiB/s", "0", "4bit/s", "MiB/s", "1e400MB"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} was taken");
        }
    }

    /// Over several seconds of a real clock, never one timing: 3 MiB
    /// through 1 MiB/s cannot pass in much under 3 s (less the burst), by
    /// one taker or by four sharing it.
    #[tokio::test]
    async fn a_limit_holds_for_all_its_takers_together() {
        let limiter = Limiter::new(Some("1MiB/s".parse().unwrap()));
        let started = Instant::now();
        let takers = (0..4).map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                for _ in 0..12 {
                    limiter.take(64 * 1024).await;
                }
            })
        });
        for taker in takers.collect::<Vec<_>>() {
            taker.await.unwrap();
        }
        let took = started.elapsed().as_secs_f64();
        assert!(took >= 2.5, "3 MiB passed 1 MiB/s in {took:.2} s");

        // Lifted: the same passes without waiting for the bucket.
        limiter.set(None);
        assert_eq!(limiter.rate(), None);
        let passed = tokio::time::timeout(Duration::from_secs(2), limiter.take(3 << 20)).await;
        assert!(passed.is_ok(), "an unlimited take waited");
    }

    #[test]
    fn the_limits_file_is_written_whole_and_read_back() {
        let dir = std::env::temp_dir().join(format!("ferry-limits-{}", uuid::Uuid::new_v4().simple()));
        assert_eq!(LimitsFile::load(&dir), Ok(LimitsFile::default()), "no file: no limits");
        let limits = LimitsFile { max_upload: Some(5 << 20), max_download: None };
        limits.save(&dir).unwrap();
        assert_eq!(LimitsFile::load(&dir), Ok(limits.clone()));
        assert_eq!(describe(&limits), "upload 5.00 MiB/s, download unlimited");
        let started = Limits::start(&dir, None, Some(Rate(1000))).unwrap();
        assert_eq!(started.upload.rate(), Some(Rate(5 << 20)), "the file's, when no flag");
        assert_eq!(started.download.rate(), Some(Rate(1000)), "the flag's");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
