package exposure_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/store/postgres"
	"upkeep.dev/upkeep/internal/store/sqlstore"
	"upkeep.dev/upkeep/internal/store/storetest"
)

// TestReplicasShareImports: two servers on one database (two Services, each with its own
// connection pool); an import on A reaches B's index at B's next Refresh, and A, which made the
// change, has no reason to reload.
func TestReplicasShareImports(t *testing.T) {
	dsn := storetest.PostgresDSN(t)
	open := func() *sqlstore.DB {
		db, err := postgres.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	c := &clock{t: time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)}
	a, b := newService(open(), c), newService(open(), c)

	importFile(t, a, filepath.Join(osvDir, "GO-2023-2402.json"))
	if _, err := b.Advisory("GO-2023-2402"); !apperr.Is(err, apperr.NotFound) {
		t.Fatalf("B knew of the import before refreshing: %v", err)
	}
	if reloaded, err := a.Refresh(ctx); err != nil || reloaded {
		t.Errorf("A reloaded after its own import: %v %v", reloaded, err)
	}
	if reloaded, err := b.Refresh(ctx); err != nil || !reloaded {
		t.Fatalf("B did not reload: %v %v", reloaded, err)
	}
	if _, err := b.Advisory("CVE-2023-48795"); err != nil {
		t.Errorf("B after refresh: %v", err)
	}
	if reloaded, err := b.Refresh(ctx); err != nil || reloaded {
		t.Errorf("B reloaded with nothing new: %v %v", reloaded, err)
	}

	// VEX statements travel the same way; an unchanged re-import moves nothing.
	if _, err := b.Import(ctx, "vex.json", strings.NewReader(csafFW)); err != nil {
		t.Fatal(err)
	}
	if reloaded, _ := a.Refresh(ctx); !reloaded {
		t.Error("A did not reload after B's VEX import")
	}
	if _, err := b.Import(ctx, "vex.json", strings.NewReader(csafFW)); err != nil {
		t.Fatal(err)
	}
	if reloaded, _ := a.Refresh(ctx); reloaded {
		t.Error("A reloaded after an import that changed nothing")
	}
}
