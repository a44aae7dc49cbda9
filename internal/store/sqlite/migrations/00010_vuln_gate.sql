-- +goose Up
-- Exploitability and severity feeds, one row per CVE, as the vuln package's JSON (vuln.KEV,
-- vuln.EPSS, vuln.CVESeverity). rank orders copies (the EPSS score date, the NVD record's
-- lastModified, in microseconds): an import replaces a row only with an equal or later one.
CREATE TABLE vuln_feeds (
    feed TEXT NOT NULL,
    cve  TEXT NOT NULL,
    rank BIGINT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (feed, cve)
);

-- An analyst's VEX statement for a product: version '' for every release, component '' for
-- the product as a whole.
CREATE TABLE vex_triage (
    product       TEXT NOT NULL,
    version       TEXT NOT NULL,
    vuln          TEXT NOT NULL,
    component     TEXT NOT NULL,
    status        TEXT NOT NULL,
    justification TEXT NOT NULL,
    impact        TEXT NOT NULL,
    action        TEXT NOT NULL,
    analyst       TEXT NOT NULL,
    updated_at    TIMESTAMP NOT NULL,
    PRIMARY KEY (product, version, vuln, component)
);

-- Waivers of the release gate: named, with a reason, never deleted (revoked_at records a
-- revocation), so that every release that passed the gate through one can be accounted for.
CREATE TABLE gate_waivers (
    id         TEXT PRIMARY KEY,
    product    TEXT NOT NULL,
    version    TEXT NOT NULL,
    vuln       TEXT NOT NULL,
    reason     TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP,
    revoked_at TIMESTAMP,
    revoked_by TEXT NOT NULL DEFAULT ''
);

-- SBOMs sent for a release check before the release exists, by digest: the publish gate reads
-- the one whose digest the signed target names.
CREATE TABLE sbom_checks (
    digest      TEXT PRIMARY KEY,
    product     TEXT NOT NULL,
    version     TEXT NOT NULL,
    format      TEXT NOT NULL,
    components  TEXT NOT NULL,
    subject     TEXT NOT NULL,
    uploaded_at TIMESTAMP NOT NULL
);

-- +goose Down
DROP TABLE sbom_checks;
DROP TABLE gate_waivers;
DROP TABLE vex_triage;
DROP TABLE vuln_feeds;
