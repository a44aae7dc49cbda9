package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"upkeep.dev/upkeep/internal/deltagen"
)

var _ deltagen.Store = (*DB)(nil)

const deltaJobColumns = `id, product, version, from_version, image, source, image_sha256, image_length,
source_sha256, source_length, devices, state, done, patch_sha256, patch_sha512, patch_length, error, created_at, updated_at`

func scanDeltaJob(sc interface{ Scan(...any) error }) (*deltagen.Job, error) {
	var j deltagen.Job
	err := sc.Scan(&j.ID, &j.Product, &j.Version, &j.From, &j.Image, &j.Source, &j.ImageSHA256, &j.ImageLength,
		&j.SourceSHA256, &j.SourceLength, &j.Devices, &j.State, &j.Done, &j.PatchSHA256, &j.PatchSHA512, &j.PatchLength,
		&j.Error, &j.CreatedAt, &j.UpdatedAt)
	j.CreatedAt, j.UpdatedAt = j.CreatedAt.UTC(), j.UpdatedAt.UTC()
	return &j, err
}

// AddDeltaJob implements deltagen.Store.
func (s *DB) AddDeltaJob(ctx context.Context, j *deltagen.Job) (bool, error) {
	var added bool
	err := s.inTx(ctx, "add delta job", func(tx *Tx) error {
		var id int64
		var state string
		err := tx.QueryRowContext(ctx, `SELECT id, state FROM delta_jobs WHERE image = $1 AND source_sha256 = $2`, j.Image, j.SourceSHA256).Scan(&id, &state)
		now := j.CreatedAt.UTC()
		switch {
		case errors.Is(err, sql.ErrNoRows):
			j.State, j.UpdatedAt = deltagen.Queued, now
			added = true
			return tx.QueryRowContext(ctx, `INSERT INTO delta_jobs (product, version, from_version, image, source, image_sha256, image_length,
source_sha256, source_length, devices, state, created_at, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13) RETURNING id`,
				j.Product, j.Version, j.From, j.Image, j.Source, j.ImageSHA256, j.ImageLength, j.SourceSHA256, j.SourceLength,
				j.Devices, j.State, j.CreatedAt, j.UpdatedAt).Scan(&j.ID)
		case err != nil:
			return err
		case state == deltagen.Failed:
			added = true
			_, err := tx.ExecContext(ctx, `UPDATE delta_jobs SET state = $1, error = '', done = 0, devices = $2, updated_at = $3 WHERE id = $4`,
				deltagen.Queued, j.Devices, now, id)
			return err
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("add delta job %s: %w", j.Target(), err)
	}
	return added, nil
}

// ClaimDeltaJob implements deltagen.Store. The claim is one UPDATE of a row still in the state
// it was selected in, so that two replicas never both take one.
func (s *DB) ClaimDeltaJob(ctx context.Context, now, staleBefore time.Time) (*deltagen.Job, error) {
	var out *deltagen.Job
	err := s.inTx(ctx, "claim delta job", func(tx *Tx) error {
		row := tx.QueryRowContext(ctx, `UPDATE delta_jobs SET state = $1, done = 0, updated_at = $2
WHERE id = (SELECT id FROM delta_jobs WHERE state = $3 OR (state = $1 AND updated_at < $4) ORDER BY id LIMIT 1)
  AND (state = $3 OR (state = $1 AND updated_at < $4))
RETURNING `+deltaJobColumns, deltagen.Running, now.UTC(), deltagen.Queued, staleBefore.UTC())
		j, err := scanDeltaJob(row)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		out = j
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("claim delta job: %w", err)
	}
	return out, nil
}

// ProgressDeltaJob implements deltagen.Store.
func (s *DB) ProgressDeltaJob(ctx context.Context, id, done int64, now time.Time) error {
	return s.inTx(ctx, "delta job progress", func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE delta_jobs SET done = $1, updated_at = $2 WHERE id = $3 AND state = $4`, done, now.UTC(), id, deltagen.Running)
		return err
	})
}

// FinishDeltaJob implements deltagen.Store.
func (s *DB) FinishDeltaJob(ctx context.Context, j *deltagen.Job) error {
	return s.inTx(ctx, "finish delta job", func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE delta_jobs SET state = $1, done = $2, patch_sha256 = $3, patch_sha512 = $4, patch_length = $5,
error = $6, updated_at = $7 WHERE id = $8`, j.State, j.Done, j.PatchSHA256, j.PatchSHA512, j.PatchLength, j.Error, j.UpdatedAt.UTC(), j.ID)
		return err
	})
}

// FindDeltaJobs implements deltagen.Store.
func (s *DB) FindDeltaJobs(ctx context.Context, product, version string) ([]*deltagen.Job, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+deltaJobColumns+` FROM delta_jobs
WHERE product = $1 AND ($2 = '' OR version = $2) ORDER BY id`, product, version)
	if err != nil {
		return nil, fmt.Errorf("find delta jobs: %w", err)
	}
	defer rows.Close()
	var out []*deltagen.Job
	for rows.Next() {
		j, err := scanDeltaJob(rows)
		if err != nil {
			return nil, fmt.Errorf("find delta jobs: %w", err)
		}
		out = append(out, j)
	}
	return out, rows.Err()
}
