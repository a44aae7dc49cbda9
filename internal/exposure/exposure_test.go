package exposure_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/exposure"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/store/sqlstore"
	"upkeep.dev/upkeep/wire"
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
		rep, err := w.s.Exposure(ctx, exposure.ExposureFilter{Product: "p"})
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

// TestAliasesOneRow: GO-2023-2402 and GHSA-45x7-px36-x8w8 both describe CVE-2023-48795; with a
// vendor's CSAF record of the CVE, they are one exposure row (the GHSA record's medium severity,
// every id listed) and one advisory in time-to-patch.
func TestAliasesOneRow(t *testing.T) {
	stores(t, func(t *testing.T, db *sqlstore.DB) {
		w := newWorld(t, db, time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC))
		for _, f := range []string{"GO-2023-2402.json", "GHSA-45x7-px36-x8w8.json"} {
			importFile(t, w.s, filepath.Join(osvDir, f))
		}
		w.importString("acme.json", csafDoc("ACME-1", "CVE-2023-48795", map[string][]string{"known_affected": {"p@1.0"}}))
		w.release("p", "1.0", 1, sbom("v0.16.0"))
		w.enrol("d1", "p", "1.0")
		w.c.t = w.c.t.Add(24 * time.Hour)
		w.release("p", "1.1", 2, sbom("v0.31.0"))
		w.c.t = w.c.t.Add(24 * time.Hour)

		rep, err := w.s.Exposure(ctx, exposure.ExposureFilter{Product: "p"})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Exposed) != 1 {
			t.Fatalf("exposure rows %+v", rep.Exposed)
		}
		e := rep.Exposed[0]
		ids := append([]string{e.Advisory}, e.Aliases...)
		for _, id := range []string{"GO-2023-2402", "GHSA-45x7-px36-x8w8", "CVE-2023-48795", "ACME-1/CVE-2023-48795"} {
			if !slices.Contains(ids, id) {
				t.Errorf("row %s %v lacks %s", e.Advisory, e.Aliases, id)
			}
		}
		if e.Severity != "medium" || e.FixedIn != "1.1" || e.Devices != 1 {
			t.Errorf("row %+v", e)
		}

		ttp, err := w.s.TimeToPatch(ctx, "p")
		if err != nil {
			t.Fatal(err)
		}
		if len(ttp.Advisories) != 1 || ttp.Advisories[0].Advisory != e.Advisory || ttp.Advisories[0].FixedIn != "1.1" {
			t.Errorf("time to patch %+v", ttp.Advisories)
		}
	})
}

// TestUnknownImageNotCounted: a device's report is only its claim. A device that names a
// release's target with another SHA-256 (at enrolment or in a report) runs an unknown image:
// it is in no exposure row, no install timeline and no time-to-patch figure. A simulated device
// is in no time-to-patch figure either.
func TestUnknownImageNotCounted(t *testing.T) {
	stores(t, func(t *testing.T, db *sqlstore.DB) {
		w := newWorld(t, db, time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC))
		importFile(t, w.s, filepath.Join(osvDir, "GO-2023-2402.json"))
		w.release("p", "1.0", 1, sbom("v0.16.0")) // affected
		w.enrol("d1", "p", "1.0")
		forged := &fleet.Device{ID: "d2", PublicKey: []byte("d2"), Serial: "d2", Product: "p", HardwareID: "hw", Status: fleet.StatusAccepted,
			InstalledTarget: "p/1.0/fw", InstalledVer: "1.0", InstalledSHA256: strings.Repeat("f", 64), EnrolledAt: w.c.t}
		if err := db.CreateDevice(ctx, forged); err != nil {
			t.Fatal(err)
		}
		w.s.OnEnroll(ctx, forged)
		w.enrol("d3", "p", "0.9") // a target that is no release
		// A simulated device on the signed image: the operator's exposure lists it (a campaign
		// may patch it), time to patch, a public figure, leaves it out.
		sim := &fleet.Device{ID: "s1", PublicKey: []byte("s1"), Serial: "s1", Product: "p", HardwareID: "hw", Status: fleet.StatusAccepted,
			InstalledTarget: "p/1.0/fw", InstalledVer: "1.0", InstalledSHA256: "00", EnrolledAt: w.c.t, Simulated: true}
		if err := db.CreateDevice(ctx, sim); err != nil {
			t.Fatal(err)
		}
		if err := w.s.OnReport(ctx, "d3", wire.Report{Installed: wire.Installed{Target: "p/1.0/fw", Version: "1.0", SHA256: "ee"}}); err != nil {
			t.Fatal(err)
		}
		w.c.t = w.c.t.Add(24 * time.Hour)
		w.release("p", "1.1", 2, sbom("v0.17.0")) // the fix
		w.c.t = w.c.t.Add(24 * time.Hour)

		rep, err := w.s.Exposure(ctx, exposure.ExposureFilter{Product: "p"})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Exposed) != 1 || rep.Exposed[0].Devices != 2 {
			t.Fatalf("exposure %+v, want one row with d1 and s1", rep.Exposed)
		}
		ins, err := db.FindInstalls(ctx, "p")
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range ins {
			if in.DeviceID != "d1" {
				t.Errorf("install timeline holds %+v, a claim of an image that is not signed", in)
			}
		}
		ttp, err := w.s.TimeToPatch(ctx, "p")
		if err != nil {
			t.Fatal(err)
		}
		if len(ttp.Advisories) != 1 || ttp.Advisories[0].ExposedAtFix != 1 {
			t.Errorf("time to patch %+v, want 1 device exposed at the fix (d1; not s1, d2, d3)", ttp.Advisories)
		}
	})
}
