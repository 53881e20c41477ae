//! A file being pulled: its bytes go once, each verified chunk straight to
//! its offset, into a part file beside the target (`.NAME.ferry-part`, on
//! the same filesystem, so the final rename is atomic); a small record in
//! `DIR/.ferry/parts/` lists the chunks already written, which is what a
//! killed pull resumes from. When every chunk is in, the part file is
//! fsynced once and renamed over the target.
//!
//! In-order bytes of a large file are written past the page cache
//! (`O_DIRECT`) where the filesystem takes it: the pull will not read them
//! back, and putting a large file through the cache costs a fresh page per
//! 4 KiB and pushes out what the machine had cached. They are staged in
//! aligned 4 MiB buffers, each written whole by a thread of its own while
//! the next one fills, so the disk's wait overlaps the hashing and staging
//! of what follows; a chunk is recorded once its last byte is written.
//! Where the filesystem refuses such writes, the same bytes go through the
//! page cache.
//!
//! The record is a text file: a header line `ferry-part 1 <file hash>
//! <size> <path>`, then one line `<offset> <size> <chunk hash>` per chunk
//! written, appended after the chunk's bytes. It is not fsynced per line:
//! on resume each listed chunk is read back from the part file and hashed
//! again, so a record that ran ahead of the data (power loss) costs a
//! refetch, never a wrong file.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::protocol::files::Blake3Hash;

/// Suffix of part files; the scanner never takes them for project files.
pub const PART_SUFFIX: &str = ".ferry-part";
/// Where the records live, under `DIR/.ferry`.
pub const PARTS_DIR: &str = "parts";
const HEADER: &str = "ferry-part 1";
/// Largest chunk a record may name (the relay's limit).
const MAX_CHUNK: u64 = 16 * 1024 * 1024;
/// Longest file name most filesystems take.
const NAME_MAX: usize = 255;

/// Whether `name` is a part file's (a hidden file ending in `.ferry-part`).
pub fn is_part_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(PART_SUFFIX)
}

/// One chunk's place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    pub offset: u64,
    pub size: u64,
    pub hash: String,
}

/// The part file and record of one target file.
#[derive(Debug)]
pub struct Part {
    pub path: PathBuf,
    pub record: PathBuf,
}

impl Part {
    /// The part of `target` (project path `project_path`), whose state
    /// folder is `state`.
    pub fn for_target(target: &Path, project_path: &str, state: &Path) -> Self {
        let key = blake3::hash(project_path.as_bytes()).to_hex();
        let record = state.join(PARTS_DIR).join(format!("{}.done", &key[..32]));
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let beside = format!(".{name}{PART_SUFFIX}");
        // A name too long for a part beside it: in the state folder (most
        // often the same filesystem; the rename says so if not).
        let path = match target.parent() {
            Some(parent) if beside.len() <= NAME_MAX => parent.join(beside),
            _ => state.join(PARTS_DIR).join(format!("{}{PART_SUFFIX}", &key[..32])),
        };
        Self { path, record }
    }

    /// The chunks already written for this version of the file, each read
    /// back and checked (offset → position); none when the part is of
    /// another version, missing or of the wrong size.
    pub fn resumable(&self, file_hash: &str, size: u64) -> HashMap<u64, Pos> {
        let mut done = HashMap::new();
        let Ok(text) = std::fs::read_to_string(&self.record) else { return done };
        let mut lines = text.lines();
        let want = header(file_hash, size);
        if !lines
            .next()
            .is_some_and(|l| l.strip_prefix(want.as_str()).is_some_and(|r| r.is_empty() || r.starts_with(' ')))
        {
            return done;
        }
        let Ok(file) = File::open(&self.path) else { return done };
        if file.metadata().map(|m| m.len()).ok() != Some(size) {
            return done;
        }
        let mut buf = Vec::new();
        for line in lines {
            // A line cut short by a kill, or damaged: that chunk is fetched again.
            let mut fields = line.splitn(3, ' ');
            let (Some(offset), Some(len), Some(hash)) = (fields.next(), fields.next(), fields.next()) else { continue };
            let (Ok(offset), Ok(len)) = (offset.parse::<u64>(), len.parse::<u64>()) else { continue };
            if len == 0 || len > MAX_CHUNK || offset.checked_add(len).map_or(true, |end| end > size) {
                continue;
            }
            buf.resize(len as usize, 0);
            if file.read_exact_at(&mut buf, offset).is_ok() && Blake3Hash::of(&buf) == *hash {
                done.insert(offset, Pos { offset, size: len, hash: hash.to_owned() });
            }
        }
        done
    }

