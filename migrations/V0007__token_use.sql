-- When each token was last used: a user token idle longer than the
-- server's limit stops working (device tokens do not expire by idleness:
-- an owner's machine may be off for months and still be theirs).
ALTER TABLE api_tokens ADD COLUMN last_used_at timestamptz NOT NULL DEFAULT now();
