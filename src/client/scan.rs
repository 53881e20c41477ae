//! The owner's view of DIR: a walk honouring `.ferryignore` (gitignore
//! syntax), BLAKE3 of every file and of each of its FastCDC chunks, hashed
//! on all cores, and a local index (path, size, mtime → hashes, chunks) in
//! `DIR/.ferry/index.json` so that an unchanged file is never hashed again,
//! across restarts too.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use crate::protocol::files::FilePath;

/// FastCDC bounds: about 1 MiB on average, 256 KiB to 4 MiB.
pub const MIN_CHUNK: u32 = 256 * 1024;
pub const AVG_CHUNK: u32 = 1024 * 1024;
pub const MAX_CHUNK: u32 = 4 * 1024 * 1024;
/// The agent's own folder in DIR, never shared.
pub const STATE_DIR: &str = FilePath::STATE_SEGMENT;
/// Ignore rules, gitignore syntax, in any folder of DIR.
pub const IGNORE_FILE: &str = ".ferryignore";
const INDEX_FILE: &str = "index.json";
const INDEX_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub hash: String,
    pub offset: u64,
    pub size: u64,
}

/// A file as last hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// The inode (0 where there is none): a renamed file keeps it, so a
    /// rename is recognised without hashing.
    #[serde(default)]
    pub ino: u64,
    pub hash: String,
    pub chunks: Vec<Chunk>,
}

impl Entry {
    pub fn modified_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        chrono::DateTime::from_timestamp(
            self.mtime_ns.div_euclid(1_000_000_000),
            self.mtime_ns.rem_euclid(1_000_000_000) as u32,
        )
    }
}

/// Project path (`/a/b.txt`) → entry.
pub type Files = BTreeMap<String, Entry>;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Index {
    pub version: u32,
    pub files: Files,
}

impl Index {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_DIR).join(INDEX_FILE)
    }

    /// The saved index, or an empty one (missing, unreadable or of another
    /// version: everything is hashed again, nothing is lost).
    pub fn load(dir: &Path) -> Self {
        std::fs::read(Self::path(dir))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Index>(&bytes).ok())
            .filter(|i| i.version == INDEX_VERSION)
            .unwrap_or_default()
    }

    pub fn save(dir: &Path, files: &Files) -> std::io::Result<()> {
        #[derive(Serialize)]
        struct Out<'a> {
            version: u32,
            files: &'a Files,
        }
        let folder = dir.join(STATE_DIR);
        std::fs::create_dir_all(&folder)?;
        let tmp = folder.join(format!("{INDEX_FILE}.tmp"));
        let bytes = serde_json::to_vec(&Out { version: INDEX_VERSION, files }).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(tmp, Self::path(dir))
    }
}

/// A file found by the walk.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: String,
    pub abs: PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
    pub ino: u64,
}

#[derive(Debug, Default)]
pub struct ScanOutcome {
    /// Every settled file now in DIR.
    pub files: Files,
    pub hashed_files: usize,
    pub hashed_bytes: u64,
    /// Files that changed while being hashed: still being written, to be
    /// scanned again once they settle. Their old state stands meanwhile.
    pub unsettled: Vec<String>,
    /// Files skipped, with why (unreadable, a name that is not a valid path).
    pub warnings: Vec<String>,
}

fn stat(meta: &std::fs::Metadata) -> (u64, i64, u64) {
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).ok(),
            Err(e) => i64::try_from(e.duration().as_nanos()).ok().map(|n| -n),
        })
        .unwrap_or(0);
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let ino = 0;
    (meta.len(), mtime_ns, ino)
}

/// Size, mtime (ns) and inode of a path, as the index keeps them.
pub fn stat_path(path: &Path) -> std::io::Result<(u64, i64, u64)> {
    std::fs::symlink_metadata(path).map(|m| stat(&m))
}

/// `/a/b` for `DIR/a/b`, when every part is UTF-8 and the path valid; in
/// Unicode NFC, whichever form the file system keeps the name in.
pub fn project_path(dir: &Path, abs: &Path) -> Option<String> {
    let rel = abs.strip_prefix(dir).ok()?;
    let mut out = String::new();
    for part in rel.components() {
        match part {
            std::path::Component::Normal(s) => {
                out.push('/');
                out.extend(s.to_str()?.nfc());
            }
            _ => return None,
        }
    }
    FilePath::parse(&out).ok().map(FilePath::into_inner)
}

/// Where DIR holds the file of a project path: the path itself, or, for a
/// name the file system keeps in another Unicode form (NFD, say), the entry
/// whose NFC form it is.
pub fn local_path(dir: &Path, path: &str) -> PathBuf {
    let mut out = dir.to_path_buf();
    for segment in path.trim_start_matches('/').split('/') {
        let direct = out.join(segment);
        if direct.exists() {
            out = direct;
            continue;
        }
        let spelled = std::fs::read_dir(&out).ok().and_then(|entries| {
            entries.flatten().map(|e| e.file_name()).find(|n| n.to_str().is_some_and(|n| n.nfc().eq(segment.chars())))
        });
        out = out.join(spelled.unwrap_or_else(|| segment.into()));
    }
    out
}

