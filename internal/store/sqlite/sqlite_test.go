package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"upkeep.dev/upkeep/internal/store/sqlite"
	"upkeep.dev/upkeep/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store {
		db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "upkeep.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	})
}
