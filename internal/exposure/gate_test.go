package exposure_test

import (
	"bytes"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/exposure"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/product"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/store/sqlstore"
)

const feedDir = "../vuln/testdata"

// kevTerrapin is a KEV catalog naming CVE-2023-48795 (GO-2023-2402's alias), added on
// 2024-01-10.
var kevTerrapin = []byte(`{"title":"CISA Catalog of Known Exploited Vulnerabilities","catalogVersion":"2025.06.03","dateReleased":"2025-06-03T17:00:00.000Z","count":1,
"vulnerabilities":[{"cveID":"CVE-2023-48795","vendorProject":"OpenSSH","product":"SSH transport","vulnerabilityName":"Terrapin prefix truncation",
"dateAdded":"2024-01-10","shortDescription":"x","requiredAction":"Apply updates per vendor instructions.","dueDate":"2024-01-31","knownRansomwareCampaignUse":"Unknown","notes":"","cwes":["CWE-354"]}]}`)

func importBytes(t *testing.T, s *exposure.Service, name string, raw []byte) *exposure.ImportResult {
	t.Helper()
	res, err := s.Import(ctx, name, bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func setGate(t *testing.T, db *sqlstore.DB, name string, pol product.Policy) {
	t.Helper()
	svc := &product.Service{Store: db}
	patch := []byte(`{"support_end":"2031-12-31","gate_kev":` + map[bool]string{true: "true", false: "false"}[pol.GateKEV] + `,"gate_severity":"` + pol.GateSeverity + `"}`)
	if _, err := svc.SetPolicy(ctx, name, patch, "test"); err != nil {
		t.Fatal(err)
	}
}

// TestExploitFeedsAndSeverity imports the KEV catalog, EPSS scores and an NVD feed (twice: the
// second import changes nothing), and checks that a Go vulndb record, which has no severity,
// takes the NVD's for its CVE, says so, and is not dropped by --severity high.
func TestExploitFeedsAndSeverity(t *testing.T) {
	stores(t, func(t *testing.T, db *sqlstore.DB) {
		c := &clock{time.Date(2025, 6, 3, 0, 0, 0, 0, time.UTC)}
		s := newService(db, c)
		importFile(t, s, filepath.Join(osvDir, "GO-2024-3321.json"))
		importFile(t, s, filepath.Join(osvDir, "GO-2023-2402.json"))
		for i := range 2 {
			r1 := importFile(t, s, filepath.Join(feedDir, "kev/known_exploited_vulnerabilities.json"))
			r2 := importFile(t, s, filepath.Join(feedDir, "epss/epss_scores-2025-06-02.csv"))
			r3 := importFile(t, s, filepath.Join(feedDir, "nvd/nvdcve-2.0-sample.json"))
			r4 := importBytes(t, s, "kev.json", kevTerrapin)
			want := [4]int{3, 5, 2, 1}
			if i == 1 {
				want = [4]int{}
			}
			if got := [4]int{r1.KEV, r2.EPSS, r3.CVEs, r4.KEV}; got != want || len(r1.Errors)+len(r2.Errors)+len(r3.Errors) > 0 {
				t.Errorf("import %d: %v (%+v %+v %+v), want %v", i, got, r1, r2, r3, want)
			}
		}
		// A fresh service reads it all back from the store.
		s = newService(db, c)
		chk, err := s.CheckRelease(ctx, "p", "1.0", sbom("v0.16.0"))
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]exposure.Exposure{}
		for _, f := range chk.Findings {
			got[f.Advisory] = f
		}
		g := got["GO-2024-3321"]
		if g.Severity != "high" || !strings.HasPrefix(g.SeveritySource, "NVD CVE-2024-45337: CVSS 3.1 7.5 (nvd@nist.gov)") || g.EPSS == nil || g.EPSS.Score != 0.00234 || g.KEV != nil {
			t.Errorf("GO-2024-3321: %+v", g)
		}
		terrapin := got["GO-2023-2402"]
		if terrapin.KEV == nil || !terrapin.KEV.DateAdded.Equal(time.Date(2024, 1, 10, 0, 0, 0, 0, time.UTC)) || terrapin.Severity != "medium" {
			t.Errorf("GO-2023-2402: %+v", terrapin)
		}
		// Known exploited first in the default order.
		if chk.Findings[0].Advisory != "GO-2023-2402" {
			t.Errorf("order %v", []string{chk.Findings[0].Advisory, chk.Findings[1].Advisory})
		}
		if chk.Gate.Blocked || chk.Gate.KEV {
			t.Errorf("no gate set, but %+v", chk.Gate)
		}
		// Exposure filters and sorts by KEV, EPSS and severity.
		deviceOn(t, db, "p", "1.0")
		if _, err := s.PutSBOM(ctx, "p", "1.0", sbom("v0.16.0")); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			f    exposure.ExposureFilter
			want []string
		}{
			{exposure.ExposureFilter{}, []string{"GO-2023-2402", "GO-2024-3321"}},
			{exposure.ExposureFilter{Sort: "severity"}, []string{"GO-2024-3321", "GO-2023-2402"}},
			{exposure.ExposureFilter{Sort: "epss"}, []string{"GO-2023-2402", "GO-2024-3321"}},
			{exposure.ExposureFilter{KEV: true}, []string{"GO-2023-2402"}},
			{exposure.ExposureFilter{MinEPSS: 0.5}, []string{"GO-2023-2402"}},
			{exposure.ExposureFilter{Severity: "high"}, []string{"GO-2024-3321"}},
		} {
			rep, err := s.Exposure(ctx, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, e := range rep.Exposed {
				ids = append(ids, e.Advisory)
			}
			if !slices.Equal(ids, tc.want) {
				t.Errorf("%+v: %v, want %v", tc.f, ids, tc.want)
			}
		}
	})
}

// deviceOn creates release product@version and an accepted device running it.
func deviceOn(t *testing.T, db *sqlstore.DB, p, v string) *release.Release {
	t.Helper()
	r := &release.Release{Product: p, Version: v, SecurityVersion: 1, PublishedAt: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		HardwareIDs: []string{"hw"}, Class: "security", Target: p + "/" + v + "/fw", SHA256: "00", SHA512: "00", TargetsVersion: 1}
	if err := db.CreateRelease(ctx, r); err != nil {
		t.Fatal(err)
	}
	d := &fleet.Device{ID: "d-" + p + v, PublicKey: []byte(p + v), Serial: p + v, Product: p, HardwareID: "hw", Status: fleet.StatusAccepted,
		InstalledTarget: r.Target, InstalledVer: v, InstalledSHA256: "00", EnrolledAt: time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC)}
	if err := db.CreateDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestReleaseGate: a product whose policy refuses known exploited vulnerabilities refuses a
// release whose SBOM has one, at the check and at campaign creation (GateRelease), until a
// waiver or a VEX statement covers it; the waiver is kept after it is revoked.
func TestReleaseGate(t *testing.T) {
	stores(t, func(t *testing.T, db *sqlstore.DB) {
		c := &clock{time.Date(2025, 6, 3, 0, 0, 0, 0, time.UTC)}
		s := newService(db, c)
		s.Products = db
		importFile(t, s, filepath.Join(osvDir, "GO-2023-2402.json"))
		importFile(t, s, filepath.Join(osvDir, "GO-2024-3321.json"))
		importBytes(t, s, "kev.json", kevTerrapin)
		setGate(t, db, "p", product.Policy{GateKEV: true})
		rel := deviceOn(t, db, "p", "1.0")
		if err := s.GateRelease(ctx, rel); !apperr.Is(err, apperr.Forbidden) || !strings.Contains(err.Error(), "needs the SBOM") {
			t.Errorf("gate without an SBOM: %v", err)
		}
		if _, err := s.PutSBOM(ctx, "p", "1.0", sbom("v0.16.0")); err != nil {
			t.Fatal(err)
		}
		chk, err := s.CheckRelease(ctx, "p", "1.0", sbom("v0.16.0"))
		if err != nil {
			t.Fatal(err)
		}
		if !chk.Gate.Blocked || !slices.Equal(chk.Gate.Blockers, []string{"GO-2023-2402"}) {
			t.Fatalf("gate %+v", chk.Gate)
		}
		if err := s.GateRelease(ctx, rel); !apperr.Is(err, apperr.Forbidden) || !strings.Contains(err.Error(), "GO-2023-2402") {
			t.Errorf("campaign gate: %v", err)
		}
		// A waiver needs a name and a reason; with them the release passes.
		if _, err := s.CreateWaiver(ctx, exposure.Waiver{Product: "p", Vuln: "CVE-2023-48795", Reason: "ssh disabled"}); !apperr.Is(err, apperr.Invalid) {
			t.Errorf("unnamed waiver: %v", err)
		}
		w, err := s.CreateWaiver(ctx, exposure.Waiver{Product: "p", Version: "1.0", Vuln: "CVE-2023-48795", Reason: "SSH is off in this build", CreatedBy: "Ada Lovelace"})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.GateRelease(ctx, rel); err != nil {
			t.Errorf("waived: %v", err)
		}
		chk, _ = s.CheckRelease(ctx, "p", "1.0", sbom("v0.16.0"))
		if chk.Gate.Blocked || !slices.Equal(chk.Gate.Waived, []string{"GO-2023-2402"}) || !strings.Contains(chk.Findings[0].Gate, w.ID) {
			t.Errorf("waived check: %+v %q", chk.Gate, chk.Findings[0].Gate)
		}
		if err := s.RevokeWaiver(ctx, w.ID, "Grace Hopper"); err != nil {
			t.Fatal(err)
		}
		if err := s.RevokeWaiver(ctx, w.ID, "Grace Hopper"); !apperr.Is(err, apperr.Conflict) {
			t.Errorf("second revocation: %v", err)
		}
		ws, _ := s.Waivers(ctx, "p")
		if len(ws) != 1 || ws[0].RevokedAt == nil || ws[0].RevokedBy != "Grace Hopper" {
			t.Errorf("waivers %+v", ws)
		}
		if err := s.GateRelease(ctx, rel); !apperr.Is(err, apperr.Forbidden) {
			t.Errorf("revoked waiver still lets it through: %v", err)
		}
		// A VEX statement covers it too. The severity gate then still refuses nothing: the
		// remaining GO-2024-3321 has no severity without an NVD feed.
		if _, err := s.SetTriage(ctx, exposure.Triage{Product: "p", Vuln: "CVE-2023-48795", Status: "not_affected"}, "ops"); !apperr.Is(err, apperr.Invalid) {
			t.Errorf("not_affected without a justification: %v", err)
		}
		if _, err := s.SetTriage(ctx, exposure.Triage{Product: "p", Vuln: "CVE-2023-48795", Status: "not_affected", Justification: "vulnerable_code_not_in_execute_path",
			Impact: "The firmware never starts the SSH server."}, "ops"); err != nil {
			t.Fatal(err)
		}
		if err := s.GateRelease(ctx, rel); err != nil {
			t.Errorf("VEX not_affected: %v", err)
		}
		// Suppressed everywhere: exposure, --fixes targets, time to patch.
		rep, _ := s.Exposure(ctx, exposure.ExposureFilter{All: true})
		if len(rep.Exposed) != 1 || rep.Exposed[0].Advisory != "GO-2024-3321" || len(rep.NotAffected) != 1 || rep.NotAffected[0].VEX[0].Justification != "vulnerable_code_not_in_execute_path" {
			t.Errorf("exposure %+v", rep)
		}
		if _, ids, _ := s.Exposed(ctx, "CVE-2023-48795", ""); len(ids) != 0 {
			t.Errorf("--fixes still targets %v", ids)
		}
		ttp, _ := s.TimeToPatch(ctx, "p")
		if len(ttp.Advisories) != 1 || ttp.Advisories[0].Advisory != "GO-2024-3321" {
			t.Errorf("time to patch %+v", ttp.Advisories)
		}
		// An affected statement annotates (with its action) and does not suppress.
		if _, err := s.SetTriage(ctx, exposure.Triage{Product: "p", Version: "1.0", Vuln: "GO-2024-3321", Status: "affected", Action: "Update to 1.1", Analyst: "Ada"}, "ops"); err != nil {
			t.Fatal(err)
		}
		rep, _ = s.Exposure(ctx, exposure.ExposureFilter{})
		if len(rep.Exposed) != 1 || len(rep.Exposed[0].VEX) != 1 || rep.Exposed[0].VEX[0].Statement != "Update to 1.1" {
			t.Errorf("annotated exposure %+v", rep.Exposed)
		}
		ts, _ := s.Triage(ctx, "p")
		if len(ts) != 2 || ts[1].Analyst != "Ada" || ts[0].Analyst != "ops" {
			t.Errorf("triage %+v", ts)
		}
		// The severity gate: with the NVD feed GO-2024-3321 is high and blocks.
		setGate(t, db, "p", product.Policy{GateKEV: true, GateSeverity: "high"})
		importFile(t, s, filepath.Join(feedDir, "nvd/nvdcve-2.0-sample.json"))
		if err := s.GateRelease(ctx, rel); !apperr.Is(err, apperr.Forbidden) || !strings.Contains(err.Error(), "GO-2024-3321") {
			t.Errorf("severity gate: %v", err)
		}
	})
}

// TestTimeToPatchFromKEV: time to patch counts from the KEV catalog's dateAdded when it is
// earlier than the advisory's publication, and marks the vulnerability exploited.
func TestTimeToPatchFromKEV(t *testing.T) {
	stores(t, func(t *testing.T, db *sqlstore.DB) {
		c := &clock{time.Date(2025, 6, 3, 0, 0, 0, 0, time.UTC)}
		s := newService(db, c)
		importFile(t, s, filepath.Join(osvDir, "GO-2023-2402.json")) // no date: counts from its import
		importFile(t, s, filepath.Join(osvDir, "GO-2024-3321.json"))
		importBytes(t, s, "kev.json", kevTerrapin)
		deviceOn(t, db, "p", "1.0")
		if _, err := s.PutSBOM(ctx, "p", "1.0", sbom("v0.16.0")); err != nil {
			t.Fatal(err)
		}
		ttp, err := s.TimeToPatch(ctx, "p")
		if err != nil {
			t.Fatal(err)
		}
		if len(ttp.Advisories) != 2 {
			t.Fatalf("%+v", ttp.Advisories)
		}
		a, b := ttp.Advisories[0], ttp.Advisories[1]
		if a.Advisory != "GO-2023-2402" || !a.Exploited || a.PublishedFrom != "kev" || !a.Published.Equal(time.Date(2024, 1, 10, 0, 0, 0, 0, time.UTC)) {
			t.Errorf("exploited: %+v", a)
		}
		if b.Exploited || b.PublishedFrom != "advisory" || !b.Published.Equal(c.t) {
			t.Errorf("other: %+v", b)
		}
		lt, _ := s.LabelTimeToPatch(ctx, "p")
		if !lt[0].Exploited || lt[1].Exploited {
			t.Errorf("label %+v", lt)
		}
	})
}

// TestUndecidedInAffectedRow: one vulnerability, two components of a release: one affected
// (a pre-release inside an ECOSYSTEM range), one whose version equals a bound of a GIT-only
// range. The row is affected, but the second component keeps its own verdict, unmatched, and
// is counted as undecided.
func TestUndecidedInAffectedRow(t *testing.T) {
	stores(t, func(t *testing.T, db *sqlstore.DB) {
		c := &clock{time.Date(2025, 6, 3, 0, 0, 0, 0, time.UTC)}
		s := newService(db, c)
		osv := []byte(`{"id":"GHSA-mixd-0000-0001","modified":"2025-05-01T00:00:00Z","published":"2025-04-01T00:00:00Z","aliases":["CVE-2025-1111"],
"affected":[{"package":{"ecosystem":"npm","name":"left"},"ranges":[{"type":"SEMVER","events":[{"introduced":"2.0.0-rc.1"},{"fixed":"2.0.1"}]}]},
{"package":{"ecosystem":"npm","name":"right"},"ranges":[{"type":"GIT","repo":"https://github.com/x/right","events":[{"introduced":"0"},{"fixed":"4.1.0"}]}]}]}`)
		importBytes(t, s, "mixed.json", osv)
		deviceOn(t, db, "p", "1.0")
		sb := []byte(`{"bomFormat":"CycloneDX","specVersion":"1.5","version":1,"components":[
{"type":"library","name":"left","version":"2.0.0-rc.2","purl":"pkg:npm/left@2.0.0-rc.2"},
{"type":"library","name":"right","version":"4.1.0","purl":"pkg:npm/right@4.1.0"}]}`)
		if _, err := s.PutSBOM(ctx, "p", "1.0", sb); err != nil {
			t.Fatal(err)
		}
		rep, err := s.Exposure(ctx, exposure.ExposureFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Exposed) != 1 || rep.Undecided != 1 {
			t.Fatalf("exposed %+v, undecided %d: want one affected row and one undecided finding", rep.Exposed, rep.Undecided)
		}
		cs := rep.Exposed[0].Components
		if len(cs) != 2 || cs[0].Status != "affected" || cs[1].Status != "unmatched" || !strings.Contains(cs[1].Reason, "GIT") {
			t.Errorf("components %+v", cs)
		}
		chk, _ := s.CheckRelease(ctx, "p", "1.0", sb)
		if chk.Undecided != 1 {
			t.Errorf("check undecided %d", chk.Undecided)
		}
	})
}
