-- +goose Up
-- Users who log in through an OpenID Connect provider are known by the provider's issuer and
-- the subject it gives them (empty for local users); the pair names at most one user.
ALTER TABLE users ADD COLUMN sso_issuer TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN sso_subject TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX users_sso ON users (sso_issuer, sso_subject) WHERE sso_subject <> '';

-- +goose Down
DROP INDEX users_sso;
ALTER TABLE users DROP COLUMN sso_subject;
ALTER TABLE users DROP COLUMN sso_issuer;
