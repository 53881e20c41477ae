//! Which devices are online: every server counts the sockets it holds per
//! device in `device_connections` and keeps extending their expiry while it
//! runs; a device is online while any unexpired row exists. Each change is
//! announced on [`CHANNEL`] (payload: the device's id), so every server
//! tells the sockets following the device's projects.

use std::time::Duration;

use uuid::Uuid;

use crate::store::{Pool, StoreError};

/// The channel presence changes are announced on.
pub const CHANNEL: &str = "ferry_presence";

/// A server's rows expire this long after their last refresh.
const TTL_SECONDS: f64 = 60.0;
const REFRESH: Duration = Duration::from_secs(20);

#[derive(Clone)]
pub struct Presence {
    pool: Pool,
    server_id: Uuid,
}

impl Presence {
    pub fn new(pool: Pool) -> Self {
        Self { pool, server_id: Uuid::now_v7() }
    }

    pub async fn connect(&self, device_id: Uuid) -> Result<(), StoreError> {
        self.pool
            .get()
            .await?
            .execute(
                "WITH seen AS (
                     INSERT INTO device_presence (device_id, last_seen_at) VALUES ($2, now())
                     ON CONFLICT (device_id) DO UPDATE SET last_seen_at = now())
                 INSERT INTO device_connections (server_id, device_id, connections, expires_at)
                 VALUES ($1, $2, 1, now() + make_interval(secs => $3))
                 ON CONFLICT (device_id, server_id) DO UPDATE
                     SET connections = device_connections.connections + 1, expires_at = EXCLUDED.expires_at",
                &[&self.server_id, &device_id, &TTL_SECONDS],
            )
            .await?;
        self.announce(&[device_id]).await
    }

    pub async fn disconnect(&self, device_id: Uuid) -> Result<(), StoreError> {
        self.pool
            .get()
            .await?
            .execute(
                "WITH seen AS (
                     UPDATE device_presence SET last_seen_at = now() WHERE device_id = $2
                 ), gone AS (
                     DELETE FROM device_connections
                     WHERE server_id = $1 AND device_id = $2 AND connections = 1
                     RETURNING 1)
                 UPDATE device_connections SET connections = connections - 1
                 WHERE server_id = $1 AND device_id = $2 AND NOT EXISTS (SELECT 1 FROM gone)",
                &[&self.server_id, &device_id],
            )
            .await?;
        self.announce(&[device_id]).await
    }

    /// Tells every server that these devices' presence may have changed
    /// (after the change committed, so what they read is the new state).
    async fn announce(&self, devices: &[Uuid]) -> Result<(), StoreError> {
        if devices.is_empty() {
            return Ok(());
        }
        self.pool
            .get()
            .await?
            .execute("SELECT pg_notify($1, d::text) FROM unnest($2::uuid[]) AS d", &[&CHANNEL, &devices])
            .await?;
        Ok(())
    }

    /// Removes the rows that expired (a server that stopped without saying
    /// so) and announces their devices; each row is removed by one server.
    async fn expire(&self) -> Result<(), StoreError> {
        let rows = self
            .pool
            .get()
            .await?
            .query("DELETE FROM device_connections WHERE expires_at < now() RETURNING device_id", &[])
            .await?;
        let mut devices: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
        devices.sort();
        devices.dedup();
        self.announce(&devices).await
    }

    /// Extends this server's rows, forever.
    pub async fn keep_alive(self) {
        let mut ticks = tokio::time::interval(REFRESH);
        loop {
            ticks.tick().await;
            let refreshed = async {
                self.pool
                    .get()
                    .await?
                    .execute(
                        "WITH mine AS (
                             UPDATE device_connections SET expires_at = now() + make_interval(secs => $2)
                             WHERE server_id = $1 RETURNING device_id)
                         UPDATE device_presence SET last_seen_at = now() WHERE device_id IN (SELECT device_id FROM mine)",
                        &[&self.server_id, &TTL_SECONDS],
                    )
                    .await?;
                self.expire().await
            };
            if let Err(e) = refreshed.await {
                tracing::warn!(error = %crate::telemetry::error_chain(&e), "presence refresh failed");
            }
        }
    }

    /// On shutdown: this server holds no sockets any more.
    pub async fn forget_server(&self) {
        let forgotten = async {
            let rows = self
                .pool
                .get()
                .await?
                .query("DELETE FROM device_connections WHERE server_id = $1 RETURNING device_id", &[&self.server_id])
                .await?;
            self.announce(&rows.iter().map(|r| r.get(0)).collect::<Vec<Uuid>>()).await
        };
        if let Err(e) = forgotten.await {
            tracing::warn!(error = %crate::telemetry::error_chain(&e), "presence not cleared on shutdown");
        }
    }
}
