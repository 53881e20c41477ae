//! DIR's own chunks: what a pull copies from the files already here
//! instead of fetching, and names in its delta requests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::super::part::Pos;
use super::super::scan::{self, Files};
use crate::protocol::files::Blake3Hash;

/// Every chunk DIR's files hold (as scanned), and where to read it.
pub(super) struct LocalChunks {
    /// Chunk hash → a local file holding it, at (offset, size).
    at: HashMap<String, (PathBuf, u64, u64)>,
    /// Every hash, sorted: what a delta request says DIR has.
    hashes: Vec<String>,
}

impl LocalChunks {
    pub(super) fn of(dir: &Path, files: &Files) -> Self {
        let mut at = HashMap::new();
        for (path, entry) in files {
            let abs = dir.join(path.trim_start_matches('/'));
            for c in &entry.chunks {
                at.entry(c.hash.clone()).or_insert((abs.clone(), c.offset, c.size));
            }
            if entry.size > 0 {
                at.entry(entry.hash.clone()).or_insert((abs.clone(), 0, entry.size));
            }
        }
        let mut hashes: Vec<String> = at.keys().cloned().collect();
        hashes.sort();
        Self { at, hashes }
    }

    /// A local file holding the chunk, at (offset, size).
    pub(super) fn get(&self, hash: &str) -> Option<&(PathBuf, u64, u64)> {
        self.at.get(hash)
    }

    pub(super) fn hashes(&self) -> &[String] {
        &self.hashes
    }
}

/// A chunk from a file DIR holds, when it still holds it.
pub(super) async fn read_local(path: &Path, offset: u64, pos: &Pos) -> Option<bytes::Bytes> {
    let (path, size, hash) = (path.to_path_buf(), pos.size, pos.hash.clone());
    tokio::task::spawn_blocking(move || {
        let bytes = scan::read_at(&path, offset, size).ok()?;
        (Blake3Hash::of(&bytes) == *hash).then(|| bytes::Bytes::from(bytes))
    })
    .await
    .ok()
    .flatten()
}
