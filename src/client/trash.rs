//! What `ferry sync` sets aside instead of losing: a file the owner deleted
//! or replaced goes to `DIR/.ferry/trash/<when>/<path>` (kept for a number
//! of days, `ferry trash list/restore` bring it back); a member's own edit
//! that the owner's version would overwrite stays beside it as
//! `name.ferry-conflict-<when>.ext`.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;

use super::scan::STATE_DIR;
use super::ClientError;

const TRASH: &str = "trash";
/// A trash folder's name: when its files were set aside, safe in any file system.
const STAMP: &str = "%Y-%m-%dT%H-%M-%S%.3fZ";

fn root(dir: &Path) -> PathBuf {
    dir.join(STATE_DIR).join(TRASH)
}

/// How a file goes to the trash.
#[derive(Debug, Clone, Copy)]
pub enum Keep {
    /// Moved there: the owner deleted it.
    Move,
    /// Linked there (copied where links are not possible): a pull is about
    /// to replace it, and reads it first for the chunks it shares.
    Link,
}

/// Sets the file at `local` (the project's `path`) aside in the trash;
/// answers where it went.
pub fn put(dir: &Path, path: &str, local: &Path, keep: Keep) -> std::io::Result<PathBuf> {
    let target = root(dir).join(Utc::now().format(STAMP).to_string()).join(path.trim_start_matches('/'));
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match keep {
        Keep::Move => std::fs::rename(local, &target)?,
        Keep::Link => {
            if std::fs::hard_link(local, &target).is_err() {
                std::fs::copy(local, &target)?;
            }
        }
    }
    Ok(target)
}

/// Where a member's own version of `local` is kept when the owner's
/// replaces it: `report.ferry-conflict-2026-12-04-021500.pdf`. It is linked
/// there, so the pull that follows still finds its chunks.
pub fn keep_conflict(local: &Path) -> std::io::Result<PathBuf> {
    let name = local.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let when = Utc::now().format("%Y-%m-%d-%H%M%S");
    let copy = match name.rsplit_once('.').filter(|(stem, _)| !stem.is_empty()) {
        Some((stem, ext)) => format!("{stem}.ferry-conflict-{when}.{ext}"),
        None => format!("{name}.ferry-conflict-{when}"),
    };
    let copy = local.with_file_name(copy);
    if std::fs::hard_link(local, &copy).is_err() {
        std::fs::copy(local, &copy)?;
    }
    Ok(copy)
}

/// One file in the trash.
#[derive(Debug, Clone, Serialize)]
pub struct Trashed {
    /// Its path in the project.
    pub path: String,
    pub trashed_at: DateTime<Utc>,
    pub size: u64,
    /// Where it is kept.
    pub location: PathBuf,
}

/// Everything in DIR's trash, newest first.
pub fn list(dir: &Path) -> Vec<Trashed> {
    let mut all = Vec::new();
    let Ok(batches) = std::fs::read_dir(root(dir)) else { return all };
    for batch in batches.filter_map(Result::ok) {
        let name = batch.file_name().to_string_lossy().into_owned();
        let Ok(when) = NaiveDateTime::parse_from_str(&name, STAMP) else { continue };
        collect(&batch.path(), &batch.path(), when.and_utc(), &mut all);
    }
    all.sort_by(|a, b| b.trashed_at.cmp(&a.trashed_at).then_with(|| a.path.cmp(&b.path)));
    all
}

fn collect(base: &Path, dir: &Path, when: DateTime<Utc>, all: &mut Vec<Trashed>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        match entry.metadata() {
            Ok(meta) if meta.is_dir() => collect(base, &path, when, all),
            Ok(meta) => {
                let Ok(rel) = path.strip_prefix(base) else { continue };
                let rel = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
                all.push(Trashed { path: format!("/{rel}"), trashed_at: when, size: meta.len(), location: path });
            }
            Err(_) => {}
        }
    }
}

