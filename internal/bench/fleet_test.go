package bench

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/testenv"
)

// TestFleet runs `bench fleet` small: one SQLite node over TLS through an outage, and two
// replicas on PostgreSQL over TLS. Every device checks in without an error, resumes its TLS
// session, and every device that noticed the outage comes back.
func TestFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("builds upkeep and runs server processes")
	}
	pgURL := testenv.Service(t, "UPKEEP_TEST_POSTGRES", "PostgreSQL")
	exe := filepath.Join(t.TempDir(), "upkeep")
	if out, err := exec.Command("go", "build", "-o", exe, "../../cmd/upkeep").CombinedOutput(); err != nil {
		t.Fatalf("build upkeep: %v\n%s", err, out)
	}
	run := func(t *testing.T, cfg HTTPConfig) string {
		t.Helper()
		cfg.Server, cfg.TLS, cfg.Devices, cfg.Enrolers = exe, true, 300, 16
		cfg.Interval, cfg.Warmup, cfg.Duration = 10*time.Second, 3*time.Second, 6*time.Second
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		var out bytes.Buffer
		if err := Fleet(ctx, cfg, &out); err != nil {
			t.Fatalf("bench fleet: %v\n%s", err, out.String())
		}
		t.Log(out.String())
		return out.String()
	}
	expect := func(t *testing.T, out string, patterns ...string) {
		t.Helper()
		for _, p := range patterns {
			if !regexp.MustCompile(p).MatchString(out) {
				t.Errorf("output lacks %q", p)
			}
		}
	}
	t.Run("sqlite", func(t *testing.T) {
		cfg := DefaultHTTPConfig()
		cfg.SQLite, cfg.Replicas, cfg.Outage = true, 1, 2*time.Second
		out := run(t, cfg)
		expect(t, out,
			`steady state, [0-9.]+ s: [1-9][0-9]* check-ins .* 0 other errors`,
			`check-in latency: p50 \S+, p99 \S+`,
			`TLS: [1-9][0-9]* connections, [1-9][0-9.]*% resumed`,
			`replica 1: [1-9][0-9]* check-ins, CPU .* per check-in\), RSS [1-9]`,
			`database writes of the check-ins \(SQLite\): [1-9][0-9.]* last-seen rows/s`,
			`outage, .* [1-9][0-9]* other errors`,
			`recovery, .* 0 other errors`,
			`every device that noticed the outage \([1-9][0-9]*, [0-9]+ of them after the restart\) checked in again`)
	})
	t.Run("postgres", func(t *testing.T) {
		cfg := DefaultHTTPConfig()
		cfg.Postgres, cfg.Replicas = pgURL, 2
		out := run(t, cfg)
		expect(t, out,
			`steady state, [0-9.]+ s: [1-9][0-9]* check-ins .* 0 other errors`,
			`replica 2: [1-9][0-9]* check-ins`,
			`PostgreSQL upkeep_bench_[0-9]+, every writer: [1-9][0-9.]* row writes/s`)
		// Replicas share their session ticket keys: a ticket from either resumes on both.
		m := regexp.MustCompile(`TLS: [0-9]+ connections, ([0-9.]+)% resumed`).FindStringSubmatch(out)
		if m == nil {
			t.Fatal("no TLS line")
		}
		if pct, err := strconv.ParseFloat(m[1], 64); err != nil || pct < 90 {
			t.Errorf("%s%% of the connections resumed a session across two replicas, want at least 90%%", m[1])
		}
	})
}
