package sqlstore

import (
	"context"
	"fmt"
	"time"
)

// CreateAdminToken implements auth.Store.
func (s *DB) CreateAdminToken(ctx context.Context, name string, hash []byte) error {
	if _, err := s.db.ExecContext(ctx, `INSERT INTO admin_tokens (hash, name, created_at) VALUES ($1,$2,$3)`, hash, name, time.Now().UTC()); err != nil {
		return fmt.Errorf("create admin token: %w", err)
	}
	return nil
}

// FindAdminToken implements auth.Store.
func (s *DB) FindAdminToken(ctx context.Context, hash []byte) (string, error) {
	var name string
	if err := s.db.QueryRowContext(ctx, `SELECT name FROM admin_tokens WHERE hash = $1`, hash).Scan(&name); err != nil {
		return "", notFound(err, "unknown token")
	}
	return name, nil
}

// CountAdminTokens implements auth.Store.
func (s *DB) CountAdminTokens(ctx context.Context) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM admin_tokens`).Scan(&n)
	return n, err
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
