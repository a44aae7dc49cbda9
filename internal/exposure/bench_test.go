package exposure_test

import (
	"archive/zip"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/exposure"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/store/sqlite"
	"upkeep.dev/upkeep/internal/vuln"
)

// The vulnerability benchmark (docs/PERFORMANCE.md): 100,000 advisories over five language
// ecosystems with their version shapes, a KEV catalog naming 1,500 of their CVEs, and 100
// releases of 2,000 components each (about 5% share a package with some advisory, about 2%
// hit), each run by 10 devices. Deterministic (PCG seed). It measures the release check
// (CheckRelease: parse, match, group, gate) and exposure over the whole fleet, records the
// heap, and runs osv-scanner on the same SBOM and database when it is installed:
//
//	UPKEEP_BENCH_VULN=1 go test -run TestBenchVuln -v -timeout 30m ./internal/exposure
const (
	bvAdvisories = 100_000
	bvReleases   = 100
	bvComponents = 2_000
	bvKEV        = 1_500
	bvNames      = 20_000
)

type bvEco struct {
	osv, purlType string
	ver           func(r *rand.Rand) string
	pkg           func(i int) (ns, name string)
}

var bvEcos = []bvEco{
	{"Go", "golang", func(r *rand.Rand) string { return fmt.Sprintf("%d.%d.%d", r.IntN(3), r.IntN(40), r.IntN(20)) },
		func(i int) (string, string) { return fmt.Sprintf("github.com/org%d", i%977), fmt.Sprintf("mod%d", i) }},
	{"npm", "npm", func(r *rand.Rand) string { return fmt.Sprintf("%d.%d.%d", r.IntN(10), r.IntN(30), r.IntN(30)) },
		func(i int) (string, string) { return "", fmt.Sprintf("pkg-%d", i) }},
	{"PyPI", "pypi", func(r *rand.Rand) string { return fmt.Sprintf("%d.%d.%d", r.IntN(10), r.IntN(30), r.IntN(10)) },
		func(i int) (string, string) { return "", fmt.Sprintf("py-pkg-%d", i) }},
	{"Maven", "maven", func(r *rand.Rand) string { return fmt.Sprintf("%d.%d.%d", r.IntN(10), r.IntN(30), r.IntN(10)) },
		func(i int) (string, string) {
			return fmt.Sprintf("org.example%d", i%331), fmt.Sprintf("artifact-%d", i)
		}},
	{"crates.io", "cargo", func(r *rand.Rand) string { return fmt.Sprintf("0.%d.%d", r.IntN(50), r.IntN(20)) },
		func(i int) (string, string) { return "", fmt.Sprintf("crate_%d", i) }},
}

func (e bvEco) osvName(i int) string {
	ns, n := e.pkg(i)
	switch {
	case ns == "":
		return n
	case e.osv == "Maven":
		return ns + ":" + n
	}
	return ns + "/" + n
}

func (e bvEco) purl(i int, v string) string {
	ns, n := e.pkg(i)
	if ns != "" {
		return "pkg:" + e.purlType + "/" + ns + "/" + n + "@" + v
	}
	return "pkg:" + e.purlType + "/" + n + "@" + v
}

type osvRecord struct {
	SchemaVersion string   `json:"schema_version"`
	ID            string   `json:"id"`
	Modified      string   `json:"modified"`
	Published     string   `json:"published"`
	Aliases       []string `json:"aliases"`
	Affected      []struct {
		Package struct {
			Ecosystem string `json:"ecosystem"`
			Name      string `json:"name"`
		} `json:"package"`
		Ranges []struct {
			Type   string              `json:"type"`
			Events []map[string]string `json:"events"`
		} `json:"ranges"`
	} `json:"affected"`
	DatabaseSpecific map[string]string `json:"database_specific"`
}