    /// Starts (or restarts) the part for `file_hash`: an empty part file of
    /// the file's size and a record holding only the header.
    pub fn start(&self, file_hash: &str, size: u64, project_path: &str) -> std::io::Result<()> {
        if let Some(parent) = self.record.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).write(true).truncate(true).open(&self.path)?;
        file.set_len(size)?;
        std::fs::write(&self.record, format!("{} {project_path}\n", header(file_hash, size)))
    }

    /// Forgets the part (after the rename, or when abandoned).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(&self.record);
    }
}

fn header(file_hash: &str, size: u64) -> String {
    format!("{HEADER} {file_hash} {size}")
}

/// A chunk's line in the record.
fn record_line(pos: &Pos) -> String {
    format!("{} {} {}\n", pos.offset, pos.size, pos.hash)
}

/// The alignment of `O_DIRECT` writes: buffer address, offset and length.
const BLOCK: usize = 4096;
/// A staging buffer of in-order bytes, written whole.
const STAGE: usize = 4 * 1024 * 1024;
/// Files from this size on are written past the page cache: for a smaller
/// one the staging buffers are not worth their allocation.
const STAGED_FROM: u64 = 4 * STAGE as u64;

/// `STAGE` bytes at an address aligned for `O_DIRECT`.
struct Aligned {
    vec: Vec<u8>,
    start: usize,
}

impl Aligned {
    fn new() -> Self {
        let vec = vec![0; STAGE + BLOCK];
        let start = vec.as_ptr().align_offset(BLOCK);
        Self { vec, start }
    }