/// Puts the newest trashed version of `path` back where it was; refuses
/// to overwrite a file there.
pub fn restore(dir: &Path, path: &str) -> Result<Trashed, ClientError> {
    let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
    let Some(found) = list(dir).into_iter().find(|t| t.path == path) else {
        return Err(ClientError::Usage(format!(
            "{path} is not in the trash of {} (`ferry trash list`)",
            dir.display()
        )));
    };
    let back = dir.join(path.trim_start_matches('/'));
    if back.exists() {
        return Err(ClientError::Usage(format!("{} exists: move it away first, then restore {path}", back.display())));
    }
    if let Some(parent) = back.parent() {
        std::fs::create_dir_all(parent).map_err(|e| ClientError::io(parent, e))?;
    }
    std::fs::rename(&found.location, &back).map_err(|e| ClientError::io(&back, e))?;
    Ok(found)
}

/// Forgets what was set aside more than `days` days ago; answers how many
/// files went.
pub fn purge(dir: &Path, days: u32) -> usize {
    let cutoff = Utc::now() - chrono::TimeDelta::days(days.into());
    let Ok(batches) = std::fs::read_dir(root(dir)) else { return 0 };
    let mut purged = 0;
    for batch in batches.filter_map(Result::ok) {
        let name = batch.file_name().to_string_lossy().into_owned();
        let Ok(when) = NaiveDateTime::parse_from_str(&name, STAMP) else { continue };
        if when.and_utc() < cutoff {
            let mut files = Vec::new();
            collect(&batch.path(), &batch.path(), when.and_utc(), &mut files);
            if std::fs::remove_dir_all(batch.path()).is_ok() {
                purged += files.len();
            }
        }
    }
    purged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trashed_files_are_listed_restored_and_purged() {
        let dir = std::env::temp_dir().join(format!("ferry-trash-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("docs")).unwrap();
        std::fs::write(dir.join("docs/a.txt"), b"a").unwrap();
        put(&dir, "/docs/a.txt", &dir.join("docs/a.txt"), Keep::Move).unwrap();
        assert!(!dir.join("docs/a.txt").exists());
        let listed = list(&dir);
        assert_eq!(listed.iter().map(|t| (t.path.as_str(), t.size)).collect::<Vec<_>>(), [("/docs/a.txt", 1)]);
        restore(&dir, "docs/a.txt").unwrap();
        assert_eq!(std::fs::read(dir.join("docs/a.txt")).unwrap(), b"a");
        assert!(restore(&dir, "/docs/a.txt").is_err(), "nothing left to restore");

        put(&dir, "/docs/a.txt", &dir.join("docs/a.txt"), Keep::Link).unwrap();
        assert!(dir.join("docs/a.txt").exists(), "linked, not moved");
        assert_eq!(purge(&dir, 30), 0, "too recent");
        // An old batch goes.
        let old = root(&dir).join("2020-01-01T00-00-00.000Z/old.txt");
        std::fs::create_dir_all(old.parent().unwrap()).unwrap();
        std::fs::write(&old, b"old").unwrap();
        assert_eq!(purge(&dir, 30), 1);
        assert_eq!(list(&dir).len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_conflict_copy_is_named_beside_the_file() {
        let dir = std::env::temp_dir().join(format!("ferry-conflict-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["report.pdf", "notes", ".profile"] {
            std::fs::write(dir.join(name), b"mine").unwrap();
            let copy = keep_conflict(&dir.join(name)).unwrap();
            let copy_name = copy.file_name().unwrap().to_string_lossy().into_owned();
            let (stem, ext) = match name {
                "report.pdf" => ("report.ferry-conflict-", ".pdf"),
                "notes" => ("notes.ferry-conflict-", ""),
                _ => (".profile.ferry-conflict-", ""),
            };
            assert!(copy_name.starts_with(stem) && copy_name.ends_with(ext), "{name}: {copy_name}");
            assert_eq!(std::fs::read(&copy).unwrap(), b"mine");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
