package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/exposure"
	"upkeep.dev/upkeep/internal/label"
	"upkeep.dev/upkeep/internal/rollout"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/store/storetest"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/wire"
)

const (
	osvFixtures  = "../../internal/vuln/testdata/osv"
	csafFixtures = "../../internal/vuln/testdata/csaf"
	agentSBOM    = "../../internal/vuln/testdata/sbom/upkeep-agent.cdx.json" // x/crypto v0.58.0: no fixture advisory affects it
)

// firmwareSBOM is a small CycloneDX 1.5 SBOM of a firmware image that links golang.org/x/crypto
// v0.16.0 (affected by GO-2023-2402 / CVE-2023-48795 and GO-2024-3321) and x/net v0.17.0 (the
// fixed version of GO-2023-2102, so not affected).
const firmwareSBOM = `{
  "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
  "metadata": {"component": {"type": "firmware", "name": "thermostat", "version": "1.0.0", "purl": "pkg:generic/thermostat@1.0.0"}},
  "components": [
    {"type": "library", "name": "golang.org/x/crypto", "version": "v0.16.0", "purl": "pkg:golang/golang.org/x/crypto@v0.16.0?type=module"},
    {"type": "library", "name": "golang.org/x/net", "version": "v0.17.0", "purl": "pkg:golang/golang.org/x/net@v0.17.0?type=module"}
  ]
}`

// vexTerrapin is a CSAF 2.0 VEX document saying that no version of golang.org/x/crypto in the
// firmware is affected by CVE-2023-48795 (the firmware uses no SSH).
const vexTerrapin = `{
 "document": {"category": "csaf_vex", "csaf_version": "2.0", "title": "Terrapin in thermostat firmware",
  "publisher": {"category": "vendor", "name": "Upkeep test", "namespace": "https://upkeep.dev"},
  "tracking": {"id": "UPKEEP-VEX-1", "status": "final", "version": "1", "initial_release_date": "2024-01-02T00:00:00Z",
   "current_release_date": "2024-01-02T00:00:00Z", "revision_history": [{"date": "2024-01-02T00:00:00Z", "number": "1", "summary": "initial"}]}},
 "product_tree": {"branches": [{"category": "vendor", "name": "golang.org", "branches": [
   {"category": "product_name", "name": "x/crypto", "product": {"name": "golang.org/x/crypto", "product_id": "XC",
     "product_identification_helper": {"purl": "pkg:golang/golang.org/x/crypto"}}}]}]},
 "vulnerabilities": [{"cve": "CVE-2023-48795",
  "product_status": {"known_not_affected": ["XC"]},
  "flags": [{"label": "vulnerable_code_not_in_execute_path", "product_ids": ["XC"]}],
  "threats": [{"category": "impact", "details": "The firmware uses no SSH.", "product_ids": ["XC"]}]}]
}`

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// publishSBOM publishes a release of testProduct with its SBOM.
func (e *env) publishSBOM(version string, secVer int64, sbom string) *wire.Release {
	e.t.Helper()
	f := filepath.Join(e.t.TempDir(), "firmware-"+version+".img")
	if err := os.WriteFile(f, image(version, 4<<10), 0o644); err != nil {
		e.t.Fatal(err)
	}
	rel, err := e.cli.Publish(context.Background(), client.PublishOptions{
		File: f, TargetsKey: e.targetsKey, TrustedRoot: e.imageRoot, Expires: 30 * 24 * time.Hour, SBOM: sbom,
		Custom: uptane.TargetCustom{Product: testProduct, HardwareIDs: []string{testHardware}, Version: version, SecurityVersion: secVer, Class: uptane.ClassSecurity},
	})
	if err != nil {
		e.t.Fatalf("publish %s with SBOM: %v", version, err)
	}
	return rel
}

