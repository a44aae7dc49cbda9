-- +goose Up
CREATE TABLE admin_tokens (
    hash       BLOB PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE enroll_tokens (
    id         TEXT PRIMARY KEY,
    hash       BLOB NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    uses_left  INTEGER NOT NULL,
    expires_at TIMESTAMP,
    product    TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE devices (
    id               TEXT PRIMARY KEY,
    public_key       BLOB NOT NULL,
    serial           TEXT NOT NULL,
    product          TEXT NOT NULL,
    hardware_id      TEXT NOT NULL,
    attributes       TEXT NOT NULL DEFAULT '{}',
    status           TEXT NOT NULL,
    installed_target TEXT NOT NULL DEFAULT '',
    installed_ver    TEXT NOT NULL DEFAULT '',
    security_version INTEGER NOT NULL DEFAULT 0,
    installed_sha256 TEXT NOT NULL DEFAULT '',
    state            TEXT NOT NULL DEFAULT '',
    last_error       TEXT NOT NULL DEFAULT '',
    assigned         TEXT NOT NULL DEFAULT '',
    director_version INTEGER NOT NULL DEFAULT 0,
    last_seen        TIMESTAMP,
    enrolled_at      TIMESTAMP NOT NULL
);
CREATE INDEX devices_product ON devices (product, hardware_id);

CREATE TABLE device_events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT NOT NULL,
    time      TIMESTAMP NOT NULL,
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
    security_version INTEGER NOT NULL,
    class            TEXT NOT NULL,
    fixes            TEXT NOT NULL,
    target           TEXT NOT NULL UNIQUE,
    length           INTEGER NOT NULL,
    sha256           TEXT NOT NULL,
    sha512           TEXT NOT NULL,
    targets_version  INTEGER NOT NULL,
    published_at     TIMESTAMP NOT NULL,
    PRIMARY KEY (product, version)
);

CREATE TABLE metadata (
    repo    TEXT NOT NULL,
    role    TEXT NOT NULL,
    version INTEGER NOT NULL,
    body    BLOB NOT NULL,
    expires TIMESTAMP NOT NULL,
    PRIMARY KEY (repo, role, version)
);

CREATE TABLE director_views (
    device_id TEXT NOT NULL,
    version   INTEGER NOT NULL,
    targets   BLOB NOT NULL,
    snapshot  BLOB NOT NULL,
    timestamp BLOB NOT NULL,
    expires   TIMESTAMP NOT NULL,
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
