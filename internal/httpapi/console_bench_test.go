package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/exposure"
	"upkeep.dev/upkeep/internal/rollout"
	"upkeep.dev/upkeep/internal/store/postgres"
	"upkeep.dev/upkeep/internal/store/storetest"
	"upkeep.dev/upkeep/internal/vuln"
)

// seedFleet stores n devices in one transaction, straight into the devices table and their
// attribute values into device_attributes, as the store writes them (the store's CreateDevice,
// a transaction each, would take minutes): products, versions, states and attributes spread as
// a fleet's would be.
func (s *stack) seedFleet(n int) {
	s.t.Helper()
	ctx := context.Background()
	tx, err := s.db.SQL().BeginTx(ctx, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	st, err := tx.PrepareContext(ctx, `INSERT INTO devices (id, public_key, serial, product, hardware_id, attributes, status, installed_target,
installed_ver, security_version, installed_sha256, state, last_error, assigned, director_version, last_seen, enrolled_at, assign_policy, simulated, kind, seen_day)
VALUES ($1,$2,$3,$4,$5,$6,$7,'',$8,1,'',$9,'','',0,$10,$11,'',false,'upkeep',$12)`)
	if err != nil {
		s.t.Fatal(err)
	}
	attr, err := tx.PrepareContext(ctx, `INSERT INTO device_attributes (key, value, device_id) VALUES ('region', $1, $4), ('ring', $2, $4), ('site', $3, $4)`)
	if err != nil {
		s.t.Fatal(err)
	}
	now := time.Now().UTC()
	products := []string{"cam", "hub", "lock", "thermostat"}
	states := []string{"idle", "idle", "idle", "idle", "idle", "idle", "idle", "committed", "failed", "rolling_back"}
	regions := []string{"eu-west", "eu-north", "us-east", "us-west", "ap-south"}
	for i := range n {
		region, ring, site := regions[i%len(regions)], []string{"beta", "prod", "prod", "prod"}[i%4], fmt.Sprintf("site-%d", i%500)
		attrs := fmt.Sprintf(`{"region":%q,"ring":%q,"site":%q}`, region, ring, site)
		seen := now.Add(-time.Duration(i%(14*24)) * time.Hour) // some not seen for over a week
		id := fmt.Sprintf("%032x", i)
		if _, err := st.ExecContext(ctx, id, []byte{byte(i)}, fmt.Sprintf("SN%07d", i), products[i%len(products)], "hw1", attrs,
			"accepted", fmt.Sprintf("1.%d", i%7), states[i%len(states)], seen, now, seen.Unix()/86400); err != nil { // seen_day: the store's day of last_seen
			s.t.Fatal(err)
		}
		if _, err := attr.ExecContext(ctx, region, ring, site, id); err != nil {
			s.t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		s.t.Fatal(err)
	}
}

// seedCampaigns stores n campaigns of 20 members each, the newest running live ones.
func (s *stack) seedCampaigns(n, live int) {
	s.t.Helper()
	ctx := context.Background()
	for i := range n {
		c := &rollout.Campaign{ID: fmt.Sprintf("c%05d", i), Release: "cam@2.0", Target: "cam-2.0.img", Product: "cam", Selector: "region=eu-west", Class: "security",
			Waves: []int{2, 20}, SuccessThreshold: 0.95, FailureThreshold: 0.05, HealthGate: time.Minute, SilentAfter: 10 * time.Minute,
			State: rollout.StateCompleted, Wave: 1, Actor: "bench", CreatedAt: time.Now().Add(-time.Duration(n-i) * time.Hour), UpdatedAt: time.Now()}
		if i >= n-live {
			c.State, c.Wave = rollout.StateRunning, 0
		}
		var ms []rollout.Member
		for j := range 20 {
			st := rollout.MemberHealthy
			if c.State == rollout.StateRunning {
				st = []string{rollout.MemberAssigned, rollout.MemberCommitted, rollout.MemberHealthy, rollout.MemberPending}[j%4]
			}
			ms = append(ms, rollout.Member{DeviceID: fmt.Sprintf("%032x", (i*20+j)%100000), Wave: min(j/2, 1), Status: st, Since: time.Now()})
		}
		if err := s.db.CreateCampaign(ctx, c, ms); err != nil {
			s.t.Fatal(err)
		}
	}
}

// seedAdvisories stores n advisories about a few packages.
func (s *stack) seedAdvisories(n int) {
	s.t.Helper()
	var advs []*vuln.Advisory
	for i := range n {
		advs = append(advs, &vuln.Advisory{ID: fmt.Sprintf("GHSA-bench-%05d", i), Summary: "bench advisory", Severity: []string{"critical", "high", "medium", "low"}[i%4],
			Published: time.Now().Add(-time.Hour), Modified: time.Now().Add(-time.Hour), Source: "osv",
			Affected: []vuln.Affected{{Ecosystem: "Generic", Name: fmt.Sprintf("lib%d", i%200), Versions: []string{"1.0"}}}})
	}
	if _, err := s.db.PutAdvisories(context.Background(), advs, time.Now()); err != nil {
		s.t.Fatal(err)
	}
}

// BenchmarkConsolePages is the server's time per console page at 100,000 devices, 1,000
// campaigns and 10,000 advisories, through the whole handler chain with an operator token,
// without the network, on SQLite and (when UPKEEP_TEST_POSTGRES is set) on PostgreSQL; it
// reports the 95th percentile (p95-ms) and the page's bytes (page-bytes, HTML only: the static
// files, cached for good after the first page, are static-bytes). The overview and the device
// page reuse the fleet's counts and exposure reports for 30 s; overview-cold counts anew each
// time.
//
//	go test ./internal/httpapi -run '^$' -bench BenchmarkConsolePages -benchtime 40x
func BenchmarkConsolePages(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) { benchConsolePages(b, newStack(b), false) })
	b.Run("postgres", func(b *testing.B) {
		db, err := postgres.Open(context.Background(), storetest.PostgresDSN(b))
		if err != nil {
			b.Fatal(err)
		}
		benchConsolePages(b, newStackOn(b, db), true)
	})
}

