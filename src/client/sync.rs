//! `ferry sync PROJECT DIR`, the member's live mirror: pull everything, then
//! follow the project's events over the WebSocket and keep DIR current —
//! added and updated files are pulled (as deltas), deleted files removed
//! (only when untouched here), moved files renamed (or pulled when the local
//! copy differs). The seq of the last applied event is kept as `last_seq` in
//! `DIR/.ferry/manifest.json`; a lost socket (a server restart, a network
//! cut) is reconnected with backoff and resubscribed after the last seq
//! received, and a restarted `ferry sync` resumes after the last seq applied.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use futures_util::StreamExt;

use super::api::{Api, Live};
use super::cli::{resolve_project, Session};
use super::output::{human_bytes, Output};
use super::pull::{pull_into, Manifest, ManifestEntry};
use super::scan::STATE_DIR;
use super::trash::{self, Keep};
use super::ClientError;
use crate::protocol::files::{Blake3Hash, FilePath};
use crate::protocol::realtime::EventMessage;
use crate::protocol::{EventData, EventType};

/// Attempts at applying one event before it is skipped with a warning.
const APPLY_TRIES: u32 = 3;

pub async fn sync(
    session: &Session,
    out: Output,
    project: &str,
    dir: &Path,
    wait: Duration,
    trash_days: u32,
) -> Result<(), ClientError> {
    let api = session.user()?;
    let project = resolve_project(&api, project).await?;
    let state = dir.join(STATE_DIR);
    std::fs::create_dir_all(&state).map_err(|e| ClientError::io(&state, e))?;
    let dir = dir.canonicalize().map_err(|e| ClientError::io(dir, e))?;
    let purged = trash::purge(&dir, trash_days);
    if purged > 0 {
        out.note(&format!("Emptied {purged} file(s) set aside more than {trash_days} days ago from the trash."));
    }

    let stop = super::agent::stop_signal();
    tokio::pin!(stop);

    // Everything the project holds now. Events before `head` are reflected
    // by this pull; a sync that ran before resumes after what it applied
    // (replaying deletes and moves the pull cannot see).
    let head = api.project(project).await?.head_seq;
    let after_seq = Manifest::load(&dir).last_seq.unwrap_or(head);
    let applier = Applier { api, project, dir, wait, out };
    // What the member edited while sync was stopped is set aside before the
    // pull brings the owner's versions in, as a running sync would have.
    applier.keep_edits_made_while_stopped().await?;
    let (api, dir) = (&applier.api, &applier.dir);
    let initial = tokio::select! {
        _ = &mut stop => return Ok(()),
        r = pull_into(api, project, dir, &[], wait, out) => r,
    };
    match initial {
        Ok(s) => out.event(
            News::Pulled {
                files: s.files,
                unchanged: s.unchanged,
                bytes_transferred: s.bytes_transferred,
                bytes_reused: s.bytes_reused,
            },
            || {
                format!(
                    "Pulled {} file(s) ({} transferred, {} reused); {} already up to date.",
                    s.files,
                    human_bytes(s.bytes_transferred),
                    human_bytes(s.bytes_reused),
                    s.unchanged
                )
            },
        ),
        Err(ClientError::Usage(_)) => {}
        // Partial: what failed is pulled again by later events or the next sync.
        Err(e) => out.warn(&format!("the first pull was incomplete: {e}")),
    }
    set_last_seq(dir, after_seq);
    out.note(&format!("Keeping {} in sync with the project; Ctrl-C stops.", dir.display()));

    let mut live = api.live(project, after_seq);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            item = live.next() => match item {
                Some(Live::Event(event)) => {
                    tokio::select! {
                        _ = &mut stop => break,
                        _ = applier.apply(&event) => {}
                    }
                }
                Some(Live::Lost(None)) => out.warn("the live connection closed; reconnecting"),
                Some(Live::Lost(Some(e))) => out.warn(&format!("the live connection dropped ({e}); reconnecting")),
                Some(Live::Subscribed | Live::Presence(_)) => {}
                None => break,
            }
        }
    }
    Ok(())
}

fn set_last_seq(dir: &Path, seq: i64) {
    let mut m = Manifest::load(dir);
    if m.last_seq != Some(seq) {
        m.last_seq = Some(seq);
        let _ = m.save(dir);
    }
}

/// `ferry sync`'s `--json` lines besides the changes it applies.
#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum News<'a> {
    /// The first pull.
    Pulled { files: usize, unchanged: usize, bytes_transferred: u64, bytes_reused: u64 },
    /// Before the first pull: the version here of a file the owner changed,
    /// or the member edited, while sync was stopped, set aside.
    SetAside {
        path: &'a str,
        #[serde(flatten)]
        set_aside: SetAside,
    },
    /// An event that could not be applied.
    Failed {
        #[serde(rename = "type")]
        event_type: EventType,
        seq: i64,
        error: &'a str,
    },
}

