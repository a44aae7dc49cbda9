package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"upkeep.dev/upkeep/internal/exposure"
	"upkeep.dev/upkeep/internal/vuln"
)

var _ exposure.Store = (*DB)(nil)

// PutSBOM implements exposure.Store.
func (s *DB) PutSBOM(ctx context.Context, sb *exposure.SBOM) error {
	comps, err := json.Marshal(sb.Components)
	if err != nil {
		return fmt.Errorf("put SBOM %s@%s: %w", sb.Product, sb.Version, err)
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO release_sboms (product, version, format, digest, signed, components, uploaded_at, subject) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)
ON CONFLICT (product, version) DO UPDATE SET format = excluded.format, digest = excluded.digest, signed = excluded.signed, components = excluded.components, uploaded_at = excluded.uploaded_at, subject = excluded.subject`,
		sb.Product, sb.Version, sb.Format, sb.Digest, sb.Signed, string(comps), sb.UploadedAt.UTC(), sb.Subject)
	if err != nil {
		return fmt.Errorf("put SBOM %s@%s: %w", sb.Product, sb.Version, err)
	}
	return nil
}

// FindSBOM implements exposure.Store.
func (s *DB) FindSBOM(ctx context.Context, product, version string) (*exposure.SBOM, error) {
	sb := &exposure.SBOM{Product: product, Version: version}
	var comps string
	err := s.db.QueryRowContext(ctx, `SELECT format, digest, signed, components, uploaded_at, subject FROM release_sboms WHERE product = $1 AND version = $2`, product, version).
		Scan(&sb.Format, &sb.Digest, &sb.Signed, &comps, &sb.UploadedAt, &sb.Subject)
	if err != nil {
		return nil, notFound(err, "release %s@%s has no SBOM", product, version)
	}
	if err := json.Unmarshal([]byte(comps), &sb.Components); err != nil {
		return nil, fmt.Errorf("SBOM %s@%s: %w", product, version, err)
	}
	sb.UploadedAt = sb.UploadedAt.UTC()
	return sb, nil
}

// FindSBOMs implements exposure.Store.
func (s *DB) FindSBOMs(ctx context.Context, product string) ([]*exposure.SBOM, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT product, version, format, digest, signed, uploaded_at, subject FROM release_sboms WHERE $1 = '' OR product = $1 ORDER BY product, version`, product)
	if err != nil {
		return nil, fmt.Errorf("find SBOMs: %w", err)
	}
	defer rows.Close()
	var out []*exposure.SBOM
	for rows.Next() {
		var sb exposure.SBOM
		if err := rows.Scan(&sb.Product, &sb.Version, &sb.Format, &sb.Digest, &sb.Signed, &sb.UploadedAt, &sb.Subject); err != nil {
			return nil, fmt.Errorf("find SBOMs: %w", err)
		}
		sb.UploadedAt = sb.UploadedAt.UTC()
		out = append(out, &sb)
	}
	return out, rows.Err()
}

