package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"slices"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/auth"
)

const operatorCols = `id, name, role, hash, created_at, expires_at, revoked_at, last_used, user_name, scope_groups`

func scanOperator(row interface{ Scan(...any) error }) (*auth.OperatorToken, error) {
	var t auth.OperatorToken
	var exp, revoked, used sql.NullTime
	var groups string
	if err := row.Scan(&t.ID, &t.Name, &t.Role, &t.Hash, &t.CreatedAt, &exp, &revoked, &used, &t.User, &groups); err != nil {
		return nil, err
	}
	t.Groups = auth.SplitGroups(groups)
	t.ExpiresAt, t.RevokedAt, t.LastUsed = exp.Time, revoked.Time, used.Time
	return &t, nil
}

func nullTime(t time.Time) sql.NullTime { return sql.NullTime{Time: t.UTC(), Valid: !t.IsZero()} }

// CreateOperatorToken implements auth.Store.
func (s *DB) CreateOperatorToken(ctx context.Context, t *auth.OperatorToken) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO admin_tokens (`+operatorCols+`) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)`,
		t.ID, t.Name, t.Role, t.Hash, t.CreatedAt.UTC(), nullTime(t.ExpiresAt), nullTime(t.RevokedAt), nullTime(t.LastUsed), t.User, auth.JoinGroups(t.Groups))
	if s.dialect.IsUnique(err) {
		return apperr.E(apperr.Conflict, "operator token %s exists", t.ID)
	}
	if err != nil {
		return fmt.Errorf("create operator token: %w", err)
	}
	return nil
}

// FindOperatorToken implements auth.Store.
func (s *DB) FindOperatorToken(ctx context.Context, hash []byte) (*auth.OperatorToken, error) {
	t, err := scanOperator(s.db.QueryRowContext(ctx, `SELECT `+operatorCols+` FROM admin_tokens WHERE hash = $1`, hash))
	if err != nil {
		return nil, notFound(err, "unknown operator token")
	}
	return t, nil
}

// FindOperatorTokens implements auth.Store.
func (s *DB) FindOperatorTokens(ctx context.Context) ([]*auth.OperatorToken, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+operatorCols+` FROM admin_tokens ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("find operator tokens: %w", err)
	}
	defer rows.Close()
	var out []*auth.OperatorToken
	for rows.Next() {
		t, err := scanOperator(rows)
		if err != nil {
			return nil, fmt.Errorf("find operator tokens: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// RevokeOperatorToken implements auth.Store.
func (s *DB) RevokeOperatorToken(ctx context.Context, id string, at time.Time) error {
	return s.inTx(ctx, "revoke operator token "+id, func(tx *Tx) error {
		var role string
		var revoked sql.NullTime
		if err := tx.QueryRowContext(ctx, `SELECT role, revoked_at FROM admin_tokens WHERE id = $1`, id).Scan(&role, &revoked); err != nil {
			return notFound(err, "no operator token %s", id)
		}
		if revoked.Valid {
			return nil
		}
		if role == auth.RoleAdmin {
			// Another active admin must remain. Two replicas revoking the last two admins at once
			// could both pass on PostgreSQL's read committed: each locks every active admin row
			// (this one included, in id order), so the second waits, re-reads and finds the
			// first's token revoked. SQLite transactions here take the write lock at begin.
			lock := ""
			if s.dialect.Name == "postgres" {
				lock = " FOR UPDATE"
			}
			rows, err := tx.QueryContext(ctx, `SELECT id, expires_at FROM admin_tokens WHERE role = $1 AND revoked_at IS NULL ORDER BY id`+lock, auth.RoleAdmin)
			if err != nil {
				return fmt.Errorf("revoke operator token %s: %w", id, err)
			}
			others := 0
			for rows.Next() {
				var other string
				var exp sql.NullTime
				if err := rows.Scan(&other, &exp); err != nil {
					rows.Close()
					return fmt.Errorf("revoke operator token %s: %w", id, err)
				}
				if other != id && (!exp.Valid || at.Before(exp.Time)) {
					others++
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return fmt.Errorf("revoke operator token %s: %w", id, err)
			}
			if others == 0 {
				return apperr.E(apperr.Conflict, "operator token %s is the last active admin token: create another admin token first", id)
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE admin_tokens SET revoked_at = $1 WHERE id = $2`, at.UTC(), id); err != nil {
			return fmt.Errorf("revoke operator token %s: %w", id, err)
		}
		return bumpRevocations(ctx, tx)
	})
}

// TouchOperatorTokens implements auth.Store.
func (s *DB) TouchOperatorTokens(ctx context.Context, used map[string]time.Time) error {
	if len(used) == 0 {
		return nil
	}
	return s.inTx(ctx, "touch operator tokens", func(tx *Tx) error {
		for _, id := range slices.Sorted(maps.Keys(used)) {
			if _, err := tx.ExecContext(ctx, `UPDATE admin_tokens SET last_used = $1 WHERE id = $2 AND (last_used IS NULL OR last_used < $1)`, used[id].UTC(), id); err != nil {
				return fmt.Errorf("touch operator token %s: %w", id, err)
			}
		}
		return nil
	})
}

// CountAdminTokens implements auth.Store.
func (s *DB) CountAdminTokens(ctx context.Context) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM admin_tokens`).Scan(&n)
	return n, err
}

// RevocationGeneration implements auth.Store.
func (s *DB) RevocationGeneration(ctx context.Context) (int64, error) {
	var g int64
	if err := s.db.QueryRowContext(ctx, `SELECT gen FROM revocation_generation WHERE id = 1`).Scan(&g); err != nil {
		return 0, fmt.Errorf("revocation generation: %w", err)
	}
	return g, nil
}

// FindSetting implements auth.Store.
func (s *DB) FindSetting(ctx context.Context, key string) ([]byte, error) {
	var v []byte
	if err := s.db.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = $1`, key).Scan(&v); err != nil {
		return nil, notFound(err, "no setting %s", key)
	}
	return v, nil
}

// DeleteSetting implements auth.Store.
func (s *DB) DeleteSetting(ctx context.Context, key string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM settings WHERE key = $1`, key); err != nil {
		return fmt.Errorf("delete setting %s: %w", key, err)
	}
	return nil
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