// signedCustom reads the signed custom of a published target from the server's image targets.
func (e *env) signedCustom(target string) uptane.TargetCustom {
	e.t.Helper()
	var raw []byte
	if err := e.cli.Do(context.Background(), "GET", "/api/v1/image/targets", nil, &raw); err != nil {
		e.t.Fatal(err)
	}
	md, err := metadata.Targets().FromBytes(raw)
	if err != nil {
		e.t.Fatal(err)
	}
	tf, ok := md.Signed.Targets[target]
	if !ok {
		e.t.Fatalf("target %s is not in the image targets", target)
	}
	c, err := uptane.ParseTargetCustom(tf)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func sha256File(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func exposureJSON(t *testing.T, g []string, extra ...string) *client.ExposureReport {
	t.Helper()
	var rep client.ExposureReport
	out := cli(t, append(append(g, "exposure", "--format", "json"), extra...)...)
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("exposure --format json: %v\n%s", err, out)
	}
	return &rep
}

// findRow finds the row of an advisory, by its id or one of the row's aliases (records that
// alias each other share one row).
func findRow(rows []client.Exposure, advisory string) *client.Exposure {
	for i := range rows {
		if rows[i].Advisory == advisory || slices.Contains(rows[i].Aliases, advisory) {
			return &rows[i]
		}
	}
	return nil
}

func importOut(t *testing.T, out string) (imported, updated, unchanged, skipped int) {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "advisories: ") {
			if _, err := fmt.Sscanf(l, "advisories: %d imported, %d updated, %d unchanged, %d skipped", &imported, &updated, &unchanged, &skipped); err != nil {
				t.Fatalf("import output %q: %v", l, err)
			}
			return
		}
	}
	t.Fatalf("no counts in import output:\n%s", out)
	return
}

