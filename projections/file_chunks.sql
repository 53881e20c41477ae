-- Projection: file_chunks — the chunks of every live file, by hash, so the
-- relay can tell at once whether a chunk belongs to a file of a project.
-- A file sent without a chunk list is its own single chunk.

CREATE TABLE file_chunks (
    project_id  uuid NOT NULL,
    hash        text NOT NULL,
    path        text COLLATE "C" NOT NULL,
    PRIMARY KEY (project_id, hash, path)
);
CREATE INDEX file_chunks_path_idx ON file_chunks (project_id, path);

-- apply
-- Two statements over the same "latest effect per path" (as in
-- remote_files): the touched paths lose their rows, live ones get theirs.
WITH latest AS (
    SELECT DISTINCT ON (project_id, path) project_id, path
    FROM (SELECT project_id, seq, data->>'path' AS path
          FROM new_events WHERE type IN ('file_added', 'file_updated', 'file_deleted')
          UNION ALL
          SELECT project_id, seq, data->>'from' FROM new_events WHERE type = 'file_moved'
          UNION ALL
          SELECT project_id, seq, data->>'to' FROM new_events WHERE type = 'file_moved') e
    ORDER BY project_id, path
)
DELETE FROM file_chunks c USING latest t
WHERE c.project_id = t.project_id AND c.path = t.path;

WITH latest AS (
    SELECT DISTINCT ON (project_id, path) project_id, path, NOT deleted AS live, data
    FROM (SELECT project_id, seq, 0 AS step, data->>'path' AS path, type = 'file_deleted' AS deleted, data
          FROM new_events WHERE type IN ('file_added', 'file_updated', 'file_deleted')
          UNION ALL
          SELECT project_id, seq, 0, data->>'from', true, data FROM new_events WHERE type = 'file_moved'
          UNION ALL
          SELECT project_id, seq, 1, data->>'to', false, data FROM new_events WHERE type = 'file_moved') e
    ORDER BY project_id, path, seq DESC, step DESC
)
-- No DISTINCT (a sort of every row): ON CONFLICT DO NOTHING already keeps
-- one row of a chunk listed twice.
INSERT INTO file_chunks (project_id, hash, path)
SELECT t.project_id, c.hash, t.path
FROM latest t
CROSS JOIN LATERAL (
    SELECT elem->>'hash' AS hash
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(t.data->'chunks') = 'array'
                                   THEN t.data->'chunks' ELSE '[]'::jsonb END) elem
    UNION ALL
    SELECT t.data->>'hash'
    WHERE jsonb_typeof(t.data->'chunks') IS DISTINCT FROM 'array' AND (t.data->>'size')::bigint > 0
) c
WHERE t.live
ON CONFLICT DO NOTHING;
