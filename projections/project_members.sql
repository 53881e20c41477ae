-- Projection: project_members — who is in each project, and as what.
-- The owner is a member with role 'owner' from project_created on.

CREATE TABLE project_members (
    project_id  uuid NOT NULL,
    user_id     uuid NOT NULL,
    role        text NOT NULL CHECK (role IN ('owner', 'member')),
    joined_at   timestamptz NOT NULL,
    PRIMARY KEY (project_id, user_id)
);
CREATE INDEX project_members_user_idx ON project_members (user_id);

-- apply
-- A user's membership is decided by their latest membership event.
WITH latest AS (
    SELECT DISTINCT ON (project_id, user_id) project_id, user_id, type, role, created_at
    FROM (SELECT project_id, (data->>'owner_id')::uuid AS user_id, type,
                 'owner' AS role, created_at, seq
          FROM new_events WHERE type = 'project_created'
          UNION ALL
          SELECT project_id, (data->>'user_id')::uuid, type, 'member', created_at, seq
          FROM new_events WHERE type IN ('member_joined', 'member_removed')) m
    ORDER BY project_id, user_id, seq DESC
), removed AS (
    DELETE FROM project_members pm
    USING latest l
    WHERE l.type = 'member_removed' AND pm.project_id = l.project_id AND pm.user_id = l.user_id
)
INSERT INTO project_members (project_id, user_id, role, joined_at)
SELECT project_id, user_id, role, created_at FROM latest WHERE type <> 'member_removed'
ON CONFLICT (project_id, user_id) DO UPDATE
    SET role = EXCLUDED.role, joined_at = EXCLUDED.joined_at;
