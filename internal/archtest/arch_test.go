// Package archtest holds the test that keeps docs/ARCHITECTURE.md's package table true: every
// package of the module has a row, and imports only the module packages its row allows.
package archtest

import (
	"go/build"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

const module = "upkeep.dev/upkeep"

// rules reads the package table: rows of the form
//
//	| `internal/fleet` | what it does | `wire`, `internal/auth` |
//
// The third cell lists, in backquotes, the module packages the package may import; a path ending
// in /... allows the folder and everything below it. Anything else in the cell (stdlib, a
// third-party module, prose) is not checked here.
func rules(t *testing.T, root string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "docs", "ARCHITECTURE.md"))
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| `([a-z0-9/._-]+)` \\|.*\\|(.*)\\|\\s*$")
	quoted := regexp.MustCompile("`([a-z0-9/._-]+)`")
	out := map[string][]string{}
	for _, line := range strings.Split(string(b), "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		var allowed []string
		for _, q := range quoted.FindAllStringSubmatch(m[2], -1) {
			allowed = append(allowed, q[1])
		}
		out[m[1]] = allowed
	}
	if len(out) < 10 {
		t.Fatalf("docs/ARCHITECTURE.md has %d package rows; the table's format may have changed", len(out))
	}
	return out
}

// packages lists the module's packages (folders with non-test Go files) by their path inside
// the module, with their module-internal imports.
func packages(t *testing.T, root string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if path != root && (name == "testdata" || strings.HasPrefix(name, ".") || name == "node_modules") {
			return filepath.SkipDir
		}
		p, err := build.ImportDir(path, 0)
		if err != nil {
			if _, ok := err.(*build.NoGoError); ok {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		var imports []string
		for _, imp := range p.Imports {
			if r, ok := strings.CutPrefix(imp, module+"/"); ok {
				imports = append(imports, r)
			}
		}
		out[rel] = imports
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func allows(allowed []string, imp string) bool {
	for _, a := range allowed {
		if a == imp {
			return true
		}
		if dir, ok := strings.CutSuffix(a, "/..."); ok && (imp == dir || strings.HasPrefix(imp, dir+"/")) {
			return true
		}
	}
	return false
}

// TestImportTable fails when a package imports a module package its row in
// docs/ARCHITECTURE.md does not allow, when a package has no row, or when a row names a package
// that no longer exists.
func TestImportTable(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	table := rules(t, root)
	pkgs := packages(t, root)
	var names []string
	for p := range pkgs {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, p := range names {
		if p == "internal/archtest" {
			continue
		}
		allowed, ok := table[p]
		if !ok {
			t.Errorf("package %s has no row in docs/ARCHITECTURE.md's package table", p)
			continue
		}
		for _, imp := range pkgs[p] {
			if !allows(allowed, imp) {
				t.Errorf("%s imports %s, which its row in docs/ARCHITECTURE.md does not allow (allowed: %s)", p, imp, strings.Join(allowed, ", "))
			}
		}
	}
	for p := range table {
		if _, ok := pkgs[p]; !ok && !slices.Contains(names, p) {
			t.Errorf("docs/ARCHITECTURE.md has a row for %s, which is not a package", p)
		}
	}
}
