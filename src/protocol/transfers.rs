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

/// How bytes reach the requester: `http`, straight from the source device's
/// agent, or `relay`, through the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransferProtocol {
    Http,
    Relay,
}

impl TransferProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferProtocol::Http => "http",
            TransferProtocol::Relay => "relay",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [TransferProtocol::Http, TransferProtocol::Relay].into_iter().find(|p| p.as_str() == value)
    }
}

/// Why the server or a client ended a transfer as `failed`, as its
/// `error_message` says. A client may also report a reason in its own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The received bytes do not hash to the file's hash.
    HashMismatch,
    /// No bytes moved for too long.
    Stalled,
    /// The file changed at the source while it was being sent.
    FileChanged,
    /// The requester left or was removed from the project.
    MemberRemoved,
    /// The source device reported a failure without a reason.
    FailedAtSource,
    /// The requester reported a failure without a reason.
    FailedAtRequester,
    /// The source's agent no longer has the file as requested.
    FileChangedAtSource,
    FileNotFoundAtSource,
    /// Relay chunks did not arrive: the source is offline, or online but
    /// not sending.
    SourceOffline,
    SourceNotSending,
    /// A relay chunk failed its hash check.
    RelayChunkDamaged,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::HashMismatch => "hash_mismatch",
            FailureReason::Stalled => "stalled",
            FailureReason::FileChanged => "file_changed",
            FailureReason::MemberRemoved => "member_removed",
            FailureReason::FailedAtSource => "failed_at_source",
            FailureReason::FailedAtRequester => "failed_at_requester",
            FailureReason::FileChangedAtSource => "file_changed_at_source",
            FailureReason::FileNotFoundAtSource => "file_not_found_at_source",
            FailureReason::SourceOffline => "source_offline",
            FailureReason::SourceNotSending => "source_not_sending",
            FailureReason::RelayChunkDamaged => "relay_chunk_damaged",
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
    #[schema(value_type = crate::protocol::files::FilePath)]
    pub file_path: String,
    /// The hash the requester expects: 409 `file_changed` when it is not the current one.
    #[serde(default)]
    #[schema(value_type = Option<crate::protocol::files::Blake3Hash>)]
    pub file_hash: Option<String>,
    #[serde(default)]
    pub request_mode: RequestMode,
    /// One of the caller's devices attached to the project.
    #[serde(default)]
    pub target_device_id: Option<Uuid>,
    /// For `delta`: the chunks the requester already has.
    #[serde(default)]
    #[schema(value_type = Vec<crate::protocol::files::Blake3Hash>)]
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
    pub protocol: TransferProtocol,
    pub url: String,
    /// For `http` (direct) endpoints: the transfer's secret, sent by the
    /// requester as `Authorization: Bearer <token>` to the source's agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// For `https` direct endpoints: the SHA-256 of the certificate the
    /// source's agent presents (lowercase hex), the only one the requester
    /// accepts there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub cert_sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransferInfo {
    pub protocol: TransferProtocol,
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
    pub protocol: TransferProtocol,
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
    pub route: TransferRoute,
}

/// Which way a transfer's bytes went in its attempt under way (or its
/// last), as its requester reports it with its verification or a failure:
/// through the relay, directly from the owner's machine (and from where),
/// and why a direct attempt was given up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransferRoute {
    /// At most the file's size, as `bytes_direct`.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub bytes_relay: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub bytes_direct: i64,
    /// The owner's address the requester fetched from directly.
    #[serde(default)]
    #[schema(max_length = 2048)]
    pub direct_endpoint: Option<String>,
    /// Why the requester stopped fetching directly and used the relay.
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub direct_abandoned: Option<String>,
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
    /// `in_progress` or `failed`: another status is 422 `invalid_status`.
    #[serde(default)]
    #[schema(schema_with = crate::protocol::schema::reported_status)]
    pub status: Option<TransferStatus>,
    /// Never less than the last report nor more than `total_bytes` (409).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 9_007_199_254_740_992_i64)]
    pub bytes_transferred: Option<i64>,
    #[serde(default)]
    #[schema(max_length = 1000, pattern = r"^[^\x00]*$")]
    pub error_message: Option<String>,
    /// The requester's, with the failure it reports: how far the direct
    /// leg got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<TransferRoute>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VerifyRequest {
    #[schema(value_type = crate::protocol::files::Blake3Hash)]
    pub hash: String,
    /// How the direct leg went, when the requester tried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<TransferRoute>,
}

