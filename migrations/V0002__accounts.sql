-- Account infrastructure: ordinary tables, not project state.

CREATE TABLE users (
    id             uuid PRIMARY KEY,
    email          text NOT NULL,
    password_hash  text NOT NULL,
    display_name   text NOT NULL,
    is_admin       boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE devices (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id),
    name        text NOT NULL,
    platform    text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Kept after deletion so the log's actor ids still resolve to a name.
    deleted_at  timestamptz
);
CREATE INDEX devices_user_idx ON devices (user_id) WHERE deleted_at IS NULL;

-- Bearer tokens, stored only as BLAKE3 hashes of 256-bit random secrets.
-- A device token acts as its user and names the device.
CREATE TABLE api_tokens (
    token_hash  bytea PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id),
    device_id   uuid REFERENCES devices (id),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_tokens_user_idx ON api_tokens (user_id);
CREATE INDEX api_tokens_device_idx ON api_tokens (device_id);

-- Idempotency-Key: the first response to a caller's key, saved in the
-- command's own transaction so a repeat appends nothing.
CREATE TABLE idempotency_keys (
    user_id       uuid NOT NULL REFERENCES users (id),
    key           text NOT NULL,
    request_hash  bytea NOT NULL,
    response      jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
