package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
