//! Bytes the relay served for transfers, counted as their progress: gathered
//! for at most the progress interval, so a transfer gets at most about one
//! progress event a second from a server however many pieces it sends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::domain::{self, Caller};
use crate::store::Pool;

/// Relayed bytes not yet counted as transfer progress.
#[derive(Clone)]
pub struct RelayedBytes {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    interval: std::time::Duration,
    pending: Mutex<HashMap<Uuid, Pending>>,
}

struct Pending {
    project_id: Uuid,
    caller: Caller,
    bytes: i64,
}

impl RelayedBytes {
    /// Counts through `pool`, at most once per `progress_interval` per transfer.
    pub fn new(pool: Pool, progress_interval: chrono::Duration) -> Self {
        let interval = progress_interval.to_std().unwrap_or_default();
        Self { inner: Arc::new(Inner { pool, interval, pending: Mutex::default() }) }
    }

    /// `bytes` of the transfer went out to `caller`: counted at the end of
    /// the interval, with any others sent by then. Call it within a Tokio
    /// runtime.
    pub fn add(&self, caller: Caller, project_id: Uuid, transfer_id: Uuid, bytes: i64) {
        let mut pending = self.inner.pending.lock().expect("relayed lock");
        if let Some(p) = pending.get_mut(&transfer_id) {
            p.bytes += bytes;
            return;
        }
        pending.insert(transfer_id, Pending { project_id, caller, bytes });
        tokio::spawn(Self::flush(self.inner.clone(), transfer_id));
    }

    async fn flush(inner: Arc<Inner>, transfer_id: Uuid) {
        tokio::time::sleep(inner.interval).await;
        let Some(p) = inner.pending.lock().expect("relayed lock").remove(&transfer_id) else { return };
        let counted = domain::execute(&inner.pool, p.caller, None, move |tx, cmd| {
            Box::pin(async move { super::advance_relayed(tx, cmd, p.project_id, transfer_id, p.bytes).await })
        })
        .await;
        if let Err(e) = counted {
            tracing::warn!(%transfer_id, error = %e, "relayed bytes not counted");
        }
    }
}
