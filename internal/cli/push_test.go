package cli

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/agent"
	"upkeep.dev/upkeep/internal/devclient"
	"upkeep.dev/upkeep/internal/faillog"
	"upkeep.dev/upkeep/internal/push/brokertest"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/sim"
	"upkeep.dev/upkeep/wire"
)

// A failing install hook (an update module whose install step fails) has its stderr, and the
// agent's own log, uploaded and shown by `upkeep devices logs ID`.
func TestFailureLogShown(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	v100 := image("1.0.0", 4<<10)
	r100 := e.publish("1.0.0", 1, v100)
	module := filepath.Join(t.TempDir(), "module.sh")
	script := `#!/bin/sh
case "$1" in
install) echo "writing $UPKEEP_TARGET"; echo "E: cannot open /dev/mmcblk0p3: read-only file system" >&2; exit 1;;
*) exit 3;;
esac
`
	if err := os.WriteFile(module, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "agent")
	cfg := agent.Config{StateDir: state, Installer: &agent.ModuleInstaller{Executable: module, WorkDir: filepath.Join(state, "module")}, Logger: quietLogger()}
	st, err := agent.Enroll(ctx, cfg, agent.EnrollOptions{Server: e.srv.URL, EnrollToken: e.enrollToken, ImageRoot: e.imageRoot, DirectorRoot: e.directorRoot,
		Identity:  wire.Identity{Serial: "SN-LOG", Product: testProduct, HardwareID: testHardware},
		Installed: agent.Image{Target: r100.Target, Version: r100.Version, SecurityVersion: r100.SecurityVersion, SHA256: r100.SHA256}})
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r101 := e.publish("1.0.1", 2, image("1.0.1", 4<<10))
	e.deploy(r101, st.DeviceID)
	a.Cycle(ctx) //nolint:errcheck // the install fails, as it should
	out := cli(t, "--server", e.srv.URL, "--token", e.srv.AdminToken, "devices", "logs", st.DeviceID)
	for _, want := range []string{"install", r101.Target, "E: cannot open /dev/mmcblk0p3: read-only file system", "writing " + r101.Target, "--- agent log ---", "update step"} {
		if !strings.Contains(out, want) {
			t.Errorf("devices logs lacks %q:\n%s", want, out)
		}
	}
	ls, err := e.cli.DeviceLogs(ctx, st.DeviceID, true)
	if err != nil || len(ls) != 1 || ls[0].Step != wire.StepInstall {
		t.Fatalf("logs %+v, %v", ls, err)
	}
}

// pushEnv is a server publishing nudges through a real Mosquitto.
func pushEnv(t *testing.T, pollSeconds int) (*env, *brokertest.Broker) {
	b := brokertest.Start(t)
	e := newEnvWith(t, func(c *server.Config) {
		c.PollSeconds = pollSeconds
		c.Push.URL, c.Push.Username, c.Push.Password = b.URL, brokertest.AdminUser, brokertest.AdminPassword
	})
	if e.srv.Push() == nil {
		t.Fatal("the server did not connect to the broker")
	}
	return e, b
}

// runAgent runs d's agent with push on until the test ends.
func runAgent(t *testing.T, d *sim.Device) {
	d.Agent.EnablePush(agent.PushOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Agent.Run(ctx) }() //nolint:errcheck // ends with ctx
	t.Cleanup(func() { cancel(); <-done; d.Agent.ClosePush() })
}

