package postgres_test

import (
	"context"
	"testing"

	"upkeep.dev/upkeep/internal/store/postgres"
	"upkeep.dev/upkeep/internal/store/storetest"
)

// TestConformance runs the store suite against the real PostgreSQL named by
// UPKEEP_TEST_POSTGRES (CI sets it), each test in a schema of its own.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store {
		db, err := postgres.Open(context.Background(), storetest.PostgresDSN(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	})
}
