-- Direct transfers over pinned TLS: the SHA-256 of the certificate an
-- agent's listener presents, stored with its entry and handed to members
-- with each direct endpoint, so they accept that certificate and no other.
-- NULL for entries of older agents (plain http).
ALTER TABLE devices ADD COLUMN direct_cert_sha256 text;
ALTER TABLE device_direct_endpoints ADD COLUMN cert_sha256 text;
