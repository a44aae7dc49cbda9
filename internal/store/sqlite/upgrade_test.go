package sqlite

import (
	"context"
	"database/sql"
	"io/fs"
	"path/filepath"
	"testing"
	"time"

	"github.com/pressly/goose/v3"

	"upkeep.dev/upkeep/internal/auth"
)

// TestUsersMigrationOwnsFirstToken: a database from before users (migration 10) whose first
// operator token the server printed gets the user "admin" owning that token, and only that one.
func TestUsersMigrationOwnsFirstToken(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "upkeep.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	sub, _ := fs.Sub(migrations, "migrations")
	p, err := goose.NewProvider(goose.DialectSQLite3, db, sub)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 10); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().UTC().Truncate(time.Second)
	for i, name := range []string{"admin", "dashboard"} {
		_, h := auth.NewSecret(auth.AdminPrefix)
		if _, err := db.ExecContext(ctx, `INSERT INTO admin_tokens (id, name, role, hash, created_at) VALUES ($1, $2, 'admin', $3, $4)`,
			auth.TokenID(h), name, h, t0.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	u, err := s.FindUser(ctx, "admin")
	if err != nil || u.Role != auth.RoleAdmin || u.PasswordHash != "" {
		t.Fatalf("user admin after the migration: %+v, %v", u, err)
	}
	ts, err := s.FindOperatorTokens(ctx)
	if err != nil || len(ts) != 2 || ts[0].User != "admin" || ts[1].User != "" {
		t.Fatalf("tokens after the migration: %+v, %v", ts, err)
	}
}
