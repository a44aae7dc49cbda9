package sqlite

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// TestMigrationVersions checks that no two migrations share a version (goose refuses to start
// on a duplicate, which branches adding migrations at once produce) and that SQLite and
// PostgreSQL have the same migrations.
func TestMigrationVersions(t *testing.T) {
	names := func(dir string) []string {
		es, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		seen := map[string]string{}
		for _, e := range es {
			if !strings.HasSuffix(e.Name(), ".sql") {
				continue
			}
			v, _, _ := strings.Cut(e.Name(), "_")
			if prev, ok := seen[v]; ok {
				t.Errorf("%s: %s and %s share version %s: renumber the newer one", dir, prev, e.Name(), v)
			}
			seen[v] = e.Name()
			out = append(out, e.Name())
		}
		return out
	}
	lite, pg := names("migrations"), names("../postgres/migrations")
	if !slices.Equal(lite, pg) {
		t.Errorf("SQLite migrations %v, PostgreSQL %v: each change needs both", lite, pg)
	}
}
