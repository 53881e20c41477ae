//! `ferry status`: per project, where things stand from this machine: the
//! caller's role, whether the owner's computer is online, the folder here
//! that shares or syncs it and how many files it holds, open transfers.

use std::path::{Path, PathBuf};

use serde::Serialize;
use uuid::Uuid;

use super::api::Api;
use super::cli::Session;
use super::output::{table, Output};
use super::scan;
use super::ClientError;
use crate::protocol::membership::{DeviceRole, ProjectDevice};
use crate::protocol::projects::Role;
use crate::protocol::transfers::TransferStatus;

#[derive(Debug, Serialize)]
struct ProjectStatus {
    id: Uuid,
    name: String,
    role: Role,
    /// The owner's computer that shares the project (the one seen last,
    /// when it has several), if any.
    owner_device: Option<ProjectDevice>,
    /// The folder on this machine that shares (owner) or syncs (member) it.
    folder: Option<PathBuf>,
    /// The files in that folder (none when it is gone).
    files: Option<usize>,
    /// Pending or in progress: all of them for the owner, a member's own.
    open_transfers: usize,
}

/// `--json`: `{"projects": [...]}`.
#[derive(Serialize)]
struct Statuses<'a> {
    projects: &'a [ProjectStatus],
}

pub async fn status(session: &Session, out: Output) -> Result<(), ClientError> {
    let api = session.user()?;
    let profile = session.config.profile(&session.server);
    let mut projects = Vec::new();
    for project in api.projects().await?.projects {
        let folders = profile.map(|p| match project.role {
            Role::Owner => &p.shared_folders,
            Role::Member => &p.synced_folders,
        });
        let folder = folders.and_then(|f| f.get(&project.id)).cloned();
        let files = folder.as_deref().filter(|f| f.is_dir()).map(count_files);
        projects.push(ProjectStatus {
            owner_device: owner_device(&api, project.id).await?,
            open_transfers: open_transfers(&api, project.id).await?,
            id: project.id,
            name: project.name,
            role: project.role,
            folder,
            files,
        });
    }
    out.result(Statuses { projects: &projects }, || listing(&projects));
    Ok(())
}

async fn owner_device(api: &Api, project: Uuid) -> Result<Option<ProjectDevice>, ClientError> {
    let devices = api.project_devices(project).await?.devices;
    let sources = devices.into_iter().filter(|d| d.role == DeviceRole::Source);
    // An online one if any, else the one seen last.
    Ok(sources.max_by_key(|d| (d.online, d.last_seen_at)))
}

async fn open_transfers(api: &Api, project: Uuid) -> Result<usize, ClientError> {
    let mut open = 0;
    for status in [TransferStatus::Pending, TransferStatus::InProgress] {
        let mut cursor: Option<String> = None;
        loop {
            let page = api.transfers_page(project, Some(status), cursor.as_deref()).await?;
            open += page.transfers.len();
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    Ok(open)
}

/// The regular files under `dir`, leaving out Ferry's own state.
fn count_files(dir: &Path) -> usize {
    fn walk(dir: &Path) -> usize {
        let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
        entries
            .filter_map(Result::ok)
            .map(|entry| match entry.file_type() {
                Ok(t) if t.is_dir() && entry.file_name() != scan::STATE_DIR => walk(&entry.path()),
                Ok(t) if t.is_file() => 1,
                _ => 0,
            })
            .sum()
    }
    walk(dir)
}

fn listing(projects: &[ProjectStatus]) -> String {
    if projects.is_empty() {
        return "No projects yet: `ferry project create NAME` makes one, an invite link joins one.".into();
    }
    let rows: Vec<_> = projects
        .iter()
        .map(|p| {
            let device = match &p.owner_device {
                Some(d) if d.online => format!("{}: online", d.name),
                Some(d) => match d.last_seen_at {
                    Some(seen) => format!("{}: offline since {}", d.name, seen.format("%Y-%m-%d %H:%M")),
                    None => format!("{}: offline", d.name),
                },
                None => "none shares it yet".into(),
            };
            let folder = match (&p.folder, p.role) {
                (Some(folder), _) => folder.display().to_string(),
                (None, Role::Owner) => "not shared from here".into(),
                (None, Role::Member) => "not synced here".into(),
            };
            vec![
                p.name.clone(),
                p.role.as_str().into(),
                device,
                folder,
                p.files.map(|n| n.to_string()).unwrap_or_default(),
                p.open_transfers.to_string(),
            ]
        })
        .collect();
    table(&["project", "role", "owner's computer", "folder here", "files", "open transfers"], &rows)
}
