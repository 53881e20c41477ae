-- Projection: project_invites — invites by project, with their use count.
-- Only the token's hash is known; the token itself was shown once.

CREATE TABLE project_invites (
    id          uuid PRIMARY KEY,
    project_id  uuid NOT NULL,
    token_hash  bytea NOT NULL UNIQUE,
    created_by  uuid,
    created_at  timestamptz NOT NULL,
    created_seq bigint NOT NULL,
    expires_at  timestamptz NOT NULL,
    max_uses    integer NOT NULL,
    uses        integer NOT NULL DEFAULT 0,
    revoked_at  timestamptz
);
CREATE INDEX project_invites_project_idx ON project_invites (project_id, created_at);

-- apply
-- Revocations and joins count only after the invite's creation, so the
-- result does not depend on how the log is cut into batches.
INSERT INTO project_invites (id, project_id, token_hash, created_by, created_at, created_seq, expires_at, max_uses)
SELECT DISTINCT ON ((data->>'invite_id')::uuid)
       (data->>'invite_id')::uuid, project_id, decode(data->>'token_hash', 'hex'), actor_user_id,
       created_at, seq, (data->>'expires_at')::timestamptz, (data->>'max_uses')::integer
FROM new_events
WHERE type = 'invite_created'
ORDER BY (data->>'invite_id')::uuid, seq
ON CONFLICT (id) DO NOTHING;

UPDATE project_invites i SET revoked_at = r.created_at
FROM (SELECT e.invite_id, min(e.created_at) AS created_at
      FROM (SELECT (data->>'invite_id')::uuid AS invite_id, seq, created_at
            FROM new_events WHERE type = 'invite_revoked') e
      JOIN project_invites c ON c.id = e.invite_id AND e.seq > c.created_seq
      GROUP BY 1) r
WHERE i.id = r.invite_id AND i.revoked_at IS NULL;

UPDATE project_invites i SET uses = i.uses + j.n
FROM (SELECT e.invite_id, count(*) AS n
      FROM (SELECT (data->>'invite_id')::uuid AS invite_id, seq
            FROM new_events WHERE type = 'member_joined' AND data ? 'invite_id') e
      JOIN project_invites c ON c.id = e.invite_id AND e.seq > c.created_seq
      GROUP BY 1) j
WHERE i.id = j.invite_id;
