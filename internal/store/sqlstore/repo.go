package sqlstore

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/repo"
	"upkeep.dev/upkeep/internal/trust"
)

const releaseCols = `product, version, hardware_ids, security_version, class, fixes, target, length, sha256, sha512, targets_version, published_at`

// CreateRelease implements release.Store.
func (s *DB) CreateRelease(ctx context.Context, r *release.Release) error {
	hw, _ := json.Marshal(r.HardwareIDs)
	fixes, _ := json.Marshal(r.Fixes)
	_, err := s.db.ExecContext(ctx, `INSERT INTO releases (`+releaseCols+`) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)`,
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

// PutMetadata implements repo.MetadataStore.
func (s *DB) PutMetadata(ctx context.Context, m *repo.Meta) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO metadata (repo, role, version, body, expires) VALUES ($1,$2,$3,$4,$5)`, m.Repo, m.Role, m.Version, m.Body, m.Expires.UTC())
	if s.dialect.IsUnique(err) {
		return apperr.E(apperr.Conflict, "%s %s version %d exists", m.Repo, m.Role, m.Version)
	}
	if err != nil {
		return fmt.Errorf("put %s %s v%d: %w", m.Repo, m.Role, m.Version, err)
	}
	return nil
}

func (s *DB) scanMeta(row interface{ Scan(...any) error }, repoName, role string) (*repo.Meta, error) {
	m := repo.Meta{Repo: repoName, Role: role}
	if err := row.Scan(&m.Version, &m.Body, &m.Expires); err != nil {
		return nil, notFound(err, "no %s %s metadata", repoName, role)
	}
	return &m, nil
}

// LatestMetadata implements repo.MetadataStore.
func (s *DB) LatestMetadata(ctx context.Context, repoName, role string) (*repo.Meta, error) {
	return s.scanMeta(s.db.QueryRowContext(ctx, `SELECT version, body, expires FROM metadata WHERE repo = $1 AND role = $2 ORDER BY version DESC LIMIT 1`, repoName, role), repoName, role)
}

// FindMetadata implements repo.MetadataStore.
func (s *DB) FindMetadata(ctx context.Context, repoName, role string, version int64) (*repo.Meta, error) {
	return s.scanMeta(s.db.QueryRowContext(ctx, `SELECT version, body, expires FROM metadata WHERE repo = $1 AND role = $2 AND version = $3`, repoName, role, version), repoName, role)
}

// directorViewsKept is how many versions of a device's director view stay servable, so that a
// device that read timestamp N can still fetch snapshot N and targets N while N+1 is signed.
const directorViewsKept = 3

// PutDirectorView implements repo.MetadataStore.
func (s *DB) PutDirectorView(ctx context.Context, deviceID string, prev int64, v *trust.DirectorView, as *repo.Assignment) error {
	return s.inTx(ctx, "put director view "+deviceID, func(tx *Tx) error {
		stale, err := s.putView(ctx, tx, repo.ViewPut{DeviceID: deviceID, Prev: prev, View: v, Assign: as})
		if stale {
			return apperr.E(apperr.Conflict, "director view of %s changed concurrently", deviceID)
		}
		return err
	})
}

// PutDirectorViews implements repo.MetadataStore.
func (s *DB) PutDirectorViews(ctx context.Context, puts []repo.ViewPut) (stale []string, err error) {
	err = s.inTx(ctx, "put director views", func(tx *Tx) error {
		for _, p := range puts {
			old, err := s.putView(ctx, tx, p)
			if err != nil {
				return err
			}
			if old {
				stale = append(stale, p.DeviceID)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return stale, nil
}

// putView writes one view in tx. stale: the device's latest version is not p.Prev, and nothing
// was written. A unique violation (another writer won between the check and the insert) is an
// apperr.Conflict error, after which the transaction is unusable on PostgreSQL.
func (s *DB) putView(ctx context.Context, tx *Tx, p repo.ViewPut) (stale bool, err error) {
	deviceID, v, as := p.DeviceID, p.View, p.Assign
	if v.Version != p.Prev+1 {
		return false, fmt.Errorf("put director view %s: version %d after %d", deviceID, v.Version, p.Prev)
	}
	var cur int64
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM director_views WHERE device_id = $1`, deviceID).Scan(&cur); err != nil {
		return false, fmt.Errorf("put director view %s: %w", deviceID, err)
	}
	if cur != p.Prev {
		return true, nil
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO director_views (device_id, version, targets, snapshot, timestamp, expires) VALUES ($1,$2,$3,$4,$5,$6)`,
		deviceID, v.Version, v.Targets, v.Snapshot, v.Timestamp, v.Expires.UTC())
	if s.dialect.IsUnique(err) {
		return false, apperr.E(apperr.Conflict, "director view of %s changed concurrently", deviceID)
	}
	if err != nil {
		return false, fmt.Errorf("put director view %s: %w", deviceID, err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM director_views WHERE device_id = $1 AND version <= $2`, deviceID, v.Version-directorViewsKept); err != nil {
		return false, fmt.Errorf("prune director views %s: %w", deviceID, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO director_changes (device_id, version) VALUES ($1, $2)`, deviceID, v.Version); err != nil {
		return false, fmt.Errorf("put director view %s: %w", deviceID, err)
	}
	// Monotonic: a slower writer never moves a device back to an older director version.
	if as == nil {
		_, err = tx.ExecContext(ctx, `UPDATE devices SET director_version = `+s.dialect.Greatest+`(director_version, $1) WHERE id = $2`, v.Version, deviceID)
	} else {
		_, err = tx.ExecContext(ctx, `UPDATE devices SET director_version = `+s.dialect.Greatest+`(director_version, $1), assigned = $2, assign_policy = $3 WHERE id = $4`,
			v.Version, as.Target, as.Policy, deviceID)
	}
	if err != nil {
		return false, fmt.Errorf("put director view %s: %w", deviceID, err)
	}
	return false, nil
}

// LatestDirectorVersions implements repo.MetadataStore.
func (s *DB) LatestDirectorVersions(ctx context.Context, ids []string) (map[string]int64, error) {
	out := make(map[string]int64, len(ids))
	for chunk := range slices.Chunk(ids, 500) {
		var args []any
		q := `SELECT device_id, max(version) FROM director_views WHERE device_id IN (` + placeholders(&args, chunk) + `) GROUP BY device_id`
		rows, err := s.db.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, fmt.Errorf("latest director versions: %w", err)
		}
		for rows.Next() {
			var id string
			var v int64
			if err := rows.Scan(&id, &v); err != nil {
				rows.Close()
				return nil, err
			}
			out[id] = v
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// DirectorChange is one new director view, in the order the database numbered them.
type DirectorChange struct {
	Seq      int64
	DeviceID string
	Version  int64
}

// DirectorChanges lists director views signed after seq, oldest first, at most limit. Sequence
// numbers are handed out at insert and may commit out of order; callers re-read a margin below
// the highest number they saw (versions only ever rise, so reading one twice is harmless).
func (s *DB) DirectorChanges(ctx context.Context, after int64, limit int) ([]DirectorChange, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seq, device_id, version FROM director_changes WHERE seq > $1 ORDER BY seq LIMIT $2`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("director changes: %w", err)
	}
	defer rows.Close()
	var out []DirectorChange
	for rows.Next() {
		var c DirectorChange
		if err := rows.Scan(&c.Seq, &c.DeviceID, &c.Version); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// LastDirectorChange is the highest sequence number so far (0 if none).
func (s *DB) LastDirectorChange(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) FROM director_changes`).Scan(&n)
	return n, err
}

// PruneDirectorChanges drops changes at or below seq.
func (s *DB) PruneDirectorChanges(ctx context.Context, seq int64) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM director_changes WHERE seq <= $1`, seq)
	return err
}

// FindDirectorView implements repo.MetadataStore.
func (s *DB) FindDirectorView(ctx context.Context, deviceID string, version int64) (*trust.DirectorView, error) {
	var v trust.DirectorView
	err := s.db.QueryRowContext(ctx, `SELECT version, targets, snapshot, timestamp, expires FROM director_views
		WHERE device_id = $1 AND ($2 = 0 OR version = $2) ORDER BY version DESC LIMIT 1`, deviceID, version).
		Scan(&v.Version, &v.Targets, &v.Snapshot, &v.Timestamp, &v.Expires)
	if err != nil {
		return nil, notFound(err, "no director metadata version %d for %s", version, deviceID)
	}
	return &v, nil
}

// Setting implements auth.Store.
func (s *DB) Setting(ctx context.Context, key string, init func() []byte) ([]byte, error) {
	if _, err := s.db.ExecContext(ctx, `INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING`, key, init()); err != nil {
		return nil, fmt.Errorf("setting %s: %w", key, err)
	}
	var v []byte
	if err := s.db.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = $1`, key).Scan(&v); err != nil {
		return nil, fmt.Errorf("setting %s: %w", key, err)
	}
	return v, nil
}
