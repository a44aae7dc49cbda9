-- +goose Up
-- Per-pair deltas the server generates after a publication (internal/deltagen): one row per
-- destination image and source digest, its state (queued, running, done, failed), progress
-- (destination bytes done) and, once done, the patch in the blob store. A running row not
-- updated for ten minutes is taken up again (its replica stopped).
CREATE TABLE delta_jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    product       TEXT NOT NULL,
    version       TEXT NOT NULL,
    from_version  TEXT NOT NULL,
    image         TEXT NOT NULL,
    source        TEXT NOT NULL,
    image_sha256  TEXT NOT NULL,
    image_length  BIGINT NOT NULL,
    source_sha256 TEXT NOT NULL,
    source_length BIGINT NOT NULL,
    devices       INTEGER NOT NULL DEFAULT 0,
    state         TEXT NOT NULL,
    done          BIGINT NOT NULL DEFAULT 0,
    patch_sha256  TEXT NOT NULL DEFAULT '',
    patch_sha512  TEXT NOT NULL DEFAULT '',
    patch_length  BIGINT NOT NULL DEFAULT 0,
    error         TEXT NOT NULL DEFAULT '',
    created_at    TIMESTAMP NOT NULL,
    updated_at    TIMESTAMP NOT NULL,
    UNIQUE (image, source_sha256)
);
CREATE INDEX delta_jobs_state ON delta_jobs (state, id);
CREATE INDEX delta_jobs_release ON delta_jobs (product, version, id);

-- +goose Down
DROP TABLE delta_jobs;
