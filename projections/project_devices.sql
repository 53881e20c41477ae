-- Projection: project_devices — the devices attached to each project:
-- the owner's as sources (they push file deltas and serve transfers),
-- members' as targets (where files land).

CREATE TABLE project_devices (
    project_id   uuid NOT NULL,
    device_id    uuid NOT NULL,
    user_id      uuid NOT NULL,
    role         text NOT NULL CHECK (role IN ('source', 'target')),
    attached_at  timestamptz NOT NULL,
    PRIMARY KEY (project_id, device_id)
);
CREATE INDEX project_devices_device_idx ON project_devices (device_id);

-- apply
-- A device's attachment is decided by its latest event in the project.
WITH latest AS (
    SELECT DISTINCT ON (project_id, device_id)
           project_id, (data->>'device_id')::uuid AS device_id, (data->>'user_id')::uuid AS user_id,
           data->>'role' AS role, type, created_at
    FROM new_events
    WHERE type IN ('device_attached', 'device_detached')
    ORDER BY project_id, (data->>'device_id')::uuid, seq DESC
), detached AS (
    DELETE FROM project_devices d
    USING latest l
    WHERE l.type = 'device_detached' AND d.project_id = l.project_id AND d.device_id = l.device_id
)
INSERT INTO project_devices (project_id, device_id, user_id, role, attached_at)
SELECT project_id, device_id, user_id, role, created_at FROM latest WHERE type = 'device_attached'
ON CONFLICT (project_id, device_id) DO UPDATE
    SET user_id = EXCLUDED.user_id, role = EXCLUDED.role, attached_at = EXCLUDED.attached_at;
