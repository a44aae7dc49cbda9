package exposure_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/exposure"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/store/sqlstore"
	"upkeep.dev/upkeep/internal/vuln"
)

// csafFW is a vendor document of the usual shape: fw below 2.4 known_affected, from 2.4 on fixed.
const csafFW = `{
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

// TestCSAFRangesStored: the version range of a VEX statement survives the store, so a reloaded
// index still keeps the fixed statement for >=2.4 off version 2.1.
func TestCSAFRangesStored(t *testing.T) {
	stores(t, func(t *testing.T, db *sqlstore.DB) {
		c := &clock{t: time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)}
		s := newService(db, c)
		if _, err := s.Import(ctx, "fw.json", strings.NewReader(csafFW)); err != nil {
			t.Fatal(err)
		}
		vs, err := db.FindVEX(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ranges := map[string]string{}
		for _, v := range vs {
			ranges[v.Status] = v.Range
		}
		if ranges[vuln.VEXFixed] != "vers:generic/>=2.4" || ranges[vuln.VEXAffected] != "vers:generic/<2.4" {
			t.Errorf("stored statements %+v", vs)
		}
		res, err := s.Import(ctx, "fw.json", strings.NewReader(csafFW))
		if err != nil {
			t.Fatal(err)
		}
		if res.VEXUnchanged != 2 || res.VEXImported+res.VEXUpdated != 0 {
			t.Errorf("second import %+v", res)
		}
	})
}

// csafDoc is a CSAF VEX document with one vulnerability; statuses maps a product_status list
// to the products of the tree named there (each "name@version" a product_version branch).
func csafDoc(tracking, cve string, statuses map[string][]string) string {
	type prod struct{ name, version, id string }
	var prods []prod
	var status []string
	n := 0
	for st, ps := range statuses {
		var ids []string
		for _, p := range ps {
			name, version, _ := strings.Cut(p, "@")
			n++
			id := fmt.Sprintf("P%d", n)
			prods = append(prods, prod{name, version, id})
			ids = append(ids, `"`+id+`"`)
		}
		status = append(status, fmt.Sprintf("%q: [%s]", st, strings.Join(ids, ",")))
	}
	var branches []string
	for _, p := range prods {
		branches = append(branches, fmt.Sprintf(`{"category": "product_name", "name": %q, "branches": [
  {"category": "product_version", "name": %q, "product": {"name": "%s %s", "product_id": %q}}]}`, p.name, p.version, p.name, p.version, p.id))
	}
	return fmt.Sprintf(`{
 "document": {"category": "csaf_vex", "csaf_version": "2.0", "title": "t",
  "publisher": {"category": "vendor", "name": "n", "namespace": "https://example.com"},
  "tracking": {"id": %q, "status": "final", "version": "1", "initial_release_date": "2024-01-02T00:00:00Z",
   "current_release_date": "2024-01-02T00:00:00Z", "revision_history": [{"date": "2024-01-02T00:00:00Z", "number": "1", "summary": "s"}]}},
 "product_tree": {"branches": [{"category": "vendor", "name": "acme", "branches": [%s]}]},
 "vulnerabilities": [{"cve": %q, "product_status": {%s}}]
}`, tracking, strings.Join(branches, ","), cve, strings.Join(status, ","))
}

// world is a product p with releases and devices on them.
type world struct {
	t  *testing.T
	db *sqlstore.DB
	s  *exposure.Service
	c  *clock
}

func newWorld(t *testing.T, db *sqlstore.DB, at time.Time) *world {
	c := &clock{t: at}
	return &world{t: t, db: db, s: newService(db, c), c: c}
}

func (w *world) importString(name, doc string) *exposure.ImportResult {
	w.t.Helper()
	res, err := w.s.Import(ctx, name, strings.NewReader(doc))
	if err != nil {
		w.t.Fatal(err)
	}
	if len(res.Errors) > 0 {
		w.t.Fatalf("import %s: %+v", name, res.Errors)
	}
	return res
}

// release publishes product@version (security version sv) at the clock's time, with an SBOM if
// the SBOM is not nil.
func (w *world) release(product, version string, sv int64, sb []byte) {
	w.t.Helper()
	r := &release.Release{Product: product, Version: version, SecurityVersion: sv, PublishedAt: w.c.t,
		HardwareIDs: []string{"hw"}, Class: "security", Target: product + "/" + version + "/fw", SHA256: "00", SHA512: "00", TargetsVersion: 1}
	if err := w.db.CreateRelease(ctx, r); err != nil {
		w.t.Fatal(err)
	}
	if sb != nil {
		if _, err := w.s.PutSBOM(ctx, product, version, sb); err != nil {
			w.t.Fatal(err)
		}
	}
}

// enrol enrols an accepted device of product running version, at the clock's time.
func (w *world) enrol(id, product, version string) {
	w.t.Helper()
	d := &fleet.Device{ID: id, PublicKey: []byte(id), Serial: id, Product: product, HardwareID: "hw",
		Status: fleet.StatusAccepted, InstalledTarget: product + "/" + version + "/fw", InstalledVer: version, InstalledSHA256: "00", EnrolledAt: w.c.t}
	if err := w.db.CreateDevice(ctx, d); err != nil {
		w.t.Fatal(err)
	}
	w.s.OnEnroll(ctx, d)
}

// TestAdvisoryUnion: CSAF records are kept per (document, CVE), a VEX-only document adds no
// advisory, and a lookup by CVE (exposure, --fixes) takes every record that names it.
func TestAdvisoryUnion(t *testing.T) {
	stores(t, func(t *testing.T, db *sqlstore.DB) {
		w := newWorld(t, db, time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC))
		const cve = "CVE-2023-48795"
		importFile(t, w.s, filepath.Join(osvDir, "GO-2023-2402.json"))
		w.release("p", "1.0", 1, sbom("v0.16.0"))
		w.release("p", "1.1", 2, sbom("v0.31.0"))
		w.enrol("d1", "p", "1.0")

		// A VEX-only document about the CVE, for another product: statements, no advisory.
		res := w.importString("vex.json", csafDoc("VEX-1", cve, map[string][]string{"known_not_affected": {"camera@1.0"}}))
		if res.Imported+res.Updated != 0 || res.VEXImported != 1 {
			t.Errorf("VEX-only import %+v", res)
		}
		sa, err := w.s.Advisory(cve)
		if err != nil || sa.Advisory.ID != "GO-2023-2402" {
			t.Fatalf("Advisory(%s) = %+v, %v", cve, sa, err)
		}
		rel, devs, err := w.s.Exposed(ctx, cve, "")
		if err != nil || rel != "p@1.1" || !slices.Equal(devs, []string{"d1"}) {
			t.Errorf("Exposed(%s) = %s %v %v", cve, rel, devs, err)
		}

		// Two vendors' documents about the CVE are two records; the CVE finds both and the OSV one.
		w.importString("a.json", csafDoc("ACME-1", cve, map[string][]string{"known_affected": {"gw@3.1"}}))
		w.importString("b.json", csafDoc("OTHER-1", cve, map[string][]string{"known_affected": {"cam@2.0"}}))
		for _, id := range []string{"ACME-1/" + cve, "OTHER-1/" + cve} {
			if _, err := w.s.Advisory(id); err != nil {
				t.Errorf("Advisory(%s): %v", id, err)
			}
		}
		sa, err = w.s.Advisory(cve)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"ACME-1/" + cve, "OTHER-1/" + cve, "GO-2023-2402", "GHSA-45x7-px36-x8w8"} {
			if !slices.Contains(sa.Advisory.Aliases, id) {
				t.Errorf("Advisory(%s) = %s, aliases %v: no %s", cve, sa.Advisory.ID, sa.Advisory.Aliases, id)
			}
		}
		if len(sa.Advisory.Affected) < 3 {
			t.Errorf("union has affected %+v", sa.Advisory.Affected)
		}
		rel, devs, err = w.s.Exposed(ctx, cve, "")
		if err != nil || rel != "p@1.1" || !slices.Equal(devs, []string{"d1"}) {
			t.Errorf("Exposed(%s) after the vendor documents = %s %v %v", cve, rel, devs, err)
		}
	})
}

// TestVEXScopedToProduct: a statement about x/crypto as part of thermostat 1.0 suppresses the
// match in the thermostat's release (named by its SBOM's metadata.component) and not in the
// camera's, which ships the same x/crypto.
func TestVEXScopedToProduct(t *testing.T) {
	stores(t, func(t *testing.T, db *sqlstore.DB) {
		w := newWorld(t, db, time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC))
		importFile(t, w.s, filepath.Join(osvDir, "GO-2023-2402.json"))
		thermo := `{"bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
 "metadata": {"component": {"type": "firmware", "name": "thermostat", "version": "1.0", "purl": "pkg:generic/thermostat@1.0"}},
 "components": [{"type": "library", "name": "golang.org/x/crypto", "version": "v0.16.0", "purl": "pkg:golang/golang.org/x/crypto@v0.16.0"}]}`
		w.release("thermo", "7.0", 1, []byte(thermo)) // the SBOM names the product, not the release
		w.release("camera", "1.0", 1, sbom("v0.16.0"))
		w.enrol("t1", "thermo", "7.0")
		w.enrol("c1", "camera", "1.0")
		w.importString("vex.json", `{
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
 "vulnerabilities": [{"cve": "CVE-2023-48795", "product_status": {"known_not_affected": ["T10:XC"]}}]
}`)
		check := func(s *exposure.Service) {
			t.Helper()
			rep, err := s.Exposure(ctx, exposure.ExposureFilter{All: true})
			if err != nil {
				t.Fatal(err)
			}
			status := map[string]string{}
			for _, l := range [][]exposure.Exposure{rep.Exposed, rep.NotAffected} {
				for _, e := range l {
					status[e.Product] = e.Status
				}
			}
			if status["camera"] != vuln.StatusAffected || status["thermo"] != vuln.StatusNotAffected {
				t.Errorf("statuses %v", status)
			}
		}
		check(w.s)
		check(newService(db, w.c)) // from the store
	})
}
