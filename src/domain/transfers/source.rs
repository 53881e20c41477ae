//! Which device serves a transfer, and the tokens its agent checks when
//! the requester comes to it directly.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::rejected;
use crate::domain::presence::online_sql;
use crate::domain::{DomainError, Rejection};
use crate::protocol::transfers::{DirectToken, Endpoint, TransferProtocol};
use crate::store::GenericClient;

/// The source device to serve a transfer: online ones first, then the most
/// recently seen, then the most recently attached.
pub(super) async fn choose_source(client: &impl GenericClient, project_id: Uuid) -> Result<Uuid, DomainError> {
    client
        .query_opt(
            &format!(
                "SELECT pd.device_id FROM project_devices pd
                 LEFT JOIN device_presence p ON p.device_id = pd.device_id
                 WHERE pd.project_id = $1 AND pd.role = 'source'
                 ORDER BY {} DESC, p.last_seen_at DESC NULLS LAST, pd.attached_at DESC
                 LIMIT 1",
                online_sql("pd.device_id")
            ),
            &[&project_id],
        )
        .await?
        .map(|r| r.get(0))
        .ok_or_else(|| {
            rejected(Rejection::Unavailable, "no_source_device", "the project has no source device to serve files")
        })
}

/// The source device's advertised direct endpoints, each with a token for
/// this transfer that its agent can check with its key.
pub(super) async fn direct_endpoints(
    client: &impl GenericClient,
    source: Uuid,
    transfer_id: Uuid,
    expires_at: DateTime<Utc>,
) -> Result<Vec<Endpoint>, DomainError> {
    let row = client.query_opt("SELECT direct_urls, direct_key FROM devices WHERE id = $1", &[&source]).await?;
    let Some((Some(urls), Some(key))) =
        row.map(|r| (r.get::<_, Option<serde_json::Value>>(0), r.get::<_, Option<String>>(1)))
    else {
        return Ok(vec![]);
    };
    let (Ok(urls), Some(key)) = (serde_json::from_value::<Vec<String>>(urls), DirectToken::key(&key)) else {
        return Ok(vec![]);
    };
    let token = DirectToken::mint(&key, transfer_id, expires_at);
    Ok(urls
        .into_iter()
        .map(|url| Endpoint { protocol: TransferProtocol::Http, url, token: Some(token.clone()) })
        .collect())
}
