package vuln

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestRangeEdges checks the OSV evaluation at the edges of ranges for each
// ordering: exactly introduced is affected, exactly fixed is not,
// last_affected is inclusive, limit is exclusive.
func TestRangeEdges(t *testing.T) {
	type row struct {
		eco, typ string
		events   []Event
		version  string
		want     string // affected | "" (no match) | unmatched
	}
	edges := func(eco, typ, below, intro, mid, fixed string) []row {
		ev := []Event{{Introduced: intro}, {Fixed: fixed}}
		la := []Event{{Introduced: intro}, {LastAffected: fixed}}
		lim := []Event{{Introduced: "0"}, {Limit: fixed}}
		return []row{
			{eco, typ, ev, below, ""},
			{eco, typ, ev, intro, "affected"},
			{eco, typ, ev, mid, "affected"},
			{eco, typ, ev, fixed, ""},
			{eco, typ, la, fixed, "affected"},
			{eco, typ, la, mid, "affected"},
			{eco, typ, lim, mid, "affected"},
			{eco, typ, lim, fixed, ""},
		}
	}
	var rows []row
	rows = append(rows, edges("Go", "SEMVER", "v1.1.9", "1.2.0", "v1.2.4", "1.2.5")...)
	rows = append(rows, edges("npm", "SEMVER", "1.0.0-alpha", "1.0.0-beta.1", "1.0.0-beta.2", "1.0.0")...)
	rows = append(rows, edges("npm", "ECOSYSTEM", "2.9.99", "3.0.0", "3.0.0-rc.1x", "3.1.0")[:0]...)
	rows = append(rows, edges("PyPI", "ECOSYSTEM", "1.0rc0", "1.0rc1", "1.0", "1.0.post1")...)
	rows = append(rows, edges("Maven", "ECOSYSTEM", "0.9", "1.0-alpha", "1.0-beta", "1.0")...)
	rows = append(rows, edges("Debian", "ECOSYSTEM", "2.0-1", "1:1.0-1", "1:1.0-1+deb12u1", "1:1.0-2")...)
	rows = append(rows, edges("Alpine", "ECOSYSTEM", "1.2.2-r9", "1.2.3-r0", "1.2.3-r1", "1.2.3-r2")...)
	rows = append(rows, edges("crates.io", "ECOSYSTEM", "0.39.9", "0.40.0", "0.40.1", "0.40.2")...)
	rows = append(rows, edges("", "ECOSYSTEM", "2.0-rc1", "2.0", "v2.0.1", "2.1")...)
	rows = append(rows,
		// Generic ordering details.
		row{"", "ECOSYSTEM", []Event{{Introduced: "2.0"}, {Fixed: "2.1"}}, "V2.0", "affected"},
		row{"", "ECOSYSTEM", []Event{{Introduced: "2.0"}, {Fixed: "2.10"}}, "2.9", "affected"},
		row{"generic", "ECOSYSTEM", []Event{{Introduced: "2023.04"}, {Fixed: "2023.10"}}, "2023.07-r3", "affected"},
		// Pre-release ordering in the Go stdlib style of vulndb.
		row{"Go", "SEMVER", []Event{{Introduced: "0"}, {Fixed: "1.25.13"}, {Introduced: "1.26.0-0"}, {Fixed: "1.26.6"}}, "1.26.0-rc.1", "affected"},
		row{"Go", "SEMVER", []Event{{Introduced: "0"}, {Fixed: "1.25.13"}, {Introduced: "1.26.0-0"}, {Fixed: "1.26.6"}}, "1.25.13", ""},
		// versions list: exact strings, in any ecosystem.
		row{"Go", "", nil, "v1.0.0", "affected"},
		// Nothing guessed.
		row{"Go", "GIT", []Event{{Introduced: "abc123"}, {Fixed: "def456"}}, "1.0.0", "unmatched"},
		row{"Hypothetical", "ECOSYSTEM", []Event{{Introduced: "0"}, {Fixed: "2"}}, "1", "unmatched"},
		row{"", "ECOSYSTEM", []Event{{Introduced: "0"}, {Fixed: "1.0"}}, "--", "unmatched"},
		row{"Go", "SEMVER", []Event{{Introduced: "0"}}, "", "unmatched"},
	)
	for i, r := range rows {
		name := fmt.Sprintf("%d/%s/%s/%v/%s", i, r.eco, r.typ, r.events, r.version)
		t.Run(name, func(t *testing.T) {
			aff := Affected{Ecosystem: r.eco, Name: "pkg"}
			if r.typ == "" {
				aff.Versions = []string{r.version}
			} else {
				aff.Ranges = []Range{{Type: r.typ, Events: r.events}}
			}
			a := &Advisory{ID: "TEST-1", Affected: []Affected{aff}}
			c := Component{PURL: "pkg:x/pkg@" + r.version, Ecosystem: r.eco, Name: "pkg", Version: r.version}
			ix := NewIndex()
			ix.Add(a)
			got := ix.Match([]Component{c})
			status := ""
			if len(got) == 1 {
				status = got[0].Status
			}
			if status != r.want {
				t.Errorf("status %q, want %q (%+v)", status, r.want, got)
			}
			if naive := NaiveMatch([]*Advisory{a}, nil, []Component{c}); !cmp.Equal(got, naive) {
				t.Errorf("NaiveMatch disagrees: %+v", naive)
			}
		})
	}
}

