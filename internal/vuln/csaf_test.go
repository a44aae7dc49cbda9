package vuln

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseCSAFSecvisogramVEX(t *testing.T) {
	advs, vexs, err := ParseCSAF(readFixture(t, "csaf/sec-vex-2022-0001.json"))
	if err != nil {
		t.Fatal(err)
	}
	// A document that names no affected product gives statements, no advisory.
	if len(advs) != 0 {
		t.Errorf("a not-affected-only document produced advisories %+v", advs)
	}
	want := VEX{
		Vuln:          "CVE-2021-44228",
		PURL:          "pkg:generic/Secvisogram",
		Range:         "<=1.14.0",
		Status:        VEXNotAffected,
		Justification: "component_not_present",
		Impact:        "Secvisogram is written in JavaScript. No Java is included.",
		Source:        "SEC-VEX-2022-0001",
	}
	if diff := cmp.Diff(want, vexs[0]); diff != "" {
		t.Errorf("first VEX (-want +got):\n%s", diff)
	}
	if len(vexs) != 3 {
		t.Errorf("%d VEX, want 3", len(vexs))
	}
}

func TestParseCSAFOthers(t *testing.T) {
	for _, tc := range []struct {
		file    string
		advs    int
		status  string
		purl    string
		sev     string
		summary string
	}{
		{"csaf/2022-evd-uc-01-na-001.json", 0, VEXNotAffected, "pkg:generic/ABC@4.2", "unknown", ""},
		{"csaf/avendor-advisory-0004.json", 0, VEXUnderInvestigation, "pkg:generic/product_1@1.1", "unknown", ""},
		// Fixed products only: statements, no advisory.
		{"csaf/rhsa-2021_5217.json", 0, VEXFixed, "", "high", ""},
	} {
		advs, vexs, err := ParseCSAF(readFixture(t, tc.file))
		if err != nil {
			t.Errorf("%s: %v", tc.file, err)
			continue
		}
		if len(advs) != tc.advs {
			t.Errorf("%s: %d advisories, want %d", tc.file, len(advs), tc.advs)
		}
		if len(advs) > 0 && advs[0].Severity != tc.sev {
			t.Errorf("%s: severity %q, want %q", tc.file, advs[0].Severity, tc.sev)
		}
		if tc.purl == "" {
			continue
		}
		i := slices.IndexFunc(vexs, func(v VEX) bool { return v.PURL == tc.purl && v.Status == tc.status })
		if i < 0 {
			t.Errorf("%s: no %s VEX for %s in %+v", tc.file, tc.status, tc.purl, vexs)
		}
	}
}

// A small document exercising purls, relationships, version ranges and
// product groups (which gocsaf v3.7.0 cannot decode on its own).
const csafShapes = `{
 "document": {"category": "csaf_vex", "csaf_version": "2.0", "title": "t",
  "publisher": {"category": "vendor", "name": "n", "namespace": "https://example.com"},
  "tracking": {"id": "T-1", "status": "final", "version": "1", "initial_release_date": "2024-01-02T00:00:00Z",
   "current_release_date": "2024-02-03T00:00:00Z", "revision_history": [{"date": "2024-01-02T00:00:00Z", "number": "1", "summary": "s"}]}},
 "product_tree": {
  "branches": [{"category": "vendor", "name": "acme", "branches": [
   {"category": "product_name", "name": "gateway", "branches": [
    {"category": "product_version_range", "name": "vers:generic/>=2.0|<2.4", "product": {"name": "gw 2.x", "product_id": "GW2"}},
    {"category": "product_version", "name": "3.1", "product": {"name": "gw 3.1", "product_id": "GW31"}}]},
   {"category": "product_name", "name": "crypto", "branches": [
    {"category": "product_version", "name": "0.16.0", "product": {"name": "x/crypto 0.16.0", "product_id": "XC16",
      "product_identification_helper": {"purl": "pkg:golang/golang.org/x/crypto@v0.16.0"}}}]}]}],
  "relationships": [{"category": "default_component_of", "product_reference": "XC16", "relates_to_product_reference": "GW31",
   "full_product_name": {"name": "x/crypto in gw 3.1", "product_id": "GW31:XC16"}}],
  "product_groups": [{"group_id": "G", "product_ids": ["GW31:XC16", "GW31"]}]},
 "vulnerabilities": [{"cve": "CVE-2023-48795", "ids": [{"system_name": "Go", "text": "GO-2023-2402"}],
  "scores": [{"products": ["GW2"], "cvss_v3": {"version": "3.1", "vectorString": "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:N/I:H/A:N", "baseScore": 5.9, "baseSeverity": "MEDIUM"}}],
  "product_status": {"known_affected": ["GW2"], "known_not_affected": ["GW31:XC16", "GW31"]},
  "flags": [{"label": "vulnerable_code_not_in_execute_path", "group_ids": ["G"]}]}]
}`

