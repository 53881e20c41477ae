//! One folder of a project at a time: its subfolders and the files directly
//! in it, paged by keyset, for the web app's file browser.
//!
//! Folders are not stored: they are the path prefixes of live files. A page
//! is read by a loose index scan over `remote_files (project_id, path)`:
//! each step finds the next live path after a bound in one index probe;
//! a path with a `/` after the folder's prefix names a subfolder, and the
//! next step jumps past everything under it. A page of 100 entries costs
//! about 100 probes, however many files the subfolders hold.

use chrono::{DateTime, Utc};
use deadpool_postgres::Object;
use tokio_postgres::IsolationLevel;
use uuid::Uuid;

use super::projects::access;
use super::{Caller, DomainError};
use crate::protocol::files::{Cursor, FilePath, FolderEntry, FolderPage, RemoteFile};
use crate::protocol::validate::ValidationError;

/// Which folder, from where, how many entries.
pub struct FolderQuery {
    /// Ends in `/`: `/` itself, or a valid file path followed by `/`.
    path: String,
    cursor: Option<Cursor>,
    limit: i64,
}

impl FolderQuery {
    pub const MAX_LIMIT: i64 = 1000;

    pub fn parse(path: Option<&str>, cursor: Option<&str>, limit: Option<i64>) -> Result<Self, ValidationError> {
        let limit = limit.unwrap_or(100);
        if !(1..=Self::MAX_LIMIT).contains(&limit) {
            return Err(ValidationError::new("invalid_limit", "limit must be 1 to 1000"));
        }
        let path = path.filter(|p| !p.is_empty()).unwrap_or("/");
        let bad = || ValidationError::new("invalid_folder", "path must be / or a folder's path ending in /");
        if path != "/" {
            let folder = path.strip_suffix('/').ok_or_else(bad)?;
            FilePath::parse(folder).map_err(|_| bad())?;
        }
        let cursor = cursor.filter(|c| !c.is_empty()).map(Cursor::decode).transpose()?;
        // A cursor is a bound inside the folder it was given out for.
        if cursor.as_ref().is_some_and(|c| !c.0.starts_with(path)) {
            return Err(ValidationError::new("invalid_cursor", "the cursor is not one this server gave out"));
        }
        Ok(Self { path: path.to_owned(), cursor, limit })
    }
}

/// Walks the live paths under `$2` (the folder), from `$3`, stopping before
/// `$4` (the first path past the folder), taking at most `$5` steps. Each
/// step's bound: past a subfolder, `<folder><name>0` (`0` follows `/` in
/// byte order, so every path under `<folder><name>/` is skipped); past a
/// file, the file's path and a `\x01` (paths hold no NUL), which is the
/// next path after it.
const WALK: &str = "
WITH RECURSIVE walk(path, n) AS (
    (SELECT path, 1::bigint FROM remote_files
     WHERE project_id = $1 AND NOT deleted AND path >= $3 AND path < $4
     ORDER BY path LIMIT 1)
  UNION ALL
    SELECT (SELECT f.path FROM remote_files f
            WHERE f.project_id = $1 AND NOT f.deleted AND f.path < $4
              AND f.path >= CASE
                  WHEN strpos(substr(w.path, length($2) + 1), '/') > 0
                  THEN substr(w.path, 1, length($2) + strpos(substr(w.path, length($2) + 1), '/') - 1) || '0'
                  ELSE w.path || chr(1) END
            ORDER BY f.path LIMIT 1),
           w.n + 1
    FROM walk w
    WHERE w.path IS NOT NULL AND w.n < $5::bigint
)
SELECT w.path, f.size, f.hash, f.mime_type, f.modified_at, f.version, f.updated_seq
FROM walk w JOIN remote_files f ON f.project_id = $1 AND f.path = w.path
ORDER BY w.n";

/// A page of the folder's entries, read in one snapshot with the head it
/// is consistent with. 404 for a project the caller cannot see; a folder
/// with no live file in it is an empty page.
pub async fn list(
    client: &mut Object,
    caller: &Caller,
    project_id: Uuid,
    q: &FolderQuery,
) -> Result<FolderPage, DomainError> {
    let tx = client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?;
    access(&tx, project_id, caller, false).await?;
    let head_seq: i64 =
        tx.query_one("SELECT head_seq FROM project_heads WHERE project_id = $1", &[&project_id]).await?.get(0);

    let folder = q.path.as_str();
    let from = q.cursor.as_ref().map_or(folder, |c| c.0.as_str());
    let end = format!("{}0", &folder[..folder.len() - 1]);
    let stmt = tx.prepare_cached(WALK).await?;
    let rows = tx.query(&stmt, &[&project_id, &folder, &from, &end, &(q.limit + 1)]).await?;

    let mut entries = Vec::with_capacity(rows.len().min(q.limit as usize));
    let mut next_cursor = None;
    for row in &rows {
        if entries.len() as i64 == q.limit {
            // One more exists: the next page starts past the last entry given.
            next_cursor = entries.last().map(|last| Cursor(bound_after(last)).encode());
            break;
        }
        let path: String = row.get(0);
        let rest = &path[folder.len()..];
        entries.push(match rest.split_once('/') {
            Some((name, _)) => FolderEntry::Folder { name: name.to_owned(), path: format!("{folder}{name}/") },
            None => FolderEntry::File {
                name: rest.to_owned(),
                file: RemoteFile {
                    size: row.get(1),
                    hash: row.get(2),
                    mime_type: row.get(3),
                    modified_at: row.get::<_, Option<DateTime<Utc>>>(4),
                    version: row.get(5),
                    updated_seq: row.get(6),
                    deleted: false,
                    path,
                },
            },
        });
    }
    tx.commit().await?;
    Ok(FolderPage { path: q.path.clone(), entries, next_cursor, head_seq })
}

/// The smallest path after everything an entry covers (see [`WALK`]).
fn bound_after(entry: &FolderEntry) -> String {
    match entry {
        FolderEntry::Folder { path, .. } => format!("{}0", &path[..path.len() - 1]),
        FolderEntry::File { file, .. } => format!("{}\u{1}", file.path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_the_top_or_a_valid_path_ending_in_a_slash() {
        for good in [None, Some(""), Some("/"), Some("/a/"), Some("/a b/ünï/")] {
            assert!(FolderQuery::parse(good, None, None).is_ok(), "{good:?} refused");
        }
        for bad in ["a/", "/a", "//", "/a//", "/../", "/a/../", "/a\0/"] {
            let e = FolderQuery::parse(Some(bad), None, None).err();
            assert_eq!(e.map(|e| e.code), Some("invalid_folder"), "{bad:?}");
        }
        for bad in [0, 1001] {
            let e = FolderQuery::parse(None, None, Some(bad)).err();
            assert_eq!(e.map(|e| e.code), Some("invalid_limit"), "{bad}");
        }
    }

    #[test]
    fn a_cursor_must_lie_inside_its_folder() {
        let inside = Cursor("/a/b0".into()).encode();
        assert!(FolderQuery::parse(Some("/a/"), Some(&inside), None).is_ok());
        let e = FolderQuery::parse(Some("/c/"), Some(&inside), None).err();
        assert_eq!(e.map(|e| e.code), Some("invalid_cursor"));
        let e = FolderQuery::parse(Some("/"), Some("%%%"), None).err();
        assert_eq!(e.map(|e| e.code), Some("invalid_cursor"));
    }
}
