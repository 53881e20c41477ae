//! The `ferry` command-line client: a typed API client, the owner's agent
//! (scan, push, watch, serve transfers), and the commands people and
//! scripts run. `src/bin/ferry.rs` only parses the command line.

pub mod agent;
pub mod api;
pub mod cli;
pub mod config;
pub mod direct;
pub mod endpoint;
pub mod output;
pub mod part;
pub mod pieces;
pub mod pull;
pub mod rate;
pub mod scan;
pub mod source;
pub mod status;
pub mod sync;
pub mod tls;
pub mod transfers;
pub mod trash;

use std::path::Path;

/// Whatever stops a command, phrased for the person who ran it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused, with its `{"error": {code, message}}`.
    #[error("{message} ({code}, HTTP {status})")]
    Api { status: u16, code: String, message: String },
    #[error("cannot reach the Ferry server at {server}: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("talking to the server failed: {0}")]
    Http(String),
    #[error("not logged in to {0}: run `ferry login` (or `ferry signup`) first")]
    NotLoggedIn(String),
    #[error("{0}")]
    Usage(String),
    /// The client stopped to protect what is there (`code` says which guard).
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{0}")]
    Other(String),
}

impl ClientError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ClientError::Io { path: path.display().to_string(), source }
    }

    /// A stable snake_case code for `--json` error output.
    pub fn code(&self) -> &str {
        match self {
            ClientError::Api { code, .. } => code,
            ClientError::Unreachable { .. } => "server_unreachable",
            ClientError::Http(_) => "http_error",
            ClientError::NotLoggedIn(_) => "not_logged_in",
            ClientError::Usage(_) => "usage",
            ClientError::Refused { code, .. } => code,
            ClientError::Io { .. } => "io_error",
            ClientError::Other(_) => "error",
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}
