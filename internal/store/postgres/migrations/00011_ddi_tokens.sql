-- +goose Up
-- The generation of a DDI device's target token: the token is derived from the controller id and
-- this number, so raising it (`upkeep devices ddi-token ID --rotate`) revokes the old token. No
-- row: generation 0, the token of the id alone. Rows outlive their device on purpose: a device
-- created again under a removed one's id gets a new generation, not the removed one's token.
CREATE TABLE ddi_tokens (
    device_id  TEXT PRIMARY KEY,
    generation BIGINT NOT NULL
);

-- +goose Down
DROP TABLE ddi_tokens;
