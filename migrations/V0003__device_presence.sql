-- Presence: which devices hold a live WebSocket, kept by the servers that
-- hold them. Ephemeral account infrastructure, not project state: a device
-- is online while `online_until` is in the future (servers extend it while
-- the socket lives), which stays right with several servers and across a
-- server's crash.
CREATE TABLE device_presence (
    device_id     uuid PRIMARY KEY REFERENCES devices (id),
    online_until  timestamptz,
    last_seen_at  timestamptz NOT NULL
);
