-- Presence, made right with several servers: each server counts the live
-- sockets of each device it holds and keeps extending `expires_at` while
-- they live. A device is online while any server's row has not expired, so
-- a crashed server's devices go offline on their own.
CREATE TABLE device_connections (
    server_id    uuid NOT NULL,
    device_id    uuid NOT NULL REFERENCES devices (id),
    connections  integer NOT NULL CHECK (connections > 0),
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (device_id, server_id)
);

-- Replaced by device_connections.
ALTER TABLE device_presence DROP COLUMN online_until;
