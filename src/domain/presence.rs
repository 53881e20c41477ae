//! Whether a device is online, as the commands and reads that show it ask:
//! realtime keeps `device_connections` (one row per open socket, renewed
//! while it lives); here is how to read it.

/// SQL: whether the device named by `column` is online.
pub fn online_sql(column: &str) -> String {
    format!("EXISTS (SELECT 1 FROM device_connections c WHERE c.device_id = {column} AND c.expires_at > now())")
}
