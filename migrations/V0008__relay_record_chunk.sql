-- Records a chunk put on the relay, unless that would pass the project's
-- quota. Uploads to one project take turns here (an advisory lock), so
-- racing uploads cannot both slip under the quota. As one function called
-- in a statement of its own, the lock is held for these few statements
-- only, not across round trips to the server: with eight uploads at once,
-- waiting for it had become most of an upload's time. Each statement here
-- sees what committed before it began (READ COMMITTED, a volatile
-- function), so the sum counts every upload that held the lock earlier.
-- Answers false only when the quota would be passed: nothing is recorded.
CREATE FUNCTION relay_record_chunk(
    p_project uuid, p_hash text, p_size bigint, p_zstd_size bigint, p_quota bigint, p_channel text
) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    -- The relay is a cache the source device can always fill again (it
    -- asks `chunks/missing` first): a row lost to a crash in the instant
    -- after commit costs one re-upload, so the commit does not wait for
    -- the WAL flush.
    PERFORM set_config('synchronous_commit', 'off', true);
    PERFORM pg_advisory_xact_lock(hashtextextended(p_project::text, 7));
    IF EXISTS (SELECT 1 FROM relay_chunks WHERE project_id = p_project AND hash = p_hash) THEN
        RETURN true;
    END IF;
    IF (SELECT coalesce(sum(size + coalesce(zstd_size, 0)), 0) FROM relay_chunks WHERE project_id = p_project)
       + p_size + coalesce(p_zstd_size, 0) > p_quota THEN
        RETURN false;
    END IF;
    INSERT INTO relay_chunks (project_id, hash, size, zstd_size) VALUES (p_project, p_hash, p_size, p_zstd_size);
    -- Readers waiting for the chunk on other servers hear of it once the
    -- row is committed (their listener routes it to their waiters).
    PERFORM pg_notify(p_channel, p_project::text || ':' || p_hash);
    RETURN true;
END
$$;
