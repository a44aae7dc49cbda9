package vuln

import (
	"archive/zip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func loadOSV(t testing.TB, name string) *Advisory {
	t.Helper()
	a, err := ParseOSV(readFixture(t, "osv/"+name+".json"))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return a
}

func TestParseOSVFixtures(t *testing.T) {
	for _, tc := range []struct {
		id       string
		alias    string
		severity string
		pkgs     []string
		withdraw bool
	}{
		{"GO-2023-2102", "CVE-2023-39325", "unknown", []string{"stdlib", "golang.org/x/net"}, false},
		{"GO-2023-2402", "CVE-2023-48795", "unknown", []string{"golang.org/x/crypto"}, false},
		{"GO-2024-2611", "CVE-2024-24786", "unknown", []string{"google.golang.org/protobuf"}, false},
		{"GO-2024-2606", "CVE-2024-27304", "unknown", []string{"github.com/jackc/pgproto3/v2", "github.com/jackc/pgx/v4", "github.com/jackc/pgx/v5"}, false},
		{"GO-2024-2442", "GHSA-76cc-p55w-63g3", "unknown", []string{"github.com/gravitational/teleport"}, true},
		{"GHSA-45x7-px36-x8w8", "CVE-2023-48795", "medium", []string{"russh", "golang.org/x/crypto", "paramiko"}, false},
	} {
		a := loadOSV(t, tc.id)
		if a.ID != tc.id || !slices.Contains(a.Aliases, tc.alias) || a.Source != SourceOSV {
			t.Errorf("%s: got ID %q aliases %v source %q", tc.id, a.ID, a.Aliases, a.Source)
		}
		if a.Severity != tc.severity {
			t.Errorf("%s: severity %q, want %q", tc.id, a.Severity, tc.severity)
		}
		var names []string
		for _, af := range a.Affected {
			names = append(names, af.Name)
		}
		for _, p := range tc.pkgs {
			if !slices.Contains(names, p) {
				t.Errorf("%s: affected %v lacks %s", tc.id, names, p)
			}
		}
		if (a.Withdrawn != nil) != tc.withdraw {
			t.Errorf("%s: withdrawn %v, want %v", tc.id, a.Withdrawn, tc.withdraw)
		}
	}
	// golang/vulndb's repository copy has 0001-01-01 dates: zero, not year 1.
	if a := loadOSV(t, "GO-2023-2402"); !a.Published.IsZero() {
		t.Errorf("Published = %v, want zero", a.Published)
	}
	g := loadOSV(t, "GHSA-45x7-px36-x8w8")
	if want := time.Date(2023, 12, 18, 19, 22, 9, 0, time.UTC); !g.Published.Equal(want) {
		t.Errorf("Published = %v, want %v", g.Published, want)
	}
}