func waitFor(t *testing.T, what string, within time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func installed(t *testing.T, e *env, id string) string {
	d, err := e.cli.Device(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return d.Installed.Version
}

// A deploy nudges its device, which checks in and installs at once although its next poll is an
// hour away; the other device, connected to the same broker, is not nudged.
func TestPushNudgeReachesOnlyItsDevice(t *testing.T) {
	e, _ := pushEnv(t, 3600)
	v100 := image("1.0.0", 4<<10)
	r100 := e.publish("1.0.0", 1, v100)
	da, db := e.device("SN-PA", v100, r100), e.device("SN-PB", v100, r100)
	ida, idb := da.Agent.State().DeviceID, db.Agent.State().DeviceID // before the agents run: State is not safe beside Run
	runAgent(t, da)
	runAgent(t, db)
	waitFor(t, "both agents connected to the broker", 15*time.Second, func() bool {
		return da.Agent.PushState() == agent.PushConnected && db.Agent.PushState() == agent.PushConnected
	})
	r101 := e.publish("1.0.1", 2, image("1.0.1", 4<<10))
	start := time.Now()
	e.deploy(r101, ida)
	waitFor(t, "the nudged device installs 1.0.1", 15*time.Second, func() bool { return installed(t, e, ida) == "1.0.1" })
	t.Logf("deploy to installed and reported: %s", time.Since(start))
	time.Sleep(500 * time.Millisecond)
	if v := installed(t, e, idb); v != "1.0.0" {
		t.Fatalf("the other device runs %s", v)
	}
	if got := db.Agent.PushLastNudge(); !got.IsZero() {
		t.Fatalf("the other device was nudged at %s", got)
	}
	if got := da.Agent.PushLastNudge(); got.IsZero() {
		t.Fatal("the deployed device records no nudge")
	}
	// What `upkeep-agent status` shows ("push"), from the state folder.
	if st := agent.ReadPushStatus(filepath.Join(da.Dir, "state")); st.State != agent.PushConnected || st.LastNudge.IsZero() || st.Broker == "" {
		t.Fatalf("push status %+v, want connected with the broker and the last nudge", st)
	}
}

// With the broker down, devices still get their updates by polling.
func TestPushBrokerDownPollingDelivers(t *testing.T) {
	e, b := pushEnv(t, 2)
	v100 := image("1.0.0", 4<<10)
	r100 := e.publish("1.0.0", 1, v100)
	d, err := sim.NewDevice(context.Background(), filepath.Join(e.dir, "devices", "SN-PD"), sim.Options{
		Server: e.srv.URL, EnrollToken: e.enrollToken, ImageRoot: e.imageRoot, DirectorRoot: e.directorRoot,
		Identity: wire.Identity{Serial: "SN-PD", Product: testProduct, HardwareID: testHardware},
		Factory:  v100, FactoryTarget: r100.Target, FactoryVersion: r100.Version, FactorySecVer: r100.SecurityVersion,
		Logger: quietLogger(), PollInterval: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	id := d.Agent.State().DeviceID
	runAgent(t, d)
	waitFor(t, "the agent connected to the broker", 15*time.Second, func() bool { return d.Agent.PushState() == agent.PushConnected })
	b.Stop()
	waitFor(t, "the agent sees the broker gone", 15*time.Second, func() bool { return d.Agent.PushState() != agent.PushConnected })
	r101 := e.publish("1.0.1", 2, image("1.0.1", 4<<10))
	e.deploy(r101, id)
	waitFor(t, "polling delivers 1.0.1", 30*time.Second, func() bool { return installed(t, e, id) == "1.0.1" })
}

// The failure log route's bounds: 413 past the size bound, 429 with Retry-After past the hourly
// allowance, 400 for a body that is not a bundle; nothing is stored for any of them.
func TestFailureLogLimits(t *testing.T) {
	e := newEnvWith(t, func(c *server.Config) { c.Logs.PerHour = 3 })
	ctx := context.Background()
	v100 := image("1.0.0", 4<<10)
	r100 := e.publish("1.0.0", 1, v100)
	d := e.device("SN-LIM", v100, r100)
	st := d.Agent.State()
	dc := &devclient.Client{Base: e.srv.URL}
	var se *devclient.ServerError
	big := make([]byte, wire.MaxLogBundle+1)
	if err := dc.UploadLog(ctx, st.Token, big); !errors.As(err, &se) || se.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized bundle: %v, want 413", err)
	}
	if err := dc.UploadLog(ctx, st.Token, []byte("not gzip")); !errors.As(err, &se) || se.Status != http.StatusBadRequest {
		t.Fatalf("garbage: %v, want 400", err)
	}
	ok, err := agent.EncodeLogBundle(&wire.LogBundle{Step: wire.StepHealth, Output: strings.Repeat("health check failed\n", 100)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := dc.UploadLog(ctx, st.Token, ok); err != nil {
			t.Fatalf("upload %d: %v", i, err)
		}
	}
	var te *devclient.TransientError
	if err := dc.UploadLog(ctx, st.Token, ok); !errors.As(err, &te) || te.RetryAfter < 30*time.Minute {
		t.Fatalf("third upload within the hour: %v, want 429 with a Retry-After near an hour", err)
	}
	ls, err := e.cli.DeviceLogs(ctx, st.DeviceID, true)
	if err != nil || len(ls) != 2 {
		t.Fatalf("kept %d bundles, %v; want the 2 accepted", len(ls), err)
	}
	if _, err := e.cli.DeviceLogs(ctx, st.DeviceID, false); err != nil {
		t.Fatal(err)
	}
}

// A bundle too large for the bound loses its oldest log lines first and still goes through.
func TestFailureLogTruncated(t *testing.T) {
	lines := make([]string, 4000)
	for i := range lines {
		h := sha256.Sum256([]byte{byte(i), byte(i >> 8)})
		h2 := sha256.Sum256(h[:])
		h3 := sha256.Sum256(h2[:])
		lines[i] = fmt.Sprintf("%06d %x%x%x", i, h, h2, h3)
	}
	body, err := agent.EncodeLogBundle(&wire.LogBundle{Step: wire.StepInstall, Output: "tail of the output", AgentLog: lines})
	if err != nil {
		t.Fatal(err)
	}
	if len(body) > wire.MaxLogBundle {
		t.Fatalf("%d bytes, over the bound", len(body))
	}
	b, err := faillog.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	if !b.Truncated || len(b.AgentLog) == 0 || b.AgentLog[len(b.AgentLog)-1] != lines[len(lines)-1] || b.Output != "tail of the output" {
		t.Fatalf("truncated=%v, %d lines kept, last %q", b.Truncated, len(b.AgentLog), b.AgentLog[len(b.AgentLog)-1])
	}
}

// Each campaign wave nudges its devices when it opens: the second wave's device installs soon
// after the first wave's device committed, although both poll only hourly.
func TestPushCampaignWavesNudge(t *testing.T) {
	e, _ := pushEnv(t, 3600)
	ctx := context.Background()
	v100 := image("1.0.0", 4<<10)
	r100 := e.publish("1.0.0", 1, v100)
	da, db := e.device("SN-WA", v100, r100), e.device("SN-WB", v100, r100)
	ida, idb := da.Agent.State().DeviceID, db.Agent.State().DeviceID
	runAgent(t, da)
	runAgent(t, db)
	waitFor(t, "both agents connected to the broker", 15*time.Second, func() bool {
		return da.Agent.PushState() == agent.PushConnected && db.Agent.PushState() == agent.PushConnected
	})
	e.publish("1.0.1", 2, image("1.0.1", 4<<10))
	if _, err := e.cli.CreateRollout(ctx, wire.CampaignSpec{Release: testProduct + "@1.0.1", Devices: []string{ida, idb}, Waves: "1,2", HealthGate: "0s", Start: true}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both waves' devices install 1.0.1", 30*time.Second, func() bool {
		return installed(t, e, ida) == "1.0.1" && installed(t, e, idb) == "1.0.1"
	})
	if da.Agent.PushLastNudge().IsZero() || db.Agent.PushLastNudge().IsZero() {
		t.Fatal("a device installed without a nudge")
	}
}

// The push connection over TLS: the server offers the broker's ssl:// listener, the agent
// checks its certificate against the CA it trusts, and a nudge arrives through it.
func TestPushOverTLS(t *testing.T) {
	b := brokertest.StartTLS(t)
	e := newEnvWith(t, func(c *server.Config) {
		c.PollSeconds = 3600
		c.Push.URL, c.Push.DeviceURL, c.Push.Username, c.Push.Password = b.URL, b.TLSURL, brokertest.AdminUser, brokertest.AdminPassword
	})
	v100 := image("1.0.0", 4<<10)
	r100 := e.publish("1.0.0", 1, v100)
	d := e.device("SN-TLS", v100, r100)
	id := d.Agent.State().DeviceID
	d.Agent.EnablePush(agent.PushOptions{TLS: &tls.Config{RootCAs: b.CA, MinVersion: tls.VersionTLS12}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Agent.Run(ctx) }() //nolint:errcheck // ends with ctx
	t.Cleanup(func() { cancel(); <-done; d.Agent.ClosePush() })
	// A device that does not trust the broker's CA does not connect (and keeps polling).
	untrusting := e.device("SN-TLS-2", v100, r100)
	runAgent(t, untrusting)
	waitFor(t, "the agent connected over TLS", 15*time.Second, func() bool { return d.Agent.PushState() == agent.PushConnected })
	time.Sleep(time.Second)
	if st := untrusting.Agent.PushState(); st == agent.PushConnected {
		t.Fatal("an agent that does not trust the broker's CA connected")
	}
	if st := agent.ReadPushStatus(filepath.Join(d.Dir, "state")); !strings.HasPrefix(st.Broker, "ssl://") {
		t.Fatalf("connected to %q, want the ssl:// listener", st.Broker)
	}
	r101 := e.publish("1.0.1", 2, image("1.0.1", 4<<10))
	e.deploy(r101, id)
	waitFor(t, "the nudged device installs 1.0.1", 15*time.Second, func() bool { return installed(t, e, id) == "1.0.1" })
}
