use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Which of the two logs an event type is appended to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Log {
    Project,
    Transfer,
}

macro_rules! event_types {
    ($($variant:ident($payload:ty) = $name:literal in $log:ident),+ $(,)?) => {
        /// Every event type of both logs, named in the past tense.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum EventType { $($variant),+ }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$(EventType::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $(EventType::$variant => $name),+ }
            }

            pub fn log(self) -> Log {
                match self { $(EventType::$variant => Log::$log),+ }
            }

            pub fn parse(name: &str) -> Option<Self> {
                match name { $($name => Some(EventType::$variant),)+ _ => None }
            }
        }

        /// An event's payload with its type, one variant per [`EventType`]:
        /// `{"type": "<event type>", "data": {...}}` on the wire.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type", content = "data")]
        pub enum EventData { $(#[serde(rename = $name)] $variant($payload)),+ }

        impl EventData {
            pub fn event_type(&self) -> EventType {
                match self { $(EventData::$variant(_) => EventType::$variant),+ }
            }

            /// The payload alone, as the log stores it in `data`.
            pub fn payload(&self) -> Value {
                match self { $(EventData::$variant(d) => serde_json::to_value(d)),+ }
                    .expect("event payloads serialize to JSON")
            }

            /// [`EventData::payload`] as JSON text, appended to `out`.
            pub fn write_payload(&self, out: &mut Vec<u8>) {
                match self { $(EventData::$variant(d) => serde_json::to_writer(out, d)),+ }
                    .expect("event payloads serialize to JSON")
            }

            /// Reads a payload the log stored as `event_type`.
            pub fn from_payload(event_type: EventType, payload: Value) -> Result<Self, serde_json::Error> {
                match event_type { $(EventType::$variant => serde_json::from_value(payload).map(EventData::$variant)),+ }
            }
        }
    };
}

event_types! {
    ProjectCreated(data::ProjectCreated) = "project_created" in Project,
    ProjectRenamed(data::ProjectRenamed) = "project_renamed" in Project,
    ProjectArchived(data::ProjectArchived) = "project_archived" in Project,
    InviteCreated(data::InviteCreated) = "invite_created" in Project,
    InviteRevoked(data::InviteRevoked) = "invite_revoked" in Project,
    MemberJoined(data::MemberJoined) = "member_joined" in Project,
    MemberRemoved(data::MemberRemoved) = "member_removed" in Project,
    DeviceAttached(data::DeviceAttached) = "device_attached" in Project,
    DeviceDetached(data::DeviceDetached) = "device_detached" in Project,
    FileAdded(data::FileState) = "file_added" in Project,
    FileUpdated(data::FileState) = "file_updated" in Project,
    FileDeleted(data::FileState) = "file_deleted" in Project,
    FileMoved(data::FileMoved) = "file_moved" in Project,
    TransferRequested(data::TransferRequested) = "transfer_requested" in Transfer,
    FileTransferStarted(data::TransferState) = "file_transfer_started" in Transfer,
    FileTransferProgress(data::TransferState) = "file_transfer_progress" in Transfer,
    FileTransferComplete(data::TransferState) = "file_transfer_complete" in Transfer,
    FileTransferFailed(data::TransferState) = "file_transfer_failed" in Transfer,
    FileTransferCancelled(data::TransferState) = "file_transfer_cancelled" in Transfer,
    FileTransferExpired(data::TransferState) = "file_transfer_expired" in Transfer,
    TransferRetried(data::TransferState) = "transfer_retried" in Transfer,
}

impl EventData {
    /// The transfer's state after this event, for events of the transfer log.
    pub fn transfer_state(&self) -> Option<&data::TransferState> {
        use EventData::*;
        match self {
            TransferRequested(r) => Some(&r.state),
            FileTransferStarted(s)
            | FileTransferProgress(s)
            | FileTransferComplete(s)
            | FileTransferFailed(s)
            | FileTransferCancelled(s)
            | FileTransferExpired(s)
            | TransferRetried(s) => Some(s),
            _ => None,
        }
    }
}

/// On the wire an [`EventData`] is two fields of the object that carries it.
impl utoipa::PartialSchema for EventData {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .property("type", utoipa::openapi::Ref::from_schema_name(<EventType as utoipa::ToSchema>::name()))
            .required("type")
            .property(
                "data",
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .description(Some("The event's payload; its fields depend on `type`.")),
            )
            .required("data")
            .into()
    }
}

impl utoipa::ToSchema for EventData {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        schemas.push((
            <EventType as utoipa::ToSchema>::name().into_owned(),
            <EventType as utoipa::PartialSchema>::schema(),
        ));
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who appended an event: a user, and the device when a device token was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Actor {
    pub user_id: Option<Uuid>,
    pub device_id: Option<Uuid>,
}

/// One event as clients read it (event feed, audit, WebSocket).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    pub seq: i64,
    pub id: Uuid,
    #[serde(flatten)]
    pub data: EventData,
    pub actor: Actor,
    pub created_at: DateTime<Utc>,
}

/// A page of a project's event feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventsPage {
    pub events: Vec<Event>,
    /// The head when this page was read. Fewer events than `limit` means
    /// everything visible up to `head_seq` has been returned.
    pub head_seq: i64,
}

/// An event as the admins' audit reads it: with its project and global
/// position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    pub position: i64,
    pub project_id: Uuid,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    /// Opaque; null on the last page.
    pub next_cursor: Option<String>,
}

