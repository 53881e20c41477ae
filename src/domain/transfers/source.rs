//! Which device serves a transfer, and the tokens its agent checks when
//! the requester comes to it directly.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::rejected;
use crate::domain::presence::online_sql;
use crate::domain::{DomainError, Rejection};
use crate::protocol::transfers::{DirectGrant, DirectToken, Endpoint, TransferProtocol};
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

/// The source device's advertised direct endpoints for the project (its
/// agent's entry for this project, else the device's older per-device
/// entry), each with a token for this transfer and its requester that the
/// agent can check with its key, and the certificate fingerprint members
/// pin.
pub(super) async fn direct_endpoints(
    client: &impl GenericClient,
    source: Uuid,
    project_id: Uuid,
    grant: DirectGrant,
    expires_at: DateTime<Utc>,
) -> Result<Vec<Endpoint>, DomainError> {
    let row = client
        .query_opt(
            "SELECT urls, key, cert_sha256 FROM (
                 SELECT urls, key, cert_sha256, 0 AS rank FROM device_direct_endpoints
                 WHERE device_id = $1 AND project_id = $2
                 UNION ALL
                 SELECT direct_urls, direct_key, direct_cert_sha256, 1 FROM devices
                 WHERE id = $1 AND direct_urls IS NOT NULL AND direct_key IS NOT NULL
             ) entries ORDER BY rank LIMIT 1",
            &[&source, &project_id],
        )
        .await?;
    let Some((urls, key, cert_sha256)) =
        row.map(|r| (r.get::<_, serde_json::Value>(0), r.get::<_, String>(1), r.get::<_, Option<String>>(2)))
    else {
        return Ok(vec![]);
    };
    let (Ok(urls), Some(key)) = (serde_json::from_value::<Vec<String>>(urls), DirectToken::key(&key)) else {
        return Ok(vec![]);
    };
    let token = DirectToken::mint(&key, grant, expires_at);
    Ok(urls
        .into_iter()
        .map(|url| Endpoint {
            protocol: TransferProtocol::Http,
            url,
            token: Some(token.clone()),
            cert_sha256: cert_sha256.clone(),
        })
        .collect())
}
