package patch_test

import (
	"path/filepath"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/patch"
	"upkeep.dev/upkeep/internal/store/sqlstore"
)

// TestDaysExposedFromInstall: a device enrolled on a clean release and updated later onto the
// affected one is exposed from its update, not from its enrolment.
func TestDaysExposedFromInstall(t *testing.T) {
	stores(t, func(t *testing.T, db *sqlstore.DB) {
		day0 := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
		w := newWorld(t, db, day0)
		importFile(t, w.s, filepath.Join(osvDir, "GO-2023-2402.json")) // published 2023-12
		w.release("p", "1.0", 1, sbom("v0.17.0"))                      // fixed version
		w.release("p", "1.1", 2, sbom("v0.16.0"))                      // affected
		w.enrol("d1", "p", "1.0")
		updated := day0.Add(10 * 24 * time.Hour)
		if err := db.AddEvents(ctx, []fleet.Event{{DeviceID: "d1", Time: updated, Target: "p/1.1/fw", Step: "commit", Status: "ok"}}); err != nil {
			t.Fatal(err)
		}
		target := "p/1.1/fw"
		if err := db.UpdateDevice(ctx, "d1", fleet.DeviceUpdate{InstalledTarget: &target}); err != nil {
			t.Fatal(err)
		}
		w.c.t = updated.Add(10 * 24 * time.Hour)
		rep, err := w.s.Exposure(ctx, patch.ExposureFilter{Product: "p"})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Exposed) != 1 {
			t.Fatalf("exposure %+v", rep)
		}
		if e := rep.Exposed[0]; e.Release != "1.1" || !e.Since.Equal(updated) || e.DaysExposed != 10 {
			t.Errorf("row %+v: want since %s, 10 days", e, updated)
		}
	})
}