    fn bytes(&self, len: usize) -> &[u8] {
        &self.vec[self.start..self.start + len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.vec[self.start..self.start + STAGE]
    }
}

/// A full stage on its way to the file, at offset `at`.
struct Job {
    buf: Aligned,
    at: u64,
}

/// The thread that writes full stages past the page cache, one at a time,
/// while the writer hashes and stages what follows: the disk's wait is not
/// on the pull's path. Each stage comes back once written.
struct Io {
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    done: std::sync::mpsc::Receiver<(Aligned, std::io::Result<()>)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Io {
    fn spawn(direct: File, part: File, refused: Arc<AtomicBool>) -> std::io::Result<Self> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let (written, done) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name("ferry-part-io".into()).spawn(move || {
            for Job { buf, at } in queue {
                let blocks = buf.bytes(STAGE);
                let r = if refused.load(Ordering::Relaxed) || direct.write_all_at(blocks, at).is_err() {
                    // EINVAL from a filesystem that opens with O_DIRECT but
                    // will not write so; a real failure fails again here,
                    // and is told.
                    refused.store(true, Ordering::Relaxed);
                    part.write_all_at(blocks, at)
                } else {
                    Ok(())
                };
                if written.send((buf, r)).is_err() {
                    break;
                }
            }
        })?;
        Ok(Self { jobs: Some(jobs), done, thread: Some(thread) })
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn io_thread_gone() -> std::io::Error {
    std::io::Error::other("the part's writing thread stopped")
}

/// In-order bytes on their way to the part, written past the page cache in
/// whole stages (see the module's doc).
struct Staged {
    io: Io,
    /// Set once the filesystem refused an `O_DIRECT` write: the stages then
    /// go through the page cache. Tests set it to take that path.
    #[cfg(test)]
    refused: Arc<AtomicBool>,
    buf: Aligned,
    /// The other buffer, when it is not under way.
    spare: Option<Aligned>,
    /// Bytes staged, and the (aligned) offset in the file of the first.
    filled: usize,
    at: u64,
    /// The end of the stage under way, if one is.
    under_way: Option<u64>,
    /// Every byte before it is written.
    written: u64,
    /// Chunks in order whose last bytes are not written yet: recorded once
    /// they are.
    unrecorded: std::collections::VecDeque<Pos>,
}

impl Staged {
    /// `path` opened for writes past the page cache (and through it, for
    /// what a filesystem refuses), when the platform and the filesystem
    /// take them.
    fn open(path: &Path) -> Option<Self> {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::OpenOptionsExt;
            let direct = OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path).ok()?;
            let part = OpenOptions::new().write(true).open(path).ok()?;
            let refused = Arc::new(AtomicBool::new(false));
            let io = Io::spawn(direct, part, Arc::clone(&refused)).ok()?;
            Some(Self {
                io,
                #[cfg(test)]
                refused,
                buf: Aligned::new(),
                spare: None,
                filled: 0,
                at: 0,
                under_way: None,
                written: 0,
                unrecorded: Default::default(),
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = path;
            None
        }
    }

    /// Stages `bytes` (the next in order), sending every full stage.
    fn put(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            let n = bytes.len().min(STAGE - self.filled);
            self.buf.bytes_mut()[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
            if self.filled == STAGE {
                self.send()?;
            }
        }
        Ok(())
    }

    /// Sends the full stage to the writing thread, once the one before it
    /// is written, and stages into the other buffer.
    fn send(&mut self) -> std::io::Result<()> {
        self.wait()?;
        let next = self.spare.take().unwrap_or_else(Aligned::new);
        let buf = std::mem::replace(&mut self.buf, next);
        self.io
            .jobs
            .as_ref()
            .ok_or_else(io_thread_gone)?
            .send(Job { buf, at: self.at })
            .map_err(|_| io_thread_gone())?;
        self.at += STAGE as u64;
        self.under_way = Some(self.at);
        self.filled = 0;
        Ok(())
    }

    /// Waits for the stage under way, if one is, to be written.
    fn wait(&mut self) -> std::io::Result<()> {
        let Some(end) = self.under_way.take() else { return Ok(()) };
        let (buf, written) = self.io.done.recv().map_err(|_| io_thread_gone())?;
        self.spare = Some(buf);
        written?;
        self.written = end;
        Ok(())
    }

    /// Makes the file hold every byte staged: the stage under way is
    /// written, and what is staged goes through the page cache (it stays
    /// staged, written again past the cache once its stage is full).
    fn write_rest(&mut self, part: &File) -> std::io::Result<()> {
        self.wait()?;
        part.write_all_at(self.buf.bytes(self.filled), self.at)
    }
}

/// Writes a part file in order: each chunk's bytes at its offset (new ones
/// recorded), and the whole file's BLAKE3 as it goes, so that no second
/// pass reads the file back.
pub struct Writer {
    part: File,
    record: File,
    hasher: blake3::Hasher,
    /// Bytes hashed so far: the offset the next chunk must start at.
    next: u64,
    size: u64,
    buf: Vec<u8>,
    /// In-order writes past the page cache; `None` where they cannot be.
    staged: Option<Staged>,
}

impl Writer {
    pub fn open(part: &Part, size: u64) -> std::io::Result<Self> {
        Ok(Self {
            part: OpenOptions::new().read(true).write(true).open(&part.path)?,
            record: OpenOptions::new().append(true).open(&part.record)?,
            hasher: blake3::Hasher::new(),
            next: 0,
            size,
            buf: Vec::new(),
            staged: if size >= STAGED_FROM { Staged::open(&part.path) } else { None },
        })
    }

    /// Writes `bytes`, the next in order.
    fn write_in_order(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.staged {
            Some(staged) => staged.put(bytes),
            None => self.part.write_all_at(bytes, self.next),
        }
    }

    /// Records the chunk at `pos`, all of whose bytes are now written (or,
    /// staged, as soon as they are).
    fn written_in_order(&mut self, pos: &Pos) -> std::io::Result<()> {
        let Some(staged) = &mut self.staged else { return self.record_done(pos) };
        staged.unrecorded.push_back(pos.clone());
        self.record_written()
    }

    /// Records the staged chunks whose bytes are all written.
    fn record_written(&mut self) -> std::io::Result<()> {
        let Some(staged) = &mut self.staged else { return Ok(()) };
        let mut lines = String::new();
        while let Some(pos) = staged.unrecorded.front().filter(|p| p.offset + p.size <= staged.written) {
            lines.push_str(&record_line(pos));
            staged.unrecorded.pop_front();
        }
        if lines.is_empty() {
            return Ok(());
        }
        self.record.write_all(lines.as_bytes())
    }

    /// Writes every staged byte (through the page cache for the last,
    /// partial stage) and records the chunks: the part then holds all that
    /// came in order.
    fn write_staged(&mut self) -> std::io::Result<()> {
        let Some(mut staged) = self.staged.take() else { return Ok(()) };
        staged.write_rest(&self.part)?;
        let lines: String = staged.unrecorded.iter().map(record_line).collect();
        self.record.write_all(lines.as_bytes())
    }

    fn in_order(&self, pos: &Pos) -> std::io::Result<()> {
        if pos.offset != self.next {
            return Err(std::io::Error::other(format!(
                "chunk at {} written out of order (at {})",
                pos.offset, self.next
            )));
        }
        Ok(())
    }

    /// A verified chunk that just arrived: written at its offset, recorded.
    pub fn put<'a>(&mut self, pos: &Pos, pieces: impl IntoIterator<Item = &'a [u8]>) -> std::io::Result<()> {
        self.in_order(pos)?;
        for bytes in pieces {
            self.write_in_order(bytes)?;
            self.hasher.update(bytes);
            self.next += bytes.len() as u64;
        }
        self.written_in_order(pos)
    }

    /// A verified chunk that arrived after an earlier one could not be
    /// fetched: written at its offset and recorded, not hashed (this pass
    /// cannot complete; the next reads it back in order).
    pub fn keep<'a>(&mut self, pos: &Pos, pieces: impl IntoIterator<Item = &'a [u8]>) -> std::io::Result<()> {
        let mut at = pos.offset;
        for bytes in pieces {
            self.part.write_all_at(bytes, at)?;
            at += bytes.len() as u64;
        }
        self.record_done(pos)
    }

