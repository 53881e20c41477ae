-- Direct transfers: where a source device's agent listens, and the key it
-- checks per-transfer tokens with. The server mints those tokens for the
-- transfers it hands to members, so it must know the key: a device key for
-- one narrow purpose, replaced whenever the agent re-advertises.
ALTER TABLE devices
    ADD COLUMN direct_urls jsonb,
    ADD COLUMN direct_key text;