func TestCompare(t *testing.T) {
	for _, tc := range []struct {
		eco, a, b string
		want      int
	}{
		{"", "1.2", "1.2.1", -1},
		{"", "1.2", "1.2-rc1", 1},
		{"", "1.2-rc1", "1.2-beta", 1},
		{"", "1.2-3", "1.2.3", 0},
		{"", "010", "9", 1},
		{"", "1.0+build5", "1.0", 0},
		{"generic", "v3", "3", 0},
		{"PyPI", "1.0.post1", "1.0", 1},
		{"Debian:12", "1:0.1", "9.9", 1},
		{"Go", "v1.2.3", "1.2.3", 0},
	} {
		got, err := Compare(tc.eco, tc.a, tc.b)
		if err != nil || got != tc.want {
			t.Errorf("Compare(%q, %q, %q) = %d, %v; want %d", tc.eco, tc.a, tc.b, got, err, tc.want)
		}
	}
	if _, err := Compare("Hypothetical", "1", "2"); err == nil {
		t.Error("unknown ecosystem ordered")
	}
	if _, err := Compare("", "...", "1"); err == nil {
		t.Error("empty generic version ordered")
	}
}

func fixtures(t testing.TB) []*Advisory {
	var out []*Advisory
	for _, id := range []string{"GO-2023-1989", "GO-2023-2102", "GO-2023-2402", "GO-2024-2442", "GO-2024-2606", "GO-2024-2611", "GO-2024-3321", "GO-2026-6090", "GHSA-45x7-px36-x8w8"} {
		out = append(out, loadOSV(t, id))
	}
	return out
}

