-- +goose Up
CREATE TABLE products (
    name            TEXT PRIMARY KEY,
    policy          TEXT NOT NULL,
    declaration_key BYTEA,
    updated_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE policy_history (
    id      BIGSERIAL PRIMARY KEY,
    product TEXT NOT NULL,
    at      TIMESTAMPTZ NOT NULL,
    actor   TEXT NOT NULL,
    field   TEXT NOT NULL,
    old     TEXT NOT NULL,
    new     TEXT NOT NULL
);
CREATE INDEX policy_history_product ON policy_history (product, id);

-- +goose Down
DROP TABLE policy_history;
DROP TABLE products;