func TestParseCSAFShapes(t *testing.T) {
	advs, vexs, err := ParseCSAF([]byte(csafShapes))
	if err != nil {
		t.Fatal(err)
	}
	a := advs[0]
	if a.ID != "T-1/CVE-2023-48795" || !slices.Equal(a.Aliases, []string{"CVE-2023-48795", "GO-2023-2402"}) || a.Severity != SeverityMedium {
		t.Errorf("advisory %+v", a)
	}
	wantAff := []Affected{{Ecosystem: "", Name: "gateway", Ranges: []Range{{Type: "ECOSYSTEM", Events: []Event{{Introduced: "2.0"}, {Fixed: "2.4"}}}}}}
	if diff := cmp.Diff(wantAff, a.Affected); diff != "" {
		t.Errorf("Affected (-want +got):\n%s", diff)
	}
	wantVEX := []VEX{
		{Vuln: "CVE-2023-48795", PURL: "pkg:golang/golang.org/x/crypto@v0.16.0", Product: "pkg:generic/gateway@3.1", Status: VEXNotAffected, Justification: "vulnerable_code_not_in_execute_path", Source: "T-1"},
		{Vuln: "CVE-2023-48795", PURL: "pkg:generic/gateway@3.1", Status: VEXNotAffected, Justification: "vulnerable_code_not_in_execute_path", Source: "T-1"},
		{Vuln: "CVE-2023-48795", PURL: "pkg:generic/gateway", Range: "vers:generic/>=2.0|<2.4", Status: VEXAffected, Source: "T-1"},
	}
	if diff := cmp.Diff(wantVEX, vexs); diff != "" {
		t.Errorf("VEX (-want +got):\n%s", diff)
	}

	// The range is matched with the generic firmware ordering.
	ix := NewIndex()
	ix.Add(a)
	got := ix.Match([]Component{
		{PURL: "pkg:generic/gateway@2.0", Name: "gateway", Version: "2.0"},
		{PURL: "pkg:generic/gateway@2.3.9", Name: "gateway", Version: "2.3.9"},
		{PURL: "pkg:generic/gateway@2.4", Name: "gateway", Version: "2.4"},
	})
	if len(got) != 2 || got[0].Component.Version != "2.0" || got[1].Component.Version != "2.3.9" {
		t.Errorf("matches %+v", got)
	}
}

func TestParseCSAFErrors(t *testing.T) {
	for _, raw := range []string{``, `{}`, `{"document":{}}`, `[]`, `{"document":{"category":"csaf_vex","csaf_version":"2.1"}}`} {
		if _, _, err := ParseCSAF([]byte(raw)); err == nil {
			t.Errorf("ParseCSAF(%q): no error", raw)
		}
	}
}

func TestVersAffected(t *testing.T) {
	for _, tc := range []struct {
		in       string
		want     []Event
		versions []string
		fail     bool
	}{
		{in: "<=1.14.0", want: []Event{{Introduced: "0"}, {LastAffected: "1.14.0"}}},
		{in: ">=1.0 <2.0", want: []Event{{Introduced: "1.0"}, {Fixed: "2.0"}}},
		{in: ">= 1.0, < 2.0", want: []Event{{Introduced: "1.0"}, {Fixed: "2.0"}}},
		{in: "vers:semver/>=1.2.3", want: []Event{{Introduced: "1.2.3"}}},
		{in: "vers:generic/<2.4", want: []Event{{Introduced: "0"}, {Fixed: "2.4"}}},
		{in: "vers:generic/>=2.0|<2.4|>=3.0|<3.1", want: []Event{{Introduced: "2.0"}, {Fixed: "2.4"}, {Introduced: "3.0"}, {Fixed: "3.1"}}},
		{in: "vers:npm/1.2.3|1.2.4", versions: []string{"1.2.3", "1.2.4"}},
		{in: ">1.0", fail: true},
		{in: "<1|<2", fail: true},
		{in: "vers:generic", fail: true},
	} {
		r, vs, err := versAffected("", tc.in)
		if tc.fail {
			if err == nil {
				t.Errorf("versAffected(%q) = %+v, %v; want an error", tc.in, r, vs)
			}
			continue
		}
		var got []Event
		if r != nil {
			got = r.Events
		}
		if err != nil || !cmp.Equal(got, tc.want) || !cmp.Equal(vs, tc.versions) {
			t.Errorf("versAffected(%q) = %+v, %v, %v; want %+v, %v", tc.in, got, vs, err, tc.want, tc.versions)
		}
	}
}

