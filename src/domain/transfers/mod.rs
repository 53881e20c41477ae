//! Transfers: from the download request to verified completion. This moves
//! no bytes; it keeps the life of each transfer exact, observable and
//! durable. Every transition is an event carrying the transfer's whole
//! state; the `file_transfers` projection is the latest of them.
//!
//! - [`machine`]: the state machine and its progress maths, pure;
//! - `commands`: request, report, verify, cancel, retry, relayed progress;
//! - `queries`: the one row mapper over `file_transfers`, and the reads;
//! - `source`: which device serves, and its direct-transfer tokens;
//! - `sweeper`: expiring and failing due transfers;
//! - [`relayed`]: relayed bytes batched into progress.

mod commands;
pub mod machine;
mod queries;
pub mod relayed;
mod source;
mod sweeper;

use chrono::Duration;

pub use commands::{advance_relayed, cancel, direct_token, report, request, retry, verify};
pub(crate) use commands::{cancel_open_of, fail_changed};
pub use queries::{content, get, list, Content};
pub use relayed::RelayedBytes;
pub use sweeper::{sweep, Swept};

use super::{DomainError, Rejection};

/// How transfers behave; set from the server's settings.
#[derive(Debug, Clone, Copy)]
pub struct TransferPolicy {
    /// A pending transfer expires this long after it was requested (or retried).
    pub ttl: Duration,
    /// Attempts allowed, the first included.
    pub max_attempts: i32,
    /// An in-progress transfer with no activity for this long fails as `stalled`.
    pub stall_after: Duration,
    /// Progress events of one transfer are at least this far apart.
    pub progress_interval: Duration,
    /// A direct token lives this long (at most as long as its transfer);
    /// the requester asks for a fresh one when it runs out.
    pub direct_token_ttl: Duration,
}

impl Default for TransferPolicy {
    fn default() -> Self {
        Self {
            ttl: Duration::hours(1),
            max_attempts: 3,
            stall_after: Duration::minutes(2),
            progress_interval: Duration::seconds(1),
            direct_token_ttl: Duration::minutes(5),
        }
    }
}

fn rejected(kind: Rejection, code: &'static str, message: impl Into<String>) -> DomainError {
    DomainError::rejected(kind, code, message)
}