/// `PUT /api/devices/:deviceId/direct`: the agent of a source device
/// advertises where members can reach it directly, and the key it checks
/// transfer tokens with (64 hex characters, chosen by the agent).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DirectAdvert {
    /// 1 to 8 `http://` or `https://` URLs of at most 2048 bytes each.
    #[schema(schema_with = crate::protocol::schema::direct_urls)]
    pub urls: Vec<String>,
    /// 64 hex characters (32 bytes).
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub key: String,
    /// The SHA-256 of the certificate the agent's listener presents, 64 hex
    /// characters: members pin it. Required with an `https` URL (else 422
    /// `missing_cert_sha256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub cert_sha256: Option<String>,
    /// The project these endpoints serve (the device must be one of its
    /// sources): each project keeps its own entry, so agents of one machine
    /// never replace each other's. Without it, the older per-device entry,
    /// used for a project that has none of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<Uuid>,
}

/// `DELETE /api/devices/:deviceId/direct?project_id=`: which entry to
/// withdraw, the project's or (without it) the per-device one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DirectWithdrawal {
    /// The project whose entry goes; the others stay.
    #[serde(default)]
    pub project_id: Option<Uuid>,
}

/// The SHA-256 fingerprint of a certificate: 64 hex characters, kept in
/// lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSha256(String);

impl CertSha256 {
    pub fn parse(raw: &str) -> Option<Self> {
        (raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Self(raw.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// Fresh direct endpoints of an open transfer, for its requester whose
/// token expired (`POST /api/projects/:p/transfers/:t/direct-token`): the
/// same URLs and pinned certificate, each with a new token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DirectEndpoints {
    /// Empty when the source device no longer advertises itself.
    pub endpoints: Vec<Endpoint>,
}

/// What a valid [`DirectToken`] grants: one transfer's chunks, to the user
/// who asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectGrant {
    pub transfer_id: Uuid,
    pub requester_id: Uuid,
}

/// A short-lived secret for one transfer and its requester, given in the
/// download answer (and afresh on request) and checked by the source
/// device's agent on `GET /chunks/:hash` without asking the server:
/// `<transfer id>.<requester id>.<expiry, unix seconds>.<BLAKE3 keyed MAC>`.
pub struct DirectToken;

impl DirectToken {
    fn mac(key: &[u8; 32], grant: DirectGrant, expires: i64) -> String {
        let message = format!("ferry-direct:{}:{}:{expires}", grant.transfer_id, grant.requester_id);
        blake3::keyed_hash(key, message.as_bytes()).to_hex().to_string()
    }

    /// Parses the hex key of a [`DirectAdvert`].
    pub fn key(hex_key: &str) -> Option<[u8; 32]> {
        let bytes = hex::decode(hex_key).ok()?;
        bytes.try_into().ok()
    }

    pub fn mint(key: &[u8; 32], grant: DirectGrant, expires_at: DateTime<Utc>) -> String {
        let expires = expires_at.timestamp();
        format!("{}.{}.{expires}.{}", grant.transfer_id, grant.requester_id, Self::mac(key, grant, expires))
    }

    /// What a token grants, when it was minted with `key` and has not
    /// expired at `now`.
    pub fn verify(key: &[u8; 32], token: &str, now: DateTime<Utc>) -> Option<DirectGrant> {
        let mut parts = token.splitn(4, '.');
        let transfer_id: Uuid = parts.next()?.parse().ok()?;
        let requester_id: Uuid = parts.next()?.parse().ok()?;
        let expires: i64 = parts.next()?.parse().ok()?;
        let mac = parts.next()?;
        let grant = DirectGrant { transfer_id, requester_id };
        let expected = Self::mac(key, grant, expires);
        // Compare in constant time: the MAC is a secret.
        let same = mac.len() == expected.len()
            && mac.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        (same && now.timestamp() < expires).then_some(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_tokens_check_key_transfer_requester_and_expiry() {
        let key = [7u8; 32];
        let grant = DirectGrant { transfer_id: Uuid::now_v7(), requester_id: Uuid::now_v7() };
        let now = Utc::now();
        let token = DirectToken::mint(&key, grant, now + chrono::Duration::minutes(5));
        assert_eq!(DirectToken::verify(&key, &token, now), Some(grant));
        assert_eq!(DirectToken::verify(&[8u8; 32], &token, now), None, "another key");
        assert_eq!(DirectToken::verify(&key, &token, now + chrono::Duration::minutes(6)), None, "expired");
        let forged = token.replacen(&grant.transfer_id.to_string(), &Uuid::now_v7().to_string(), 1);
        assert_eq!(DirectToken::verify(&key, &forged, now), None, "another transfer");
        let forged = token.replacen(&grant.requester_id.to_string(), &Uuid::now_v7().to_string(), 1);
        assert_eq!(DirectToken::verify(&key, &forged, now), None, "another requester");
        assert_eq!(DirectToken::verify(&key, "garbage", now), None);
        assert_eq!(DirectToken::key(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(DirectToken::key("abc"), None);
    }
}
