-- +goose Up
-- The audit trail of the management API (internal/audit): one hash chain, append-only. seq
-- counts from 1 without gaps; hash is the SHA-256 of the record's canonical encoding, which
-- covers prev_hash, the previous record's hash.
CREATE TABLE audit_log (
    seq        BIGINT PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL,
    actor_type TEXT NOT NULL,
    actor      TEXT NOT NULL,
    actor_id   TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    detail     TEXT NOT NULL,
    ip         TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    outcome    INTEGER NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_actor ON audit_log (actor, seq);
CREATE INDEX audit_log_target ON audit_log (target, seq);

-- The chain's one head row: the last record appended (appends lock it, so that replicas append
-- one chain) and the checkpoint, the last record pruned, from which verification starts.
CREATE TABLE audit_chain (
    id              INTEGER PRIMARY KEY,
    head_seq        BIGINT NOT NULL,
    head_hash       TEXT NOT NULL,
    checkpoint_seq  BIGINT NOT NULL,
    checkpoint_hash TEXT NOT NULL
);
INSERT INTO audit_chain (id, head_seq, head_hash, checkpoint_seq, checkpoint_hash) VALUES (1, 0, '', 0, '');

-- +goose Down
DROP TABLE audit_chain;
DROP TABLE audit_log;
