//! WebSocket messages of `GET /api/ws`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Actor, Event, EventType};

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Every event the caller may see with seq > `after_seq`, then live.
    Subscribe {
        project_id: Uuid,
        #[serde(default)]
        after_seq: i64,
    },
    Unsubscribe {
        project_id: Uuid,
    },
    Ping,
}

/// What the server sends, but events (see [`event_message`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Subscribed {
        project_id: Uuid,
        head_seq: i64,
    },
    /// The replay reached the live stream at `seq`.
    CaughtUp {
        project_id: Uuid,
        seq: i64,
    },
    Unsubscribed {
        project_id: Uuid,
    },
    Pong,
    Error {
        code: String,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        project_id: Option<Uuid>,
    },
}

/// An event as pushed: `{"type": "<event type>", "project_id", "seq",
/// "data", "actor", "created_at"}`.
pub fn event_message(project_id: Uuid, event: &Event) -> serde_json::Value {
    serde_json::json!({
        "type": event.event_type,
        "project_id": project_id,
        "seq": event.seq,
        "data": event.data,
        "actor": event.actor,
        "created_at": event.created_at,
    })
}

/// The shape of [`event_message`], for the OpenAPI document: an event the
/// caller may see, pushed in seq order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventMessage {
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub project_id: Uuid,
    pub seq: i64,
    /// The event's payload; its fields depend on `type`.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub actor: Actor,
    pub created_at: chrono::DateTime<chrono::Utc>,
}
