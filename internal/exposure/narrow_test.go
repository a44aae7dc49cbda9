package exposure_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"upkeep.dev/upkeep/internal/exposure"
	"upkeep.dev/upkeep/internal/store/sqlstore"
)

// TestNarrow: narrowing a report made without conditions gives the rows, order and NoSeverity
// that Exposure gives with them, for each severity, KEV and order.
func TestNarrow(t *testing.T) {
	stores(t, func(t *testing.T, db *sqlstore.DB) {
		w := newWorld(t, db, time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC))
		files, err := os.ReadDir(osvDir)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			importFile(t, w.s, filepath.Join(osvDir, f.Name()))
		}
		w.release("p", "1.0", 1, sbom("v0.1.0"))
		w.release("p", "1.1", 2, sbom("v0.16.0"))
		w.release("p", "1.2", 3, sbom("v0.40.0"))
		w.release("q", "2.0", 1, sbom("v0.16.0"))
		w.enrol("d1", "p", "1.0")
		w.enrol("d2", "p", "1.1")
		w.enrol("d3", "q", "2.0")
		all, err := w.s.Exposure(ctx, exposure.ExposureFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(all.Exposed) < 2 {
			t.Fatalf("the world exposes too little to test: %+v", all.Exposed)
		}
		for _, f := range []exposure.ExposureFilter{
			{}, {Severity: "high"}, {Severity: "critical"}, {Severity: "low", Sort: "days"}, {Sort: "severity"}, {Sort: "epss"},
			{KEV: true}, {Product: "p"}, {Product: "q", Severity: "medium"},
		} {
			want, err := w.s.Exposure(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			got := f.Narrow(all)
			if diff := cmp.Diff(want.Exposed, got.Exposed); diff != "" || want.NoSeverity != got.NoSeverity {
				t.Errorf("%+v: narrowed rows differ (-Exposure +Narrow), NoSeverity %d %d:\n%s", f, want.NoSeverity, got.NoSeverity, diff)
			}
		}
	})
}