/// One event applied to DIR, as its `--json` line tells it.
#[derive(Debug, Serialize)]
struct Applied {
    seq: i64,
    #[serde(flatten)]
    change: Change,
}

#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Change {
    Added(Fetched),
    Updated(Fetched),
    Deleted {
        path: String,
        trashed: bool,
    },
    /// Deleted in the project, but changed here.
    Kept {
        path: String,
        reason: &'static str,
    },
    Moved {
        from: String,
        to: String,
        /// The local copy differed: the new path was pulled.
        #[serde(flatten)]
        pulled: Option<Pulled>,
    },
}

/// A path pulled for an added or updated file.
#[derive(Debug, Serialize)]
struct Fetched {
    path: String,
    bytes_transferred: u64,
    bytes_reused: u64,
    /// What was here before, when it was not what was last synced.
    #[serde(flatten)]
    set_aside: Option<SetAside>,
}

/// Where the version DIR held went: `{"trashed": path}` or
/// `{"conflict_copy": path}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
enum SetAside {
    Trashed(String),
    ConflictCopy(String),
}

#[derive(Debug, Serialize)]
struct Pulled {
    pulled: bool,
    bytes_transferred: u64,
    bytes_reused: u64,
}

struct Applier {
    api: Api,
    project: Uuid,
    dir: PathBuf,
    wait: Duration,
    out: Output,
}

impl Applier {
    /// Applies one event to DIR (retrying a failed pull a few times), then
    /// records its seq.
    async fn apply(&self, event: &EventMessage) {
        let seq = event.seq;
        let kind = event.data.event_type().as_str();
        if let EventData::FileAdded(_)
        | EventData::FileUpdated(_)
        | EventData::FileDeleted(_)
        | EventData::FileMoved(_) = &event.data
        {
            let mut tries = 0;
            loop {
                tries += 1;
                match self.apply_file_event(&event.data).await {
                    Ok(Some(change)) => {
                        let applied = Applied { seq, change };
                        self.out.event(&applied, || describe(&applied));
                        break;
                    }
                    Ok(None) => break,
                    Err(why) if tries < APPLY_TRIES => {
                        self.out.warn(&format!("{kind} (seq {seq}): {why}; trying again"));
                        tokio::time::sleep(Duration::from_secs(1 << tries)).await;
                    }
                    Err(why) => {
                        self.out.warn(&format!(
                            "{kind} (seq {seq}) not applied, skipped: {why} (the next `ferry sync` pulls what is missing)"
                        ));
                        let failed = News::Failed { event_type: event.data.event_type(), seq, error: &why };
                        self.out.event(failed, String::new);
                        break;
                    }
                }
            }
            set_last_seq(&self.dir, seq);
        }
    }

    /// Catches up with what happened while sync was stopped, before the
    /// pull writes the owner's versions: every file here whose project
    /// version differs from what was last synced (the owner changed it), or
    /// that looks changed since it was synced (its size, or an mtime not
    /// older than the sync; the member edited it), goes through
    /// [`Self::set_aside`] as a live update would: the member's own edit is
    /// kept as a conflict copy, an untouched older version goes to the trash.
    async fn keep_edits_made_while_stopped(&self) -> Result<(), ClientError> {
        let manifest = Manifest::load(&self.dir);
        if manifest.files.is_empty() {
            return Ok(());
        }
        let (remote, _) = self.api.files_under(self.project, None).await?;
        for file in remote.iter().filter(|f| !f.deleted) {
            let Some(synced) = manifest.files.get(&file.path) else { continue };
            let owner_changed = synced.hash != file.hash;
            if !owner_changed && !self.looks_edited(&file.path, synced) {
                continue;
            }
            match self.set_aside(&file.path, &file.hash) {
                Ok(Some(set_aside)) => {
                    let said = match &set_aside {
                        SetAside::ConflictCopy(copy) => {
                            format!("{} set aside before the pull: kept as {copy}", file.path)
                        }
                        SetAside::Trashed(_) => {
                            format!("{} set aside before the pull: the older version is in the trash", file.path)
                        }
                    };
                    self.out.event(News::SetAside { path: &file.path, set_aside }, || said);
                }
                Ok(None) => {}
                Err(why) => {
                    return Err(ClientError::Other(format!(
                        "{why}: nothing was pulled, so that no edit made here is overwritten"
                    )))
                }
            }
        }
        Ok(())
    }