// TestVulnSBOMAdvisoriesExposurePatch follows issue 5 end to end on a real server with simulated
// devices: a release published with its SBOM (digest signed into the target), the Go vulndb and
// GitHub OSV fixtures and CSAF documents imported, exposure in three formats, VEX suppression,
// idempotent re-import, a campaign created with --fixes, and time-to-patch from its commits.
func TestVulnSBOMAdvisoriesExposurePatch(t *testing.T) {
	e := newEnvWith(t, func(c *server.Config) { c.PollSeconds, c.RolloutEvery = 1, 200*time.Millisecond })
	ctx := context.Background()
	g := []string{"--server", e.srv.URL, "--token", e.srv.AdminToken}
	dir := t.TempDir()
	vulnSBOM := writeFile(t, dir, "thermostat-1.0.0.cdx.json", firmwareSBOM)

	// 1.0.0 is published with --sbom: the signed custom carries its digest.
	img := writeFile(t, dir, "firmware-1.0.0.img", string(image("1.0.0", 4<<10)))
	key := filepath.Join(e.keys, tuf.FileTargetsKey)
	out := cli(t, append(g, "release", "publish", img, "--product", testProduct, "--hardware", testHardware, "--version", "1.0.0",
		"--security-version", "1", "--key", key, "--sbom", vulnSBOM)...)
	if !strings.Contains(out, "published thermostat@1.0.0") {
		t.Fatalf("publish: %s", out)
	}
	rels, err := e.cli.Releases(ctx, testProduct)
	if err != nil || len(rels) != 1 {
		t.Fatalf("releases %+v %v", rels, err)
	}
	r100 := &rels[0]
	if got, want := e.signedCustom(r100.Target).SBOM, sha256File(t, vulnSBOM); got != want {
		t.Fatalf("signed custom sbom_sha256 = %q, want %q", got, want)
	}
	if out := cli(t, append(g, "sbom", "show", "thermostat@1.0.0")...); !strings.Contains(out, "CycloneDX 1.5, 3 components") || !strings.Contains(out, "bound to the image") {
		t.Fatalf("sbom show: %s", out)
	}
	// A different SBOM for the same release is refused: the signature names another digest.
	if err := runCLI(append(g, "sbom", "attach", "thermostat@1.0.0", agentSBOM)...); err == nil || !strings.Contains(userMessage(err), "names SBOM sha256 "+sha256File(t, vulnSBOM)) {
		t.Fatalf("mismatching sbom attach: %v", err)
	}
	// Not an SBOM at all: a clear error before anything is sent.
	notSBOM := writeFile(t, dir, "not-an-sbom.json", `{"hello": "world"}`)
	if err := runCLI(append(g, "sbom", "attach", "thermostat@1.0.0", notSBOM)...); err == nil || !strings.Contains(err.Error(), "want CycloneDX 1.2–1.6 or SPDX 2.2–2.3 JSON") {
		t.Fatalf("sbom attach of a non-SBOM: %v", err)
	}
	// The same SBOM again is accepted.
	cli(t, append(g, "sbom", "attach", "thermostat@1.0.0", vulnSBOM)...)

	// Advisories: the OSV fixtures, with one malformed file among them, and the CSAF documents.
	osvDir := filepath.Join(dir, "osv")
	copyDir(t, osvFixtures, osvDir)
	writeFile(t, osvDir, "broken.json", `{"id": "BROKEN-1", "affected": [`)
	out = cli(t, append(g, "advisories", "import", osvDir, csafFixtures)...)
	imported, updated, unchanged, skipped := importOut(t, out)
	if imported < 9 || skipped != 1 || !strings.Contains(out, "broken.json") || !strings.Contains(out, "VEX statements:") {
		t.Fatalf("first import: %s", out)
	}
	records := imported + updated + unchanged // CSAF documents may repeat a CVE
	// Importing the same files again changes nothing.
	out = cli(t, append(g, "advisories", "import", osvDir, csafFixtures)...)
	if imported, updated, unchanged, _ := importOut(t, out); imported != 0 || updated != 0 || unchanged != records || !strings.Contains(out, "VEX statements: 0 imported, 0 updated") {
		t.Fatalf("re-import: %s", out)
	}

	// Devices: three on 1.0.0, one already on the fixed release (never exposed).
	f := e.simFleet(3, r100, nil)
	f.Start(ctx)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if ds, _ := e.cli.Devices(ctx, ""); len(ds) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the simulated devices did not enrol")
		}
	}
	// The fix is published while they run 1.0.0: they are the exposed set E of time-to-patch B.
	r110 := e.publishSBOM("1.1.0", 2, agentSBOM)
	safe := e.device("SN-SAFE", image("1.1.0", 4<<10), r110)
	exposedIDs := []string{}
	for _, m := range f.Members {
		exposedIDs = append(exposedIDs, m.ID)
	}
	slices.Sort(exposedIDs)

	// An advisory on x/net with only a GIT range cannot be decided: counted, listed with --all.
	cli(t, append(g, "advisories", "import", writeFile(t, dir, "git-range.json", gitRangeOSV))...)
	rep := exposureJSON(t, g)
	if rep.Undecided != 1 || len(rep.Unmatched) != 0 {
		t.Errorf("undecided %d, unmatched rows %d: want 1 counted, none listed", rep.Undecided, len(rep.Unmatched))
	}
	for _, id := range []string{"GO-2023-2402", "GHSA-45x7-px36-x8w8", "GO-2024-3321"} {
		row := findRow(rep.Exposed, id)
		if row == nil {
			t.Fatalf("exposure lacks %s: %+v", id, rep.Exposed)
		}
		if row.Devices != 3 || row.Release != "1.0.0" || row.FixedIn != "1.1.0" || row.Status != "affected" || row.DaysExposed < 0 {
			t.Errorf("%s: %+v, want 3 devices on 1.0.0, fixed in 1.1.0", id, row)
		}
	}
	// GO-2023-2402 and GHSA-45x7 both describe CVE-2023-48795: one row, the GHSA record's.
	if go2402, ghsa := findRow(rep.Exposed, "GO-2023-2402"), findRow(rep.Exposed, "GHSA-45x7-px36-x8w8"); go2402 != ghsa || ghsa.Advisory != "GHSA-45x7-px36-x8w8" {
		t.Errorf("records aliasing CVE-2023-48795 are not one row: %+v and %+v", go2402, ghsa)
	}
	if row := findRow(rep.Exposed, "GO-2023-2102"); row != nil {
		t.Errorf("x/net v0.17.0 is the fixed version of GO-2023-2102, yet: %+v", row)
	}
	// GHSA-45x7 was published 2023-12-18, long before the devices enrolled: days count from the install.
	if ghsa := findRow(rep.Exposed, "GHSA-45x7-px36-x8w8"); ghsa.Severity != "medium" || ghsa.DaysExposed > 1 {
		t.Errorf("GHSA row %+v: want medium, exposed since the first install (today)", ghsa)
	}
	// --severity medium keeps the GHSA record (CVSS 5.9) and drops the Go records (no severity).
	if rep := exposureJSON(t, g, "--severity", "medium"); len(rep.Exposed) != 1 || rep.Exposed[0].Advisory != "GHSA-45x7-px36-x8w8" {
		t.Errorf("--severity medium: %+v", rep.Exposed)
	}
	// CSV gives the same rows as JSON.
	csvOut := cli(t, append(g, "exposure", "--format", "csv")...)
	rows, err := csv.NewReader(strings.NewReader(csvOut)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	// Rows, then the undecided count (its rows are not listed without --all).
	if len(rows) != len(rep.Exposed)+2 || !slices.Equal(rows[0], exposureHeader) {
		t.Fatalf("CSV has %d records for %d JSON rows:\n%s", len(rows), len(rep.Exposed), csvOut)
	}
	checkCSVParity(t, rep, rows)
	if table := cli(t, append(g, "exposure")...); !strings.Contains(table, "GO-2024-3321") || !strings.Contains(table, "thermostat@1.0.0") ||
		!strings.Contains(table, "1 findings could not be decided (GIT ranges, unknown ecosystems): see --all") {
		t.Errorf("exposure table:\n%s", table)
	}

	// An older copy of an advisory does not replace the stored one; a newer one does.
	ghsaRaw, err := os.ReadFile(filepath.Join(osvFixtures, "GHSA-45x7-px36-x8w8.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ghsa map[string]any
	json.Unmarshal(ghsaRaw, &ghsa)
	ghsa["summary"], ghsa["modified"] = "an older copy", "2023-01-01T00:00:00Z"
	older, _ := json.Marshal(ghsa)
	out = cli(t, append(g, "advisories", "import", writeFile(t, dir, "ghsa-older.json", string(older)))...)
	if _, updated, unchanged, _ := importOut(t, out); updated != 0 || unchanged != 1 {
		t.Fatalf("older copy: %s", out)
	}
	if row := findRow(exposureJSON(t, g).Exposed, "GHSA-45x7-px36-x8w8"); row == nil || row.Summary == "an older copy" {
		t.Fatalf("an older copy replaced the advisory: %+v", row)
	}
	ghsa["summary"], ghsa["modified"] = "a newer copy", "2025-01-01T00:00:00Z"
	newerCopy, _ := json.Marshal(ghsa)
	out = cli(t, append(g, "advisories", "import", writeFile(t, dir, "ghsa-newer.json", string(newerCopy)))...)
	if _, updated, _, _ := importOut(t, out); updated != 1 {
		t.Fatalf("newer copy: %s", out)
	}
	if row := findRow(exposureJSON(t, g).Exposed, "GHSA-45x7-px36-x8w8"); row == nil || row.Summary != "a newer copy" {
		t.Fatalf("the newer copy did not replace the advisory: %+v", row)
	}

	// VEX: CVE-2023-48795 does not affect the firmware. Both records that alias it leave the
	// exposure and show, with --all, as not affected with the reason.
	out = cli(t, append(g, "advisories", "import", writeFile(t, dir, "vex.json", vexTerrapin))...)
	if !strings.Contains(out, "VEX statements: 1 imported") {
		t.Fatalf("VEX import: %s", out)
	}
	rep = exposureJSON(t, g, "--all")
	if findRow(rep.Exposed, "GO-2023-2402") != nil || findRow(rep.Exposed, "GHSA-45x7-px36-x8w8") != nil || findRow(rep.Exposed, "GO-2024-3321") == nil {
		t.Fatalf("after VEX, exposed: %+v", rep.Exposed)
	}
	na := findRow(rep.NotAffected, "GO-2023-2402")
	if na == nil || na.Status != "not_affected" || !strings.Contains(na.Reason, "vulnerable_code_not_in_execute_path") || !strings.Contains(na.Reason, "The firmware uses no SSH.") {
		t.Fatalf("not affected rows: %+v", rep.NotAffected)
	}
	if table := cli(t, append(g, "exposure", "--all")...); !strings.Contains(table, "Not affected (VEX)") || !strings.Contains(table, "UPKEEP-VEX-1") {
		t.Errorf("exposure --all table:\n%s", table)
	}

	// A campaign for the fix targets exactly the exposed devices.
	if err := runCLI(append(g, "rollout", "create", "--release", "thermostat@1.0.0", "--fixes", "GO-2024-3321")...); err == nil || !strings.Contains(userMessage(err), "does not fix GO-2024-3321") {
		t.Fatalf("a campaign with a release that does not fix it: %v", err)
	}
	// Without --release, the lowest release that fixes it.
	out = cli(t, append(g, "rollout", "create", "--fixes", "CVE-2024-45337", "--health-gate", "0s", "--json")...)
	var camp wire.Campaign
	if err := json.Unmarshal([]byte(out), &camp); err != nil {
		t.Fatalf("rollout create --fixes: %v\n%s", err, out)
	}
	if camp.Release != "thermostat@1.1.0" {
		t.Fatalf("rollout create --fixes picked %s, want the lowest fixing release thermostat@1.1.0", camp.Release)
	}
	ms, err := e.srv.Rollouts.Store.FindMembers(ctx, camp.ID)
	if err != nil {
		t.Fatal(err)
	}
	var members []string
	for _, m := range ms {
		members = append(members, m.DeviceID)
	}
	slices.Sort(members)
	if !slices.Equal(members, exposedIDs) || slices.Contains(members, safe.Agent.State().DeviceID) {
		t.Fatalf("campaign members %v, want exactly the exposed devices %v", members, exposedIDs)
	}
	cli(t, append(g, "rollout", "start", camp.ID)...)
	e.waitCampaign(camp.ID, 60*time.Second, "completion", func(s *wire.CampaignStatus) bool { return s.Campaign.State == rollout.StateCompleted })
	for deadline := time.Now().Add(30 * time.Second); f.Running()[r110.SHA256] != 3; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("devices run %v, want all on 1.1.0", f.Running())
		}
	}

	// Nothing is exposed any more; time-to-patch comes from the campaign's commits.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if rep := exposureJSON(t, g); len(rep.Exposed) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still exposed after the campaign: %+v", exposureJSON(t, g).Exposed)
		}
	}
	ttp, err := e.cli.TimeToPatch(ctx, testProduct)
	if err != nil {
		t.Fatal(err)
	}
	var got *client.TimeToPatch
	for i := range ttp.Advisories {
		if ttp.Advisories[i].Advisory == "GO-2024-3321" {
			got = &ttp.Advisories[i]
		}
	}
	if got == nil || got.FixedIn != "1.1.0" || got.VendorOpen || got.ExposedAtFix != 3 || got.PatchedNow != 3 || len(got.Fleet) != 3 {
		t.Fatalf("time to patch: %+v", ttp.Advisories)
	}
	// Go vulndb records carry no date: the advisory counts from its import, before 1.1.0.
	if got.VendorDays < 0 || got.VendorDays > 1 {
		t.Errorf("A = %v days, want between 0 and 1", got.VendorDays)
	}
	for _, fg := range got.Fleet {
		if !fg.Reached || fg.At == nil || fg.At.Before(*got.FixPublished) || *fg.Days > 1 {
			t.Errorf("B(%d) = %+v, want reached within the test", fg.Percent, fg)
		}
	}
	if out := cli(t, append(g, "product", "time-to-patch", testProduct)...); !strings.Contains(out, "GO-2024-3321") || !strings.Contains(out, "1.1.0") {
		t.Errorf("product time-to-patch:\n%s", out)
	}
	// The public declaration's evidence has the figures.
	lt, err := e.srv.Exposure.LabelTimeToPatch(ctx, testProduct)
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(lt, func(l label.TimeToPatch) bool { return l.Advisory == "GO-2024-3321" }); i < 0 || lt[i].FixReleased.IsZero() || lt[i].Fleet90At == nil {
		t.Errorf("label time to patch %+v", lt)
	}
}

