use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignupRequest {
    #[schema(value_type = crate::protocol::validate::Email)]
    pub email: String,
    #[schema(value_type = crate::protocol::validate::Password)]
    pub password: String,
    /// Defaults to the part of the email before the `@`.
    #[serde(default)]
    #[schema(value_type = Option<crate::protocol::validate::DisplayName>)]
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoginRequest {
    #[schema(value_type = crate::protocol::validate::Email)]
    pub email: String,
    #[schema(value_type = crate::protocol::validate::Password)]
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuthResponse {
    pub user: User,
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Device {
    pub id: Uuid,
    pub name: String,
    pub platform: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MeResponse {
    pub user: User,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Device>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegisterDeviceRequest {
    #[schema(value_type = crate::protocol::validate::DeviceName)]
    pub name: String,
    #[serde(default)]
    #[schema(value_type = Option<crate::protocol::validate::Platform>)]
    pub platform: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegisterDeviceResponse {
    pub device: Device,
    pub device_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DevicesResponse {
    pub devices: Vec<Device>,
}
