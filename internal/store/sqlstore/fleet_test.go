package sqlstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/store/postgres"
	"upkeep.dev/upkeep/internal/store/sqlite"
	"upkeep.dev/upkeep/internal/store/sqlstore"
	"upkeep.dev/upkeep/internal/store/storetest"
)

// TestTouchDevicesBatch: last-seen times of more devices than one statement takes are all
// written, unknown ids are ignored, and a time never moves back; on SQLite and PostgreSQL.
func TestTouchDevicesBatch(t *testing.T) {
	ctx := context.Background()
	run := func(t *testing.T, db *sqlstore.DB) {
		t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		const n = 1500 // two statements
		seen := map[string]time.Time{"unknown": t0}
		for i := range n {
			id := fmt.Sprintf("dev%04d", i)
			if err := db.CreateDevice(ctx, &fleet.Device{ID: id, PublicKey: []byte{byte(i)}, Serial: id, Product: "p", HardwareID: "h", Status: fleet.StatusAccepted, EnrolledAt: t0}); err != nil {
				t.Fatal(err)
			}
			seen[id] = t0.Add(time.Duration(i) * time.Second)
		}
		if err := db.TouchDevices(ctx, seen); err != nil {
			t.Fatal(err)
		}
		// dev0000 goes back in time: ignored; dev0001 goes forward.
		if err := db.TouchDevices(ctx, map[string]time.Time{"dev0000": t0.Add(-time.Hour), "dev0001": t0.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		seen["dev0001"] = t0.Add(time.Hour)
		ds, err := db.FindDevices(ctx, fleet.DeviceFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != n {
			t.Fatalf("%d devices, want %d", len(ds), n)
		}
		for _, d := range ds {
			if !d.LastSeen.Equal(seen[d.ID]) {
				t.Fatalf("%s: last seen %v, want %v", d.ID, d.LastSeen, seen[d.ID])
			}
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
