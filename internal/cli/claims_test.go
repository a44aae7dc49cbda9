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
	"upkeep.dev/upkeep/wire"
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
	if err := f.srv.Director.Unassign(f.ctx, f.fleetDevice()); err != nil {
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
	tok, _ := f.srv.Fleet.Tokens.Issue(f.id, time.Now()) // device tokens follow the wall clock (fleet.Service.TokenClock)
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

// TestOperatorOutputEscapesDeviceText: what a device reports (event messages, its last error,
// its state) reaches `devices list` and `devices events` with escape sequences, carriage
// returns, bells and bidi controls shown as escapes, never as the characters themselves.
func TestOperatorOutputEscapesDeviceText(t *testing.T) {
	t.Parallel()
	f := newAttackFixture(t, nil)
	evil := "\x1b]0;owned\a\x1b[2J\x1b[1;32mOK\rall good \u202eexe.gpj\u2066"
	rep := wire.Report{
		Installed: wire.Installed{Target: f.r100.Target, Version: f.r100.Version, SecurityVersion: f.r100.SecurityVersion, SHA256: f.r100.SHA256},
		State:     "idle\x1b[8m",
		Events:    []wire.Event{{Time: time.Now().UTC(), Target: f.r100.Target + "\x1b[5m", Step: wire.StepInstall, Status: wire.StatusFailed, Message: evil}},
	}
	if status, body := f.call(http.MethodPost, "/device/v1/report", f.dev.Agent.State().Token, attackJSON(t, rep)); status != http.StatusNoContent {
		t.Fatalf("report: %d %s", status, body)
	}
	g := []string{"--server", f.srv.URL, "--token", f.srv.AdminToken}
	for _, args := range [][]string{{"devices", "list"}, {"devices", "events", f.id}} {
		out := cli(t, append(g, args...)...)
		if i := strings.IndexFunc(out, func(r rune) bool {
			return r != '\n' && (r < 0x20 || r == 0x7f || r == '\u202e' || r == '\u2066')
		}); i >= 0 {
			t.Errorf("upkeep %s prints %q at %d: %q", strings.Join(args, " "), out[i], i, out)
		}
		if !strings.Contains(out, `\x1b]0;owned\x07\x1b[2J\x1b[1;32mOK\x0dall good \u202eexe.gpj\u2066`) {
			t.Errorf("upkeep %s does not show the device's text escaped: %q", strings.Join(args, " "), out)
		}
	}
}
