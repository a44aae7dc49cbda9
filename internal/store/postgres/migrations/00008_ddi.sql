-- +goose Up
-- How a device talks to the server: 'upkeep' (the agent) or 'ddi' (a hawkBit DDI client).
ALTER TABLE devices ADD COLUMN kind TEXT NOT NULL DEFAULT 'upkeep';

-- DDI actions: one per (device, assigned target) the server offered a DDI device, with the
-- integer id DDI clients require.
CREATE TABLE ddi_actions (
    id         BIGSERIAL PRIMARY KEY,
    device_id  TEXT NOT NULL,
    target     TEXT NOT NULL,
    status     TEXT NOT NULL,
    result     TEXT NOT NULL DEFAULT '',
    confirmed  BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX ddi_actions_device ON ddi_actions (device_id, id);

-- +goose Down
DROP TABLE ddi_actions;
ALTER TABLE devices DROP COLUMN kind;
