package bench

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/devclient"
	"upkeep.dev/upkeep/wire"
)

const wrkReport = `Running 10s test @ http://127.0.0.1:41923/device/v1/checkin
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.41ms    1.52ms  38.52ms   90.12%
    Req/Sec    24.17k     2.02k   30.11k    71.50%
  Latency Distribution
     50%    1.02ms
     75%    1.61ms
     90%    2.70ms
     99%    7.83ms
  481032 requests in 10.00s, 47.23MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  48095.85
Transfer/sec:      4.72MB
`

func TestBenchParseWrk(t *testing.T) {
	got, err := parseWrk(wrkReport)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{RPS: 48095.85, P99: 7830 * time.Microsecond, Transfer: 4.72 * (1 << 20), Requests: 481032, Bad: 7}
	if got != want {
		t.Errorf("parseWrk = %+v, want %+v", got, want)
	}
	if _, err := parseWrk("Running 10s test\nunable to connect to 127.0.0.1:1 Connection refused\n"); err == nil {
		t.Error("a report without figures parsed")
	}
	for in, want := range map[string]time.Duration{"812.00us": 812 * time.Microsecond, "2.01s": 2010 * time.Millisecond, "1.50m": 90 * time.Second} {
		if got, err := parseWrkDuration(in); err != nil || got != want {
			t.Errorf("parseWrkDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
}

func TestBenchNeedTools(t *testing.T) {
	err := needTools("checkin", "sh", "upkeep-no-such-tool")
	if err == nil || !strings.Contains(err.Error(), "upkeep-no-such-tool") || strings.Contains(err.Error(), "sh and") {
		t.Errorf("needTools = %v, want an error naming only the missing tool", err)
	}
	if err := needTools("checkin", "sh"); err != nil {
		t.Errorf("needTools(sh) = %v", err)
	}
}

// TestBenchNginxWrk starts the nginx reference and drives it for a second with the check-in
// script, as `upkeep bench checkin` does.
func TestBenchNginxWrk(t *testing.T) {
	for _, tool := range []string{"wrk", "nginx"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	dir := t.TempDir()
	static := filepath.Join(dir, "static-300.json")
	script := filepath.Join(dir, "checkin.lua")
	if err := os.WriteFile(static, []byte(strings.Repeat("x", 300)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(script, []byte(checkinLua), 0o644); err != nil {
		t.Fatal(err)
	}
	devs := []*benchDevice{{token: "upk_dev.a.1.x", version: 3}, {token: "upk_dev.b.1.y"}}
	file := filepath.Join(dir, "devices.tsv")
	if err := writeDeviceFile(file, devs); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ng, err := startNginx(ctx, map[string]string{"static-300.json": static})
	if err != nil {
		t.Fatal(err)
	}
	defer ng.Stop()
	r, err := runWrk(ctx, 1, 2, time.Second, script, ng.URL+"/static-300.json", nil, file, "GET", "/static-300.json")
	if err != nil {
		t.Fatal(err)
	}
	if r.RPS <= 0 || r.Bad != 0 || r.Transfer < 300*r.RPS {
		t.Errorf("wrk against nginx: %+v", r)
	}
}

// A bench device speaks the protocol as the agent does, through the device client: the
// director version it trusts as If-None-Match, a fresh token after a 401.
func TestBenchDeviceCheckin(t *testing.T) {
	var paths []string
	var etags []string
	status := http.StatusNotModified
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.URL.Path)
		switch r.URL.Path {
		case "/device/v1/enroll", "/device/v1/token":
			json.NewEncoder(w).Encode(wire.EnrollResponse{DeviceID: "d1", Status: "accepted", Token: "tok", ExpiresAt: time.Now().Add(time.Hour)})
		case "/device/v1/checkin":
			etags = append(etags, r.Header.Get("If-None-Match"))
			w.Header().Set(wire.HeaderPollInterval, "600")
			w.Header().Set(wire.HeaderPollJitter, "60")
			if status == http.StatusOK {
				json.NewEncoder(w).Encode(wire.CheckinResponse{Changed: true, DirectorVersion: 5})
				return
			}
			w.WriteHeader(status)
		}
	}))
	defer srv.Close()
	c := benchClients(srv.Client(), srv.URL)[0]
	ctx := context.Background()
	d, err := enrolBenchDevice(ctx, c, "upk_enroll_x", 1)
	if err != nil {
		t.Fatal(err)
	}
	res, err := d.checkin(ctx, c)
	if err != nil || res.Status != http.StatusNotModified || res.Poll != 10*time.Minute || res.Jitter != time.Minute {
		t.Fatalf("check-in: %+v, %v", res, err)
	}
	status = http.StatusOK
	if res, err := d.checkin(ctx, c); err != nil || !res.Changed || d.version != 5 {
		t.Fatalf("changed: %+v, %v, version %d", res, err, d.version)
	}
	status = http.StatusUnauthorized
	if _, err := d.checkin(ctx, c); err == nil || d.token != "" {
		t.Fatalf("401: %v, token %q", err, d.token)
	}
	status = http.StatusNotModified
	if _, err := d.checkin(ctx, c); err != nil {
		t.Fatal(err)
	}
	want := []string{"/device/v1/enroll", "/device/v1/checkin", "/device/v1/checkin", "/device/v1/checkin", "/device/v1/token", "/device/v1/checkin"}
	if !slices.Equal(paths, want) || !slices.Equal(etags, []string{`"0"`, `"0"`, `"5"`, `"5"`}) {
		t.Errorf("requests %v, If-None-Match %v", paths, etags)
	}
}

// `bench fleet` schedules each device's next poll from its check-in's hints, and backs off
// after failures, as the agent.
func TestBenchNextPoll(t *testing.T) {
	refused := &devclient.TransientError{Err: errors.New("connection refused")}
	for _, tc := range []struct {
		name        string
		res         devclient.CheckinResult
		err         error
		backoff     time.Duration // before
		lo, hi      time.Duration
		wantBackoff time.Duration // after
	}{
		{"hints", devclient.CheckinResult{Poll: 10 * time.Minute, Jitter: time.Minute}, nil, 0, 9 * time.Minute, 11 * time.Minute, 0},
		{"wide jitter under load", devclient.CheckinResult{Poll: 10 * time.Minute, Jitter: 5 * time.Minute}, nil, 0, 5 * time.Minute, 15 * time.Minute, 0},
		{"no hints: the interval ±20%", devclient.CheckinResult{}, nil, 0, 4 * time.Minute, 6 * time.Minute, 0},
		{"success ends the backoff", devclient.CheckinResult{}, nil, 2 * time.Minute, 4 * time.Minute, 6 * time.Minute, 0},
		{"shed: Retry-After", devclient.CheckinResult{}, &devclient.TransientError{Err: errors.New("busy"), RetryAfter: time.Hour}, 0, time.Hour, 72 * time.Minute, devclient.FirstBackoff},
		{"first failure", devclient.CheckinResult{}, refused, 0, 4 * time.Second, 6 * time.Second, devclient.FirstBackoff},
		{"failures double", devclient.CheckinResult{}, refused, 40 * time.Second, 64 * time.Second, 96 * time.Second, 80 * time.Second},
		{"backoff capped", devclient.CheckinResult{}, refused, 6 * time.Minute, devclient.MaxBackoff * 4 / 5, devclient.MaxBackoff * 6 / 5, devclient.MaxBackoff},
	} {
		for range 100 {
			b := tc.backoff
			if d := nextPoll(tc.res, tc.err, 5*time.Minute, &b); d < tc.lo || d > tc.hi || b != tc.wantBackoff {
				t.Fatalf("%s: next poll in %s with backoff %s, want within [%s, %s] and %s", tc.name, d, b, tc.lo, tc.hi, tc.wantBackoff)
			}
		}
	}
}
