-- Projection: file_transfers — one row per transfer. Every transfer event
-- carries the transfer's whole mutable state, so the latest one wins.

CREATE TABLE file_transfers (
    id                uuid PRIMARY KEY,
    project_id        uuid NOT NULL,
    file_path         text NOT NULL,
    file_hash         text NOT NULL,
    mime_type         text NOT NULL,
    requester_id      uuid NOT NULL,
    target_device_id  uuid,
    source_device_id  uuid NOT NULL,
    protocol          text NOT NULL,
    request_mode      text NOT NULL,
    chunks_needed     jsonb NOT NULL,
    requested_at      timestamptz NOT NULL,
    status            text NOT NULL,
    bytes_transferred bigint NOT NULL,
    total_bytes       bigint NOT NULL,
    percent           double precision NOT NULL,
    speed_mbps        double precision,
    eta_seconds       bigint,
    attempts          integer NOT NULL,
    error_message     text,
    started_at        timestamptz,
    completed_at      timestamptz,
    expires_at        timestamptz NOT NULL,
    last_activity_at  timestamptz NOT NULL,
    last_progress_at  timestamptz,
    "window"          jsonb NOT NULL,
    -- Which way the bytes went (TransferRoute); '{}' for events before it.
    route             jsonb NOT NULL,
    updated_seq       bigint NOT NULL
);
CREATE INDEX file_transfers_project_idx ON file_transfers (project_id, id);
CREATE INDEX file_transfers_requester_idx ON file_transfers (project_id, requester_id, id);
-- The sweeper and the file-change check look at open transfers only.
CREATE INDEX file_transfers_open_idx ON file_transfers (status, expires_at, last_activity_at)
    WHERE status IN ('pending', 'in_progress');
CREATE INDEX file_transfers_open_path_idx ON file_transfers (project_id, file_path)
    WHERE status IN ('pending', 'in_progress');

-- apply
INSERT INTO file_transfers
    (id, project_id, file_path, file_hash, mime_type, requester_id, target_device_id, source_device_id,
     protocol, request_mode, chunks_needed, requested_at, status, bytes_transferred, total_bytes, percent,
     speed_mbps, eta_seconds, attempts, error_message, started_at, completed_at, expires_at,
     last_activity_at, last_progress_at, "window", route, updated_seq)
SELECT (data->>'transfer_id')::uuid, project_id, data->>'file_path', data->>'file_hash', data->>'mime_type',
       (data->>'requester_id')::uuid, (data->>'target_device_id')::uuid, (data->>'source_device_id')::uuid,
       data->>'protocol', data->>'request_mode', data->'chunks_needed', created_at, data->>'status',
       (data->>'bytes_transferred')::bigint, (data->>'total_bytes')::bigint, (data->>'percent')::double precision,
       (data->>'speed_mbps')::double precision, (data->>'eta_seconds')::bigint, (data->>'attempts')::integer,
       data->>'error_message', (data->>'started_at')::timestamptz, (data->>'completed_at')::timestamptz,
       (data->>'expires_at')::timestamptz, (data->>'last_activity_at')::timestamptz,
       (data->>'last_progress_at')::timestamptz, data->'window', coalesce(data->'route', '{}'), seq
FROM new_events
WHERE type = 'transfer_requested'
ON CONFLICT (id) DO NOTHING;

UPDATE file_transfers t SET
    status = l.data->>'status',
    bytes_transferred = (l.data->>'bytes_transferred')::bigint,
    percent = (l.data->>'percent')::double precision,
    speed_mbps = (l.data->>'speed_mbps')::double precision,
    eta_seconds = (l.data->>'eta_seconds')::bigint,
    attempts = (l.data->>'attempts')::integer,
    error_message = l.data->>'error_message',
    started_at = (l.data->>'started_at')::timestamptz,
    completed_at = (l.data->>'completed_at')::timestamptz,
    expires_at = (l.data->>'expires_at')::timestamptz,
    last_activity_at = (l.data->>'last_activity_at')::timestamptz,
    last_progress_at = (l.data->>'last_progress_at')::timestamptz,
    "window" = l.data->'window',
    route = coalesce(l.data->'route', '{}'),
    updated_seq = l.seq
FROM (SELECT DISTINCT ON ((data->>'transfer_id')::uuid) (data->>'transfer_id')::uuid AS id, data, seq
      FROM new_events
      WHERE type IN ('file_transfer_started', 'file_transfer_progress', 'file_transfer_complete',
                     'file_transfer_failed', 'file_transfer_cancelled', 'file_transfer_expired',
                     'transfer_retried')
      ORDER BY (data->>'transfer_id')::uuid, seq DESC) l
WHERE t.id = l.id AND l.seq > t.updated_seq;