    /// Whether the file here may have been edited since it was synced:
    /// another size, or modified at or after the sync (a pulled file keeps
    /// the owner's older modification time). Only a hint; [`Self::set_aside`]
    /// compares hashes.
    fn looks_edited(&self, path: &str, synced: &ManifestEntry) -> bool {
        let Ok(meta) = self.local(path).and_then(|p| std::fs::metadata(p).map_err(|e| e.to_string())) else {
            return false;
        };
        let modified = meta.modified().ok().map(chrono::DateTime::<chrono::Utc>::from);
        meta.len() != synced.size || modified.map_or(true, |m| m >= synced.synced_at)
    }

    /// Answers the change made (for the `--json` line), or None when
    /// nothing needed doing.
    async fn apply_file_event(&self, event: &EventData) -> Result<Option<Change>, String> {
        match event {
            EventData::FileAdded(state) | EventData::FileUpdated(state) => {
                let path = state.path.as_str();
                let aside = self.set_aside(path, &state.hash)?;
                self.pull_path(path).await.map(|pulled| {
                    pulled.map(|(t, r)| {
                        let fetched =
                            Fetched { path: path.to_owned(), bytes_transferred: t, bytes_reused: r, set_aside: aside };
                        if let EventData::FileAdded(_) = event {
                            Change::Added(fetched)
                        } else {
                            Change::Updated(fetched)
                        }
                    })
                })
            }
            EventData::FileDeleted(state) => self.delete(&state.path),
            EventData::FileMoved(moved) => self.rename(&moved.from, &moved.to).await,
            _ => Ok(None),
        }
    }

    fn local(&self, path: &str) -> Result<PathBuf, String> {
        let p = FilePath::parse(path).map_err(|e| e.to_string())?;
        Ok(self.dir.join(p.as_str().trim_start_matches('/')))
    }

