-- +goose Up
CREATE TABLE admin_tokens (
    hash       BYTEA PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE enroll_tokens (
    id         TEXT PRIMARY KEY,
    hash       BYTEA NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    uses_left  BIGINT NOT NULL,
    expires_at TIMESTAMPTZ,
    product    TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE devices (
    id               TEXT PRIMARY KEY,
    public_key       BYTEA NOT NULL,
    serial           TEXT NOT NULL,
    product          TEXT NOT NULL,
    hardware_id      TEXT NOT NULL,
    attributes       TEXT NOT NULL DEFAULT '{}',
    status           TEXT NOT NULL,
    installed_target TEXT NOT NULL DEFAULT '',
    installed_ver    TEXT NOT NULL DEFAULT '',
    security_version BIGINT NOT NULL DEFAULT 0,
    installed_sha256 TEXT NOT NULL DEFAULT '',
    state            TEXT NOT NULL DEFAULT '',
    last_error       TEXT NOT NULL DEFAULT '',
    assigned         TEXT NOT NULL DEFAULT '',
    director_version BIGINT NOT NULL DEFAULT 0,
    last_seen        TIMESTAMPTZ,
    enrolled_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX devices_product ON devices (product, hardware_id);

CREATE TABLE device_events (
    id        BIGSERIAL PRIMARY KEY,
    device_id TEXT NOT NULL,
    time      TIMESTAMPTZ NOT NULL,
    target    TEXT NOT NULL,
    step      TEXT NOT NULL,
    status    TEXT NOT NULL,
    fatal     BOOLEAN NOT NULL,
    message   TEXT NOT NULL
);
CREATE INDEX device_events_device ON device_events (device_id, id);

CREATE TABLE releases (
    product          TEXT NOT NULL,
    version          TEXT NOT NULL,
    hardware_ids     TEXT NOT NULL,
    security_version BIGINT NOT NULL,
    class            TEXT NOT NULL,
    fixes            TEXT NOT NULL,
    target           TEXT NOT NULL UNIQUE,
    length           BIGINT NOT NULL,
    sha256           TEXT NOT NULL,
    sha512           TEXT NOT NULL,
    targets_version  BIGINT NOT NULL,
    published_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (product, version)
);

CREATE TABLE metadata (
    repo    TEXT NOT NULL,
    role    TEXT NOT NULL,
    version BIGINT NOT NULL,
    body    BYTEA NOT NULL,
    expires TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (repo, role, version)
);

CREATE TABLE director_views (
    device_id TEXT NOT NULL,
    version   BIGINT NOT NULL,
    targets   BYTEA NOT NULL,
    snapshot  BYTEA NOT NULL,
    timestamp BYTEA NOT NULL,
    expires   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (device_id, version)
);

-- +goose Down
DROP TABLE director_views;
DROP TABLE metadata;
DROP TABLE releases;
DROP TABLE device_events;
DROP TABLE devices;
DROP TABLE enroll_tokens;
DROP TABLE settings;
DROP TABLE admin_tokens;