/// Every regular file of DIR but ignored ones and the agent's own state.
pub fn walk(dir: &Path) -> (Vec<Found>, Vec<String>) {
    let mut found = Vec::new();
    let mut warnings = Vec::new();
    let walker = ignore::WalkBuilder::new(dir)
        .standard_filters(false)
        .hidden(false)
        .parents(false)
        .follow_links(false)
        .add_custom_ignore_filename(IGNORE_FILE)
        // A client's state folder at any depth (a pull target inside DIR, say).
        .filter_entry(|e| e.file_name() != STATE_DIR)
        .build();
    for entry in walker {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                warnings.push(e.to_string());
                continue;
            }
        };
        if entry.path_is_symlink() {
            warnings.push(format!("{}: a symbolic link, not shared (only regular files are)", entry.path().display()));
            continue;
        }
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        // A file `ferry pull` is still writing: not a project file (yet).
        if entry.file_name().to_str().is_some_and(super::part::is_part_name) {
            continue;
        }
        let Some(path) = project_path(dir, entry.path()) else {
            warnings.push(format!(
                "{}: not a valid Ferry path (UTF-8, segments of at most 255 bytes), skipped",
                entry.path().display()
            ));
            continue;
        };
        match entry.metadata() {
            Ok(meta) => {
                let (size, mtime_ns, ino) = stat(&meta);
                found.push(Found { path, abs: entry.into_path(), size, mtime_ns, ino });
            }
            Err(e) => warnings.push(format!("{}: {e}", entry.path().display())),
        }
    }
    (found, warnings)
}

/// The BLAKE3 of a file and its FastCDC chunks, each with its BLAKE3, in
/// one read. `on_bytes` is told of each chunk's size as it is hashed.
pub fn hash_file(path: &Path, on_bytes: &dyn Fn(u64)) -> std::io::Result<(String, Vec<Chunk>, u64)> {
    let file = File::open(path)?;
    let mut whole = blake3::Hasher::new();
    let mut chunks = Vec::new();
    let mut size = 0;
    for chunk in fastcdc::v2020::StreamCDC::new(file, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK) {
        let chunk = chunk.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(e) => e,
            other => std::io::Error::other(other.to_string()),
        })?;
        whole.update(&chunk.data);
        chunks.push(Chunk {
            hash: blake3::hash(&chunk.data).to_hex().to_string(),
            offset: chunk.offset,
            size: chunk.length as u64,
        });
        size += chunk.length as u64;
        on_bytes(chunk.length as u64);
    }
    Ok((whole.finalize().to_hex().to_string(), chunks, size))
}

/// Reads `size` bytes at `offset` of a file, into a buffer that is not
/// zeroed first (for a chunk, that memset cost a sixth of the agent's CPU
/// time serving it).
pub fn read_at(path: &Path, offset: u64, size: u64) -> std::io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(usize::try_from(size).map_err(std::io::Error::other)?);
    file.take(size).read_to_end(&mut buf)?;
    if buf.len() as u64 != size {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the file ends {} bytes short", size - buf.len() as u64),
        ));
    }
    Ok(buf)
}

