-- The relay's chunks: which content-addressed chunks of a project the
-- chunk store holds. Storage bookkeeping, not project state: uploads are
-- not events, and retention deletes rows here with their bytes.
CREATE TABLE relay_chunks (
    project_id    uuid NOT NULL REFERENCES project_heads (project_id),
    hash          text NOT NULL,
    size          bigint NOT NULL,
    -- The zstd variant served to clients that accept it, when smaller.
    zstd_size     bigint,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, hash)
);
CREATE INDEX relay_chunks_used_idx ON relay_chunks (last_used_at);
