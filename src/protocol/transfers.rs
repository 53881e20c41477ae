//! Transfers: the download request and its answer, the transfer object, and
//! the reports of the source device and the requester.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where a transfer is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransferStatus {
    Pending,
    InProgress,
    Completed,
    Failed,
    Cancelled,
    Expired,
}

impl TransferStatus {
    pub const ALL: [TransferStatus; 6] = [
        TransferStatus::Pending,
        TransferStatus::InProgress,
        TransferStatus::Completed,
        TransferStatus::Failed,
        TransferStatus::Cancelled,
        TransferStatus::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TransferStatus::Pending => "pending",
            TransferStatus::InProgress => "in_progress",
            TransferStatus::Completed => "completed",
            TransferStatus::Failed => "failed",
            TransferStatus::Cancelled => "cancelled",
            TransferStatus::Expired => "expired",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// Pending or in progress: bytes may still move.
    pub fn is_active(self) -> bool {
        matches!(self, TransferStatus::Pending | TransferStatus::InProgress)
    }

    /// No transition leaves it.
    pub fn is_terminal(self) -> bool {
        matches!(self, TransferStatus::Completed | TransferStatus::Cancelled | TransferStatus::Expired)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestMode {
    #[default]
    Full,
    /// Only the chunks the requester does not have (`have_chunks`).
    Delta,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DownloadRequest {
    pub file_path: String,
    #[serde(default)]
    pub file_hash: Option<String>,
    #[serde(default)]
    pub request_mode: RequestMode,
    #[serde(default)]
    pub target_device_id: Option<Uuid>,
    #[serde(default)]
    pub have_chunks: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DownloadFile {
    pub path: String,
    pub size: i64,
    pub hash: String,
    pub mime_type: String,
    /// Every chunk of the file in order (an addition to API.md): what the
    /// requester assembles, from chunks it has and `chunks_needed`. A file
    /// pushed without a chunk list is one chunk, itself.
    #[serde(default)]
    pub chunks: Vec<crate::protocol::files::ChunkRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Endpoint {
    pub protocol: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransferInfo {
    pub protocol: String,
    pub source_device_id: Uuid,
    pub expires_at: DateTime<Utc>,
    pub endpoints: Vec<Endpoint>,
    pub chunks_needed: Vec<String>,
}

/// The answer to a download request (the shape desktop clients expect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DownloadResponse {
    pub success: bool,
    pub download_id: Uuid,
    pub file: DownloadFile,
    pub transfer_info: TransferInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SourceDevice {
    pub id: Uuid,
    pub name: String,
    pub online: bool,
}

/// A transfer as clients read it. `speed_mbps` (megabits per second) and
/// `eta_seconds` are computed by the server over a moving window of the
/// progress reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Transfer {
    pub id: Uuid,
    pub project_id: Uuid,
    pub file_path: String,
    pub file_hash: String,
    pub status: TransferStatus,
    pub requester_id: Uuid,
    pub target_device_id: Option<Uuid>,
    pub source_device: SourceDevice,
    pub protocol: String,
    pub bytes_transferred: i64,
    pub total_bytes: i64,
    pub percent_complete: f64,
    pub speed_mbps: Option<f64>,
    pub eta_seconds: Option<i64>,
    pub attempts: i32,
    pub error_message: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransfersPage {
    pub transfers: Vec<Transfer>,
    /// Opaque; null on the last page.
    pub next_cursor: Option<String>,
}

/// `PATCH .../transfers/:id`, from the source device.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransferReport {
    #[serde(default)]
    pub status: Option<TransferStatus>,
    #[serde(default)]
    pub bytes_transferred: Option<i64>,
    #[serde(default)]
    pub error_message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VerifyRequest {
    pub hash: String,
}
