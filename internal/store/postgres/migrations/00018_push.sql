-- +goose Up
-- Failure log bundles devices upload (POST /device/v1/logs): gzip-compressed JSON as received,
-- at most 256 KiB each; kept per device up to a count and an age (housekeeping).
CREATE TABLE device_logs (
    id          BIGSERIAL PRIMARY KEY,
    device_id   TEXT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    target      TEXT NOT NULL,
    step        TEXT NOT NULL,
    data        BYTEA NOT NULL
);
CREATE INDEX device_logs_device ON device_logs (device_id, id);
CREATE INDEX device_logs_received ON device_logs (received_at);

-- +goose Down
DROP TABLE device_logs;
