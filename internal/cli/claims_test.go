package cli

// What devices claim and what they may fetch: a device downloads only the images its own
// director view names, and what it says it runs counts publicly only if it is a signed target.

import (
	"bytes"
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/server"
)

// TestArtifactOnlyForOwnView: a device gets an image only while its director view names it
// (the latest view, or a previous one that has not expired, for a download under way when the
// assignment changed); any other target is 403, even one that is published.
func TestArtifactOnlyForOwnView(t *testing.T) {
	t.Parallel()
	f := newAttackFixture(t, nil)
	other := f.device("SN-OTHER", image("1.0.0", 64<<10), f.r100)
	v101 := image("1.0.1", 80<<10)
	r101 := f.publish("1.0.1", 2, v101)
	f.deploy(r101, f.id)
	path := "/device/v1/targets/" + r101.Target

	status, body := f.call(http.MethodGet, path, other.Agent.State().Token, nil)
	requireAPIRefusal(t, "another device's image", status, body, apperr.Forbidden)
	if status != http.StatusForbidden || bytes.Contains(body, v101[:64]) {
		t.Fatalf("another device's image: %d, %d bytes", status, len(body))
	}
	if status, body := f.call(http.MethodGet, path, f.dev.Agent.State().Token, nil); status != http.StatusOK || !bytes.Equal(body, v101) {
		t.Fatalf("own assigned image: %d, %d bytes", status, len(body))
	}

	// The assignment is withdrawn while the device downloads: the previous view, still valid,
	// lets it finish (a ranged request, as the agent resumes).
	if err := f.srv.Repo.Unassign(f.ctx, f.fleetDevice()); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(f.ctx, http.MethodGet, f.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+f.dev.Agent.State().Token)
	req.Header.Set("Range", "bytes=1024-")
	resp, err := attackHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent {
		t.Fatalf("resumed download after the assignment changed: %d, want 206", resp.StatusCode)
	}

	// Once that previous view has expired, the image is no longer the device's to fetch.
	f.clock.Shift(8 * 24 * time.Hour)
	tok, _ := f.srv.Fleet.Tokens.Issue(f.id, f.clock.Now())
	status, body = f.call(http.MethodGet, path, tok, nil)
	requireAPIRefusal(t, "image of an expired view", status, body, apperr.Forbidden)
}

// TestSimulatedDevicesLeftOut: `upkeep simulate` enrols its devices with a simulation token, so
// they are marked simulated, count in no public figure, and `devices remove --simulated` (or
// `simulate --cleanup`) removes them and nothing else.
func TestSimulatedDevicesLeftOut(t *testing.T) {
	e := newEnvWith(t, func(c *server.Config) { c.PublicRefresh = time.Nanosecond })
	ctx := context.Background()
	if _, err := e.cli.SetPolicy(ctx, testProduct, labelPolicy("2031-12-31")); err != nil {
		t.Fatal(err)
	}
	v100 := image("1.0.0", 4<<10)
	r100 := e.publish("1.0.0", 1, v100)
	e.device("SN-REAL", v100, r100)
	simulate := func(n int, cleanup bool) string {
		t.Helper()
		var out strings.Builder
		if err := RunSimulate(ctx, SimulateConfig{Server: e.srv.URL, Token: e.srv.AdminToken, Keys: e.keys, Dir: filepath.Join(t.TempDir(), "sim"),
			Devices: n, Poll: time.Second, Duration: time.Second, Product: testProduct, Hardware: testHardware, Seed: 1, Cleanup: cleanup}, &out); err != nil {
			t.Fatalf("simulate: %v\n%s", err, out.String())
		}
		return out.String()
	}
	simulate(4, false)
	ds, err := e.cli.Devices(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	simulated := 0
	for _, d := range ds {
		if d.Simulated {
			simulated++
		} else if d.Serial != "SN-REAL" {
			t.Errorf("device %s (%s) is not marked simulated", d.ID, d.Serial)
		}
	}
	if len(ds) != 5 || simulated != 4 {
		t.Fatalf("%d devices, %d simulated; want 5, 4", len(ds), simulated)
	}
	if d := e.declaration(testProduct); *d.Evidence.Devices.Value != 1 {
		t.Errorf("the declaration counts %v devices, want the real one only", *d.Evidence.Devices.Value)
	}

	g := []string{"--server", e.srv.URL, "--token", e.srv.AdminToken}
	if _, err := cliErr(append(g, "devices", "remove")...); err == nil {
		t.Error("devices remove without --simulated succeeded")
	}
	if out := cli(t, append(g, "devices", "remove", "--simulated")...); !strings.Contains(out, "4 simulated devices removed") {
		t.Fatalf("devices remove --simulated: %s", out)
	}
	if ds, _ := e.cli.Devices(ctx, ""); len(ds) != 1 || ds[0].Serial != "SN-REAL" {
		t.Fatalf("after the removal: %+v", ds)
	}

	if out := simulate(2, true); !strings.Contains(out, "2 simulated devices removed") {
		t.Errorf("simulate --cleanup: %s", out)
	}
	if ds, _ := e.cli.Devices(ctx, ""); len(ds) != 1 {
		t.Fatalf("after simulate --cleanup: %d devices", len(ds))
	}
}