func TestVersContains(t *testing.T) {
	for _, tc := range []struct {
		expr, v string
		want    bool
	}{
		{"vers:generic/<2.4", "2.1", true},
		{"vers:generic/<2.4", "2.3.9", true},
		{"vers:generic/<2.4", "2.4", false},
		{"vers:generic/>=2.4", "2.4", true},
		{"vers:generic/>=2.4", "2.3.9", false},
		{"vers:generic/>=2.4", "10.0", true},
		{"vers:generic/>=2.0|<2.4|>=3.0|<=3.1", "3.1", true},
		{"vers:generic/>=2.0|<2.4|>=3.0|<=3.1", "2.7", false},
		{"vers:generic/>1.0|!=1.5", "1.5", false},
		{"vers:generic/>1.0|!=1.5", "1.6", true},
		{"vers:generic/1.2|1.4", "1.4", true},
		{"vers:generic/1.2|1.4", "1.3", false},
		{"vers:generic/*", "7", true},
	} {
		got, err := versContains("", tc.expr, tc.v)
		if err != nil || got != tc.want {
			t.Errorf("versContains(%q, %q) = %v, %v; want %v", tc.expr, tc.v, got, err, tc.want)
		}
	}
}

// The usual vendor shape: the range below the fix known_affected, the range
// from the fix on fixed. The fixed statement must not hide the affected
// versions.
const csafRanges = `{
 "document": {"category": "csaf_vex", "csaf_version": "2.0", "title": "t",
  "publisher": {"category": "vendor", "name": "n", "namespace": "https://example.com"},
  "tracking": {"id": "ACME-2024-7", "status": "final", "version": "1", "initial_release_date": "2024-01-02T00:00:00Z",
   "current_release_date": "2024-01-02T00:00:00Z", "revision_history": [{"date": "2024-01-02T00:00:00Z", "number": "1", "summary": "s"}]}},
 "product_tree": {"branches": [{"category": "vendor", "name": "acme", "branches": [
   {"category": "product_name", "name": "fw", "branches": [
    {"category": "product_version_range", "name": "vers:generic/<2.4", "product": {"name": "fw < 2.4", "product_id": "FW-OLD"}},
    {"category": "product_version_range", "name": "vers:generic/>=2.4", "product": {"name": "fw >= 2.4", "product_id": "FW-NEW"}}]}]}]},
 "vulnerabilities": [{"cve": "CVE-2024-0001",
  "product_status": {"known_affected": ["FW-OLD"], "fixed": ["FW-NEW"]}}]
}`

func TestCSAFRangeStatuses(t *testing.T) {
	advs, vexs, err := ParseCSAF([]byte(csafRanges))
	if err != nil {
		t.Fatal(err)
	}
	ix := NewIndex()
	for _, a := range advs {
		ix.Add(a)
	}
	for _, v := range vexs {
		ix.AddVEX(v)
	}
	comp := func(v string) Component {
		return Component{PURL: "pkg:generic/fw@" + v, Name: "fw", Version: v}
	}
	cs := []Component{comp("2.1"), comp("2.3.9"), comp("2.4"), comp("3.0")}
	got := map[string]string{}
	for _, m := range ix.Match(cs) {
		got[m.Component.Version] = m.Status
	}
	want := map[string]string{"2.1": StatusAffected, "2.3.9": StatusAffected}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(ix.Match(cs), NaiveMatch(advs, vexs, cs)); diff != "" {
		t.Errorf("NaiveMatch disagrees (-index +naive):\n%s", diff)
	}

	// A version-less product of the same package with the fixed range must
	// still not suppress a match outside its range.
	ix.Add(&Advisory{ID: "CVE-2024-0002", Affected: []Affected{{Name: "fw", Ranges: []Range{{Type: "ECOSYSTEM", Events: []Event{{Introduced: "0"}}}}}}})
	ix.AddVEX(VEX{Vuln: "CVE-2024-0002", PURL: "pkg:generic/fw", Range: "vers:generic/>=2.4", Status: VEXFixed})
	got = map[string]string{}
	for _, m := range ix.Match(cs) {
		if m.Advisory.ID == "CVE-2024-0002" {
			got[m.Component.Version] = m.Status
		}
	}
	want = map[string]string{"2.1": StatusAffected, "2.3.9": StatusAffected, "2.4": StatusNotAffected, "3.0": StatusNotAffected}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("range-scoped fixed statement (-want +got):\n%s", diff)
	}
}

