-- +goose Up
-- VEX statements now say which versions (vers_range: the vers range of a CSAF
-- product_version_range product, '' for all) and in which product (product: the purl or name
-- of the product a component is shipped in, '' for any) they speak of.
CREATE TABLE vex_statements_new (
    source        TEXT NOT NULL,
    vuln          TEXT NOT NULL,
    purl          TEXT NOT NULL,
    vers_range    TEXT NOT NULL DEFAULT '',
    product       TEXT NOT NULL DEFAULT '',
    status        TEXT NOT NULL,
    justification TEXT NOT NULL,
    impact        TEXT NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, vuln, purl, vers_range, product)
);
INSERT INTO vex_statements_new (source, vuln, purl, status, justification, impact, updated_at)
    SELECT source, vuln, purl, status, justification, impact, updated_at FROM vex_statements;
DROP TABLE vex_statements;
ALTER TABLE vex_statements_new RENAME TO vex_statements;

-- The subject of an SBOM (CycloneDX metadata.component, the package an SPDX document
-- describes) as a purl, '' if it names none: product-scoped VEX statements apply to it.
ALTER TABLE release_sboms ADD COLUMN subject TEXT NOT NULL DEFAULT '';

-- The generation of the advisory index: bumped in the transaction of every import that changes
-- an advisory or a VEX statement, so that every server sharing the database reloads its index.
CREATE TABLE vuln_generation (
    id  INTEGER PRIMARY KEY,
    gen BIGINT NOT NULL
);
INSERT INTO vuln_generation (id, gen) VALUES (1, 0);

-- +goose Down
DROP TABLE vuln_generation;
ALTER TABLE release_sboms DROP COLUMN subject;
CREATE TABLE vex_statements_old (
    source        TEXT NOT NULL,
    vuln          TEXT NOT NULL,
    purl          TEXT NOT NULL,
    status        TEXT NOT NULL,
    justification TEXT NOT NULL,
    impact        TEXT NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, vuln, purl)
);
INSERT INTO vex_statements_old (source, vuln, purl, status, justification, impact, updated_at)
    SELECT source, vuln, purl, status, justification, impact, updated_at FROM vex_statements
    WHERE vers_range = '' AND product = '';
DROP TABLE vex_statements;
ALTER TABLE vex_statements_old RENAME TO vex_statements;
