-- The permanent core of Ferry: the two event logs, the per-project heads
-- that give both logs one gap-free sequence, and the triggers that keep the
-- logs append-only and wake the servers. Projections live in projections/.

CREATE TABLE project_heads (
    project_id  uuid PRIMARY KEY,
    head_seq    bigint NOT NULL DEFAULT 0 CHECK (head_seq >= 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Global position: a total order across projects for audit reads. Within a
-- project it grows with seq, because both are taken under the head lock.
CREATE SEQUENCE event_position;

CREATE TABLE project_events (
    project_id       uuid NOT NULL REFERENCES project_heads (project_id),
    seq              bigint NOT NULL CHECK (seq > 0),
    id               uuid NOT NULL UNIQUE,
    type             text NOT NULL,
    data             jsonb NOT NULL,
    actor_user_id    uuid,
    actor_device_id  uuid,
    idempotency_key  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    position         bigint NOT NULL UNIQUE DEFAULT nextval('event_position'),
    PRIMARY KEY (project_id, seq)
);

CREATE TABLE transfer_events (LIKE project_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE transfer_events
    ADD PRIMARY KEY (project_id, seq),
    ADD UNIQUE (id),
    ADD UNIQUE (position),
    ADD FOREIGN KEY (project_id) REFERENCES project_heads (project_id);

CREATE INDEX project_events_type_idx ON project_events (type, position);
CREATE INDEX transfer_events_type_idx ON transfer_events (type, position);
CREATE INDEX project_events_actor_idx ON project_events (actor_user_id, position);
CREATE INDEX transfer_events_actor_idx ON transfer_events (actor_user_id, position);

-- Both logs merged: one project's history in seq order is an index merge.
CREATE VIEW events AS
    SELECT 'project'::text AS log, * FROM project_events
    UNION ALL
    SELECT 'transfer'::text AS log, * FROM transfer_events;

-- The logs are immutable.
CREATE FUNCTION refuse_log_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER project_events_immutable
    BEFORE UPDATE OR DELETE ON project_events
    FOR EACH ROW EXECUTE FUNCTION refuse_log_change();
CREATE TRIGGER project_events_no_truncate
    BEFORE TRUNCATE ON project_events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_log_change();
CREATE TRIGGER transfer_events_immutable
    BEFORE UPDATE OR DELETE ON transfer_events
    FOR EACH ROW EXECUTE FUNCTION refuse_log_change();
CREATE TRIGGER transfer_events_no_truncate
    BEFORE TRUNCATE ON transfer_events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_log_change();

-- NOTIFY says "something happened", the log says what. The payload is only
-- the project and its head, read when the transaction commits (a deferred
-- trigger), so every append of one transaction sends the same payload and
-- PostgreSQL folds them into one notification per project per transaction.
CREATE FUNCTION notify_head() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ferry_events',
                      json_build_object('project_id', h.project_id, 'head_seq', h.head_seq)::text)
    FROM project_heads h
    WHERE h.project_id = NEW.project_id;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER project_heads_notify
    AFTER UPDATE ON project_heads
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION notify_head();

-- Bookkeeping of the projections built from the log (projections/*.sql).
CREATE TABLE projection_versions (
    name         text PRIMARY KEY,
    version      text NOT NULL,
    rebuilt_at   timestamptz NOT NULL DEFAULT now(),
    events_read  bigint NOT NULL DEFAULT 0
);
