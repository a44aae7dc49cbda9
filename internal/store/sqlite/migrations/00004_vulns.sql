-- +goose Up
-- A release's software bill of materials: the format, the digest of the uploaded bytes, whether
-- that digest is the one signed into the release's image target (sbom_sha256), and the
-- components normalised by internal/vuln, as JSON.
CREATE TABLE release_sboms (
    product     TEXT NOT NULL,
    version     TEXT NOT NULL,
    format      TEXT NOT NULL,
    digest      TEXT NOT NULL,
    signed      BOOLEAN NOT NULL,
    components  TEXT NOT NULL,
    uploaded_at TIMESTAMP NOT NULL,
    PRIMARY KEY (product, version)
);

-- Advisories by id (OSV or CSAF), as vuln.Advisory JSON. modified_us (microseconds since the
-- Unix epoch) orders copies: an import replaces a row only with a later one. first_seen is when
-- this server first imported the advisory, kept across updates.
CREATE TABLE advisories (
    id          TEXT PRIMARY KEY,
    source      TEXT NOT NULL,
    modified_us BIGINT NOT NULL,
    body        TEXT NOT NULL,
    first_seen  TIMESTAMP NOT NULL
);

-- VEX statements, one per (document, vulnerability, product purl).
CREATE TABLE vex_statements (
    source        TEXT NOT NULL,
    vuln          TEXT NOT NULL,
    purl          TEXT NOT NULL,
    status        TEXT NOT NULL,
    justification TEXT NOT NULL,
    impact        TEXT NOT NULL,
    updated_at    TIMESTAMP NOT NULL,
    PRIMARY KEY (source, vuln, purl)
);

-- The first time each device reported running each target: with commit events, the timeline
-- of what every device ran (time-to-patch needs the image a device ran before its first update).
CREATE TABLE device_installs (
    device_id  TEXT NOT NULL,
    target     TEXT NOT NULL,
    first_seen TIMESTAMP NOT NULL,
    PRIMARY KEY (device_id, target)
);

CREATE INDEX device_events_step ON device_events (step, status);

-- +goose Down
DROP INDEX device_events_step;
DROP TABLE device_installs;
DROP TABLE vex_statements;
DROP TABLE advisories;
DROP TABLE release_sboms;