/// Event payloads, one struct per type, so the server writes and the
/// projections read the same field names.
pub mod data {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Serialize};
    use uuid::Uuid;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct ProjectCreated {
        pub name: String,
        pub owner_id: Uuid,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct ProjectRenamed {
        pub name: String,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct ProjectArchived {}

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct InviteCreated {
        pub invite_id: Uuid,
        /// BLAKE3 of the token, hex: the token itself is never stored.
        pub token_hash: String,
        pub expires_at: DateTime<Utc>,
        pub max_uses: i32,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct InviteRevoked {
        pub invite_id: Uuid,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct MemberJoined {
        pub user_id: Uuid,
        pub invite_id: Uuid,
    }

    /// Why a member left the project.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum RemovalReason {
        /// The owner removed them.
        Removed,
        /// They left on their own.
        Left,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct MemberRemoved {
        pub user_id: Uuid,
        pub reason: RemovalReason,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct DeviceAttached {
        pub device_id: Uuid,
        pub user_id: Uuid,
        pub role: crate::protocol::membership::DeviceRole,
    }

    /// Why a device left the project.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum DetachReason {
        Detached,
        /// Its user was removed from, or left, the project.
        MemberRemoved,
        /// The device itself was deleted from its user's account.
        DeviceDeleted,
    }

    /// `file_added`, `file_updated`, `file_deleted`: the whole resulting
    /// state of the path (for a delete, the last state before it).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct FileState {
        pub path: String,
        pub size: i64,
        pub hash: String,
        pub mime_type: String,
        pub modified_at: Option<DateTime<Utc>>,
        pub chunks: Option<Vec<crate::protocol::files::ChunkRef>>,
        /// Counts every change at this path.
        pub version: i64,
    }

    /// `file_moved`: the file now at `to` (its state and `version`), and
    /// the version of the tombstone left at `from`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct FileMoved {
        pub from: String,
        pub to: String,
        pub from_version: i64,
        pub size: i64,
        pub hash: String,
        pub mime_type: String,
        pub modified_at: Option<DateTime<Utc>>,
        pub chunks: Option<Vec<crate::protocol::files::ChunkRef>>,
        pub version: i64,
    }

    /// The mutable state of a transfer after an event. Every transfer event
    /// carries it whole, so the latest event of a transfer is its state.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct TransferState {
        pub transfer_id: Uuid,
        /// Who asked: members see the events of their own transfers only.
        pub requester_id: Uuid,
        pub file_path: String,
        pub status: crate::protocol::transfers::TransferStatus,
        pub bytes_transferred: i64,
        pub total_bytes: i64,
        pub percent: f64,
        pub speed_mbps: Option<f64>,
        pub eta_seconds: Option<i64>,
        pub attempts: i32,
        pub error_message: Option<String>,
        pub started_at: Option<DateTime<Utc>>,
        pub completed_at: Option<DateTime<Utc>>,
        pub expires_at: DateTime<Utc>,
        /// When bytes last moved or the status last changed (stall detection).
        pub last_activity_at: DateTime<Utc>,
        /// When the last progress event was appended (coalescing).
        pub last_progress_at: Option<DateTime<Utc>>,
        /// Recent progress samples, `[unix millis, bytes]`: the moving window
        /// speed and ETA are computed over.
        pub window: Vec<[i64; 2]>,
        /// Which way the bytes went (absent in events recorded before it).
        #[serde(default)]
        pub route: crate::protocol::transfers::TransferRoute,
    }

    /// `transfer_requested`: what is moved, from where to where, and the
    /// initial state.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct TransferRequested {
        #[serde(flatten)]
        pub state: TransferState,
        pub file_hash: String,
        pub mime_type: String,
        pub source_device_id: Uuid,
        pub target_device_id: Option<Uuid>,
        pub protocol: crate::protocol::transfers::TransferProtocol,
        pub request_mode: crate::protocol::transfers::RequestMode,
        pub chunks_needed: Vec<String>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct DeviceDetached {
        pub device_id: Uuid,
        pub user_id: Uuid,
        pub reason: DetachReason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_parse() {
        for &t in EventType::ALL {
            let json = serde_json::to_value(t).unwrap();
            assert_eq!(json, Value::String(t.as_str().to_owned()));
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("nope"), None);
        assert_eq!(EventType::FileMoved.log(), Log::Project);
        assert_eq!(EventType::TransferRetried.log(), Log::Transfer);
    }

    #[test]
    fn an_event_is_its_type_and_payload_beside_its_fields() {
        let id = Uuid::now_v7();
        let owner_id = Uuid::now_v7();
        let created_at = Utc::now();
        let event = Event {
            seq: 1,
            id,
            data: EventData::ProjectCreated(data::ProjectCreated { name: "p".into(), owner_id }),
            actor: Actor { user_id: Some(owner_id), device_id: None },
            created_at,
        };
        let json = serde_json::to_value(&event).unwrap();
        let payload = serde_json::json!({"name": "p", "owner_id": owner_id});
        assert_eq!(
            json,
            serde_json::json!({
                "seq": 1, "id": id, "type": "project_created", "data": payload,
                "actor": {"user_id": owner_id, "device_id": null}, "created_at": created_at,
            })
        );
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), event);
        assert_eq!(event.data.event_type(), EventType::ProjectCreated);
        assert_eq!(event.data.payload(), payload);
        let mut text = b"[".to_vec();
        event.data.write_payload(&mut text);
        assert_eq!(serde_json::from_slice::<Value>(&text[1..]).unwrap(), payload, "appends to what is there");
        assert_eq!(EventData::from_payload(EventType::ProjectCreated, payload).unwrap(), event.data);
        assert!(EventData::from_payload(EventType::ProjectRenamed, serde_json::json!({})).is_err());
    }
}
