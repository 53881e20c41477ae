-- The caller's project, for a command that is one statement (an append
-- with its check, store::events::append_checked): called once the statement
-- holds the project's head lock, its query runs in a snapshot of its own (a
-- volatile function's queries each take one), so it sees every command
-- committed before the lock was granted. It raises to refuse, which rolls
-- the statement back: SQLSTATE FY404 when the project is unknown, archived
-- or not the caller's, FY403 when `owner_only` and the caller is a member.
CREATE FUNCTION command_project(project uuid, caller uuid, owner_only boolean,
    OUT name text, OUT owner_id uuid, OUT created_at timestamptz, OUT role text, OUT member_count bigint)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    SELECT p.name, p.owner_id, p.created_at, m.role,
           (SELECT count(*) FROM project_members c WHERE c.project_id = p.id)
    INTO name, owner_id, created_at, role, member_count
    FROM project_members m
    JOIN projects p ON p.id = m.project_id AND p.archived_at IS NULL
    WHERE m.project_id = project AND m.user_id = caller;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'project not found' USING ERRCODE = 'FY404';
    ELSIF owner_only AND role <> 'owner' THEN
        RAISE EXCEPTION 'only the project''s owner may do this' USING ERRCODE = 'FY403';
    END IF;
END $$;
