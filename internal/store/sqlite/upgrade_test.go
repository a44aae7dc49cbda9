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
	"upkeep.dev/upkeep/internal/store/storetest"
)

// TestUsersMigrationOwnsFirstToken: a database from before users (migration 10) whose first
// operator token the server printed gets the user "admin" owning that token, and only that one.
func TestUsersMigrationOwnsFirstToken(t *testing.T) {
	ctx := context.Background()
	path, db := migratedTo(t, 10)
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

// TestSeenDayMigration: migration 24 fills the day last seen of the devices already stored,
// as the store then keeps it (days since 1970 UTC; NULL for a device never seen).
func TestSeenDayMigration(t *testing.T) {
	ctx := context.Background()
	path, db := migratedTo(t, 23)
	seen := time.Date(2026, 1, 2, 23, 59, 59, 999, time.UTC)
	for _, d := range []struct {
		id   string
		seen sql.NullTime
	}{{"seen", sql.NullTime{Time: seen, Valid: true}}, {"never", sql.NullTime{}}} {
		if _, err := db.ExecContext(ctx, `INSERT INTO devices (id, public_key, serial, product, hardware_id, status, last_seen, enrolled_at)
VALUES ($1, x'00', 's', 'p', 'h', 'accepted', $2, $3)`, d.id, d.seen, seen); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	days := map[string]sql.NullInt64{}
	rows, err := s.SQL().QueryContext(ctx, `SELECT id, seen_day FROM devices`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var day sql.NullInt64
		if err := rows.Scan(&id, &day); err != nil {
			t.Fatal(err)
		}
		days[id] = day
	}
	if want := seen.Unix() / 86400; days["seen"] != (sql.NullInt64{Int64: want, Valid: true}) || days["never"].Valid {
		t.Errorf("seen_day after the migration: %v, want %d and NULL", days, want)
	}
	for cutoff, stale := range map[time.Time]int{seen: 1, seen.Add(time.Nanosecond): 2, seen.Add(-time.Hour): 1} {
		counts, err := s.CountFleet(ctx, cutoff)
		if err != nil || len(counts) != 1 || counts[0].Stale != stale {
			t.Errorf("CountFleet(%v) = %+v, %v; want %d stale", cutoff, counts, err, stale)
		}
	}
}

// TestAttributesMigration: migration 25 fills the table of attribute values from the devices
// already stored, so that the console's attribute filter finds them (storetest).
func TestAttributesMigration(t *testing.T) {
	ctx := context.Background()
	path, db := migratedTo(t, 24)
	for id, attrs := range storetest.AttributesBefore25 {
		if _, err := db.ExecContext(ctx, `INSERT INTO devices (id, public_key, serial, product, hardware_id, attributes, status, enrolled_at)
VALUES ($1, x'00', 's', 'p', 'h', $2, 'accepted', $3)`, id, storetest.AttributesJSON(attrs), time.Now().UTC()); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	storetest.CheckAttributesUpgrade(t, s)
}

// migratedTo returns the path of a new database migrated up to version, open without the
// later migrations.
func migratedTo(t *testing.T, version int64) (string, *sql.DB) {
	t.Helper()
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
	if _, err := p.UpTo(context.Background(), version); err != nil {
		t.Fatal(err)
	}
	return path, db
}
