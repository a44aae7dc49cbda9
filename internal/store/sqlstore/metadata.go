package sqlstore

import (
	"context"
	"fmt"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/imagerepo"
	"upkeep.dev/upkeep/internal/release"
)

// The metadata table holds every version of the image repository's roles and of the director
// root; release.go the releases their targets publish.

// PutMetadata implements imagerepo.MetadataStore.
func (s *DB) PutMetadata(ctx context.Context, m *imagerepo.Meta) error {
	return s.putMetadata(ctx, s.db, m)
}

func (s *DB) putMetadata(ctx context.Context, ex execer, m *imagerepo.Meta) error {
	_, err := ex.ExecContext(ctx, `INSERT INTO metadata (repo, role, version, body, expires) VALUES ($1,$2,$3,$4,$5)`, m.Repo, m.Role, m.Version, m.Body, m.Expires.UTC())
	if s.dialect.IsUnique(err) {
		return apperr.E(apperr.Conflict, "%s %s version %d exists", m.Repo, m.Role, m.Version)
	}
	if err != nil {
		return fmt.Errorf("put %s %s v%d: %w", m.Repo, m.Role, m.Version, err)
	}
	return nil
}

func (s *DB) scanMeta(row interface{ Scan(...any) error }, repoName, role string) (*imagerepo.Meta, error) {
	m := imagerepo.Meta{Repo: repoName, Role: role}
	if err := row.Scan(&m.Version, &m.Body, &m.Expires); err != nil {
		return nil, notFound(err, "no %s %s metadata", repoName, role)
	}
	return &m, nil
}

// LatestVersions implements imagerepo.MetadataStore (the primary key's index answers it).
func (s *DB) LatestVersions(ctx context.Context, repoName string) (map[string]int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT role, MAX(version) FROM metadata WHERE repo = $1 GROUP BY role`, repoName)
	if err != nil {
		return nil, fmt.Errorf("latest %s metadata versions: %w", repoName, err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var role string
		var v int64
		if err := rows.Scan(&role, &v); err != nil {
			return nil, fmt.Errorf("latest %s metadata versions: %w", repoName, err)
		}
		out[role] = v
	}
	return out, rows.Err()
}

// LatestMetadata implements imagerepo.MetadataStore.
func (s *DB) LatestMetadata(ctx context.Context, repoName, role string) (*imagerepo.Meta, error) {
	return s.scanMeta(s.db.QueryRowContext(ctx, `SELECT version, body, expires FROM metadata WHERE repo = $1 AND role = $2 ORDER BY version DESC LIMIT 1`, repoName, role), repoName, role)
}

// FindMetadata implements imagerepo.MetadataStore.
func (s *DB) FindMetadata(ctx context.Context, repoName, role string, version int64) (*imagerepo.Meta, error) {
	return s.scanMeta(s.db.QueryRowContext(ctx, `SELECT version, body, expires FROM metadata WHERE repo = $1 AND role = $2 AND version = $3`, repoName, role, version), repoName, role)
}

// PublishTargets implements imagerepo.Store: the targets metadata and the release row in one
// transaction.
func (s *DB) PublishTargets(ctx context.Context, m *imagerepo.Meta, rel *release.Release) error {
	return s.inTx(ctx, "publish "+rel.Ref(), func(tx *Tx) error {
		if err := s.putMetadata(ctx, tx, m); err != nil {
			return err
		}
		return s.createRelease(ctx, tx, rel)
	})
}
