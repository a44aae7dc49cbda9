package sqlstore

import (
	"context"
	"encoding/json"
	"fmt"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/release"
)

const releaseCols = `product, version, hardware_ids, security_version, class, fixes, target, length, sha256, sha512, targets_version, published_at`

// CreateRelease implements release.Store.
func (s *DB) CreateRelease(ctx context.Context, r *release.Release) error {
	return s.createRelease(ctx, s.db, r)
}

func (s *DB) createRelease(ctx context.Context, ex execer, r *release.Release) error {
	hw, _ := json.Marshal(r.HardwareIDs)
	fixes, _ := json.Marshal(r.Fixes)
	_, err := ex.ExecContext(ctx, `INSERT INTO releases (`+releaseCols+`) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)`,
		r.Product, r.Version, string(hw), r.SecurityVersion, r.Class, string(fixes), r.Target, r.Length, r.SHA256, r.SHA512, r.TargetsVersion, r.PublishedAt.UTC())
	if s.dialect.IsUnique(err) {
		return apperr.E(apperr.Conflict, "release %s already exists", r.Ref())
	}
	if err != nil {
		return fmt.Errorf("create release %s: %w", r.Ref(), err)
	}
	return nil
}

func scanRelease(row interface{ Scan(...any) error }) (*release.Release, error) {
	var r release.Release
	var hw, fixes string
	if err := row.Scan(&r.Product, &r.Version, &hw, &r.SecurityVersion, &r.Class, &fixes, &r.Target, &r.Length, &r.SHA256, &r.SHA512, &r.TargetsVersion, &r.PublishedAt); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(hw), &r.HardwareIDs); err != nil {
		return nil, fmt.Errorf("release %s hardware ids: %w", r.Ref(), err)
	}
	if err := json.Unmarshal([]byte(fixes), &r.Fixes); err != nil {
		return nil, fmt.Errorf("release %s fixes: %w", r.Ref(), err)
	}
	return &r, nil
}

// FindRelease implements release.Store.
func (s *DB) FindRelease(ctx context.Context, product, version string) (*release.Release, error) {
	r, err := scanRelease(s.db.QueryRowContext(ctx, `SELECT `+releaseCols+` FROM releases WHERE product = $1 AND version = $2`, product, version))
	if err != nil {
		return nil, notFound(err, "release %s@%s not found", product, version)
	}
	return r, nil
}

// CountRunning implements release.Store.
func (s *DB) CountRunning(ctx context.Context, product string) (map[string]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT installed_target, COUNT(*) FROM devices
WHERE product = $1 AND installed_target <> '' AND status <> $2 GROUP BY installed_target`, product, fleet.StatusDecommissioned)
	if err != nil {
		return nil, fmt.Errorf("count running: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var target string
		var n int
		if err := rows.Scan(&target, &n); err != nil {
			return nil, fmt.Errorf("count running: %w", err)
		}
		out[target] = n
	}
	return out, rows.Err()
}

// FindReleases implements release.Store.
func (s *DB) FindReleases(ctx context.Context, f release.Filter) ([]*release.Release, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+releaseCols+` FROM releases WHERE ($1 = '' OR product = $1) AND ($2 = '' OR target = $2) ORDER BY published_at DESC, targets_version DESC`, f.Product, f.Target)
	if err != nil {
		return nil, fmt.Errorf("find releases: %w", err)
	}
	defer rows.Close()
	var out []*release.Release
	for rows.Next() {
		r, err := scanRelease(rows)
		if err != nil {
			return nil, fmt.Errorf("find releases: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
