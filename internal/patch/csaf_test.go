package patch_test

import (
	"strings"
	"testing"
	"time"

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
