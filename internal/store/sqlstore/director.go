package sqlstore

import (
	"context"
	"fmt"
	"slices"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/director"
	"upkeep.dev/upkeep/internal/uptane"
)

// The director's tables: director_views (the latest few views of each device, stored with the
// device's assignment) and director_changes (new views in order, which replicas follow).

// directorViewsKept is how many versions of a device's director view stay servable, so that a
// device that read timestamp N can still fetch snapshot N and targets N while N+1 is signed.
const directorViewsKept = 3

// PutDirectorView implements director.Store.
func (s *DB) PutDirectorView(ctx context.Context, deviceID string, prev int64, v *uptane.DirectorView, as *director.Assignment) error {
	return s.inTx(ctx, "put director view "+deviceID, func(tx *Tx) error {
		stale, err := s.putView(ctx, tx, director.ViewPut{DeviceID: deviceID, Prev: prev, View: v, Assign: as})
		if stale {
			return apperr.E(apperr.Conflict, "director view of %s changed concurrently", deviceID)
		}
		return err
	})
}

// PutDirectorViews implements director.Store.
func (s *DB) PutDirectorViews(ctx context.Context, puts []director.ViewPut) (stale []string, err error) {
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
func (s *DB) putView(ctx context.Context, tx *Tx, p director.ViewPut) (stale bool, err error) {
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

// LatestDirectorVersions implements director.Store.
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

// FindDirectorView implements director.Store.
func (s *DB) FindDirectorView(ctx context.Context, deviceID string, version int64) (*uptane.DirectorView, error) {
	var v uptane.DirectorView
	err := s.db.QueryRowContext(ctx, `SELECT version, targets, snapshot, timestamp, expires FROM director_views
		WHERE device_id = $1 AND ($2 = 0 OR version = $2) ORDER BY version DESC LIMIT 1`, deviceID, version).
		Scan(&v.Version, &v.Targets, &v.Snapshot, &v.Timestamp, &v.Expires)
	if err != nil {
		return nil, notFound(err, "no director metadata version %d for %s", version, deviceID)
	}
	return &v, nil
}
