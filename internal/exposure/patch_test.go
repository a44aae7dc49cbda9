package exposure_test

import (
	"archive/zip"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/exposure"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/store/postgres"
	"upkeep.dev/upkeep/internal/store/sqlite"
	"upkeep.dev/upkeep/internal/store/sqlstore"
	"upkeep.dev/upkeep/internal/store/storetest"
)

var ctx = context.Background()

const osvDir = "../vuln/testdata/osv"

func sbom(cryptoVersion string) []byte {
	return []byte(`{"bomFormat": "CycloneDX", "specVersion": "1.4", "version": 1,
 "components": [{"type": "library", "name": "golang.org/x/crypto", "version": "` + cryptoVersion + `",
   "purl": "pkg:golang/golang.org/x/crypto@` + cryptoVersion + `"}]}`)
}

// stores runs f against a fresh SQLite store, and PostgreSQL when UPKEEP_TEST_POSTGRES is set.
func stores(t *testing.T, f func(t *testing.T, db *sqlstore.DB)) {
	t.Run("sqlite", func(t *testing.T) {
		db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "upkeep.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		f(t, db)
	})
	t.Run("postgres", func(t *testing.T) {
		db, err := postgres.Open(ctx, storetest.PostgresDSN(t))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		f(t, db)
	})
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newService(db *sqlstore.DB, c *clock) *exposure.Service {
	s := &exposure.Service{Store: db, Devices: db, Releases: db, Now: c.now}
	if err := s.Load(ctx); err != nil {
		panic(err)
	}
	return s
}

func importFile(t *testing.T, s *exposure.Service, path string) *exposure.ImportResult {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := s.Import(ctx, filepath.Base(path), f)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestTimeToPatchDefinition checks exposure, Exposed and both time-to-patch figures against
// numbers worked out by hand from docs/VULNERABILITIES.md, on both stores.
func TestTimeToPatchDefinition(t *testing.T) {
	stores(t, func(t *testing.T, db *sqlstore.DB) {
		t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
		c := &clock{t0.Add(-5 * 24 * time.Hour)}
		s := newService(db, c)
		// GO-2024-3321 carries no date: it counts from its import, 5 days before 1.0 ships.
		if res := importFile(t, s, filepath.Join(osvDir, "GO-2024-3321.json")); res.Imported != 1 {
			t.Fatalf("import %+v", res)
		}
		for _, r := range []*release.Release{
			{Product: "p", Version: "1.0", SecurityVersion: 1, PublishedAt: t0},
			{Product: "p", Version: "1.1", SecurityVersion: 2, PublishedAt: t0.Add(10 * 24 * time.Hour)},
			{Product: "p", Version: "1.2", SecurityVersion: 3, PublishedAt: t0.Add(12 * 24 * time.Hour)}, // no SBOM
		} {
			r.HardwareIDs, r.Class, r.Target, r.SHA256, r.SHA512, r.TargetsVersion = []string{"hw"}, "security", "p/"+r.Version+"/fw", "00", "00", 1
			if err := db.CreateRelease(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		c.t = t0
		if _, err := s.PutSBOM(ctx, "p", "1.0", sbom("v0.16.0")); err != nil {
			t.Fatal(err)
		}
		if _, err := s.PutSBOM(ctx, "p", "1.1", sbom("v0.31.0")); err != nil {
			t.Fatal(err)
		}
		if _, err := s.PutSBOM(ctx, "p", "1.1", []byte(`<bom/>`)); !apperr.Is(err, apperr.Invalid) {
			t.Errorf("an XML SBOM: %v", err)
		}
		// Ten devices enrol on 1.0 a day after it ships; nine commit 1.1, one an hour apart
		// from its publication; one more enrols after the fix.
		enrol := func(id string, at time.Time) {
			d := &fleet.Device{ID: id, PublicKey: []byte(id), Serial: id, Product: "p", HardwareID: "hw",
				Status: fleet.StatusAccepted, InstalledTarget: "p/1.0/fw", InstalledVer: "1.0", InstalledSHA256: "00", EnrolledAt: at}
			if err := db.CreateDevice(ctx, d); err != nil {
				t.Fatal(err)
			}
			s.OnEnroll(ctx, d) // as fleet.Service.Enroll does
		}
		tf := t0.Add(10 * 24 * time.Hour)
		var ids []string
		for i := range 10 {
			id := string(rune('a'+i)) + "0"
			ids = append(ids, id)
			enrol(id, t0.Add(24*time.Hour))
			if i == 9 {
				continue
			}
			at := tf.Add(time.Duration(i+1) * time.Hour)
			if err := db.AddEvents(ctx, []fleet.Event{{DeviceID: id, Time: at, Target: "p/1.1/fw", Step: "commit", Status: "ok"}}); err != nil {
				t.Fatal(err)
			}
			target := "p/1.1/fw"
			if err := db.UpdateDevice(ctx, id, fleet.DeviceUpdate{InstalledTarget: &target}); err != nil {
				t.Fatal(err)
			}
		}
		enrol("late", tf.Add(24*time.Hour))
		c.t = t0.Add(20 * 24 * time.Hour)

		ttp, err := s.TimeToPatch(ctx, "p")
		if err != nil {
			t.Fatal(err)
		}
		if len(ttp.Advisories) != 1 {
			t.Fatalf("time to patch %+v", ttp)
		}
		a := ttp.Advisories[0]
		if a.Advisory != "GO-2024-3321" || a.FixedIn != "1.1" || a.VendorDays != 15 || a.ExposedAtFix != 10 || a.PatchedNow != 9 {
			t.Errorf("A and E: %+v", a)
		}
		// B50: the 5th commit, 5 h after the fix (0.2 days); B90: the 9th, 9 h (0.4); B99 not reached.
		type fig struct {
			days  float64
			hours int
		}
		want := map[int]fig{50: {0.2, 5}, 90: {0.4, 9}}
		for _, f := range a.Fleet {
			w, ok := want[f.Percent]
			if f.Reached != ok || (ok && (*f.Days != w.days || !f.At.Equal(tf.Add(time.Duration(w.hours)*time.Hour)))) {
				t.Errorf("B(%d) = %+v, want %v (reached %v)", f.Percent, f, w, ok)
			}
		}
		lt, err := s.LabelTimeToPatch(ctx, "p")
		if err != nil || len(lt) != 1 || lt[0].Fleet90At == nil || !lt[0].FixReleased.Equal(tf) {
			t.Errorf("label %+v %v", lt, err)
		}

		rep, err := s.Exposure(ctx, exposure.ExposureFilter{Product: "p"})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Exposed) != 1 {
			t.Fatalf("exposure %+v", rep)
		}
		e := rep.Exposed[0]
		// Exposed since the first install (a day after 1.0 shipped), which is after the import.
		if e.Release != "1.0" || e.Devices != 2 || e.FixedIn != "1.1" || e.DaysExposed != 19 || !e.Since.Equal(t0.Add(24*time.Hour)) {
			t.Errorf("exposure row %+v", e)
		}
		if rep, _ := s.Exposure(ctx, exposure.ExposureFilter{Severity: "low"}); len(rep.Exposed) != 0 {
			t.Errorf("Go vulndb records have no severity, so none is at least low: %+v", rep.Exposed)
		}
		rel, devs, err := s.Exposed(ctx, "CVE-2024-45337", "")
		if err != nil || rel != "p@1.1" || !slices.Equal(devs, []string{ids[9], "late"}) {
			t.Errorf("Exposed = %s %v %v", rel, devs, err)
		}
		if _, _, err := s.Exposed(ctx, "GO-2024-3321", "p@1.2"); !apperr.Is(err, apperr.Invalid) {
			t.Errorf("1.2 has no SBOM and lists no fix, yet Exposed accepted it: %v", err)
		}
		if _, _, err := s.Exposed(ctx, "GO-2099-0001", ""); !apperr.Is(err, apperr.NotFound) {
			t.Errorf("an unknown advisory: %v", err)
		}
	})
}

// TestImportZipIdempotent imports an osv.dev-style zip with a malformed entry twice, then loads
// a fresh index from the store.
func TestImportZipIdempotent(t *testing.T) {
	stores(t, func(t *testing.T, db *sqlstore.DB) {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		files, err := filepath.Glob(filepath.Join(osvDir, "*.json"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			w, _ := zw.Create(filepath.Base(f))
			w.Write(b)
		}
		w, _ := zw.Create("bad.json")
		w.Write([]byte(`{"id": 1}`))
		zw.Close()
		c := &clock{time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
		s := newService(db, c)
		res, err := s.Import(ctx, "all.zip", bytes.NewReader(buf.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		if res.Imported != len(files) || res.Skipped != 1 || len(res.Errors) != 1 || res.Errors[0].File != "all.zip!bad.json" {
			t.Fatalf("first import %+v", res)
		}
		res, err = s.Import(ctx, "all.zip", bytes.NewReader(buf.Bytes()))
		if err != nil || res.Imported != 0 || res.Updated != 0 || res.Unchanged != len(files) {
			t.Fatalf("second import %+v %v", res, err)
		}
		if res, _ := s.Import(ctx, "junk.json", bytes.NewReader([]byte("not json"))); res.Skipped != 1 || res.Errors[0].File != "junk.json" {
			t.Errorf("junk %+v", res)
		}
		fresh := newService(db, c)
		a, err := fresh.Advisory("cve-2023-48795")
		// Both records list the CVE: the lookup is their union.
		if err != nil || a.Advisory.ID != "CVE-2023-48795" || !slices.Contains(a.Advisory.Aliases, "GHSA-45x7-px36-x8w8") ||
			!slices.Contains(a.Advisory.Aliases, "GO-2023-2402") || !a.FirstSeen.Equal(c.t) {
			t.Errorf("advisory by alias from a fresh index: %+v %v", a, err)
		}
		if _, err := fresh.Advisory("GO-2024-2442"); !apperr.Is(err, apperr.NotFound) {
			t.Errorf("a withdrawn advisory is found: %v", err)
		}
	})
}
