//! The sweeper: expires pending transfers past their time and fails
//! in-progress ones that stalled. It takes its own connections from the
//! pool, one transaction per project.

use chrono::Utc;
use uuid::Uuid;

use super::machine;
use super::queries::{TransferRow, SELECT};
use super::TransferPolicy;
use crate::domain::DomainError;
use crate::protocol::EventData;
use crate::store::{self, EventMeta, Pool};

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub expired: usize,
    pub stalled: usize,
}

/// Expires pending transfers past `expires_at` and fails in-progress ones
/// idle past the stall time. Each project is handled under its head lock
/// and rechecked there, so servers sweeping together never double an event.
pub async fn sweep(pool: &Pool, policy: &TransferPolicy) -> Result<Swept, DomainError> {
    let now = Utc::now();
    let stalled_before = now - policy.stall_after;
    const DUE: &str = "((t.status = 'pending' AND t.expires_at <= $1)
                        OR (t.status = 'in_progress' AND t.last_activity_at <= $2))";
    let projects: Vec<Uuid> = pool
        .get()
        .await?
        .query(
            &format!("SELECT DISTINCT t.project_id FROM file_transfers t WHERE {DUE} LIMIT 100"),
            &[&now, &stalled_before],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut swept = Swept::default();
    for project_id in projects {
        let client = pool.get().await?;
        let sweep_project = async {
            if store::lock_stream(&client, project_id).await?.is_none() {
                return Ok(());
            }
            let rows = client
                .query(
                    &format!("{} WHERE t.project_id = $3 AND {DUE} ORDER BY t.id", *SELECT),
                    &[&now, &stalled_before, &project_id],
                )
                .await?;
            let mut events = Vec::with_capacity(rows.len());
            for row in rows.iter().map(TransferRow::from) {
                let Some(event) = machine::sweep(&row.state(), now) else { continue };
                match event {
                    EventData::FileTransferExpired(_) => swept.expired += 1,
                    _ => swept.stalled += 1,
                }
                events.push(event);
            }
            if !events.is_empty() {
                let meta = EventMeta {
                    actor: crate::protocol::Actor { user_id: None, device_id: None },
                    idempotency_key: None,
                };
                store::append(&client, project_id, &meta, &events).await?;
            }
            Ok::<_, DomainError>(())
        };
        store::in_transaction(&client, sweep_project).await?;
    }
    Ok(swept)
}
