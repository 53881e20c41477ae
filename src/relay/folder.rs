//! The folder store's files, written and read past the page cache
//! (`O_DIRECT`) where the filesystem takes it, through it where it does not.
//!
//! A relay passes each chunk through once: written as it lands, read back
//! soon after by the member it is for, then let go. Through the page cache,
//! every chunk took fresh cache pages: `perf` of 1 GiB streamed through
//! `/content` while uploaded (`cargo bench --bench content`) put
//! `copy_folio_from_iter_atomic` at half of ferryd's samples, and on a
//! virtual machine that hands freed memory back to its host each fresh page
//! is a fault on the host too (`dd` by hand: 1 GiB through the cache in
//! 2.6 s of system time on new pages, 0.15 s with `oflag=direct`). Past the cache,
//! the bytes go from the receive buffer (which starts on a block boundary,
//! see [`super::buffers`]) to the disk without a copy, and come back into a
//! pooled buffer the same way.
//!
//! A file is written whole under a temporary name in the store's
//! `incoming/` folder and renamed into place, so a reader finds the whole
//! chunk or none; temporaries a crash left there are removed at start.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::local::LocalFileSystem;

use super::buffers::{aligned, BufferPool, BLOCK};

/// A temporary in `incoming/` older than this is one whose writer died (a
/// chunk is written in well under a second, and another server sharing the
/// folder may be writing the young ones).
const ABANDONED: Duration = Duration::from_secs(3600);

/// A store in a local folder.
pub struct Folder {
    /// Where each object's file is (object_store's layout, which it deletes).
    files: Arc<LocalFileSystem>,
    /// Where files are written before they are renamed into place.
    incoming: PathBuf,
}

impl Folder {
    /// The store in `root`, with `files` its object_store view; removes
    /// what crashed writers left in `incoming/`.
    pub fn open(root: &Path, files: Arc<LocalFileSystem>) -> io::Result<Self> {
        let incoming = root.join("incoming");
        std::fs::create_dir_all(&incoming)?;
        let mut removed = 0;
        for entry in std::fs::read_dir(&incoming)? {
            let entry = entry?;
            let age = entry.metadata()?.modified()?.elapsed().unwrap_or_default();
            if age > ABANDONED && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed chunk files left half-written in the relay store");
        }
        Ok(Self { files, incoming })
    }

    /// The file of an object.
    pub fn path(&self, key: &object_store::path::Path) -> Result<PathBuf, object_store::Error> {
        self.files.path_to_filesystem(key)
    }

    /// Writes `bytes` as the file at `path` (its folder made when missing),
    /// replacing any file there at once; answers whether they went past the
    /// page cache.
    pub fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<bool> {
        let temporary = self.incoming.join(format!("{}.part", uuid::Uuid::new_v4().simple()));
        let written = match write_file(&temporary, bytes) {
            // `incoming/` removed behind the server's back: made again.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&self.incoming).and_then(|()| write_file(&temporary, bytes))
            }
            other => other,
        };
        let written = written.and_then(|past_the_cache| {
            match std::fs::rename(&temporary, path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
                    std::fs::rename(&temporary, path)
                }
                other => other,
            }?;
            Ok(past_the_cache)
        });
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written
    }
}

/// `path` opened past the page cache, when the platform and the filesystem
/// allow it.
fn open_direct(options: &mut OpenOptions, path: &Path) -> io::Result<Option<File>> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        match options.clone().custom_flags(libc::O_DIRECT).open(path) {
            Ok(file) => Ok(Some(file)),
            // A filesystem without O_DIRECT refuses the open (tmpfs on older
            // kernels): through the cache, then.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
            Err(e) => Err(e),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (options, path);
        Ok(None)
    }
}

/// Writes `bytes` as a new file at `path`; answers whether they went past
/// the page cache.
fn write_file(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    let direct = open_direct(OpenOptions::new().write(true).create_new(true), path)?;
    // Opened with O_DIRECT or not, the same file: a write the filesystem
    // refuses past the cache goes through it.
    let plain = OpenOptions::new().write(true).create(true).truncate(false).open(path)?;
    let past_the_cache = direct.is_some_and(|direct| write_direct(&direct, bytes).is_ok());
    if !past_the_cache {
        plain.write_all_at(bytes, 0)?;
    }
    plain.set_len(bytes.len() as u64)?;
    Ok(past_the_cache)
}

/// A block-sized, block-aligned buffer: the last, partial block of a file.
#[repr(C, align(4096))]
struct Block([u8; BLOCK]);

/// `bytes` from offset 0 in whole blocks, the last padded with zeros (the
/// caller then cuts the file to its length). Fails when they do not start
/// on a block boundary or the filesystem refuses.
fn write_direct(file: &File, bytes: &[u8]) -> io::Result<()> {
    if !aligned(bytes) {
        return Err(io::Error::other("not on a block boundary"));
    }
    let whole = bytes.len() / BLOCK * BLOCK;
    file.write_all_at(&bytes[..whole], 0)?;
    let tail = &bytes[whole..];
    if !tail.is_empty() {
        let mut last = Box::new(Block([0; BLOCK]));
        last.0[..tail.len()].copy_from_slice(tail);
        file.write_all_at(&last.0, whole as u64)?;
    }
    Ok(())
}