    /// A chunk already in the part at `from` (this position itself when
    /// resumed; an earlier one holding the same bytes otherwise).
    pub fn copy_from_part(&mut self, pos: &Pos, from: u64) -> std::io::Result<()> {
        self.in_order(pos)?;
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(pos.size as usize, 0);
        if let Some(staged) = self.staged.as_mut().filter(|s| from + pos.size > s.written) {
            // An earlier chunk of this pass whose last bytes are not
            // written yet.
            staged.write_rest(&self.part)?;
        }
        self.part.read_exact_at(&mut buf, from)?;
        match &mut self.staged {
            // In order, even where the bytes are there already, so that the
            // blocks written past the cache are whole.
            Some(staged) => {
                staged.put(&buf)?;
                if from != pos.offset {
                    staged.unrecorded.push_back(pos.clone());
                }
                self.record_written()?;
            }
            None if from != pos.offset => {
                self.part.write_all_at(&buf, pos.offset)?;
                self.record_done(pos)?;
            }
            None => {}
        }
        self.hasher.update(&buf);
        self.next += pos.size;
        self.buf = buf;
        Ok(())
    }

    fn record_done(&mut self, pos: &Pos) -> std::io::Result<()> {
        // One write per line, so a kill leaves whole lines (or one cut short).
        self.record.write_all(record_line(pos).as_bytes())
    }

    /// Whether every byte of the file is in.
    pub fn complete(&self) -> bool {
        self.next == self.size
    }

