-- Projection: remote_files — the current state of every path of every
-- project, with tombstones for deleted paths. File events carry the whole
-- resulting state of each path they touch, so a batch applies as "the
-- latest effect per path wins", whatever its size.

CREATE TABLE remote_files (
    project_id   uuid NOT NULL,
    path         text COLLATE "C" NOT NULL,
    size         bigint NOT NULL,
    hash         text NOT NULL,
    mime_type    text NOT NULL,
    modified_at  timestamptz,
    chunks       jsonb,
    version      bigint NOT NULL,
    updated_seq  bigint NOT NULL,
    deleted      boolean NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (project_id, path)
);
-- Keyset pages over live files skip tombstones without reading them.
CREATE INDEX remote_files_live_idx ON remote_files (project_id, path) WHERE NOT deleted;

-- apply
WITH effects AS (
    -- step orders the effects of one event: a move leaves `from`, then lands at `to`.
    SELECT project_id, seq, 0 AS step, created_at, data->>'path' AS path, data,
           type = 'file_deleted' AS deleted, (data->>'version')::bigint AS version
    FROM new_events
    WHERE type IN ('file_added', 'file_updated', 'file_deleted')
    UNION ALL
    SELECT project_id, seq, 0, created_at, data->>'from', data, true, (data->>'from_version')::bigint
    FROM new_events
    WHERE type = 'file_moved'
    UNION ALL
    SELECT project_id, seq, 1, created_at, data->>'to', data, false, (data->>'version')::bigint
    FROM new_events
    WHERE type = 'file_moved'
), latest AS (
    SELECT DISTINCT ON (project_id, path) *
    FROM effects
    ORDER BY project_id, path, seq DESC, step DESC
)
INSERT INTO remote_files AS f
    (project_id, path, size, hash, mime_type, modified_at, chunks, version, updated_seq, deleted, updated_at)
SELECT project_id, path, (data->>'size')::bigint, data->>'hash', data->>'mime_type',
       (data->>'modified_at')::timestamptz, data->'chunks', version, seq, deleted, created_at
FROM latest
ON CONFLICT (project_id, path) DO UPDATE SET
    size = EXCLUDED.size, hash = EXCLUDED.hash, mime_type = EXCLUDED.mime_type,
    modified_at = EXCLUDED.modified_at, chunks = EXCLUDED.chunks, version = EXCLUDED.version,
    updated_seq = EXCLUDED.updated_seq, deleted = EXCLUDED.deleted, updated_at = EXCLUDED.updated_at;

-- build
-- The whole log into the empty table: the latest effect of each path, once
-- (no upsert), in the primary key's order and collation, so that the key and
-- the index are then one sorted build each. The fields come out of `data`
-- before the sort, which then moves them, not the whole events.
INSERT INTO remote_files
    (project_id, path, size, hash, mime_type, modified_at, chunks, version, updated_seq, deleted, updated_at)
SELECT DISTINCT ON (project_id, path COLLATE "C")
       project_id, path, (data->>'size')::bigint, data->>'hash', data->>'mime_type',
       (data->>'modified_at')::timestamptz, data->'chunks', version, seq, deleted, created_at
FROM (
    SELECT project_id, seq, 0 AS step, created_at, data->>'path' AS path, data,
           type = 'file_deleted' AS deleted, (data->>'version')::bigint AS version
    FROM new_events
    WHERE type IN ('file_added', 'file_updated', 'file_deleted')
    UNION ALL
    SELECT project_id, seq, 0, created_at, data->>'from', data, true, (data->>'from_version')::bigint
    FROM new_events
    WHERE type = 'file_moved'
    UNION ALL
    SELECT project_id, seq, 1, created_at, data->>'to', data, false, (data->>'version')::bigint
    FROM new_events
    WHERE type = 'file_moved'
) effects
ORDER BY project_id, path COLLATE "C", seq DESC, step DESC;
