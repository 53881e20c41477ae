//! `DIR/.ferry/manifest.json`: what was pulled into DIR, and, for `ferry
//! sync`, the last event applied.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::super::scan::STATE_DIR;

const MANIFEST_FILE: &str = "manifest.json";

/// `DIR/.ferry/manifest.json`: what was pulled, by project path.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(default)]
    pub version: u32,
    #[serde(default)]
    pub files: BTreeMap<String, ManifestEntry>,
    /// `ferry sync`: the seq of the last project event applied to DIR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub project_id: Uuid,
    pub path: String,
    pub local_path: PathBuf,
    pub hash: String,
    pub size: u64,
    pub synced_at: DateTime<Utc>,
}

impl Manifest {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_DIR).join(MANIFEST_FILE)
    }

    pub fn load(dir: &Path) -> Self {
        std::fs::read(Self::path(dir)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let path = Self::path(dir);
        let tmp = dir.join(STATE_DIR).join(format!("{MANIFEST_FILE}.{}.tmp", Uuid::new_v4().simple()));
        let bytes =
            serde_json::to_vec_pretty(&Manifest { version: 1, files: self.files.clone(), last_seq: self.last_seq })
                .map_err(std::io::Error::other)?;
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(tmp, path)
    }
}