// TestVulnExposurePostgres runs SBOM, import, exposure and re-import on the PostgreSQL store.
func TestVulnExposurePostgres(t *testing.T) {
	dsn := storetest.PostgresDSN(t)
	e := newEnvWith(t, func(c *server.Config) { c.Database = dsn })
	ctx := context.Background()
	g := []string{"--server", e.srv.URL, "--token", e.srv.AdminToken}
	r100 := e.publishSBOM("1.0.0", 1, writeFile(t, t.TempDir(), "sbom.cdx.json", firmwareSBOM))
	e.device("SN-PG-1", image("1.0.0", 4<<10), r100)
	out := cli(t, append(g, "advisories", "import", osvFixtures)...)
	if imported, _, _, _ := importOut(t, out); imported != 9 {
		t.Fatalf("import: %s", out)
	}
	out = cli(t, append(g, "advisories", "import", osvFixtures)...)
	if _, _, unchanged, _ := importOut(t, out); unchanged != 9 {
		t.Fatalf("re-import: %s", out)
	}
	if row := findRow(exposureJSON(t, g).Exposed, "GO-2023-2402"); row == nil || row.Devices != 1 || row.FixedIn != "" {
		t.Fatalf("exposure on PostgreSQL: %+v", row)
	}
	// The index is loaded from the database at start: a second server on it answers the same.
	e2, err := server.Open(ctx, func() server.Config { c := e.srv.Config; c.Addr = "127.0.0.1:0"; return c }())
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	rep, err := e2.Exposure.Exposure(ctx, exposure.ExposureFilter{})
	if err != nil || len(rep.Exposed) == 0 || !slices.ContainsFunc(rep.Exposed, func(x exposure.Exposure) bool {
		return x.Advisory == "GO-2023-2402" || slices.Contains(x.Aliases, "GO-2023-2402")
	}) {
		t.Fatalf("a fresh server's exposure: %+v %v", rep, err)
	}
	// An import through the first server reaches the second at its next check.
	cli(t, append(g, "advisories", "import", writeFile(t, t.TempDir(), "git-range.json", gitRangeOSV))...)
	if reloaded, err := e2.Exposure.Refresh(ctx); err != nil || !reloaded {
		t.Fatalf("second server's refresh: %v %v", reloaded, err)
	}
	if rep, err := e2.Exposure.Exposure(ctx, exposure.ExposureFilter{}); err != nil || rep.Undecided != 1 {
		t.Fatalf("second server after the import: %+v %v", rep, err)
	}
}