    /// Pulls one path; None when there was nothing to fetch (current
    /// already, or gone from the project by now).
    async fn pull_path(&self, path: &str) -> Result<Option<(u64, u64)>, String> {
        match pull_into(&self.api, self.project, &self.dir, &[path.to_owned()], self.wait, self.out).await {
            Ok(s) if s.files == 0 => Ok(None),
            Ok(s) => Ok(Some((s.bytes_transferred, s.bytes_reused))),
            Err(ClientError::Usage(_)) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Before the owner's version of `path` (hashing to `new_hash`) is
    /// pulled over the file here: the member's own edit (it differs from
    /// what was last synced) is kept beside it as a conflict copy; an
    /// untouched older version goes to the trash. Answers which, for the
    /// change's `--json` line.
    fn set_aside(&self, path: &str, new_hash: &str) -> Result<Option<SetAside>, String> {
        let local = self.local(path)?;
        let here = match std::fs::read(&local) {
            Ok(bytes) => Blake3Hash::of(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", local.display())),
        };
        if here == *new_hash {
            return Ok(None);
        }
        let synced = Manifest::load(&self.dir).files.get(path).map(|e| e.hash.clone());
        if synced.as_deref() == Some(here.as_str()) {
            trash::put(&self.dir, path, &local, Keep::Link).map_err(|e| format!("{}: {e}", local.display()))?;
            return Ok(Some(SetAside::Trashed(path.to_owned())));
        }
        let copy = trash::keep_conflict(&local).map_err(|e| format!("{}: {e}", local.display()))?;
        self.out.warn(&format!("{path} changed in the project and here: your version is kept as {}", copy.display()));
        let name = copy.strip_prefix(&self.dir).unwrap_or(&copy).display().to_string();
        Ok(Some(SetAside::ConflictCopy(format!("/{name}"))))
    }

    fn delete(&self, path: &str) -> Result<Option<Change>, String> {
        let local = self.local(path)?;
        let mut manifest = Manifest::load(&self.dir);
        let known = manifest.files.get(path).cloned();
        let change = match (std::fs::read(&local), &known) {
            (Err(e), _) if e.kind() == std::io::ErrorKind::NotFound => None,
            (Err(e), _) => return Err(format!("{}: {e}", local.display())),
            (Ok(bytes), Some(entry)) if Blake3Hash::of(&bytes) == *entry.hash => {
                // Not gone for good: `ferry trash restore` brings it back.
                trash::put(&self.dir, path, &local, Keep::Move).map_err(|e| format!("{}: {e}", local.display()))?;
                remove_empty_parents(&self.dir, &local);
                Some(Change::Deleted { path: path.to_owned(), trashed: true })
            }
            (Ok(_), _) => {
                self.out.warn(&format!("{path} was deleted in the project but changed here: kept {}", local.display()));
                Some(Change::Kept { path: path.to_owned(), reason: "changed_locally" })
            }
        };
        if manifest.files.remove(path).is_some() {
            manifest.save(&self.dir).map_err(|e| e.to_string())?;
        }
        Ok(change)
    }

    async fn rename(&self, from: &str, to: &str) -> Result<Option<Change>, String> {
        let src = self.local(from)?;
        let dst = self.local(to)?;
        let manifest = Manifest::load(&self.dir);
        let matches = match (manifest.files.get(from), std::fs::read(&src)) {
            (Some(entry), Ok(bytes)) => Blake3Hash::of(&bytes) == *entry.hash,
            _ => false,
        };
        if matches && !dst.exists() {
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            std::fs::rename(&src, &dst).map_err(|e| format!("{}: {e}", dst.display()))?;
            remove_empty_parents(&self.dir, &src);
            let mut manifest = Manifest::load(&self.dir);
            if let Some(entry) = manifest.files.remove(from) {
                manifest.files.insert(
                    to.to_owned(),
                    ManifestEntry {
                        path: to.to_owned(),
                        local_path: dst.clone(),
                        synced_at: chrono::Utc::now(),
                        ..entry
                    },
                );
            }
            manifest.save(&self.dir).map_err(|e| e.to_string())?;
            return Ok(Some(Change::Moved { from: from.to_owned(), to: to.to_owned(), pulled: None }));
        }
        // The local copy differs (or is missing): fetch the new path (as a
        // delta against whatever is here), and drop the old one if untouched.
        let pulled = self.pull_path(to).await?;
        if matches {
            self.delete(from)?;
        } else if src.exists() {
            self.out.warn(&format!("{from} was moved to {to} in the project but changed here: kept {}", src.display()));
        }
        let (t, r) = pulled.unwrap_or((0, 0));
        let pulled = Some(Pulled { pulled: true, bytes_transferred: t, bytes_reused: r });
        Ok(Some(Change::Moved { from: from.to_owned(), to: to.to_owned(), pulled }))
    }
}

/// Removes the now-empty folders between `file` and `root`.
fn remove_empty_parents(root: &Path, file: &Path) {
    let mut at = file.parent();
    while let Some(dir) = at {
        if dir == root || !dir.starts_with(root) || std::fs::remove_dir(dir).is_err() {
            break;
        }
        at = dir.parent();
    }
}

fn describe(applied: &Applied) -> String {
    let seq = applied.seq;
    match &applied.change {
        Change::Moved { from, to, .. } => format!("moved {from} → {to} (seq {seq})"),
        Change::Kept { path, .. } => format!("kept {path}: changed here (seq {seq})"),
        Change::Added(f) => format!("added {} (seq {seq})", f.path),
        Change::Updated(f) => format!("updated {} (seq {seq})", f.path),
        Change::Deleted { path, .. } => format!("deleted {path} (seq {seq})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn applied_changes_print_the_lines_sync_has_always_printed() {
        let line = |change| serde_json::to_value(Applied { seq: 7, change }).unwrap();
        let fetched = |set_aside| Fetched { path: "/a".into(), bytes_transferred: 3, bytes_reused: 4, set_aside };
        assert_eq!(
            line(Change::Added(fetched(None))),
            json!({"event": "added", "path": "/a", "bytes_transferred": 3, "bytes_reused": 4, "seq": 7})
        );
        assert_eq!(
            line(Change::Updated(fetched(Some(SetAside::ConflictCopy("/a (conflict)".into()))))),
            json!({"event": "updated", "path": "/a", "bytes_transferred": 3, "bytes_reused": 4,
                   "conflict_copy": "/a (conflict)", "seq": 7})
        );
        assert_eq!(
            line(Change::Updated(fetched(Some(SetAside::Trashed("/a".into()))))),
            json!({"event": "updated", "path": "/a", "bytes_transferred": 3, "bytes_reused": 4, "trashed": "/a", "seq": 7})
        );
        assert_eq!(
            line(Change::Deleted { path: "/a".into(), trashed: true }),
            json!({"event": "deleted", "path": "/a", "trashed": true, "seq": 7})
        );
        assert_eq!(
            line(Change::Kept { path: "/a".into(), reason: "changed_locally" }),
            json!({"event": "kept", "path": "/a", "reason": "changed_locally", "seq": 7})
        );
        assert_eq!(
            line(Change::Moved { from: "/a".into(), to: "/b".into(), pulled: None }),
            json!({"event": "moved", "from": "/a", "to": "/b", "seq": 7})
        );
        let pulled = Some(Pulled { pulled: true, bytes_transferred: 3, bytes_reused: 4 });
        assert_eq!(
            line(Change::Moved { from: "/a".into(), to: "/b".into(), pulled }),
            json!({"event": "moved", "from": "/a", "to": "/b", "pulled": true, "bytes_transferred": 3,
                   "bytes_reused": 4, "seq": 7})
        );
        let failed = News::Failed { event_type: EventType::FileMoved, seq: 7, error: "gone" };
        assert_eq!(
            serde_json::to_value(failed).unwrap(),
            json!({"event": "failed", "type": "file_moved", "seq": 7, "error": "gone"})
        );
    }
}
