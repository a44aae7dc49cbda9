-- +goose Up
ALTER TABLE devices ADD COLUMN assign_policy TEXT NOT NULL DEFAULT '';

CREATE TABLE campaigns (
    id           TEXT PRIMARY KEY,
    spec         TEXT NOT NULL,
    state        TEXT NOT NULL,
    wave         INTEGER NOT NULL,
    pause_reason TEXT NOT NULL DEFAULT '',
    created_at   TIMESTAMP NOT NULL,
    updated_at   TIMESTAMP NOT NULL
);
CREATE INDEX campaigns_state ON campaigns (state);

CREATE TABLE campaign_devices (
    campaign_id TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    wave        INTEGER NOT NULL,
    status      TEXT NOT NULL,
    since       TIMESTAMP NOT NULL,
    detail      TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (campaign_id, device_id)
);
CREATE INDEX campaign_devices_device ON campaign_devices (device_id);

CREATE TABLE device_groups (
    name       TEXT PRIMARY KEY,
    filter     TEXT NOT NULL DEFAULT '',
    maint_window TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE group_devices (
    group_name TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    PRIMARY KEY (group_name, device_id)
);

CREATE TABLE audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TIMESTAMP NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail  TEXT NOT NULL
);
CREATE INDEX audit_subject ON audit (subject, id);

-- Background work (the rollout engine, re-signing) runs on one replica at a time: the holder of
-- an unexpired lease row.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TIMESTAMP NOT NULL
);

-- Every new director view, in order: replicas follow it to keep their check-in caches current.
CREATE TABLE director_changes (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT NOT NULL,
    version   BIGINT NOT NULL
);

-- +goose Down
DROP TABLE director_changes;
DROP TABLE leases;
DROP TABLE audit;
DROP TABLE group_devices;
DROP TABLE device_groups;
DROP TABLE campaign_devices;
DROP TABLE campaigns;
ALTER TABLE devices DROP COLUMN assign_policy;
