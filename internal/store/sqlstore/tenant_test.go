package sqlstore_test

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/store/postgres"
	"upkeep.dev/upkeep/internal/store/sqlite"
	"upkeep.dev/upkeep/internal/store/sqlstore"
	"upkeep.dev/upkeep/internal/store/storetest"
)

// TestTenants: the tenants list keeps names, times, sealed keys and readiness; a name is taken once; a
// removed tenant is gone; on SQLite and PostgreSQL.
func TestTenants(t *testing.T) {
	ctx := context.Background()
	run := func(t *testing.T, db *sqlstore.DB) {
		t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		for _, n := range []string{"b", "a"} {
			if err := db.CreateTenant(ctx, &sqlstore.Tenant{Name: n, CreatedAt: t0, SealedKeys: []byte{0, 1, 2, byte(n[0])}}); err != nil {
				t.Fatal(err)
			}
		}
		if err := db.CreateTenant(ctx, &sqlstore.Tenant{Name: "a", CreatedAt: t0, SealedKeys: []byte{9}}); !apperr.Is(err, apperr.Conflict) {
			t.Fatalf("second tenant a: %v, want conflict", err)
		}
		if err := db.MarkTenantReady(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		ts, err := db.FindTenants(ctx)
		if err != nil || len(ts) != 2 || ts[0].Name != "a" || !ts[0].CreatedAt.Equal(t0) || !bytes.Equal(ts[0].SealedKeys, []byte{0, 1, 2, 'a'}) || !ts[0].Ready || ts[1].Ready {
			t.Fatalf("tenants %v %+v", err, ts)
		}
		if err := db.DeleteTenant(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		if err := db.DeleteTenant(ctx, "unknown"); err != nil {
			t.Fatal(err)
		}
		if ts, err := db.FindTenants(ctx); err != nil || len(ts) != 1 || ts[0].Name != "b" {
			t.Fatalf("tenants after delete %v %+v", err, ts)
		}
	}
	t.Run("sqlite", func(t *testing.T) {
		db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "upkeep.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		run(t, db)
	})
	t.Run("postgres", func(t *testing.T) {
		db, err := postgres.Open(ctx, storetest.PostgresDSN(t))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		run(t, db)
	})
}