    /// Makes the part durable (the one fsync); answers the file's BLAKE3.
    pub fn finish(mut self) -> std::io::Result<String> {
        self.write_staged()?;
        self.part.sync_all()?;
        Ok(self.hasher.finalize().to_hex().to_string())
    }
}

impl Drop for Writer {
    /// A pass that ends short (a gap, a failure) still leaves every chunk
    /// it took in the part and the record, for the next one.
    fn drop(&mut self) {
        let _ = self.write_staged();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(offset: u64, bytes: &[u8]) -> Pos {
        Pos { offset, size: bytes.len() as u64, hash: blake3::hash(bytes).to_hex().to_string() }
    }

    #[test]
    fn a_part_resumes_from_the_chunks_it_recorded_and_that_still_check() {
        let dir = std::env::temp_dir().join(format!("ferry-part-{}", uuid::Uuid::new_v4().simple()));
        let state = dir.join(".ferry");
        let part = Part::for_target(&dir.join("a.bin"), "/a.bin", &state);
        assert_eq!(part.path, dir.join(".a.bin.ferry-part"));
        let (a, b, c) = (vec![1u8; 100], vec![2u8; 50], vec![3u8; 70]);
        let whole: Vec<u8> = [a.clone(), b.clone(), c.clone()].concat();
        let file_hash = blake3::hash(&whole).to_hex().to_string();
        part.start(&file_hash, 220, "/a.bin").unwrap();

        let mut w = Writer::open(&part, 220).unwrap();
        w.put(&pos(0, &a), [&a[..]]).unwrap();
        w.put(&pos(100, &b), [&b[..20], &b[20..]]).unwrap();
        drop(w); // killed before the third chunk
        let done = part.resumable(&file_hash, 220);
        assert_eq!(done.len(), 2);

        // A chunk damaged behind the pull's back is not taken as done.
        std::fs::OpenOptions::new().write(true).open(&part.path).unwrap().write_all_at(&[9], 120).unwrap();
        let done = part.resumable(&file_hash, 220);
        assert_eq!(done.keys().copied().collect::<Vec<_>>(), vec![0]);
        // Another version of the file: nothing.
        assert!(part.resumable(&"0".repeat(64), 220).is_empty());

        let mut w = Writer::open(&part, 220).unwrap();
        w.copy_from_part(&pos(0, &a), 0).unwrap();
        assert!(w.put(&pos(150, &c), [&c[..]]).is_err(), "out of order");
        w.put(&pos(100, &b), [&b[..]]).unwrap();
        w.put(&pos(150, &c), [&c[..]]).unwrap();
        assert!(w.complete());
        assert_eq!(w.finish().unwrap(), file_hash);
        assert_eq!(std::fs::read(&part.path).unwrap(), whole);
        part.remove();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn chunks_kept_past_a_gap_are_resumed_and_hashed_in_order_on_the_next_pass() {
        let dir = std::env::temp_dir().join(format!("ferry-part-{}", uuid::Uuid::new_v4().simple()));
        let part = Part::for_target(&dir.join("b.bin"), "/b.bin", &dir.join(".ferry"));
        let (a, b, c) = (vec![4u8; 80], vec![5u8; 60], vec![6u8; 40]);
        let whole: Vec<u8> = [a.clone(), b.clone(), c.clone()].concat();
        let file_hash = blake3::hash(&whole).to_hex().to_string();
        part.start(&file_hash, 180, "/b.bin").unwrap();

        // The first chunk could not be fetched; the two after it arrived.
        let mut w = Writer::open(&part, 180).unwrap();
        w.keep(&pos(80, &b), [&b[..]]).unwrap();
        w.keep(&pos(140, &c), [&c[..1], &c[1..]]).unwrap();
        assert!(!w.complete(), "a pass with a gap never completes");
        drop(w);
        let done = part.resumable(&file_hash, 180);
        assert_eq!(done.keys().copied().collect::<std::collections::BTreeSet<_>>(), [80, 140].into());

        let mut w = Writer::open(&part, 180).unwrap();
        w.put(&pos(0, &a), [&a[..]]).unwrap();
        w.copy_from_part(&pos(80, &b), 80).unwrap();
        w.copy_from_part(&pos(140, &c), 140).unwrap();
        assert!(w.complete());
        assert_eq!(w.finish().unwrap(), file_hash);
        part.remove();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `len` bytes of noise, the same for the same seed.
    fn noise(seed: u8, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        blake3::Hasher::new().update(&[seed]).finalize_xof().fill(&mut bytes);
        bytes
    }

    fn record_lines(part: &Part) -> usize {
        std::fs::read_to_string(&part.record).unwrap().lines().count() - 1
    }

    #[test]
    fn a_large_file_goes_past_the_page_cache_and_a_chunk_is_recorded_once_its_last_byte_is_written() {
        let dir = std::env::temp_dir().join(format!("ferry-part-{}", uuid::Uuid::new_v4().simple()));
        let part = Part::for_target(&dir.join("big.bin"), "/big.bin", &dir.join(".ferry"));
        let size = STAGED_FROM as usize + 12_345;
        let whole = noise(1, size);
        // Chunks that end anywhere in a block, one longer than a stage.
        let ends = [1_000_003, 1_000_004 + BLOCK, 6_543_210, 11_000_001, size];
        let chunks: Vec<(Pos, &[u8])> = std::iter::once(0)
            .chain(ends)
            .zip(ends)
            .map(|(start, end)| (pos(start as u64, &whole[start..end]), &whole[start..end]))
            .collect();
        let file_hash = blake3::hash(&whole).to_hex().to_string();
        part.start(&file_hash, size as u64, "/big.bin").unwrap();

        let mut w = Writer::open(&part, size as u64).unwrap();
        #[cfg(target_os = "linux")]
        assert!(w.staged.is_some(), "this filesystem takes O_DIRECT");
        w.put(&chunks[0].0, [chunks[0].1]).unwrap();
        w.put(&chunks[1].0, [chunks[1].1]).unwrap();
        // In pieces, as a response body comes: one ends in a block, one
        // spans the end of a stage.
        let (x, y) = chunks[2].1.split_at(300_001);
        w.put(&chunks[2].0, [x, &y[..7], &y[7..]]).unwrap();
        assert_eq!(record_lines(&part), 0, "the first stage is full and under way, not known to be written");
        w.put(&chunks[3].0, [chunks[3].1]).unwrap();
        assert_eq!(record_lines(&part), 2, "the first stage is written: it holds the first two chunks whole");
        drop(w); // a pass cut short: what it staged is written and recorded
        assert_eq!(record_lines(&part), 4);
        let done = part.resumable(&file_hash, size as u64);
        assert_eq!(done.len(), 4, "every chunk taken reads back whole");

        let mut w = Writer::open(&part, size as u64).unwrap();
        for (p, _) in &chunks[..4] {
            w.copy_from_part(p, p.offset).unwrap();
        }
        w.put(&chunks[4].0, [chunks[4].1]).unwrap();
        assert!(w.complete());
        assert_eq!(w.finish().unwrap(), file_hash);
        assert!(std::fs::read(&part.path).unwrap() == whole, "the part holds the file");
        assert_eq!(part.resumable(&file_hash, size as u64).len(), 5);
        part.remove();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_chunk_copied_from_one_still_staged_or_under_way_and_blocks_the_filesystem_refuses_come_out_whole() {
        for refused in [false, true] {
            let dir = std::env::temp_dir().join(format!("ferry-part-{}", uuid::Uuid::new_v4().simple()));
            let part = Part::for_target(&dir.join("twice.bin"), "/twice.bin", &dir.join(".ferry"));
            let a = noise(2, 5_000);
            let rest = noise(3, STAGED_FROM as usize);
            // The last 15,000 bytes of `rest` again: they straddle the end
            // of the stage under way and the bytes still staged.
            let tail = &rest[rest.len() - 15_000..];
            let whole = [a.as_slice(), &a, &rest, tail].concat();
            let file_hash = blake3::hash(&whole).to_hex().to_string();
            part.start(&file_hash, whole.len() as u64, "/twice.bin").unwrap();

            let mut w = Writer::open(&part, whole.len() as u64).unwrap();
            if let Some(staged) = &mut w.staged {
                staged.refused.store(refused, Ordering::Relaxed);
            }
            w.put(&pos(0, &a), [&a[..]]).unwrap();
            // The same bytes again: copied from the first, still staged,
            // not yet in the file.
            w.copy_from_part(&pos(5_000, &a), 0).unwrap();
            w.put(&pos(10_000, &rest), [&rest[..]]).unwrap();
            let end = 10_000 + rest.len() as u64;
            w.copy_from_part(&pos(end, tail), end - 15_000).unwrap();
            assert_eq!(w.finish().unwrap(), file_hash, "refused: {refused}");
            assert!(std::fs::read(&part.path).unwrap() == whole, "refused: {refused}");
            part.remove();
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn part_names_are_recognised() {
        assert!(is_part_name(".a.bin.ferry-part"));
        assert!(!is_part_name("a.bin.ferry-part"));
        assert!(!is_part_name(".a.bin"));
    }
}