// PutAdvisories implements exposure.Store. The upsert's WHERE on modified_us keeps a newer stored
// copy even against a concurrent import of an older one.
func (s *DB) PutAdvisories(ctx context.Context, advs []*vuln.Advisory, now time.Time) ([]string, error) {
	var out []string
	err := s.inTx(ctx, "put advisories", func(tx *Tx) error {
		get, err := tx.PrepareContext(ctx, `SELECT modified_us FROM advisories WHERE id = $1`)
		if err != nil {
			return fmt.Errorf("put advisories: %w", err)
		}
		defer get.Close()
		put, err := tx.PrepareContext(ctx, `INSERT INTO advisories (id, source, modified_us, body, first_seen) VALUES ($1,$2,$3,$4,$5)
ON CONFLICT (id) DO UPDATE SET source = excluded.source, modified_us = excluded.modified_us, body = excluded.body
WHERE advisories.modified_us < excluded.modified_us`)
		if err != nil {
			return fmt.Errorf("put advisories: %w", err)
		}
		defer put.Close()
		res := make([]string, len(advs))
		for i, a := range advs {
			mod := a.Modified.UnixMicro()
			var old int64
			switch err := get.QueryRowContext(ctx, a.ID).Scan(&old); {
			case errors.Is(err, sql.ErrNoRows):
				res[i] = exposure.Imported
			case err != nil:
				return fmt.Errorf("advisory %s: %w", a.ID, err)
			case old < mod:
				res[i] = exposure.Updated
			default:
				res[i] = exposure.Unchanged
				continue
			}
			body, err := json.Marshal(a)
			if err != nil {
				return fmt.Errorf("advisory %s: %w", a.ID, err)
			}
			if _, err := put.ExecContext(ctx, a.ID, a.Source, mod, string(body), now.UTC()); err != nil {
				return fmt.Errorf("advisory %s: %w", a.ID, err)
			}
		}
		out = res
		return bumpGeneration(ctx, tx, res)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// bumpGeneration adds one to the advisory index generation, in the transaction that stored
// outcomes, if any of them changed something.
func bumpGeneration(ctx context.Context, tx *Tx, outcomes []string) error {
	if !slices.ContainsFunc(outcomes, func(o string) bool { return o != exposure.Unchanged }) {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `UPDATE vuln_generation SET gen = gen + 1 WHERE id = 1`); err != nil {
		return fmt.Errorf("bump advisory generation: %w", err)
	}
	return nil
}

// VulnGeneration implements exposure.Store.
func (s *DB) VulnGeneration(ctx context.Context) (int64, error) {
	var g int64
	if err := s.db.QueryRowContext(ctx, `SELECT gen FROM vuln_generation WHERE id = 1`).Scan(&g); err != nil {
		return 0, fmt.Errorf("advisory generation: %w", err)
	}
	return g, nil
}

// FindAdvisories implements exposure.Store.
func (s *DB) FindAdvisories(ctx context.Context, fn func(exposure.StoredAdvisory) error) error {
	rows, err := s.db.QueryContext(ctx, `SELECT id, body, first_seen FROM advisories ORDER BY id`)
	if err != nil {
		return fmt.Errorf("find advisories: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, body string
		var a exposure.StoredAdvisory
		if err := rows.Scan(&id, &body, &a.FirstSeen); err != nil {
			return fmt.Errorf("find advisories: %w", err)
		}
		if err := json.Unmarshal([]byte(body), &a.Advisory); err != nil {
			return fmt.Errorf("advisory %s: %w", id, err)
		}
		a.FirstSeen = a.FirstSeen.UTC()
		if err := fn(a); err != nil {
			return err
		}
	}
	return rows.Err()
}

// PutVEX implements exposure.Store.
func (s *DB) PutVEX(ctx context.Context, vs []vuln.VEX, now time.Time) ([]string, error) {
	var out []string
	err := s.inTx(ctx, "put VEX", func(tx *Tx) error {
		res := make([]string, len(vs))
		for i, v := range vs {
			var old vuln.VEX
			err := tx.QueryRowContext(ctx, `SELECT status, justification, impact FROM vex_statements WHERE source = $1 AND vuln = $2 AND purl = $3 AND vers_range = $4 AND product = $5`, v.Source, v.Vuln, v.PURL, v.Range, v.Product).
				Scan(&old.Status, &old.Justification, &old.Impact)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				res[i] = exposure.Imported
			case err != nil:
				return fmt.Errorf("VEX %s %s: %w", v.Vuln, v.PURL, err)
			case old.Status == v.Status && old.Justification == v.Justification && old.Impact == v.Impact:
				res[i] = exposure.Unchanged
				continue
			default:
				res[i] = exposure.Updated
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO vex_statements (source, vuln, purl, vers_range, product, status, justification, impact, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)
ON CONFLICT (source, vuln, purl, vers_range, product) DO UPDATE SET status = excluded.status, justification = excluded.justification, impact = excluded.impact, updated_at = excluded.updated_at`,
				v.Source, v.Vuln, v.PURL, v.Range, v.Product, v.Status, v.Justification, v.Impact, now.UTC()); err != nil {
				return fmt.Errorf("VEX %s %s: %w", v.Vuln, v.PURL, err)
			}
		}
		out = res
		return bumpGeneration(ctx, tx, res)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// FindVEX implements exposure.Store.
func (s *DB) FindVEX(ctx context.Context) ([]vuln.VEX, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT source, vuln, purl, vers_range, product, status, justification, impact FROM vex_statements ORDER BY source, vuln, purl, vers_range, product`)
	if err != nil {
		return nil, fmt.Errorf("find VEX: %w", err)
	}
	defer rows.Close()
	var out []vuln.VEX
	for rows.Next() {
		var v vuln.VEX
		if err := rows.Scan(&v.Source, &v.Vuln, &v.PURL, &v.Range, &v.Product, &v.Status, &v.Justification, &v.Impact); err != nil {
			return nil, fmt.Errorf("find VEX: %w", err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// AddInstall implements exposure.Store.
func (s *DB) AddInstall(ctx context.Context, deviceID, target string, at time.Time) error {
	if _, err := s.db.ExecContext(ctx, `INSERT INTO device_installs (device_id, target, first_seen) VALUES ($1,$2,$3) ON CONFLICT (device_id, target) DO NOTHING`,
		deviceID, target, at.UTC()); err != nil {
		return fmt.Errorf("add install %s: %w", deviceID, err)
	}
	return nil
}

// FindInstalls implements exposure.Store.
func (s *DB) FindInstalls(ctx context.Context, product string) ([]exposure.Install, error) {
	var out []exposure.Install
	for _, q := range []struct {
		sql    string
		commit bool
	}{
		{`SELECT i.device_id, i.target, i.first_seen FROM device_installs i
WHERE $1 = '' OR EXISTS (SELECT 1 FROM devices d WHERE d.id = i.device_id AND d.product = $1)`, false},
		{`SELECT e.device_id, e.target, e.time FROM device_events e
WHERE e.step = 'commit' AND e.status = 'ok' AND ($1 = '' OR EXISTS (SELECT 1 FROM devices d WHERE d.id = e.device_id AND d.product = $1))`, true},
	} {
		rows, err := s.db.QueryContext(ctx, q.sql, product)
		if err != nil {
			return nil, fmt.Errorf("find installs: %w", err)
		}
		for rows.Next() {
			in := exposure.Install{Commit: q.commit}
			if err := rows.Scan(&in.DeviceID, &in.Target, &in.At); err != nil {
				rows.Close()
				return nil, fmt.Errorf("find installs: %w", err)
			}
			in.At = in.At.UTC()
			out = append(out, in)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("find installs: %w", err)
		}
	}
	slices.SortStableFunc(out, func(a, b exposure.Install) int { return a.At.Compare(b.At) })
	return out, nil
}
