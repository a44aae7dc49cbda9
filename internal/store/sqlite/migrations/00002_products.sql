-- +goose Up
CREATE TABLE products (
    name            TEXT PRIMARY KEY,
    policy          TEXT NOT NULL,
    declaration_key BLOB,
    updated_at      TIMESTAMP NOT NULL
);

CREATE TABLE policy_history (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    product TEXT NOT NULL,
    at      TIMESTAMP NOT NULL,
    actor   TEXT NOT NULL,
    field   TEXT NOT NULL,
    old     TEXT NOT NULL,
    new     TEXT NOT NULL
);
CREATE INDEX policy_history_product ON policy_history (product, id);

-- +goose Down
DROP TABLE policy_history;
DROP TABLE products;
