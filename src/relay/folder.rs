//! The folder store's files, written and read past the page cache
//! (`O_DIRECT`) where the filesystem takes it, through it where it does not.
//!
//! A relay passes each chunk through once: written as it lands, read back
//! soon after by the member it is for, then let go. Through the page cache,
//! every chunk took fresh cache pages: `perf` of a relayed 1 GiB put
//! `copy_folio_from_iter_atomic` at half of the server's samples, and on a
//! virtual machine that hands freed memory back to its host each fresh page
//! is a fault on the host too (`dd` here: 1 GiB through the cache in 2.6 s
//! of system time on new pages, 0.15 s with `oflag=direct`). Past the cache,
//! the bytes go from the receive buffer (which starts on a block boundary,
//! see [`super::buffers`]) to the disk without a copy, and come back into a
//! pooled buffer the same way.
//!
//! A file is written whole under a temporary name beside its own and renamed
//! into place, so a reader finds the whole chunk or none.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::buffers::{aligned, BufferPool, BLOCK};

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

/// Writes `bytes` as the file at `path` (its folder made when missing),
/// replacing any file there at once; answers whether they went past the
/// page cache.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| io::Error::other("a chunk path has a name"))?;
    let temporary = path.with_file_name(format!(".{name}.{}.part", uuid::Uuid::new_v4().simple()));
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    let direct = match open_direct(&mut options, &temporary) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
            open_direct(&mut options, &temporary)
        }
        other => other,
    };
    let written = direct.and_then(|direct| {
        // Opened with O_DIRECT or not, the same file: a write the
        // filesystem refuses past the cache goes through it.
        let plain = OpenOptions::new().write(true).create(true).truncate(false).open(&temporary)?;
        let past_the_cache = direct.is_some_and(|direct| write_direct(&direct, bytes).is_ok());
        if !past_the_cache {
            plain.write_all_at(bytes, 0)?;
        }
        plain.set_len(bytes.len() as u64)?;
        Ok(past_the_cache)
    });
    match written.and_then(|past_the_cache| std::fs::rename(&temporary, path).map(|()| past_the_cache)) {
        Ok(past_the_cache) => Ok(past_the_cache),
        Err(e) => {
            let _ = std::fs::remove_file(&temporary);
            Err(e)
        }
    }
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
    let into = buffer.zeroed((to - from) as usize);
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

    #[test]
    fn files_of_any_size_come_back_whole_and_in_ranges() {
        let folder = std::env::temp_dir().join(format!("ferry-folder-{}", uuid::Uuid::new_v4()));
        let buffers = BufferPool::new(4 << 20);
        std::fs::create_dir_all(&folder).unwrap();
        let probe = folder.join("probe");
        let direct_here = open_direct(OpenOptions::new().write(true).create(true), &probe).unwrap().is_some();
        for len in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 17, (1 << 20) + 5] {
            let data = noise(len);
            // From a pooled buffer (on a block boundary: past the cache) and
            // from a plain slice one byte in (not: through it).
            let mut pooled = buffers.take(len);
            pooled.extend_from_slice(&data);
            let unaligned = [&[0u8][..], &data].concat();
            for (i, bytes) in [pooled.as_ref(), &unaligned[1..]].into_iter().enumerate() {
                let path = folder.join("project").join(format!("chunk-{len}-{i}"));
                let past_the_cache = write(&path, bytes).unwrap();
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
        eprintln!("O_DIRECT on this filesystem: {direct_here}");
        let entries: Vec<_> =
            std::fs::read_dir(folder.join("project")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(entries.iter().all(|n| !n.to_string_lossy().ends_with(".part")), "no temporary left: {entries:?}");
        assert!(read(&folder.join("project/none"), None, &buffers).unwrap().is_none());
        std::fs::remove_dir_all(&folder).unwrap();
    }

    #[test]
    fn a_file_written_again_is_replaced_whole() {
        let folder = std::env::temp_dir().join(format!("ferry-folder-{}", uuid::Uuid::new_v4()));
        let path = folder.join("chunk");
        let buffers = BufferPool::new(1 << 20);
        write(&path, &noise(3 * BLOCK)).unwrap();
        write(&path, b"short").unwrap();
        assert_eq!(read(&path, None, &buffers).unwrap().unwrap(), &b"short"[..]);
        std::fs::remove_dir_all(&folder).unwrap();
    }
}
