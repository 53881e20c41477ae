-- Projection: projects — one row per project, as its events describe it.

CREATE TABLE projects (
    id           uuid PRIMARY KEY,
    name         text NOT NULL,
    owner_id     uuid NOT NULL,
    created_at   timestamptz NOT NULL,
    archived_at  timestamptz
);
CREATE INDEX projects_owner_idx ON projects (owner_id);

-- apply
INSERT INTO projects (id, name, owner_id, created_at)
SELECT project_id, data->>'name', (data->>'owner_id')::uuid, created_at
FROM new_events
WHERE type = 'project_created'
ON CONFLICT (id) DO NOTHING;

-- The last rename of the batch wins.
UPDATE projects p SET name = r.name
FROM (SELECT DISTINCT ON (project_id) project_id, data->>'name' AS name
      FROM new_events
      WHERE type = 'project_renamed'
      ORDER BY project_id, seq DESC) r
WHERE p.id = r.project_id;

-- Archiving is final: the first one counts.
UPDATE projects p SET archived_at = a.created_at
FROM (SELECT project_id, min(created_at) AS created_at
      FROM new_events
      WHERE type = 'project_archived'
      GROUP BY project_id) a
WHERE p.id = a.project_id AND p.archived_at IS NULL;
