-- +goose Up
-- Tenants: organisations served under /t/{name}/, each with a server stack of its own (its own
-- store, artifacts, keys). Only the default tenant's store has rows. sealed_keys holds the
-- tenant's online key files sealed (AES-256-GCM) under a key derived from this installation's
-- device-token key, so that other replicas can open the tenant and the database alone reveals
-- no key. A tenant is ready once the replica that added it opened its stack: only then do the
-- other replicas open it too.
CREATE TABLE tenants (
    name        TEXT PRIMARY KEY,
    created_at  TIMESTAMP NOT NULL,
    sealed_keys BLOB NOT NULL,
    ready       BOOLEAN NOT NULL DEFAULT FALSE
);

-- +goose Down
DROP TABLE tenants;