func benchConsolePages(b *testing.B, s *stack, pg bool) {
	s.withRollouts()
	start := time.Now()
	s.seedFleet(100_000)
	s.seedCampaigns(1000, 10)
	s.seedAdvisories(10_000)
	if pg {
		// What autovacuum does after a bulk load: statistics for the planner, and the
		// visibility map that lets an index answer alone.
		if _, err := s.db.SQL().ExecContext(context.Background(), "VACUUM ANALYZE"); err != nil {
			b.Fatal(err)
		}
	}
	s.api.Exposure = &exposure.Service{Store: s.db, Devices: s.db, Releases: s.db, Targets: s.images.CurrentTargets, Logger: quietLogger()}
	s.handler = s.api.Handler()
	b.Logf("seeded 100,000 devices, 1,000 campaigns and 10,000 advisories in %v", time.Since(start).Round(time.Millisecond))
	h := s.handler
	get := func(path string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header.Set("Authorization", "Bearer "+s.admin)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("%s: %d %s", path, w.Code, w.Body)
		}
		return w
	}
	// The static files a first visit loads.
	static := 0
	for _, name := range []string{"console.css", "htmx.min.js", "sse.min.js"} {
		static += get("/static/" + name).Body.Len()
	}
	// A cursor deep in the list: the 50,000th device.
	deep := fmt.Sprintf("/devices?after=%032x&after_id=%032x", 50_000, 50_000)
	b.Run("overview-cold", func(b *testing.B) { // every figure counted anew: the first overview in 30 s
		var took []time.Duration
		for b.Loop() {
			s.api.ForgetConsoleCaches()
			t0 := time.Now()
			get("/")
			took = append(took, time.Since(t0))
		}
		slices.Sort(took)
		b.ReportMetric(float64(took[min(len(took)-1, len(took)*95/100)].Microseconds())/1000, "p95-ms")
	})
	for _, c := range []struct{ name, path string }{
		{"overview", "/"},
		{"devices", "/devices"},
		{"devices-deep-cursor", deep},
		{"devices-attribute", "/devices?attr=region%3Dap-south%2Cring%3Dbeta"},
		{"devices-attribute-dense-sorted", "/devices?attr=ring%3Dprod&sort=serial&desc=true"}, // 3 devices in 4
		{"devices-search", "/devices?q=SN00999"},
		{"devices-search-broad", "/devices?q=0"}, // every device's id begins with 0 here
		{"devices-search-attribute", "/devices?q=site%3Dsite-7"},
		{"devices-sort-version", "/devices?sort=version&desc=true"},
		{"device", fmt.Sprintf("/devices/%032x", 77)},
		{"rollouts", "/rollouts"},
		{"rollout", "/rollouts/c00999"},
	} {
		b.Run(c.name, func(b *testing.B) {
			var took []time.Duration
			size := 0
			for b.Loop() {
				t0 := time.Now()
				w := get(c.path)
				took = append(took, time.Since(t0))
				size = w.Body.Len()
			}
			slices.Sort(took)
			p95 := took[min(len(took)-1, len(took)*95/100)]
			b.ReportMetric(float64(p95.Microseconds())/1000, "p95-ms")
			b.ReportMetric(float64(size), "page-bytes")
			b.ReportMetric(float64(static), "static-bytes")
			if strings.Contains(c.name, "devices") && size < 1000 {
				b.Fatalf("%s: a page of %d bytes", c.name, size)
			}
		})
	}
}