func bvCorpus() (advs []osvRecord, kev []byte, sboms [][]byte) {
	r := rand.New(rand.NewPCG(2026, 16))
	sev := []string{"LOW", "MODERATE", "HIGH", "CRITICAL"}
	for i := range bvAdvisories {
		e := bvEcos[i%len(bvEcos)]
		lo, hi := e.ver(r), e.ver(r)
		if c, err := vuln.Compare(e.osv, lo, hi); err == nil && c > 0 {
			lo, hi = hi, lo
		}
		intro := "0"
		if r.IntN(2) == 0 {
			intro = lo
		}
		var a osvRecord
		a.SchemaVersion, a.ID = "1.6.0", fmt.Sprintf("SYN-%06d", i)
		a.Modified, a.Published = "2025-01-01T00:00:00Z", time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i)*time.Minute).Format(time.RFC3339)
		a.Aliases = []string{fmt.Sprintf("CVE-2099-%d", 10000+i)}
		a.DatabaseSpecific = map[string]string{"severity": sev[r.IntN(4)]}
		a.Affected = make([]struct {
			Package struct {
				Ecosystem string `json:"ecosystem"`
				Name      string `json:"name"`
			} `json:"package"`
			Ranges []struct {
				Type   string              `json:"type"`
				Events []map[string]string `json:"events"`
			} `json:"ranges"`
		}, 1)
		a.Affected[0].Package.Ecosystem, a.Affected[0].Package.Name = e.osv, e.osvName(r.IntN(bvNames))
		a.Affected[0].Ranges = []struct {
			Type   string              `json:"type"`
			Events []map[string]string `json:"events"`
		}{{Type: "ECOSYSTEM", Events: []map[string]string{{"introduced": intro}, {"fixed": hi}}}}
		advs = append(advs, a)
	}
	var vs []string
	for i := range bvKEV {
		vs = append(vs, fmt.Sprintf(`{"cveID":"CVE-2099-%d","vendorProject":"v","product":"p","vulnerabilityName":"n","dateAdded":"2024-06-01","shortDescription":"","requiredAction":"","dueDate":"2024-06-22","knownRansomwareCampaignUse":"Unknown","notes":"","cwes":[]}`, 10000+i*(bvAdvisories/bvKEV)))
	}
	kev = []byte(fmt.Sprintf(`{"catalogVersion":"2025.06.03","dateReleased":"2025-06-03T00:00:00Z","count":%d,"vulnerabilities":[%s]}`, bvKEV, strings.Join(vs, ",")))
	for rel := range bvReleases {
		var comps []string
		for i := range bvComponents {
			e := bvEcos[i%len(bvEcos)]
			n := bvNames + rel*bvComponents + i // outside every advisory's pool
			if r.IntN(20) == 0 {
				n = r.IntN(bvNames)
			}
			ns, name := e.pkg(n)
			v := e.ver(r)
			comps = append(comps, fmt.Sprintf(`{"type":"library","bom-ref":"c%d","group":%q,"name":%q,"version":%q,"purl":%q}`, i, ns, name, v, e.purl(n, v)))
		}
		sboms = append(sboms, []byte(fmt.Sprintf(`{"bomFormat":"CycloneDX","specVersion":"1.5","version":1,"metadata":{"component":{"type":"firmware","name":"gw","version":"1.%d.0"}},"components":[%s]}`, rel, strings.Join(comps, ","))))
	}
	return advs, kev, sboms
}

