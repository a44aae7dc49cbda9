package vuln

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

// Benchmark corpus: 100,000 advisories over 8 ecosystems with realistic
// version shapes, and one SBOM of 2,000 components of which about 5% share
// a package with some advisory, ~2% hit. Deterministic (fixed PCG seed).
const (
	benchAdvisories  = 100_000
	benchComponents  = 2_000
	benchNamesPerEco = 12_500
)

type benchEco struct {
	name string
	ver  func(r *rand.Rand) string
	pkg  func(i int) string
}

var benchEcos = []benchEco{
	{"Go", func(r *rand.Rand) string { return fmt.Sprintf("%d.%d.%d", r.IntN(3), r.IntN(40), r.IntN(20)) },
		func(i int) string { return fmt.Sprintf("github.com/org%d/mod%d", i%977, i) }},
	{"npm", func(r *rand.Rand) string { return fmt.Sprintf("%d.%d.%d", r.IntN(10), r.IntN(30), r.IntN(30)) },
		func(i int) string { return fmt.Sprintf("@scope%d/pkg-%d", i%211, i) }},
	{"PyPI", func(r *rand.Rand) string { return fmt.Sprintf("%d.%d.%d", r.IntN(10), r.IntN(30), r.IntN(10)) },
		func(i int) string { return fmt.Sprintf("Py_Pkg.%d", i) }},
	{"Maven", func(r *rand.Rand) string { return fmt.Sprintf("%d.%d.%d", r.IntN(10), r.IntN(30), r.IntN(10)) },
		func(i int) string { return fmt.Sprintf("org.example%d:artifact-%d", i%331, i) }},
	{"Debian", func(r *rand.Rand) string { return fmt.Sprintf("%d.%d-%d", r.IntN(10), r.IntN(30), 1+r.IntN(5)) },
		func(i int) string { return fmt.Sprintf("libdeb%d", i) }},
	{"Alpine", func(r *rand.Rand) string {
		return fmt.Sprintf("%d.%d.%d-r%d", r.IntN(5), r.IntN(30), r.IntN(10), r.IntN(5))
	},
		func(i int) string { return fmt.Sprintf("apk%d", i) }},
	{"crates.io", func(r *rand.Rand) string { return fmt.Sprintf("0.%d.%d", r.IntN(50), r.IntN(20)) },
		func(i int) string { return fmt.Sprintf("crate_%d", i) }},
	{"", func(r *rand.Rand) string { return fmt.Sprintf("%d.%02d.%d", 2018+r.IntN(8), 1+r.IntN(12), r.IntN(5)) },
		func(i int) string { return fmt.Sprintf("acme/firmware-part-%d", i) }},
}

func benchCorpus() ([]*Advisory, []Component) {
	r := rand.New(rand.NewPCG(2026, 6))
	advs := make([]*Advisory, 0, benchAdvisories)
	for i := range benchAdvisories {
		e := benchEcos[i%len(benchEcos)]
		lo, hi := e.ver(r), e.ver(r)
		if c, err := Compare(e.name, lo, hi); err == nil && c > 0 {
			lo, hi = hi, lo
		}
		events := []Event{{Introduced: "0"}, {Fixed: hi}}
		if r.IntN(2) == 0 {
			events[0].Introduced = lo
		}
		a := &Advisory{
			ID:        fmt.Sprintf("SYN-%06d", i),
			Aliases:   []string{fmt.Sprintf("CVE-2099-%d", 10000+i)},
			Severity:  SeverityMedium,
			Published: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Minute),
			Modified:  time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
			Source:    SourceOSV,
			Affected:  []Affected{{Ecosystem: e.name, Name: e.pkg(r.IntN(benchNamesPerEco)), Ranges: []Range{{Type: "ECOSYSTEM", Events: events}}}},
		}
		if r.IntN(10) == 0 { // a second package, as GHSA records often have
			e2 := benchEcos[r.IntN(len(benchEcos))]
			a.Affected = append(a.Affected, Affected{Ecosystem: e2.name, Name: e2.pkg(r.IntN(benchNamesPerEco)),
				Ranges: []Range{{Type: "SEMVER", Events: []Event{{Introduced: "0"}, {Fixed: "1.2.3"}}}}})
		}
		advs = append(advs, a)
	}
	comps := make([]Component, 0, benchComponents)
	for i := range benchComponents {
		e := benchEcos[i%len(benchEcos)]
		name := e.pkg(benchNamesPerEco + i) // outside every advisory's pool
		if r.IntN(20) == 0 {
			// ~5% share a package with some advisory; about half of those
			// are in an affected range, so ~2% of components hit.
			name = e.pkg(r.IntN(benchNamesPerEco))
		}
		comps = append(comps, Component{PURL: fmt.Sprintf("pkg:x/%d", i), Ecosystem: e.name, Name: name, Version: e.ver(r)})
	}
	return advs, comps
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func BenchmarkMatchIndex(b *testing.B) {
	advs, comps := benchCorpus()
	before := heapInUse()
	start := time.Now()
	ix := NewIndex()
	for _, a := range advs {
		ix.Add(a)
	}
	build := time.Since(start)
	heap := heapInUse() - before
	hits := 0
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		hits = len(ix.Match(comps))
	}
	// After the loop: ResetTimer clears reported metrics.
	b.ReportMetric(float64(hits), "matches")
	b.ReportMetric(float64(build.Milliseconds()), "build-ms")
	b.ReportMetric(float64(heap)/(1<<20), "index-heap-MiB")
}

func BenchmarkMatchNaive(b *testing.B) {
	advs, comps := benchCorpus()
	hits := 0
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		hits = len(NaiveMatch(advs, nil, comps))
	}
	b.ReportMetric(float64(hits), "matches")
}

// TestBenchCorpusShape keeps the benchmark honest: 1–3% of components hit.
func TestBenchCorpusShape(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 100,000 advisories")
	}
	advs, comps := benchCorpus()
	ix := NewIndex()
	for _, a := range advs {
		ix.Add(a)
	}
	hit := map[string]bool{}
	for _, m := range ix.Match(comps) {
		hit[m.Component.PURL] = true
	}
	if pct := 100 * float64(len(hit)) / float64(len(comps)); pct < 1 || pct > 3 {
		t.Errorf("%.1f%% of components hit, want 1–3%%", pct)
	}
}