/// Runs `work` over `items` on `threads` threads, biggest first; answers
/// the results in the order of `items`.
pub fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    weight: impl Fn(&T) -> u64,
    work: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(weight(&items[i])));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, items.len().max(1)) {
            scope.spawn(|| loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = order.get(n) else { break };
                let r = work(&items[i]);
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every item was worked on"))
        .collect()
}

pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Walks DIR and hashes what the index does not already know.
/// `bar` shows bytes hashed (its length is set here).
pub fn scan(dir: &Path, index: &Files, bar: &ProgressBar) -> ScanOutcome {
    let (found, warnings) = walk(dir);
    let mut out = ScanOutcome { warnings, ..Default::default() };
    let by_inode: HashMap<(u64, u64, i64), &Entry> =
        index.values().filter(|e| e.ino != 0).map(|e| ((e.ino, e.size, e.mtime_ns), e)).collect();
    let mut to_hash = Vec::new();
    for f in found {
        let known = index
            .get(&f.path)
            .filter(|e| e.size == f.size && e.mtime_ns == f.mtime_ns)
            .or_else(|| (f.ino != 0).then(|| by_inode.get(&(f.ino, f.size, f.mtime_ns)).copied()).flatten());
        match known {
            Some(e) => {
                let mut e = e.clone();
                e.ino = f.ino;
                out.files.insert(f.path, e);
            }
            None => to_hash.push(f),
        }
    }
    bar.set_length(to_hash.iter().map(|f| f.size).sum());
    let results = parallel_map(&to_hash, threads(), |f| f.size, |f| hash_file(&f.abs, &|n| bar.inc(n)));
    for (f, result) in to_hash.into_iter().zip(results) {
        match result {
            Ok((hash, chunks, size)) => {
                out.hashed_files += 1;
                out.hashed_bytes += size;
                // Changed while it was read: still being written.
                let now = std::fs::symlink_metadata(&f.abs).map(|m| stat(&m));
                match now {
                    Ok((s, m, _)) if s == f.size && m == f.mtime_ns && size == f.size => {
                        out.files.insert(f.path, Entry { size, mtime_ns: f.mtime_ns, ino: f.ino, hash, chunks });
                    }
                    Ok(_) => out.unsettled.push(f.path),
                    // Gone meanwhile: it is simply not there.
                    Err(_) => {}
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => out.warnings.push(format!("{}: {e}", f.abs.display())),
        }
    }
    bar.finish_and_clear();
    out
}

/// Where a file's local state is kept, for `.ferryignore`-aware callers.
pub fn is_own_state(dir: &Path, path: &Path) -> bool {
    path.strip_prefix(dir).is_ok_and(|rel| rel.components().any(|c| c.as_os_str() == STATE_DIR))
        || path.file_name().and_then(|n| n.to_str()).is_some_and(super::part::is_part_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_file_and_hash_it() {
        let dir = std::env::temp_dir().join(format!("ferry-scan-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        let mut state = 7u64;
        let big: Vec<u8> = (0..3_000_000)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 33) as u8
            })
            .collect();
        std::fs::write(dir.join("a/b/big.bin"), &big).unwrap();
        std::fs::write(dir.join("empty"), b"").unwrap();
        std::fs::write(dir.join(".ferryignore"), "*.tmp\n").unwrap();
        std::fs::write(dir.join("x.tmp"), b"ignored").unwrap();
        std::fs::create_dir_all(dir.join(STATE_DIR)).unwrap();
        std::fs::write(dir.join(STATE_DIR).join("junk"), b"own").unwrap();

        let first = scan(&dir, &Files::new(), &ProgressBar::hidden());
        assert_eq!(first.files.keys().collect::<Vec<_>>(), ["/.ferryignore", "/a/b/big.bin", "/empty"]);
        let e = &first.files["/a/b/big.bin"];
        assert_eq!(e.hash, blake3::hash(&big).to_hex().to_string());
        assert!(e.chunks.len() >= 2);
        let mut offset = 0;
        for c in &e.chunks {
            assert_eq!(c.offset, offset);
            assert_eq!(c.hash, blake3::hash(&big[offset as usize..(offset + c.size) as usize]).to_hex().to_string());
            offset += c.size;
        }
        assert_eq!(offset, big.len() as u64);
        assert!(first.files["/empty"].chunks.is_empty());
        assert_eq!(first.hashed_files, 3);

        let again = scan(&dir, &first.files, &ProgressBar::hidden());
        assert_eq!((again.hashed_files, &again.files), (0, &first.files));

        // Each chunk reads back as its range; a range past the end is an error.
        let path = dir.join("a/b/big.bin");
        for c in &e.chunks {
            let range = c.offset as usize..(c.offset + c.size) as usize;
            assert_eq!(read_at(&path, c.offset, c.size).unwrap(), big[range]);
        }
        let short = read_at(&path, big.len() as u64 - 10, 11).unwrap_err();
        assert_eq!(short.kind(), std::io::ErrorKind::UnexpectedEof, "{short}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn names_are_shared_in_nfc_found_again_on_disk_and_no_client_state_is_shared() {
        let dir = std::env::temp_dir().join(format!("ferry-scan-{}", uuid::Uuid::new_v4().simple()));
        // A name as macOS's HFS+ kept it: decomposed (NFD).
        let nfd = "cafe\u{301}";
        std::fs::create_dir_all(dir.join(nfd)).unwrap();
        std::fs::write(dir.join(nfd).join("menu\u{301}.txt"), b"plat du jour").unwrap();
        // A pull target inside the shared folder keeps its own state.
        std::fs::create_dir_all(dir.join("pulled").join(STATE_DIR)).unwrap();
        std::fs::write(dir.join("pulled").join(STATE_DIR).join("manifest.json"), b"{}").unwrap();
        std::fs::write(dir.join("pulled/kept.txt"), b"kept").unwrap();

        let (found, warnings) = walk(&dir);
        let paths: Vec<&str> = found.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths.len(), 2, "{paths:?} {warnings:?}");
        assert!(paths.contains(&"/caf\u{e9}/men\u{fa}.txt") && paths.contains(&"/pulled/kept.txt"), "{paths:?}");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(is_own_state(&dir, &dir.join("pulled").join(STATE_DIR).join("manifest.json")));

        let local = local_path(&dir, "/caf\u{e9}/men\u{fa}.txt");
        assert_eq!(std::fs::read(&local).unwrap(), b"plat du jour", "{}", local.display());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