func TestCVSS(t *testing.T) {
	for _, tc := range []struct {
		vec   string
		score float64
	}{
		{"CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:N/I:H/A:N", 5.9},  // CVE-2023-48795
		{"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0}, // CVE-2021-44228
		{"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", 7.5},
		{"CVSS:3.0/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", 7.8},
		{"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0},
	} {
		got, ok := cvss3Score(tc.vec)
		if !ok || got != tc.score {
			t.Errorf("cvss3Score(%s) = %v, %v; want %v", tc.vec, got, ok, tc.score)
		}
	}
	if got, ok := cvss2Score("AV:N/AC:L/Au:N/C:P/I:P/A:P"); !ok || got != 7.5 {
		t.Errorf("cvss2Score = %v, %v; want 7.5", got, ok)
	}
	if _, ok := cvss3Score("CVSS:3.1/AV:X"); ok {
		t.Error("bad vector scored")
	}
}

func TestParseOSVErrors(t *testing.T) {
	for _, raw := range []string{``, `[]`, `{}`, `{"id":""}`, `{"id":"X","affected":{}}`, `{"id":"X","modified":"yesterday"}`} {
		if _, err := ParseOSV([]byte(raw)); err == nil {
			t.Errorf("ParseOSV(%q): no error", raw)
		}
	}
}

func TestReadOSV(t *testing.T) {
	dir := t.TempDir()
	entries, err := os.ReadDir("testdata/osv")
	if err != nil {
		t.Fatal(err)
	}
	zpath := filepath.Join(dir, "all.zip")
	zf, err := os.Create(zpath)
	if err != nil {
		t.Fatal(err)
	}
	zw := zip.NewWriter(zf)
	for _, e := range entries {
		w, err := zw.Create(e.Name())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(readFixture(t, "osv/"+e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	w, _ := zw.Create("README.txt")
	w.Write([]byte("not json, skipped"))
	w, _ = zw.Create("broken.json")
	w.Write([]byte("{"))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	zf.Close()

	collect := func(path string) ([]string, error) {
		var ids []string
		err := ReadOSV(path, func(a *Advisory) error { ids = append(ids, a.ID); return nil })
		slices.Sort(ids)
		return ids, err
	}
	want := len(entries)
	ids, err := collect("testdata/osv")
	if err != nil || len(ids) != want {
		t.Errorf("folder: %d ids, err %v; want %d", len(ids), err, want)
	}
	ids, err = collect(zpath)
	if len(ids) != want {
		t.Errorf("zip: %d ids, want %d", len(ids), want)
	}
	if err == nil || !strings.Contains(err.Error(), "broken.json") {
		t.Errorf("zip: err %v, want it to name broken.json", err)
	}
	ids, err = collect("testdata/osv/GO-2024-2611.json")
	if err != nil || len(ids) != 1 {
		t.Errorf("single file: %v, %v", ids, err)
	}
	stop := ReadOSV("testdata/osv", func(*Advisory) error { return os.ErrClosed })
	if stop != os.ErrClosed {
		t.Errorf("fn error = %v, want it returned as is", stop)
	}
}

// TestParseOSVYAML reads OSV records as pypa/advisory-database writes them: YAML, with
// unquoted versions that a YAML reader would take for numbers.
func TestParseOSVYAML(t *testing.T) {
	a, err := ParseOSV(readFixture(t, "osvyaml/PYSEC-2019-217.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if a.ID != "PYSEC-2019-217" || !slices.Contains(a.Aliases, "CVE-2019-10906") || a.Published.Year() != 2019 {
		t.Errorf("got %+v", a)
	}
	if got, want := a.Affected[0].Versions, []string{"2.0", "2.0rc1", "2.1", "2.1.1", "2.10", "2.9.6"}; !slices.Equal(got, want) {
		t.Errorf("versions %q, want %q (text kept, not numbers)", got, want)
	}
	b, err := ParseOSV(readFixture(t, "osvyaml/PYSEC-2021-66.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if got := b.Affected[0].Ranges[0].Events[0].Introduced; got != "1.1" {
		t.Errorf("introduced %q, want 1.1", got)
	}
	ix := NewIndex()
	ix.Add(a)
	ix.Add(b)
	ms := ix.Match([]Component{
		{PURL: "pkg:pypi/jinja2@2.10", Ecosystem: "PyPI", Name: "jinja2", Version: "2.10"},
		{PURL: "pkg:pypi/pygments@2.7.3", Ecosystem: "PyPI", Name: "pygments", Version: "2.7.3"},
		{PURL: "pkg:pypi/pygments@2.7.4", Ecosystem: "PyPI", Name: "pygments", Version: "2.7.4"},
	})
	var got []string
	for _, m := range ms {
		got = append(got, m.Advisory.ID+" "+m.Component.Version+" "+m.Status)
	}
	if want := []string{"PYSEC-2019-217 2.10 affected", "PYSEC-2021-66 2.7.3 affected"}; !slices.Equal(got, want) {
		t.Errorf("matches %q, want %q", got, want)
	}
	for _, bad := range []string{"id: [", "- a\n- b", "a: &x [*x]", "id: X\n<<: {a: 1}"} {
		if _, err := ParseOSV([]byte(bad)); err == nil {
			t.Errorf("ParseOSV(%q): no error", bad)
		}
	}
	n := 0
	if err := ReadOSV("testdata/osvyaml", func(*Advisory) error { n++; return nil }); err != nil || n != 2 {
		t.Errorf("ReadOSV of a YAML folder: %d records, %v", n, err)
	}
}
