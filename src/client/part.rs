//! A file being pulled: its bytes go once, each verified chunk straight to
//! its offset, into a part file beside the target (`.NAME.ferry-part`, on
//! the same filesystem, so the final rename is atomic); a small record in
//! `DIR/.ferry/parts/` lists the chunks already written, which is what a
//! killed pull resumes from. When every chunk is in, the part file is
//! fsynced once and renamed over the target.
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
        })
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
    pub fn put(&mut self, pos: &Pos, bytes: &[u8]) -> std::io::Result<()> {
        self.in_order(pos)?;
        self.part.write_all_at(bytes, pos.offset)?;
        self.record_done(pos)?;
        self.hasher.update(bytes);
        self.next += bytes.len() as u64;
        Ok(())
    }

    /// A verified chunk that arrived after an earlier one could not be
    /// fetched: written at its offset and recorded, not hashed (this pass
    /// cannot complete; the next reads it back in order).
    pub fn keep(&mut self, pos: &Pos, bytes: &[u8]) -> std::io::Result<()> {
        self.part.write_all_at(bytes, pos.offset)?;
        self.record_done(pos)
    }

    /// A chunk already in the part at `from` (this position itself when
    /// resumed; an earlier one holding the same bytes otherwise).
    pub fn copy_from_part(&mut self, pos: &Pos, from: u64) -> std::io::Result<()> {
        self.in_order(pos)?;
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(pos.size as usize, 0);
        self.part.read_exact_at(&mut buf, from)?;
        if from != pos.offset {
            self.part.write_all_at(&buf, pos.offset)?;
            self.record_done(pos)?;
        }
        self.hasher.update(&buf);
        self.next += pos.size;
        self.buf = buf;
        Ok(())
    }

    fn record_done(&mut self, pos: &Pos) -> std::io::Result<()> {
        // One write per line, so a kill leaves whole lines (or one cut short).
        self.record.write_all(format!("{} {} {}\n", pos.offset, pos.size, pos.hash).as_bytes())
    }

    /// Whether every byte of the file is in.
    pub fn complete(&self) -> bool {
        self.next == self.size
    }

    /// Makes the part durable (the one fsync); answers the file's BLAKE3.
    pub fn finish(self) -> std::io::Result<String> {
        self.part.sync_all()?;
        Ok(self.hasher.finalize().to_hex().to_string())
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
        w.put(&pos(0, &a), &a).unwrap();
        w.put(&pos(100, &b), &b).unwrap();
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
        assert!(w.put(&pos(150, &c), &c).is_err(), "out of order");
        w.put(&pos(100, &b), &b).unwrap();
        w.put(&pos(150, &c), &c).unwrap();
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
        w.keep(&pos(80, &b), &b).unwrap();
        w.keep(&pos(140, &c), &c).unwrap();
        assert!(!w.complete(), "a pass with a gap never completes");
        drop(w);
        let done = part.resumable(&file_hash, 180);
        assert_eq!(done.keys().copied().collect::<std::collections::BTreeSet<_>>(), [80, 140].into());

        let mut w = Writer::open(&part, 180).unwrap();
        w.put(&pos(0, &a), &a).unwrap();
        w.copy_from_part(&pos(80, &b), 80).unwrap();
        w.copy_from_part(&pos(140, &c), 140).unwrap();
        assert!(w.complete());
        assert_eq!(w.finish().unwrap(), file_hash);
        part.remove();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn part_names_are_recognised() {
        assert!(is_part_name(".a.bin.ferry-part"));
        assert!(!is_part_name("a.bin.ferry-part"));
        assert!(!is_part_name(".a.bin"));
    }
}