// csafInThermostat says that x/crypto as part of thermostat 1.0 is not
// affected; the camera ships the same x/crypto and the document says nothing
// of it.
const csafInThermostat = `{
 "document": {"category": "csaf_vex", "csaf_version": "2.0", "title": "t",
  "publisher": {"category": "vendor", "name": "n", "namespace": "https://example.com"},
  "tracking": {"id": "ACME-VEX-3", "status": "final", "version": "1", "initial_release_date": "2024-01-02T00:00:00Z",
   "current_release_date": "2024-01-02T00:00:00Z", "revision_history": [{"date": "2024-01-02T00:00:00Z", "number": "1", "summary": "s"}]}},
 "product_tree": {
  "branches": [{"category": "vendor", "name": "acme", "branches": [
   {"category": "product_name", "name": "thermostat", "branches": [
    {"category": "product_version", "name": "1.0", "product": {"name": "thermostat 1.0", "product_id": "T10"}}]},
   {"category": "product_name", "name": "crypto", "product": {"name": "x/crypto", "product_id": "XC",
     "product_identification_helper": {"purl": "pkg:golang/golang.org/x/crypto"}}}]}],
  "relationships": [{"category": "default_component_of", "product_reference": "XC", "relates_to_product_reference": "T10",
   "full_product_name": {"name": "x/crypto in thermostat 1.0", "product_id": "T10:XC"}}]},
 "vulnerabilities": [{"cve": "CVE-2023-48795",
  "product_status": {"known_not_affected": ["T10:XC"]},
  "flags": [{"label": "vulnerable_code_not_in_execute_path", "product_ids": ["T10:XC"]}]}]
}`

func TestVEXScopedToProduct(t *testing.T) {
	_, vexs, err := ParseCSAF([]byte(csafInThermostat))
	if err != nil {
		t.Fatal(err)
	}
	if len(vexs) != 1 || vexs[0].Product != "pkg:generic/thermostat@1.0" || vexs[0].PURL != "pkg:golang/golang.org/x/crypto" {
		t.Fatalf("VEX %+v", vexs)
	}
	advs, err := ParseOSV(readFixture(t, "osv/GO-2023-2402.json"))
	if err != nil {
		t.Fatal(err)
	}
	ix := NewIndex()
	ix.Add(advs)
	ix.AddVEX(vexs[0])
	crypto := []Component{{PURL: "pkg:golang/golang.org/x/crypto@v0.16.0", Ecosystem: "Go", Name: "golang.org/x/crypto", Version: "v0.16.0"}}
	gen := func(name, version string) Component {
		return Component{PURL: "pkg:generic/" + name + "@" + version, Name: name, Version: version}
	}
	for _, tc := range []struct {
		name    string
		subject []Component
		want    string
	}{
		{"thermostat 1.0", []Component{gen("thermostat", "1.0")}, StatusNotAffected},
		{"thermostat 1.0 by release name", []Component{gen("other-sbom-name", "9"), gen("Thermostat", "1.0")}, StatusNotAffected},
		{"thermostat 2.0", []Component{gen("thermostat", "2.0")}, StatusAffected},
		{"camera", []Component{gen("camera", "1.0")}, StatusAffected},
		{"no subject", nil, StatusAffected},
	} {
		got := ix.MatchIn(tc.subject, crypto)
		if len(got) != 1 || got[0].Status != tc.want {
			t.Errorf("%s: %+v, want %s", tc.name, got, tc.want)
			continue
		}
		if diff := cmp.Diff(got, NaiveMatchIn([]*Advisory{advs}, vexs, tc.subject, crypto)); diff != "" {
			t.Errorf("%s: NaiveMatchIn disagrees (-index +naive):\n%s", tc.name, diff)
		}
	}
}