/// The file at `path` (`range` of it, clamped to its end), read into a
/// buffer of `buffers`; None when there is no such file.
pub fn read(path: &Path, range: Option<Range<u64>>, buffers: &Arc<BufferPool>) -> io::Result<Option<Bytes>> {
    let mut options = OpenOptions::new();
    options.read(true);
    let direct = match open_direct(&mut options, path) {
        Ok(direct) => direct,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let file = match direct {
        Some(file) => file,
        None => match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        },
    };
    let size = file.metadata()?.len();
    let range = range.map_or(0..size, |r| r.start.min(size)..r.end.min(size));
    // Whole blocks around the range (the file's last one is short).
    let from = range.start / BLOCK as u64 * BLOCK as u64;
    let to = range.end.div_ceil(BLOCK as u64) * BLOCK as u64;
    let mut buffer = buffers.take((to - from) as usize);
    let into = buffer.to_read_into((to - from) as usize);
    let wanted = (range.end - from) as usize;
    let got = match read_at_least(&file, into, from, wanted) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => read_at_least(&File::open(path)?, into, from, wanted)?,
        other => other?,
    };
    if got < wanted {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let skip = (range.start - from) as usize;
    Ok(Some(buffer.freeze().slice(skip..wanted)))
}

/// Reads into `buf` from `offset` until at least `wanted` bytes are in or
/// the file ends; answers how many are in.
fn read_at_least(file: &File, buf: &mut [u8], offset: u64, wanted: usize) -> io::Result<usize> {
    let mut got = 0;
    while got < wanted {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// A folder store in a fresh temporary folder.
    fn folder() -> (PathBuf, Folder) {
        let root = std::env::temp_dir().join(format!("ferry-folder-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&root).unwrap();
        let files = Arc::new(LocalFileSystem::new_with_prefix(&root).unwrap());
        let folder = Folder::open(&root, files).unwrap();
        (root, folder)
    }

    #[test]
    fn files_of_any_size_come_back_whole_and_in_ranges() {
        let (root, folder) = folder();
        let buffers = BufferPool::new(4 << 20);
        let probe = root.join("probe");
        let direct_here = open_direct(OpenOptions::new().write(true).create(true), &probe).unwrap().is_some();
        eprintln!("O_DIRECT on this filesystem: {direct_here}");
        for len in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 17, (1 << 20) + 5] {
            let data = noise(len);
            // From a pooled buffer (on a block boundary: past the cache) and
            // from a plain slice one byte in (not: through it).
            let mut pooled = buffers.take(len);
            pooled.extend_from_slice(&data);
            let unaligned = [&[0u8][..], &data].concat();
            for (i, bytes) in [pooled.as_ref(), &unaligned[1..]].into_iter().enumerate() {
                let path = root.join("chunks").join("project").join(format!("chunk-{len}-{i}"));
                let past_the_cache = folder.write(&path, bytes).unwrap();
                // Where the filesystem takes O_DIRECT, what starts on a
                // block boundary goes past the cache, the rest through it.
                assert_eq!(past_the_cache, direct_here && i == 0, "{len} bytes, {i}");
                assert_eq!(std::fs::metadata(&path).unwrap().len(), len as u64, "cut to its length");
                assert_eq!(read(&path, None, &buffers).unwrap().unwrap(), data, "{len} bytes whole");
                for r in [0..1, 1..len as u64, len as u64 / 2..len as u64, 5..BLOCK as u64 + 9, 0..u64::MAX] {
                    let (start, end) = (r.start.min(len as u64) as usize, r.end.min(len as u64) as usize);
                    let start = start.min(end);
                    let got = read(&path, Some(r.clone()), &buffers).unwrap().unwrap();
                    assert_eq!(got, data[start..end], "{len} bytes, range {r:?}");
                }
            }
        }
        assert_eq!(std::fs::read_dir(root.join("incoming")).unwrap().count(), 0, "no temporary left");
        assert!(read(&root.join("chunks/project/none"), None, &buffers).unwrap().is_none());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_file_written_again_is_replaced_whole_even_with_incoming_gone() {
        let (root, folder) = folder();
        let path = root.join("chunk");
        let buffers = BufferPool::new(1 << 20);
        std::fs::remove_dir(root.join("incoming")).unwrap();
        folder.write(&path, &noise(3 * BLOCK)).unwrap();
        folder.write(&path, b"short").unwrap();
        assert_eq!(read(&path, None, &buffers).unwrap().unwrap(), &b"short"[..]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn what_a_crashed_writer_left_is_removed_at_start_and_nothing_younger() {
        let (root, folder) = folder();
        drop(folder);
        let (abandoned, young) = (root.join("incoming/abandoned.part"), root.join("incoming/young.part"));
        std::fs::write(&abandoned, b"half").unwrap();
        std::fs::write(&young, b"being written").unwrap();
        let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
        File::options().write(true).open(&abandoned).unwrap().set_modified(two_hours_ago).unwrap();
        let files = Arc::new(LocalFileSystem::new_with_prefix(&root).unwrap());
        Folder::open(&root, files).unwrap();
        assert!(!abandoned.exists(), "an abandoned temporary is removed");
        assert!(young.exists(), "one another server may be writing is kept");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
