//! The client's own state in `FERRY_CONFIG_DIR` (default: the platform's
//! config folder): per server, the user's token and this machine's device.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ClientError;

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";
const FILE: &str = "config.json";

/// Everything kept on disk. No `Debug`: it holds secrets.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Config {
    /// The server last logged in to: used when no `--server` is given.
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default)]
    pub servers: BTreeMap<String, Profile>,
}

/// What the client knows on one server.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub user_id: Option<Uuid>,
    #[serde(default)]
    pub email: Option<String>,
    /// This machine, once registered as a device on the server.
    #[serde(default)]
    pub device: Option<DeviceIdentity>,
    /// The folder each project is shared from on this machine: `share`
    /// refuses another one unless told the project moved.
    #[serde(default)]
    pub shared_folders: BTreeMap<Uuid, PathBuf>,
    /// The folder `sync` keeps current for each project, for `status`.
    #[serde(default)]
    pub synced_folders: BTreeMap<Uuid, PathBuf>,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct DeviceIdentity {
    pub id: Uuid,
    pub token: String,
    pub name: String,
}

/// The config folder: `FERRY_CONFIG_DIR`, else `<platform config>/ferry`.
pub fn config_dir() -> Result<PathBuf, ClientError> {
    if let Some(dir) = std::env::var_os("FERRY_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    dirs::config_dir()
        .map(|d| d.join("ferry"))
        .ok_or_else(|| ClientError::Usage("no config folder on this platform: set FERRY_CONFIG_DIR".into()))
}

/// A server URL without its trailing slash.
/// A server as the user wrote it, as one canonical URL: `http://` is
/// assumed without a scheme (`127.0.0.1:7070`), a trailing `/` dropped.
/// Anything that is not an http(s) address of a host is refused, saying
/// what was expected.
pub fn normalize_server(written: &str) -> Result<String, ClientError> {
    let given = written.trim();
    let trimmed = given.trim_end_matches('/');
    let candidate = if given.contains("://") { trimmed.to_owned() } else { format!("http://{trimmed}") };
    let refused = |why: &str| {
        ClientError::Usage(format!(
            "{written:?} is not a Ferry server address ({why}): give one like http://127.0.0.1:7070 or https://ferry.example.org"
        ))
    };
    let url = url::Url::parse(&candidate).map_err(|e| refused(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refused("only http and https are spoken"));
    }
    if !matches!(url.host_str(), Some(host) if !host.is_empty()) || url.query().is_some() || url.fragment().is_some() {
        return Err(refused("it needs a host, and nothing after the path"));
    }
    Ok(candidate)
}

impl Config {
    pub fn load(dir: &Path) -> Result<Self, ClientError> {
        let path = dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Other(format!("{} is not a valid Ferry config: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(ClientError::io(&path, e)),
        }
    }

    /// Writes atomically, readable by the user only (it holds tokens).
    pub fn save(&self, dir: &Path) -> Result<(), ClientError> {
        std::fs::create_dir_all(dir).map_err(|e| ClientError::io(dir, e))?;
        let path = dir.join(FILE);
        let tmp = dir.join(format!("{FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| ClientError::Other(e.to_string()))?;
        write_private(&tmp, &bytes).map_err(|e| ClientError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| ClientError::io(&path, e))
    }

    /// The server to talk to: the flag or `FERRY_SERVER`, else the last one
    /// logged in to, else the default.
    pub fn resolve_server(&self, flag: Option<&str>) -> Result<String, ClientError> {
        normalize_server(flag.or(self.server.as_deref()).unwrap_or(DEFAULT_SERVER))
    }

    pub fn profile(&self, server: &str) -> Option<&Profile> {
        self.servers.get(server)
    }

    pub fn profile_mut(&mut self, server: &str) -> &mut Profile {
        self.servers.entry(server.to_owned()).or_default()
    }
}

pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::normalize_server;

    #[test]
    fn a_server_is_an_http_url_and_http_is_assumed() {
        for (written, canonical) in [
            ("127.0.0.1:7070", "http://127.0.0.1:7070"),
            ("http://127.0.0.1:7070/", "http://127.0.0.1:7070"),
            (" https://ferry.example.org ", "https://ferry.example.org"),
            ("localhost", "http://localhost"),
            ("http://[::1]:7070", "http://[::1]:7070"),
        ] {
            assert_eq!(normalize_server(written).ok().as_deref(), Some(canonical), "{written:?}");
        }
        for bad in ["", "ftp://host", "http://", "http://host:99999", "host?x=1", "http://a b"] {
            let e = normalize_server(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("is not a Ferry server address"), "{bad:?}: {e}");
        }
    }
}