func runCLI(args ...string) error {
	var out bytes.Buffer
	cmd := newRoot()
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	return cmd.ExecuteContext(context.Background())
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.CopyFS(to, os.DirFS(from)); err != nil {
		t.Fatal(err)
	}
}

// gitRangeOSV affects golang.org/x/net through a GIT range only: commits have no order here.
const gitRangeOSV = `{"schema_version": "1.6.0", "id": "UPKEEP-GIT-1", "modified": "2024-01-01T00:00:00Z", "published": "2024-01-01T00:00:00Z",
 "summary": "a GIT range only", "affected": [{"package": {"ecosystem": "Go", "name": "golang.org/x/net"},
  "ranges": [{"type": "GIT", "repo": "https://go.googlesource.com/net", "events": [{"introduced": "0"}, {"fixed": "0123456789abcdef0123456789abcdef01234567"}]}]}]}`

// checkCSVParity checks that CSV records carry everything the JSON report says: each row's
// fields and the report time, each release without an SBOM, and the undecided count.
func checkCSVParity(t *testing.T, rep *client.ExposureReport, rows [][]string) {
	t.Helper()
	at := rep.At.UTC().Format(time.RFC3339)
	// The CSV may come from a later call than the JSON: its time is at or a little after.
	sameTime := func(s string) bool {
		ct, err := time.Parse(time.RFC3339, s)
		d := ct.Sub(rep.At.UTC().Truncate(time.Second))
		return err == nil && d >= 0 && d <= 10*time.Second
	}
	body := rows[1:]
	jsonRows := exposureRows(rep)
	if len(body) < len(jsonRows) {
		t.Fatalf("%d CSV records for %d JSON rows", len(body), len(jsonRows))
	}
	for i, r := range jsonRows {
		rec := body[i]
		if rec[0] != r.Advisory || rec[1] != strings.Join(r.Aliases, " ") || rec[2] != r.Severity || rec[4] != r.Product || rec[5] != r.Release ||
			rec[6] != strconv.Itoa(r.Devices) || rec[8] != strconv.FormatFloat(r.DaysExposed, 'f', 1, 64) || rec[9] != r.FixedIn ||
			rec[10] != r.Status || rec[11] != r.Reason || rec[12] != componentsText(r) || !sameTime(rec[13]) {
			t.Errorf("CSV row %d %v differs from JSON %+v (at %s)", i, rec, r, at)
		}
	}
	rest := body[len(jsonRows):]
	for _, ref := range rep.WithoutSBOM {
		if len(rest) == 0 || rest[0][4]+"@"+rest[0][5] != ref || rest[0][10] != csvStatusUnknown || !sameTime(rest[0][13]) {
			t.Fatalf("CSV lacks the release without SBOM %s: %v", ref, rest)
		}
		rest = rest[1:]
	}
	if rep.Undecided > 0 && len(rep.Unmatched) == 0 {
		if len(rest) != 1 || rest[0][10] != csvStatusUndecided || !strings.HasPrefix(rest[0][11], strconv.Itoa(rep.Undecided)+" findings") {
			t.Fatalf("CSV lacks the undecided count %d: %v", rep.Undecided, rest)
		}
		rest = rest[1:]
	}
	if len(rest) != 0 {
		t.Errorf("CSV has records the JSON does not: %v", rest)
	}
}

