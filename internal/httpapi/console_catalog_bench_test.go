package httpapi_test

import (
	"archive/zip"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/exposure"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/release"
)

// BenchmarkConsoleCatalogPages measures the server time and the weight of the vulnerabilities
// and releases pages with 10,000 advisories each affecting the release 1,000 devices run, and
// 100 releases: p50-ms and p95-ms are the median and the 95th percentile of the time per page
// (the first request after an import matches every SBOM anew), B/page its size.
//
//	go test ./internal/httpapi -run '^$' -bench BenchmarkConsoleCatalogPages -benchtime 50x
func BenchmarkConsoleCatalogPages(b *testing.B) {
	const nAdvisories = 10000
	s := newStack(b)
	ctx := context.Background()
	start := time.Now()
	phase := func(what string) { b.Logf("%s: %v", what, time.Since(start).Round(time.Millisecond)) }
	vulns := &exposure.Service{Store: s.db, Devices: s.db, Releases: s.db, Targets: s.images.CurrentTargets}
	if err := vulns.Load(ctx); err != nil {
		b.Fatal(err)
	}
	s.api.Exposure = vulns
	s.addUser("u-admin", auth.RoleAdmin, testPassword)
	sbom := func(v string) []byte {
		return []byte(`{"bomFormat": "CycloneDX", "specVersion": "1.4", "version": 1, "components": [{"type": "library", "name": "golang.org/x/crypto", "version": "` + v + `", "purl": "pkg:golang/golang.org/x/crypto@` + v + `"}]}`)
	}
	for i := range 100 {
		v := fmt.Sprintf("1.%d", i)
		r := &release.Release{Product: testProduct, Version: v, SecurityVersion: int64(i + 1), PublishedAt: time.Now().Add(time.Duration(i-100) * time.Hour),
			HardwareIDs: []string{testHardware}, Class: "security", Target: testProduct + "/" + v + "/fw", SHA256: fmt.Sprintf("%064x", i), SHA512: "00", TargetsVersion: 1}
		if err := s.db.CreateRelease(ctx, r); err != nil {
			b.Fatal(err)
		}
		cv := "v0.16.0"
		if i == 99 {
			cv = "v9.0.0" // the last release fixes everything
		}
		if _, err := vulns.PutSBOM(ctx, testProduct, v, sbom(cv)); err != nil {
			b.Fatal(err)
		}
	}
	phase("releases")
	for i := range 1000 {
		d := &fleet.Device{ID: fmt.Sprintf("d%04d", i), PublicKey: []byte{byte(i), byte(i >> 8)}, Serial: fmt.Sprint(i), Product: testProduct, HardwareID: testHardware,
			Status: fleet.StatusAccepted, InstalledTarget: testProduct + "/1.0/fw", InstalledVer: "1.0", InstalledSHA256: fmt.Sprintf("%064x", 0), EnrolledAt: time.Now(), LastSeen: time.Now()}
		if err := s.db.CreateDevice(ctx, d); err != nil {
			b.Fatal(err)
		}
		vulns.OnEnroll(ctx, d)
	}
	phase("devices")
	var zb bytes.Buffer
	zw := zip.NewWriter(&zb)
	for i := range nAdvisories {
		w, err := zw.Create(fmt.Sprintf("BENCH-%05d.json", i))
		if err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(w, `{"schema_version": "1.3.1", "id": "BENCH-%05d", "modified": "2026-01-01T00:00:00Z", "published": "2025-%02d-01T00:00:00Z",
 "summary": "A flaw number %d in golang.org/x/crypto", "database_specific": {"severity": "%s"},
 "affected": [{"package": {"name": "golang.org/x/crypto", "ecosystem": "Go"}, "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "%d.0.0"}]}]}]}`,
			i, i%12+1, i, []string{"CRITICAL", "HIGH", "MODERATE", "LOW"}[i%4], 1+i%8)
	}
	if err := zw.Close(); err != nil {
		b.Fatal(err)
	}
	if res, err := vulns.Import(ctx, "bench.zip", &zb); err != nil || res.Imported != nAdvisories {
		b.Fatalf("import: %v %+v", err, res)
	}
	phase("advisories")
	srv := s.serve()
	br := newBrowser(b, srv, "/")
	br.login("u-admin", testPassword)
	for _, path := range []string{"vulnerabilities", "vulnerabilities?severity=high", "releases", "releases/" + testProduct + "/1.0"} {
		b.Run(path, func(b *testing.B) {
			var times []time.Duration
			size := 0
			for b.Loop() {
				start := time.Now()
				p := br.get(path)
				times = append(times, time.Since(start))
				if p.status != http.StatusOK {
					b.Fatalf("%s: %d", path, p.status)
				}
				size = len(p.body)
			}
			slices.Sort(times)
			b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(times[len(times)*95/100].Microseconds())/1000, "p95-ms")
			b.ReportMetric(float64(size), "B/page")
		})
	}
}
