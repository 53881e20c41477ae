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
    /// `cookie`: also start a browser session (see `Session`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Session>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoginRequest {
    #[schema(value_type = crate::protocol::validate::Email)]
    pub email: String,
    #[schema(value_type = crate::protocol::validate::Password)]
    pub password: String,
    /// `cookie`: also start a browser session (see `Session`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Session>,
}

/// How a browser keeps its sign-in. `cookie`: the token is set as an
/// `HttpOnly`, `SameSite=Lax` cookie (`Secure` over https) and left out of
/// the answer, so the page's JavaScript never holds it; a request the
/// cookie authenticates that changes anything must come from the app's
/// own origin (else 403 `cross_site`), and so must the signup or login
/// that asks for it, so that another site cannot sign a browser in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Session {
    Cookie,
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

/// What signup and login answer with `"session": "cookie"`: the user
/// alone, the token being in the cookie.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
// No extra fields, so that an answer with a token is never read as this one.
#[serde(deny_unknown_fields)]
pub struct SessionResponse {
    pub user: User,
}

/// What signup and login answer: the user and a token, or, when a cookie
/// session was asked for, the user alone.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum SignedIn {
    Token(AuthResponse),
    Session(SessionResponse),
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
