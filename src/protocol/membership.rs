//! Invites, members and device assignment.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::projects::Role;

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreateInviteRequest {
    /// Seconds until the invite expires: 60 to 31,536,000 (a year); default 7 days.
    #[serde(default)]
    #[schema(minimum = 60, maximum = 31_536_000)]
    pub expires_in_seconds: Option<i64>,
    /// How many people may join with it: 1 to 1000; default 1.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_uses: Option<i64>,
}

/// The answer to creating an invite: the only time the token is shown.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedInvite {
    pub id: Uuid,
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub max_uses: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Invite {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub max_uses: i32,
    pub uses: i32,
    pub revoked: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InvitesResponse {
    pub invites: Vec<Invite>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AcceptInviteRequest {
    /// The invite's token (404 `invite_not_found` when no invite has it).
    #[schema(pattern = r"^[^\x00]*$")]
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AcceptedInvite {
    pub project_id: Uuid,
    pub role: Role,
}

/// Why an invite can no longer be used to join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InviteUnusable {
    /// Its time ran out.
    Expired,
    /// The owner revoked it, or archived the project.
    Revoked,
    /// As many people joined with it as it allows.
    UsedUp,
}

/// What an invite link leads to, shown before joining (`GET /api/invites/{token}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InvitePreview {
    pub project_id: Uuid,
    pub project_name: String,
    pub owner_display_name: String,
    /// Whether joining with it would work now.
    pub usable: bool,
    /// Why not, when it is not usable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reason: Option<InviteUnusable>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Member {
    pub user_id: Uuid,
    pub display_name: String,
    pub role: Role,
    pub joined_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MembersResponse {
    pub members: Vec<Member>,
}

/// What a device does in a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceRole {
    /// The owner's machine: pushes file deltas, serves transfers.
    Source,
    /// A member's machine: where files land.
    Target,
}

impl DeviceRole {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceRole::Source => "source",
            DeviceRole::Target => "target",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "source" => Some(DeviceRole::Source),
            "target" => Some(DeviceRole::Target),
            _ => None,
        }
    }
}

/// The answer to attaching a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttachedDevice {
    pub device_id: Uuid,
    pub project_id: Uuid,
    pub user_id: Uuid,
    pub role: DeviceRole,
    pub online: bool,
}

/// A device attached to a project. `online` and `last_seen_at` come from
/// WebSocket presence; until a device has connected they are false and null.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProjectDevice {
    pub device_id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub role: DeviceRole,
    pub online: bool,
    pub last_seen_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProjectDevicesResponse {
    pub devices: Vec<ProjectDevice>,
}
