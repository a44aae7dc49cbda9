-- +goose Up
-- Operators' webhooks: the URL, the event types (comma-separated; empty: all), whether an admin
-- let it reach private addresses or plain http, and the HMAC key it is signed with (the key
-- must be kept to sign; whoever reads the database can forge deliveries).
CREATE TABLE webhooks (
    id            TEXT PRIMARY KEY,
    url           TEXT NOT NULL,
    events        TEXT NOT NULL DEFAULT '',
    description   TEXT NOT NULL DEFAULT '',
    allow_private BOOLEAN NOT NULL DEFAULT FALSE,
    allow_http    BOOLEAN NOT NULL DEFAULT FALSE,
    secret        BYTEA NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    created_by    TEXT NOT NULL DEFAULT ''
);

-- The outbox: one row per webhook and event. A pending row is due at next_at; claimed_until
-- set and in the future means a delivery job is sending it (a job that died leaves a claim that
-- lapses, and the row is sent again). Done rows (delivered, failed, dropped) are pruned after
-- the retention.
CREATE TABLE webhook_deliveries (
    id            BIGSERIAL PRIMARY KEY,
    webhook_id    TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id      TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    body          BYTEA NOT NULL,
    state         TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_at       TIMESTAMPTZ NOT NULL,
    claimed_until TIMESTAMPTZ,
    last_status   INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT NOT NULL DEFAULT '',
    created_at    TIMESTAMPTZ NOT NULL,
    done_at       TIMESTAMPTZ
);
CREATE UNIQUE INDEX webhook_deliveries_event ON webhook_deliveries (webhook_id, event_id);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_at);
CREATE INDEX webhook_deliveries_done ON webhook_deliveries (done_at);

-- +goose Down
DROP TABLE webhook_deliveries;
DROP TABLE webhooks;
