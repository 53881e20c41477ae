//! Wire types shared by the server and the client: events, request and
//! response bodies, and newtypes that validate on parse. Nothing here knows
//! HTTP or PostgreSQL.

pub mod accounts;
pub mod error;
pub mod events;
pub mod files;
pub mod membership;
pub mod projects;
pub mod realtime;
pub mod relay;
pub mod schema;
pub mod transfers;
pub mod validate;

pub use error::{ErrorBody, ErrorDetail};

/// The body of a command whose request says nothing more: `{}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct EmptyBody {}
pub use events::{Actor, Event, EventData, EventType, Log};