func heap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func TestBenchVuln(t *testing.T) {
	if os.Getenv("UPKEEP_BENCH_VULN") == "" {
		t.Skip("set UPKEEP_BENCH_VULN=1")
	}
	advs, kev, sboms := bvCorpus()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "upkeep.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c := &clock{time.Date(2025, 6, 3, 0, 0, 0, 0, time.UTC)}
	s := newService(db, c)
	start := time.Now()
	var batch []*vuln.Advisory
	for _, a := range advs {
		raw, _ := json.Marshal(a)
		adv, err := vuln.ParseOSV(raw)
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, adv)
	}
	for i := 0; i < len(batch); i += 5000 {
		if _, err := db.PutAdvisories(ctx, batch[i:min(i+5000, len(batch))], c.t); err != nil {
			t.Fatal(err)
		}
	}
	importBytes(t, s, "kev.json", kev)
	t.Logf("stored %d advisories and the KEV catalog in %v", len(advs), time.Since(start))
	h0 := heap()
	start = time.Now()
	if err := s.Load(ctx); err != nil {
		t.Fatal(err)
	}
	load := time.Since(start)
	hIndex := heap() - h0
	t.Logf("index load %v, heap %.1f MiB", load, float64(hIndex)/(1<<20))
	for i, sb := range sboms {
		v := fmt.Sprintf("1.%d.0", i)
		r := &release.Release{Product: "gw", Version: v, SecurityVersion: int64(i + 1), PublishedAt: c.t.Add(-time.Duration(bvReleases-i) * time.Hour),
			HardwareIDs: []string{"hw"}, Class: "security", Target: "gw/" + v + "/fw", SHA256: "00", SHA512: "00", TargetsVersion: 1}
		if err := db.CreateRelease(ctx, r); err != nil {
			t.Fatal(err)
		}
		if _, err := s.PutSBOM(ctx, "gw", v, sb); err != nil {
			t.Fatal(err)
		}
		for d := range 10 {
			id := fmt.Sprintf("d%03d-%d", i, d)
			if err := db.CreateDevice(ctx, &fleet.Device{ID: id, PublicKey: []byte(id), Serial: id, Product: "gw", HardwareID: "hw", Status: fleet.StatusAccepted,
				InstalledTarget: r.Target, InstalledVer: v, InstalledSHA256: "00", EnrolledAt: c.t.Add(-24 * time.Hour)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Release check: each op a different SBOM, parsed, matched, grouped, gated.
	const checks = 20
	start = time.Now()
	var chk *exposure.ReleaseCheck
	for i := range checks {
		if chk, err = s.CheckRelease(ctx, "gw", "", sboms[i]); err != nil {
			t.Fatal(err)
		}
	}
	perCheck := time.Since(start) / checks
	affected := 0
	for _, f := range chk.Findings {
		if f.Status == vuln.StatusAffected {
			affected++
		}
	}
	t.Logf("release check: %v per SBOM of %d components (last: %d findings, %d affected, %d KEV-listed)", perCheck, bvComponents, len(chk.Findings), affected, len(chk.Gate.Blockers))
	// Exposure over the whole fleet: the first call matches every release, later ones hit the
	// per-release cache; both are reported.
	start = time.Now()
	rep, err := s.Exposure(ctx, exposure.ExposureFilter{})
	if err != nil {
		t.Fatal(err)
	}
	cold := time.Since(start)
	start = time.Now()
	if _, err := s.Exposure(ctx, exposure.ExposureFilter{KEV: true}); err != nil {
		t.Fatal(err)
	}
	warm := time.Since(start)
	t.Logf("exposure over %d releases, %d devices: cold %v, warm %v; %d rows; heap %.1f MiB", bvReleases, bvReleases*10, cold, warm, len(rep.Exposed), float64(heap())/(1<<20))

	// osv-scanner on the same SBOM and database.
	bin, err := exec.LookPath("osv-scanner")
	if err != nil {
		t.Logf("osv-scanner not installed: no comparison")
		return
	}
	dir := t.TempDir()
	if d := os.Getenv("UPKEEP_BENCH_DIR"); d != "" {
		dir = d // keep the database and SBOM to run osv-scanner by hand
	}
	zips := map[string]*zip.Writer{}
	files := map[string]*os.File{}
	for _, a := range advs {
		eco := a.Affected[0].Package.Ecosystem
		zw := zips[eco]
		if zw == nil {
			p := filepath.Join(dir, "osv-scalibr", eco) // osv-scanner v2.5.1 reads DIR/osv-scalibr/<Ecosystem>/all.zip
			os.MkdirAll(p, 0o755)
			f, err := os.Create(filepath.Join(p, "all.zip"))
			if err != nil {
				t.Fatal(err)
			}
			files[eco], zw = f, zip.NewWriter(f)
			zips[eco] = zw
		}
		w, _ := zw.Create(a.ID + ".json")
		json.NewEncoder(w).Encode(a)
	}
	for eco, zw := range zips {
		zw.Close()
		files[eco].Close()
	}
	sbomPath := filepath.Join(dir, "release.cdx.json")
	os.WriteFile(sbomPath, sboms[0], 0o644)
	start = time.Now()
	chk0, err := s.CheckRelease(ctx, "gw", "", sboms[0])
	if err != nil {
		t.Fatal(err)
	}
	ours := time.Since(start)
	start = time.Now()
	out, scanErr := exec.Command(bin, "scan", "source", "--offline", "--local-db-path", dir, "--format", "json", "-L", sbomPath).Output()
	theirs := time.Since(start)
	t.Logf("osv-scanner: %v", scanErr)
	var res struct {
		Results []struct {
			Packages []struct {
				Package struct{ Name, Version, Ecosystem string } `json:"package"`
				Vulns   []struct{ ID string }                     `json:"vulnerabilities"`
			} `json:"packages"`
		} `json:"results"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("osv-scanner output: %v\n%.2000s", err, out)
	}
	theirPairs := map[string]bool{}
	for _, r := range res.Results {
		for _, p := range r.Packages {
			for _, v := range p.Vulns {
				theirPairs[shortName(p.Package.Name)+"@"+p.Package.Version+" "+v.ID] = true
			}
		}
	}
	ourPairs := map[string]bool{}
	for _, f := range chk0.Findings {
		for _, c := range f.Components {
			if c.Status != vuln.StatusAffected {
				continue
			}
			comp, err := vuln.ComponentFromPURL(c.PURL)
			if err != nil {
				t.Fatal(err)
			}
			ourPairs[shortName(comp.Name)+"@"+comp.Version+" "+f.Advisory] = true
		}
	}
	both, onlyOurs, onlyTheirs := 0, 0, 0
	for k := range ourPairs {
		if theirPairs[k] {
			both++
		} else {
			onlyOurs++
			t.Logf("only upkeep: %s", k)
		}
	}
	for k := range theirPairs {
		if !ourPairs[k] {
			onlyTheirs++
			t.Logf("only osv-scanner: %s", k)
		}
	}
	t.Logf("same SBOM, same database: upkeep release check %v, osv-scanner %v (ratio %.4f); pairs: both %d, only upkeep %d, only osv-scanner %d",
		ours, theirs, float64(ours)/float64(theirs), both, onlyOurs, onlyTheirs)
}

// shortName is a package name without its namespace: osv-scanner reports a CycloneDX
// component's name field (mod1), Upkeep the module path or group:artifact.
func shortName(n string) string {
	if i := strings.LastIndexAny(n, "/:"); i >= 0 {
		return n[i+1:]
	}
	return n
}