func TestMatchRealAdvisories(t *testing.T) {
	advs := fixtures(t)
	ix := NewIndex()
	for _, a := range advs {
		ix.Add(a)
	}
	// This project's agent as built today: nothing affected.
	sb, err := ParseSBOM(readFixture(t, "sbom/upkeep-agent.cdx.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got := ix.Match(sb.Components); len(got) != 0 {
		t.Errorf("agent SBOM matched %d advisories: %+v", len(got), got[0])
	}

	// Older versions of the same dependencies.
	old := []Component{
		mustComponent(t, "pkg:golang/golang.org/x/crypto@v0.16.0"),
		mustComponent(t, "pkg:golang/golang.org/x/net@v0.17.0"),
		mustComponent(t, "pkg:golang/golang.org/x/image@v0.9.0"),
		mustComponent(t, "pkg:golang/google.golang.org/protobuf@v1.32.0"),
		mustComponent(t, "pkg:golang/github.com/jackc/pgx/v5@v5.5.3"),
		mustComponent(t, "pkg:golang/github.com/gravitational/teleport@v14.0.0"),
		mustComponent(t, "pkg:golang/std@go1.26.5"),
		mustComponent(t, "pkg:pypi/Paramiko@3.3.1"),
	}
	got := ix.Match(old)
	type row struct{ PURL, ID, Status, Fixed string }
	var rows []row
	for _, m := range got {
		rows = append(rows, row{m.Component.PURL, m.Advisory.ID, m.Status, strings.Join(m.Fixed, ",")})
	}
	want := []row{
		{"pkg:golang/golang.org/x/crypto@v0.16.0", "GHSA-45x7-px36-x8w8", "affected", "0.17.0"},
		{"pkg:golang/golang.org/x/crypto@v0.16.0", "GO-2023-2402", "affected", "0.17.0"},
		{"pkg:golang/golang.org/x/crypto@v0.16.0", "GO-2024-3321", "affected", "0.31.0"},
		{"pkg:golang/golang.org/x/image@v0.9.0", "GO-2023-1989", "affected", "0.10.0"},
		{"pkg:golang/google.golang.org/protobuf@v1.32.0", "GO-2024-2611", "affected", "1.33.0"},
		{"pkg:golang/github.com/jackc/pgx/v5@v5.5.3", "GO-2024-2606", "affected", "5.5.4"},
		{"pkg:golang/std@go1.26.5", "GO-2026-6090", "affected", "1.25.13,1.26.6,1.27.0-rc.3"},
		{"pkg:pypi/Paramiko@3.3.1", "GHSA-45x7-px36-x8w8", "affected", "3.4.0"},
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("matches (-want +got):\n%s", diff)
	}
	if naive := NaiveMatch(advs, nil, old); !cmp.Equal(got, naive) {
		t.Error("NaiveMatch disagrees with Index.Match")
	}
}

func mustComponent(t testing.TB, purl string) Component {
	t.Helper()
	c, err := ComponentFromPURL(purl)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestVEXSuppression(t *testing.T) {
	advs := fixtures(t)
	ix := NewIndex()
	for _, a := range advs {
		ix.Add(a)
	}
	// The statement names the CVE; GO-2023-2402 and the GHSA carry it as an
	// alias. No version in the purl: every version of the module.
	v := VEX{Vuln: "CVE-2023-48795", PURL: "pkg:golang/golang.org/x/crypto", Status: VEXNotAffected,
		Justification: "vulnerable_code_not_in_execute_path", Impact: "The agent uses no SSH.", Source: "UPKEEP-VEX-1"}
	ix.AddVEX(v)
	// A statement for another version, and one that is only under investigation.
	ix.AddVEX(VEX{Vuln: "GO-2024-3321", PURL: "pkg:golang/golang.org/x/crypto@v0.15.0", Status: VEXNotAffected})
	ix.AddVEX(VEX{Vuln: "GO-2024-3321", PURL: "pkg:golang/golang.org/x/crypto@v0.16.0", Status: VEXUnderInvestigation})
	comps := []Component{mustComponent(t, "pkg:golang/golang.org/x/crypto@v0.16.0?type=module&goos=linux")}
	got := ix.Match(comps)
	status := map[string]string{}
	for _, m := range got {
		status[m.Advisory.ID] = m.Status
		if m.Status == StatusNotAffected {
			want := "VEX UPKEEP-VEX-1: CVE-2023-48795 known_not_affected (vulnerable_code_not_in_execute_path): The agent uses no SSH."
			if m.Reason != want {
				t.Errorf("Reason = %q, want %q", m.Reason, want)
			}
		}
	}
	wantStatus := map[string]string{"GO-2023-2402": "not_affected", "GHSA-45x7-px36-x8w8": "not_affected", "GO-2024-3321": "affected"}
	if diff := cmp.Diff(wantStatus, status); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
	naive := NaiveMatch(advs, []VEX{v, {Vuln: "GO-2024-3321", PURL: "pkg:golang/golang.org/x/crypto@v0.15.0", Status: VEXNotAffected}}, comps)
	if !cmp.Equal(got, naive) {
		t.Error("NaiveMatch disagrees with Index.Match")
	}
}

func TestAddKeepsNewest(t *testing.T) {
	newer := loadOSV(t, "GHSA-45x7-px36-x8w8")
	older := loadOSV(t, "GHSA-45x7-px36-x8w8")
	older.Modified = newer.Modified.Add(-time.Hour)
	older.Affected = older.Affected[:1] // russh only
	ix := NewIndex()
	ix.Add(newer)
	ix.Add(older)
	ix.Add(newer) // idempotent
	c := []Component{mustComponent(t, "pkg:pypi/paramiko@3.3.1")}
	if got := ix.Match(c); len(got) != 1 || got[0].Advisory != newer {
		t.Fatalf("after re-adding an older copy: %+v", got)
	}
	// A newer copy replaces, including its removal of a package.
	newest := loadOSV(t, "GHSA-45x7-px36-x8w8")
	newest.Modified = newer.Modified.Add(time.Hour)
	newest.Affected = newest.Affected[:1]
	ix.Add(newest)
	if got := ix.Match(c); len(got) != 0 {
		t.Errorf("paramiko still matched after the newer copy dropped it: %+v", got)
	}
	// Withdrawal of a newer copy removes it from matching.
	w := loadOSV(t, "GHSA-45x7-px36-x8w8")
	w.Modified = newest.Modified.Add(time.Hour)
	w.Withdrawn = &w.Modified
	ix.Add(w)
	if got := ix.Match([]Component{mustComponent(t, "pkg:cargo/russh@0.40.1")}); len(got) != 0 {
		t.Errorf("withdrawn advisory matched: %+v", got)
	}
	if ix.Len() != 1 {
		t.Errorf("Len = %d, want 1", ix.Len())
	}
}

// TestIndexAgreesWithNaive is a property test: on random advisories, VEX
// statements and components, Index.Match returns exactly NaiveMatch's result.
func TestIndexAgreesWithNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	ecos := []string{"Go", "npm", "PyPI", "Debian", "Debian:12", "Alpine", "", "Hypothetical"}
	names := []string{"alpha", "Beta_pkg", "beta-pkg", "gamma", "delta"}
	ver := func() string { return fmt.Sprintf("%d.%d.%d", rng.IntN(3), rng.IntN(3), rng.IntN(3)) }
	for iter := range 300 {
		var advs []*Advisory
		for i := range 1 + rng.IntN(12) {
			a := &Advisory{ID: fmt.Sprintf("A-%d", rng.IntN(8)), Modified: time.Unix(int64(rng.IntN(4)), 0)}
			if rng.IntN(5) == 0 {
				a.Aliases = []string{fmt.Sprintf("CVE-%d", rng.IntN(4))}
			}
			if rng.IntN(10) == 0 {
				a.Withdrawn = &a.Modified
			}
			for range 1 + rng.IntN(3) {
				af := Affected{Ecosystem: ecos[rng.IntN(len(ecos))], Name: names[rng.IntN(len(names))]}
				for range rng.IntN(3) {
					typ := []string{"SEMVER", "ECOSYSTEM", "GIT"}[rng.IntN(3)]
					r := Range{Type: typ}
					for range 1 + rng.IntN(4) {
						switch rng.IntN(5) {
						case 0:
							r.Events = append(r.Events, Event{Introduced: "0"})
						case 1:
							r.Events = append(r.Events, Event{Introduced: ver()})
						case 2:
							r.Events = append(r.Events, Event{Fixed: ver()})
						case 3:
							r.Events = append(r.Events, Event{LastAffected: ver()})
						case 4:
							r.Events = append(r.Events, Event{Limit: ver()})
						}
					}
					af.Ranges = append(af.Ranges, r)
				}
				if rng.IntN(4) == 0 {
					af.Versions = []string{ver()}
				}
				a.Affected = append(a.Affected, af)
			}
			_ = i
			advs = append(advs, a)
		}
		var comps []Component
		for range 1 + rng.IntN(6) {
			c := Component{Ecosystem: ecos[rng.IntN(len(ecos))], Name: names[rng.IntN(len(names))], Version: ver()}
			if rng.IntN(10) == 0 {
				c.Version = ""
			}
			c.PURL = "pkg:generic/" + c.Name + "@" + c.Version
			comps = append(comps, c)
		}
		var vex []VEX
		for range rng.IntN(3) {
			c := comps[rng.IntN(len(comps))]
			vex = append(vex, VEX{Vuln: []string{"A-1", "A-2", "CVE-1", "CVE-2"}[rng.IntN(4)], PURL: c.PURL, Status: VEXNotAffected})
		}
		ix := NewIndex()
		for _, a := range advs {
			ix.Add(a)
		}
		for _, v := range vex {
			ix.AddVEX(v)
		}
		got, want := ix.Match(comps), NaiveMatch(advs, vex, comps)
		if !cmp.Equal(got, want) {
			t.Fatalf("iteration %d: Index.Match and NaiveMatch differ:\n%s", iter, cmp.Diff(want, got))
		}
	}
}

func TestMatchOrderStable(t *testing.T) {
	advs := fixtures(t)
	ix := NewIndex()
	for _, a := range slices.Backward(advs) {
		ix.Add(a)
	}
	comps := []Component{mustComponent(t, "pkg:golang/golang.org/x/crypto@v0.1.0")}
	got := ix.Match(comps)
	if !slices.IsSortedFunc(got, func(a, b Match) int { return strings.Compare(a.Advisory.ID, b.Advisory.ID) }) {
		t.Error("matches not ordered by advisory ID")
	}
}

// TestTimelineEventsKeepOrder: events on one version keep the record's order. The record
// below is written as a timeline — introduced 0, fixed 3.1.1, then introduced 3.1.1 (a
// regression) and fixed 3.1.3 — and its generated versions list (…, 3.1.0, 3.1.1, 3.1.2)
// says 3.1.1 and 3.1.2 are affected. Sorting introduced before fixed at ties loses the second
// range.
func TestTimelineEventsKeepOrder(t *testing.T) {
	a := &Advisory{ID: "GHSA-TIMELINE", Affected: []Affected{{Ecosystem: "npm", Name: "pkg", Ranges: []Range{{Type: "SEMVER",
		Events: []Event{{Introduced: "0"}, {Fixed: "3.1.1"}, {Introduced: "3.1.1"}, {Fixed: "3.1.3"}}}}}}}
	ix := NewIndex()
	ix.Add(a)
	for v, want := range map[string]bool{"3.1.0": true, "3.1.1": true, "3.1.2": true, "3.1.3": false, "3.2.0": false} {
		c := Component{PURL: "pkg:npm/pkg@" + v, Ecosystem: "npm", Name: "pkg", Version: v}
		got := ix.Match([]Component{c})
		if affected := len(got) == 1 && got[0].Status == StatusAffected; affected != want {
			t.Errorf("%s: affected %v, want %v", v, affected, want)
		}
		if naive := NaiveMatch([]*Advisory{a}, nil, []Component{c}); !cmp.Equal(got, naive) {
			t.Errorf("%s: NaiveMatch disagrees: %+v", v, naive)
		}
	}
	// Written the other way round, [3.1.1, 3.1.1) stays empty.
	b := &Advisory{ID: "EMPTY", Affected: []Affected{{Ecosystem: "npm", Name: "pkg", Ranges: []Range{{Type: "SEMVER",
		Events: []Event{{Introduced: "3.1.1"}, {Fixed: "3.1.1"}}}}}}}
	ix = NewIndex()
	ix.Add(b)
	if got := ix.Match([]Component{{PURL: "pkg:npm/pkg@3.1.1", Ecosystem: "npm", Name: "pkg", Version: "3.1.1"}}); len(got) != 0 {
		t.Errorf("[3.1.1, 3.1.1): %+v", got)
	}
}

// TestProductWideVEX: a statement with a product and no component purl (an analyst's "not
// affected in thermostat 1.2.0") covers every component of that product's SBOMs and no other.
func TestProductWideVEX(t *testing.T) {
	a := &Advisory{ID: "GO-2023-2402", Aliases: []string{"CVE-2023-48795"}, Affected: []Affected{{Ecosystem: "Go", Name: "golang.org/x/crypto",
		Ranges: []Range{{Type: "SEMVER", Events: []Event{{Introduced: "0"}, {Fixed: "0.17.0"}}}}}}}
	c := Component{PURL: "pkg:golang/golang.org/x/crypto@v0.16.0", Ecosystem: "Go", Name: "golang.org/x/crypto", Version: "v0.16.0"}
	ix := NewIndex()
	ix.Add(a)
	v := VEX{Vuln: "CVE-2023-48795", Product: "pkg:generic/thermostat@1.2.0", Status: VEXNotAffected, Justification: "vulnerable_code_not_in_execute_path", Source: "upkeep"}
	ix.AddVEX(v)
	ix.AddVEX(VEX{Vuln: "CVE-2023-48795", Product: "pkg:generic/camera@2.0", Status: VEXAffected, Impact: "Update to 2.1", Source: "upkeep"})
	thermo := []Component{{PURL: "pkg:generic/thermostat@1.2.0", Name: "thermostat", Version: "1.2.0"}}
	camera := []Component{{PURL: "pkg:generic/camera@2.0", Name: "camera", Version: "2.0"}}
	if got := ix.MatchIn(thermo, []Component{c}); len(got) != 1 || got[0].Status != StatusNotAffected {
		t.Errorf("thermostat: %+v", got)
	}
	got := ix.MatchIn(camera, []Component{c})
	if len(got) != 1 || got[0].Status != StatusAffected {
		t.Fatalf("camera: %+v", got)
	}
	if st := ix.Statements(got[0], camera); len(st) != 1 || st[0].Status != VEXAffected {
		t.Errorf("camera statements %+v", st)
	}
	if naive := NaiveMatchIn([]*Advisory{a}, []VEX{v}, thermo, []Component{c}); len(naive) != 1 || naive[0].Status != StatusNotAffected {
		t.Errorf("naive: %+v", naive)
	}
}
