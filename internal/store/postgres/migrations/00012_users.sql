-- +goose Up
-- Operators as people: a role, an optional group scope (deployers), an argon2id password hash
-- (empty: no password login).
CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    role          TEXT NOT NULL,
    scope_groups  TEXT NOT NULL DEFAULT '',
    password_hash TEXT NOT NULL DEFAULT '',
    created_at    TIMESTAMPTZ NOT NULL,
    disabled_at   TIMESTAMPTZ
);

-- Operator tokens belong to the user who made them and may be limited to groups. The first
-- token a server printed becomes the token of the user "admin".
ALTER TABLE admin_tokens ADD COLUMN user_name TEXT NOT NULL DEFAULT '';
ALTER TABLE admin_tokens ADD COLUMN scope_groups TEXT NOT NULL DEFAULT '';
INSERT INTO users (name, role, created_at)
    SELECT 'admin', 'admin', created_at FROM admin_tokens ORDER BY created_at, id LIMIT 1;
UPDATE admin_tokens SET user_name = 'admin'
    WHERE id = (SELECT id FROM admin_tokens ORDER BY created_at, id LIMIT 1);
CREATE INDEX admin_tokens_user ON admin_tokens (user_name);

-- Browser sessions: the SHA-256 of the cookie's secret, the CSRF token, absolute expiry, last
-- use (idle timeout) and revocation.
CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    hash       BYTEA NOT NULL UNIQUE,
    user_name  TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    last_seen  TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);
CREATE INDEX sessions_user ON sessions (user_name);

-- +goose Down
DROP TABLE sessions;
DROP INDEX admin_tokens_user;
ALTER TABLE admin_tokens DROP COLUMN scope_groups;
ALTER TABLE admin_tokens DROP COLUMN user_name;
DROP TABLE users;
