//! WebSocket messages of `GET /api/ws`.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Actor, Event, EventData};

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

/// What the server sends: control messages, tagged by `type`, and events,
/// whose `type` is the event's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// A device of the project came online or went offline. Not an event:
    /// it is not in the log and not replayed, so a client that reconnects
    /// reads the project's devices again.
    Presence(DevicePresence),
    /// An event the caller may see; its `type` is the event's.
    #[serde(untagged)]
    Event(Box<EventMessage>),
}

/// `{"type": "presence", "project_id", "device_id", "online", "last_seen_at"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DevicePresence {
    pub project_id: Uuid,
    pub device_id: Uuid,
    pub online: bool,
    pub last_seen_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// An event as pushed: `{"type": "<event type>", "data", "project_id", "seq",
/// "actor", "created_at"}`, an event the caller may see, in seq order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventMessage {
    #[serde(flatten)]
    pub data: EventData,
    pub project_id: Uuid,
    pub seq: i64,
    pub actor: Actor,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl EventMessage {
    pub fn new(project_id: Uuid, event: &Event) -> Self {
        Self { data: event.data.clone(), project_id, seq: event.seq, actor: event.actor, created_at: event.created_at }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::events::data;
    use serde_json::json;

    #[test]
    fn an_event_message_is_the_event_type_beside_the_event_fields() {
        let project_id = Uuid::now_v7();
        let user_id = Uuid::now_v7();
        let created_at = chrono::Utc::now();
        let message = ServerMessage::Event(Box::new(EventMessage {
            data: EventData::ProjectRenamed(data::ProjectRenamed { name: "n".into() }),
            project_id,
            seq: 7,
            actor: Actor { user_id: Some(user_id), device_id: None },
            created_at,
        }));
        let json = serde_json::to_value(&message).unwrap();
        assert_eq!(
            json,
            json!({
                "type": "project_renamed", "project_id": project_id, "seq": 7, "data": {"name": "n"},
                "actor": {"user_id": user_id, "device_id": null}, "created_at": created_at,
            })
        );
        assert_eq!(serde_json::from_value::<ServerMessage>(json).unwrap(), message);
        let pong = serde_json::from_value::<ServerMessage>(json!({"type": "pong"})).unwrap();
        assert_eq!(pong, ServerMessage::Pong);
        assert!(serde_json::from_value::<ServerMessage>(json!({"type": "nope"})).is_err());
    }
}