// TestExposureCSVParity: the CSV of a report with every kind of content carries its data.
func TestExposureCSVParity(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, rep := range []*client.ExposureReport{
		{At: at, Exposed: []client.Exposure{{Advisory: "GO-1", Aliases: []string{"CVE-1", "GHSA-1"}, Severity: "high", Product: "p", Release: "1.0", Devices: 3,
			Since: at.Add(-48 * time.Hour), DaysExposed: 2, FixedIn: "1.1", Status: "affected", Components: []wire.ComponentFinding{{PURL: "pkg:golang/x@v1", Status: "affected"}, {PURL: "pkg:golang/y@v2", Status: "unmatched", Reason: "GIT range: no version order"}}}},
			WithoutSBOM: []string{"p@0.9", "q@2.0"}, Undecided: 2},
		{At: at, Unmatched: []client.Exposure{{Advisory: "G-1", Product: "p", Release: "1.0", Status: "unmatched", Reason: "GIT range: no version order"}}, Undecided: 1},
		{At: at},
	} {
		var b strings.Builder
		if err := exposureCSV(&b, rep); err != nil {
			t.Fatal(err)
		}
		rows, err := csv.NewReader(strings.NewReader(b.String())).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		checkCSVParity(t, rep, rows)
	}
}

func TestSplitFixes(t *testing.T) {
	for in, want := range map[string][]string{
		"A,B":                      {"A", "B"},
		"GO-2024-3321, CVE-2024-1": {"GO-2024-3321", "CVE-2024-1"},
		" A ,, B ":                 {"A", "B"},
		"":                         nil,
	} {
		if got := splitFixes(in); !slices.Equal(got, want) {
			t.Errorf("splitFixes(%q) = %q, want %q", in, got, want)
		}
	}
}
