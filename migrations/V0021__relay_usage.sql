-- What each project keeps on the relay, in bytes (its chunks and their zstd
-- variants), kept up to date by triggers as chunk rows come and go. An
-- upload checks the quota against this one row: it summed every chunk of
-- the project instead, twice per upload (its plan, and its record under the
-- project's lock), so a file's upload cost grew with the square of its
-- chunk count and the uploads of a project queued behind the sum.
-- A chunk row's sizes are written once and never updated, so inserts and
-- deletes are all there is to count.
CREATE TABLE relay_usage (
    project_id  uuid PRIMARY KEY REFERENCES project_heads (project_id),
    bytes       bigint NOT NULL
);

INSERT INTO relay_usage (project_id, bytes)
SELECT project_id, sum(size + coalesce(zstd_size, 0)) FROM relay_chunks GROUP BY project_id;

CREATE FUNCTION relay_usage_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO relay_usage AS u (project_id, bytes)
    SELECT project_id, sum(size + coalesce(zstd_size, 0)) FROM added GROUP BY project_id
    ON CONFLICT (project_id) DO UPDATE SET bytes = u.bytes + excluded.bytes;
    RETURN NULL;
END
$$;

CREATE FUNCTION relay_usage_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE relay_usage u SET bytes = u.bytes - r.bytes
    FROM (SELECT project_id, sum(size + coalesce(zstd_size, 0)) AS bytes FROM removed GROUP BY project_id) r
    WHERE u.project_id = r.project_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER relay_usage_added AFTER INSERT ON relay_chunks
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION relay_usage_added();
CREATE TRIGGER relay_usage_removed AFTER DELETE ON relay_chunks
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION relay_usage_removed();

-- V0008's function, reading the usage row rather than summing the chunks.
CREATE OR REPLACE FUNCTION relay_record_chunk(
    p_project uuid, p_hash text, p_size bigint, p_zstd_size bigint, p_quota bigint, p_channel text
) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    PERFORM pg_advisory_xact_lock(hashtextextended(p_project::text, 7));
    IF EXISTS (SELECT 1 FROM relay_chunks WHERE project_id = p_project AND hash = p_hash) THEN
        RETURN true;
    END IF;
    IF coalesce((SELECT bytes FROM relay_usage WHERE project_id = p_project), 0)
       + p_size + coalesce(p_zstd_size, 0) > p_quota THEN
        RETURN false;
    END IF;
    INSERT INTO relay_chunks (project_id, hash, size, zstd_size) VALUES (p_project, p_hash, p_size, p_zstd_size);
    PERFORM pg_notify(p_channel, p_project::text || ':' || p_hash);
    RETURN true;
END
$$;
