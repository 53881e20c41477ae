//! Whether a device is online, as the commands and reads that show it ask:
//! realtime keeps `device_connections` (one row per open socket, renewed
//! while it lives); here is how to read it.

/// SQL: whether the device named by `column` is online.
pub fn online_sql(column: &str) -> String {
    format!("EXISTS (SELECT 1 FROM device_connections c WHERE c.device_id = {column} AND c.expires_at > now())")
}

/// Whether the device is online now, and when it was last seen, in each of
/// `projects` it is attached to.
pub async fn in_projects(
    client: &impl crate::store::GenericClient,
    device_id: uuid::Uuid,
    projects: &[uuid::Uuid],
) -> Result<Vec<crate::protocol::realtime::DevicePresence>, super::DomainError> {
    let rows = client
        .query(
            &format!(
                "SELECT pd.project_id, {}, p.last_seen_at
                 FROM project_devices pd LEFT JOIN device_presence p ON p.device_id = pd.device_id
                 WHERE pd.device_id = $1 AND pd.project_id = ANY($2)",
                online_sql("pd.device_id")
            ),
            &[&device_id, &projects],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| crate::protocol::realtime::DevicePresence {
            project_id: r.get(0),
            device_id,
            online: r.get(1),
            last_seen_at: r.get(2),
        })
        .collect())
}
