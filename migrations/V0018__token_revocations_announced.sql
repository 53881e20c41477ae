-- Servers remember who a token belongs to for a few seconds. Every token
-- deleted, however (logout, logout everywhere, a deleted device, an
-- operator's DELETE), is announced on ferry_tokens with its hash, so every
-- server forgets it at once.
CREATE FUNCTION announce_revoked_tokens() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ferry_tokens', encode(token_hash, 'hex')) FROM revoked;
    RETURN NULL;
END $$;

CREATE TRIGGER announce_revoked_tokens AFTER DELETE ON api_tokens
    REFERENCING OLD TABLE AS revoked
    FOR EACH STATEMENT EXECUTE FUNCTION announce_revoked_tokens();
