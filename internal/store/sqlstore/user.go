package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/auth"
)

const userCols = `name, role, scope_groups, password_hash, created_at, disabled_at, sso_issuer, sso_subject`

func scanUser(row interface{ Scan(...any) error }) (*auth.User, error) {
	var u auth.User
	var groups string
	var disabled sql.NullTime
	if err := row.Scan(&u.Name, &u.Role, &groups, &u.PasswordHash, &u.CreatedAt, &disabled, &u.Issuer, &u.Subject); err != nil {
		return nil, err
	}
	u.Groups, u.DisabledAt = auth.SplitGroups(groups), disabled.Time
	return &u, nil
}

// CreateUser implements auth.UserStore.
func (s *DB) CreateUser(ctx context.Context, u *auth.User) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO users (`+userCols+`) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)`,
		u.Name, u.Role, auth.JoinGroups(u.Groups), u.PasswordHash, u.CreatedAt.UTC(), nullTime(u.DisabledAt), u.Issuer, u.Subject)
	if s.dialect.IsUnique(err) {
		return apperr.E(apperr.Conflict, "user %s exists", u.Name)
	}
	if err != nil {
		return fmt.Errorf("create user %s: %w", u.Name, err)
	}
	return nil
}

// FindUser implements auth.UserStore.
func (s *DB) FindUser(ctx context.Context, name string) (*auth.User, error) {
	u, err := scanUser(s.db.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE name = $1`, name))
	if err != nil {
		return nil, notFound(err, "no user %s", name)
	}
	return u, nil
}

// FindUserBySubject implements auth.UserStore.
func (s *DB) FindUserBySubject(ctx context.Context, issuer, subject string) (*auth.User, error) {
	if subject == "" {
		return nil, apperr.E(apperr.NotFound, "no user with an empty subject")
	}
	u, err := scanUser(s.db.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE sso_issuer = $1 AND sso_subject = $2`, issuer, subject))
	if err != nil {
		return nil, notFound(err, "no user for this identity provider account")
	}
	return u, nil
}

// FindUsers implements auth.UserStore.
func (s *DB) FindUsers(ctx context.Context) ([]*auth.User, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+userCols+` FROM users ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("find users: %w", err)
	}
	defer rows.Close()
	var out []*auth.User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("find users: %w", err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// UpdateUser implements auth.UserStore.
func (s *DB) UpdateUser(ctx context.Context, name string, up auth.UserUpdate, at time.Time) error {
	return s.inTx(ctx, "update user "+name, func(tx *Tx) error {
		u, err := scanUser(tx.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE name = $1`, name))
		if err != nil {
			return notFound(err, "no user %s", name)
		}
		revoke := up.Disable && u.DisabledAt.IsZero()
		if up.Role != nil && *up.Role != u.Role {
			u.Role, revoke = *up.Role, true
		}
		if up.Groups != nil && auth.JoinGroups(*up.Groups) != auth.JoinGroups(u.Groups) {
			u.Groups, revoke = *up.Groups, true
		}
		if up.PasswordHash != nil {
			u.PasswordHash = *up.PasswordHash
		}
		if up.Disable && u.DisabledAt.IsZero() {
			u.DisabledAt = at.UTC()
		}
		if revoke && (u.Role != auth.RoleAdmin || !u.DisabledAt.IsZero()) {
			// Another enabled admin user must remain. On PostgreSQL the admin rows are locked, as
			// in RevokeOperatorToken, so that two such changes at once cannot both pass.
			lock := ""
			if s.dialect.Name == "postgres" {
				lock = " FOR UPDATE"
			}
			rows, err := tx.QueryContext(ctx, `SELECT name FROM users WHERE role = $1 AND disabled_at IS NULL AND name <> $2 ORDER BY name`+lock, auth.RoleAdmin, name)
			if err != nil {
				return fmt.Errorf("update user %s: %w", name, err)
			}
			others := 0
			for rows.Next() {
				others++
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return fmt.Errorf("update user %s: %w", name, err)
			}
			wasAdmin := false
			if err := tx.QueryRowContext(ctx, `SELECT role = $1 AND disabled_at IS NULL FROM users WHERE name = $2`, auth.RoleAdmin, name).Scan(&wasAdmin); err != nil {
				return fmt.Errorf("update user %s: %w", name, err)
			}
			if wasAdmin && others == 0 {
				return apperr.E(apperr.Conflict, "user %s is the last enabled admin: make another user admin first", name)
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET role = $1, scope_groups = $2, password_hash = $3, disabled_at = $4 WHERE name = $5`,
			u.Role, auth.JoinGroups(u.Groups), u.PasswordHash, nullTime(u.DisabledAt), name); err != nil {
			return fmt.Errorf("update user %s: %w", name, err)
		}
		if !revoke {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE sessions SET revoked_at = $1 WHERE user_name = $2 AND revoked_at IS NULL`, at.UTC(), name); err != nil {
			return fmt.Errorf("update user %s: revoke sessions: %w", name, err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE admin_tokens SET revoked_at = $1 WHERE user_name = $2 AND revoked_at IS NULL`, at.UTC(), name); err != nil {
			return fmt.Errorf("update user %s: revoke tokens: %w", name, err)
		}
		return bumpRevocations(ctx, tx)
	})
}

const sessionCols = `id, hash, user_name, csrf, created_at, expires_at, last_seen, revoked_at`

// CreateSession implements auth.UserStore.
func (s *DB) CreateSession(ctx context.Context, ss *auth.Session) error {
	if _, err := s.db.ExecContext(ctx, `INSERT INTO sessions (`+sessionCols+`) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)`,
		ss.ID, ss.Hash, ss.User, ss.CSRF, ss.CreatedAt.UTC(), ss.ExpiresAt.UTC(), ss.LastSeen.UTC(), nullTime(ss.RevokedAt)); err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	return nil
}

// FindSession implements auth.UserStore.
func (s *DB) FindSession(ctx context.Context, hash []byte) (*auth.Session, error) {
	var ss auth.Session
	var revoked sql.NullTime
	err := s.db.QueryRowContext(ctx, `SELECT `+sessionCols+` FROM sessions WHERE hash = $1`, hash).
		Scan(&ss.ID, &ss.Hash, &ss.User, &ss.CSRF, &ss.CreatedAt, &ss.ExpiresAt, &ss.LastSeen, &revoked)
	if err != nil {
		return nil, notFound(err, "unknown session")
	}
	ss.RevokedAt = revoked.Time
	return &ss, nil
}

// TouchSession implements auth.UserStore.
func (s *DB) TouchSession(ctx context.Context, id string, at time.Time) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE sessions SET last_seen = $1 WHERE id = $2 AND last_seen < $1`, at.UTC(), id); err != nil {
		return fmt.Errorf("touch session: %w", err)
	}
	return nil
}

// PruneSessions implements auth.UserStore.
func (s *DB) PruneSessions(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM sessions WHERE expires_at < $1 OR revoked_at < $1`, before.UTC())
	if err != nil {
		return 0, fmt.Errorf("prune sessions: %w", err)
	}
	return res.RowsAffected()
}

// RevokeSession implements auth.UserStore.
func (s *DB) RevokeSession(ctx context.Context, id string, at time.Time) error {
	return s.inTx(ctx, "revoke session", func(tx *Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL`, at.UTC(), id)
		if err != nil {
			return fmt.Errorf("revoke session: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		return bumpRevocations(ctx, tx)
	})
}
