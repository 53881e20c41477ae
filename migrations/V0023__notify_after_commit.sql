-- A NOTIFY makes PostgreSQL serialise the commits of all notifying
-- transactions: a database-wide lock, taken at commit and held until the
-- commit record is on disk, so no two of them share a WAL flush. With every
-- command notifying, commits ran one flush at a time (pgbench, 8 clients,
-- UPDATE head + INSERT: 9,000 tx/s plain, 5,300 with a NOTIFY inside, 7,350
-- with the NOTIFY sent after the COMMIT).
--
-- So a session may now take its notifications after the commit: with the
-- setting `ferry.notify` at `after_commit`, the deferred trigger adds its
-- payload to the session's `ferry.pending_notifications` (set in the
-- transaction, so a rollback takes it back), and `announce_heads()`, run
-- once the COMMIT has returned, sends them in a transaction of its own that
-- writes nothing durable and so waits for no flush. ferryd's pool works this
-- way (store::connect, store::announce); every other session still notifies
-- inside its transaction. The payload and the folding are unchanged: one
-- notification per project per transaction, carrying only the head.
CREATE OR REPLACE FUNCTION notify_head() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    payload text;
    pending text;
BEGIN
    SELECT json_build_object('project_id', h.project_id, 'head_seq', h.head_seq)::text INTO payload
    FROM project_heads h
    WHERE h.project_id = NEW.project_id;
    IF current_setting('ferry.notify', true) IS DISTINCT FROM 'after_commit' THEN
        PERFORM pg_notify('ferry_events', payload);
        RETURN NULL;
    END IF;
    pending := nullif(current_setting('ferry.pending_notifications', true), '');
    IF pending IS NULL THEN
        PERFORM set_config('ferry.pending_notifications', payload, false);
    ELSIF NOT payload = ANY (string_to_array(pending, E'\n')) THEN
        PERFORM set_config('ferry.pending_notifications', pending || E'\n' || payload, false);
    END IF;
    RETURN NULL;
END $$;

-- Sends the session's pending notifications, and answers how many. Run
-- outside a transaction block, it is a transaction of its own; inside one
-- that rolls back, they stay pending.
CREATE FUNCTION announce_heads() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    pending text[] := string_to_array(nullif(current_setting('ferry.pending_notifications', true), ''), E'\n');
BEGIN
    IF pending IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM set_config('ferry.pending_notifications', '', false);
    PERFORM pg_notify('ferry_events', p) FROM unnest(pending) AS p;
    RETURN cardinality(pending);
END $$;
