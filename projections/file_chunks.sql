-- Projection: file_chunks — the chunks of every live file, so the relay can
-- tell at once whether a chunk belongs to a file of a project.
-- A file sent without a chunk list is its own single chunk.
--
-- Keyed by (project, path, chunk index), not by hash: a batch of new paths
-- then lands on a few neighbouring pages of the key, where a hash-first key
-- put every row on a random page. The hash is 32 raw bytes, and its only
-- reader (the relay: "is this chunk part of a file of the project?") is
-- served by a hash index, whose entries are a fraction of a B-tree's.

CREATE TABLE file_chunks (
    project_id  uuid NOT NULL,
    path        text COLLATE "C" NOT NULL,
    idx         integer NOT NULL,
    hash        bytea NOT NULL,
    PRIMARY KEY (project_id, path, idx)
);
CREATE INDEX file_chunks_hash_idx ON file_chunks USING hash (hash);

-- apply
-- Two statements over the same "latest effect per path" (as in
-- remote_files): the touched paths lose their rows, live ones get theirs.
-- replan: a plan of this join kept by a session from when the table was
-- small scans the whole table for every batch; planned afresh, a batch
-- much smaller than the table looks its paths up in the key.
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
-- A file without a chunk list (and not empty) is its own one chunk: one
-- set-returning call per file, no subquery per file.
INSERT INTO file_chunks (project_id, path, idx, hash)
SELECT t.project_id, t.path, (c.ord - 1)::integer, decode(c.value->>'hash', 'hex')
FROM latest t
CROSS JOIN LATERAL jsonb_array_elements(
    CASE WHEN jsonb_typeof(t.data->'chunks') = 'array' THEN t.data->'chunks'
         WHEN (t.data->>'size')::bigint > 0 THEN jsonb_build_array(jsonb_build_object('hash', t.data->'hash'))
         ELSE '[]'::jsonb END) WITH ORDINALITY AS c(value, ord)
WHERE t.live;

-- build
-- The whole log into the empty table: the latest effect of each path (as the
-- apply SQL picks it), its chunks for a live path, each row once (no delete,
-- no key checks), in the primary key's order and collation so that the key
-- is then one sorted build. The chunk list comes out of `data` before the
-- sort, which then moves it, not the whole events.
INSERT INTO file_chunks (project_id, path, idx, hash)
SELECT t.project_id, t.path, (c.ord - 1)::integer, decode(c.value->>'hash', 'hex')
FROM (
    SELECT DISTINCT ON (project_id, path COLLATE "C") project_id, path, live, chunks
    FROM (SELECT project_id, seq, 0 AS step, data->>'path' AS path, type <> 'file_deleted' AS live,
                 CASE WHEN jsonb_typeof(data->'chunks') = 'array' THEN data->'chunks'
                      WHEN (data->>'size')::bigint > 0 THEN jsonb_build_array(jsonb_build_object('hash', data->'hash'))
                 END AS chunks
          FROM new_events WHERE type IN ('file_added', 'file_updated', 'file_deleted')
          UNION ALL
          SELECT project_id, seq, 0, data->>'from', false, NULL FROM new_events WHERE type = 'file_moved'
          UNION ALL
          SELECT project_id, seq, 1, data->>'to', true,
                 CASE WHEN jsonb_typeof(data->'chunks') = 'array' THEN data->'chunks'
                      WHEN (data->>'size')::bigint > 0 THEN jsonb_build_array(jsonb_build_object('hash', data->'hash'))
                 END
          FROM new_events WHERE type = 'file_moved') e
    ORDER BY project_id, path COLLATE "C", seq DESC, step DESC
) t
CROSS JOIN LATERAL jsonb_array_elements(t.chunks) WITH ORDINALITY AS c(value, ord)
WHERE t.live;
