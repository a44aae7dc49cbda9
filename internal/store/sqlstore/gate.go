package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/exposure"
)

var _ exposure.GateStore = (*DB)(nil)

// PutFeedRows implements exposure.GateStore.
func (s *DB) PutFeedRows(ctx context.Context, rows []exposure.FeedRow) ([]string, error) {
	var out []string
	err := s.inTx(ctx, "put feed rows", func(tx *Tx) error {
		get, err := tx.PrepareContext(ctx, `SELECT rank, body FROM vuln_feeds WHERE feed = $1 AND cve = $2`)
		if err != nil {
			return fmt.Errorf("put feed rows: %w", err)
		}
		defer get.Close()
		put, err := tx.PrepareContext(ctx, `INSERT INTO vuln_feeds (feed, cve, rank, body) VALUES ($1,$2,$3,$4)
ON CONFLICT (feed, cve) DO UPDATE SET rank = excluded.rank, body = excluded.body WHERE vuln_feeds.rank <= excluded.rank`)
		if err != nil {
			return fmt.Errorf("put feed rows: %w", err)
		}
		defer put.Close()
		res := make([]string, len(rows))
		for i, r := range rows {
			var rank int64
			var body string
			switch err := get.QueryRowContext(ctx, r.Feed, r.CVE).Scan(&rank, &body); {
			case errors.Is(err, sql.ErrNoRows):
				res[i] = exposure.Imported
			case err != nil:
				return fmt.Errorf("%s %s: %w", r.Feed, r.CVE, err)
			case rank > r.Rank || body == string(r.Body):
				res[i] = exposure.Unchanged
				continue
			default:
				res[i] = exposure.Updated
			}
			if _, err := put.ExecContext(ctx, r.Feed, r.CVE, r.Rank, string(r.Body)); err != nil {
				return fmt.Errorf("%s %s: %w", r.Feed, r.CVE, err)
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

// FindFeedRows implements exposure.GateStore.
func (s *DB) FindFeedRows(ctx context.Context, fn func(exposure.FeedRow) error) error {
	rows, err := s.db.QueryContext(ctx, `SELECT feed, cve, rank, body FROM vuln_feeds ORDER BY feed, cve`)
	if err != nil {
		return fmt.Errorf("find feed rows: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r exposure.FeedRow
		var body string
		if err := rows.Scan(&r.Feed, &r.CVE, &r.Rank, &body); err != nil {
			return fmt.Errorf("find feed rows: %w", err)
		}
		r.Body = []byte(body)
		if err := fn(r); err != nil {
			return err
		}
	}
	return rows.Err()
}

// PutTriage implements exposure.GateStore.
func (s *DB) PutTriage(ctx context.Context, t *exposure.Triage) (string, error) {
	out := exposure.Imported
	err := s.inTx(ctx, "put VEX triage", func(tx *Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM vex_triage WHERE product = $1 AND version = $2 AND vuln = $3 AND component = $4`,
			t.Product, t.Version, t.Vuln, t.Component).Scan(&n); err != nil {
			return fmt.Errorf("put VEX triage: %w", err)
		}
		if n > 0 {
			out = exposure.Updated
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO vex_triage (product, version, vuln, component, status, justification, impact, action, analyst, updated_at)
VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)
ON CONFLICT (product, version, vuln, component) DO UPDATE SET status = excluded.status, justification = excluded.justification,
impact = excluded.impact, action = excluded.action, analyst = excluded.analyst, updated_at = excluded.updated_at`,
			t.Product, t.Version, t.Vuln, t.Component, t.Status, t.Justification, t.Impact, t.Action, t.Analyst, t.UpdatedAt.UTC()); err != nil {
			return fmt.Errorf("put VEX triage: %w", err)
		}
		return bumpGeneration(ctx, tx, []string{out})
	})
	return out, err
}

// FindTriage implements exposure.GateStore.
func (s *DB) FindTriage(ctx context.Context, product string) ([]exposure.Triage, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT product, version, vuln, component, status, justification, impact, action, analyst, updated_at
FROM vex_triage WHERE $1 = '' OR product = $1 ORDER BY product, version, vuln, component`, product)
	if err != nil {
		return nil, fmt.Errorf("find VEX triage: %w", err)
	}
	defer rows.Close()
	var out []exposure.Triage
	for rows.Next() {
		var t exposure.Triage
		if err := rows.Scan(&t.Product, &t.Version, &t.Vuln, &t.Component, &t.Status, &t.Justification, &t.Impact, &t.Action, &t.Analyst, &t.UpdatedAt); err != nil {
			return nil, fmt.Errorf("find VEX triage: %w", err)
		}
		t.UpdatedAt = t.UpdatedAt.UTC()
		out = append(out, t)
	}
	return out, rows.Err()
}

func nullTimePtr(t *time.Time) sql.NullTime {
	if t == nil {
		return sql.NullTime{}
	}
	return sql.NullTime{Time: t.UTC(), Valid: true}
}

// CreateWaiver implements exposure.GateStore.
func (s *DB) CreateWaiver(ctx context.Context, w *exposure.Waiver) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO gate_waivers (id, product, version, vuln, reason, created_by, created_at, expires_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)`,
		w.ID, w.Product, w.Version, w.Vuln, w.Reason, w.CreatedBy, w.CreatedAt.UTC(), nullTimePtr(w.ExpiresAt))
	if s.dialect.IsUnique(err) {
		return apperr.E(apperr.Conflict, "waiver %s exists", w.ID)
	}
	if err != nil {
		return fmt.Errorf("create waiver: %w", err)
	}
	return nil
}

// RevokeWaiver implements exposure.GateStore.
func (s *DB) RevokeWaiver(ctx context.Context, id, by string, at time.Time) error {
	res, err := s.db.ExecContext(ctx, `UPDATE gate_waivers SET revoked_at = $2, revoked_by = $3 WHERE id = $1 AND revoked_at IS NULL`, id, at.UTC(), by)
	if err != nil {
		return fmt.Errorf("revoke waiver %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return nil
	}
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM gate_waivers WHERE id = $1`, id).Scan(&n); err != nil {
		return fmt.Errorf("revoke waiver %s: %w", id, err)
	}
	if n == 0 {
		return apperr.E(apperr.NotFound, "no waiver %s", id)
	}
	return apperr.E(apperr.Conflict, "waiver %s is revoked already", id)
}

// FindWaivers implements exposure.GateStore.
func (s *DB) FindWaivers(ctx context.Context, product string) ([]exposure.Waiver, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, product, version, vuln, reason, created_by, created_at, expires_at, revoked_at, revoked_by
FROM gate_waivers WHERE $1 = '' OR product = $1 ORDER BY created_at, id`, product)
	if err != nil {
		return nil, fmt.Errorf("find waivers: %w", err)
	}
	defer rows.Close()
	var out []exposure.Waiver
	for rows.Next() {
		var w exposure.Waiver
		var exp, rev sql.NullTime
		if err := rows.Scan(&w.ID, &w.Product, &w.Version, &w.Vuln, &w.Reason, &w.CreatedBy, &w.CreatedAt, &exp, &rev, &w.RevokedBy); err != nil {
			return nil, fmt.Errorf("find waivers: %w", err)
		}
		w.CreatedAt = w.CreatedAt.UTC()
		if exp.Valid {
			t := exp.Time.UTC()
			w.ExpiresAt = &t
		}
		if rev.Valid {
			t := rev.Time.UTC()
			w.RevokedAt = &t
		}
		out = append(out, w)
	}
	return out, rows.Err()
}

// PutSBOMCheck implements exposure.GateStore.
func (s *DB) PutSBOMCheck(ctx context.Context, sb *exposure.SBOM) error {
	comps, err := json.Marshal(sb.Components)
	if err != nil {
		return fmt.Errorf("put SBOM check: %w", err)
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO sbom_checks (digest, product, version, format, components, subject, uploaded_at) VALUES ($1,$2,$3,$4,$5,$6,$7)
ON CONFLICT (digest) DO UPDATE SET product = excluded.product, version = excluded.version, uploaded_at = excluded.uploaded_at`,
		sb.Digest, sb.Product, sb.Version, sb.Format, string(comps), sb.Subject, sb.UploadedAt.UTC())
	if err != nil {
		return fmt.Errorf("put SBOM check: %w", err)
	}
	return nil
}

// FindSBOMCheck implements exposure.GateStore.
func (s *DB) FindSBOMCheck(ctx context.Context, digest string) (*exposure.SBOM, error) {
	sb := &exposure.SBOM{Digest: digest}
	var comps string
	err := s.db.QueryRowContext(ctx, `SELECT product, version, format, components, subject, uploaded_at FROM sbom_checks WHERE digest = $1`, digest).
		Scan(&sb.Product, &sb.Version, &sb.Format, &comps, &sb.Subject, &sb.UploadedAt)
	if err != nil {
		return nil, notFound(err, "no SBOM with sha256 %s was checked", digest)
	}
	if err := json.Unmarshal([]byte(comps), &sb.Components); err != nil {
		return nil, fmt.Errorf("SBOM check %s: %w", digest, err)
	}
	sb.UploadedAt = sb.UploadedAt.UTC()
	return sb, nil
}
