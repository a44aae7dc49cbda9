-- +goose Up
-- Signed device requests (enrolment, token) that issued a device token, by the SHA-256 of their
-- signed payload, kept until the request's time window has closed: a replay is refused.
CREATE TABLE used_requests (
    id         BLOB PRIMARY KEY,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX used_requests_expires ON used_requests (expires_at);

-- Operator tokens get an id (shown and revoked by it), a role, an expiry, a revocation time and
-- the time they were last used. The tokens that exist stay admin and never expire.
ALTER TABLE admin_tokens ADD COLUMN id TEXT NOT NULL DEFAULT '';
ALTER TABLE admin_tokens ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE admin_tokens ADD COLUMN expires_at TIMESTAMP;
ALTER TABLE admin_tokens ADD COLUMN revoked_at TIMESTAMP;
ALTER TABLE admin_tokens ADD COLUMN last_used TIMESTAMP;
UPDATE admin_tokens SET id = lower(hex(substr(hash, 1, 8)));
CREATE UNIQUE INDEX admin_tokens_id ON admin_tokens (id);

ALTER TABLE enroll_tokens ADD COLUMN revoked_at TIMESTAMP;

-- Bumped in the transaction of every revocation (operator token, decommissioned device): each
-- server polls it and drops what it cached about credentials when it moves.
CREATE TABLE revocation_generation (
    id  INTEGER PRIMARY KEY,
    gen BIGINT NOT NULL
);
INSERT INTO revocation_generation (id, gen) VALUES (1, 0);

-- +goose Down
DROP TABLE revocation_generation;
ALTER TABLE enroll_tokens DROP COLUMN revoked_at;
DROP INDEX admin_tokens_id;
ALTER TABLE admin_tokens DROP COLUMN last_used;
ALTER TABLE admin_tokens DROP COLUMN revoked_at;
ALTER TABLE admin_tokens DROP COLUMN expires_at;
ALTER TABLE admin_tokens DROP COLUMN role;
ALTER TABLE admin_tokens DROP COLUMN id;
DROP TABLE used_requests;
