-- Direct transfers per project: one machine may run several agents (a
-- `ferry share` per project, or one for several projects), each with its
-- own listener and key. An entry per (device, project) means no agent
-- replaces another's; the download answer picks the entry of the
-- transfer's project. The per-device columns of V0006 stay for agents that
-- advertise without a project.
CREATE TABLE device_direct_endpoints (
    device_id   uuid NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    -- No foreign key: projects is a projection, rebuilt from the log.
    project_id  uuid NOT NULL,
    urls        jsonb NOT NULL,
    key         text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, project_id)
);
