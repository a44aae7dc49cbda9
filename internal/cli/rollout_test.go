package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/agent"
	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/rollout"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/sim"
	"upkeep.dev/upkeep/wire"
)

// simFleet enrols n lightweight simulated devices running factory.
func (e *env) simFleet(n int, factory *wire.Release, configure func(*sim.FleetOptions)) *sim.Fleet {
	e.t.Helper()
	dir, err := os.MkdirTemp(sim.TempDir(), "upkeep-sim-")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { os.RemoveAll(dir) })
	o := sim.FleetOptions{Server: e.srv.URL, EnrollToken: e.enrollToken, ImageRoot: e.imageRoot, DirectorRoot: e.directorRoot,
		Devices: n, Product: testProduct, Hardware: testHardware, FactoryTarget: factory.Target, FactoryVersion: factory.Version,
		FactorySHA256: factory.SHA256, FactorySecVer: factory.SecurityVersion, Poll: time.Second, Dir: filepath.Join(dir, "fleet"), Logger: quietLogger()}
	if configure != nil {
		configure(&o)
	}
	f, err := sim.NewFleet(context.Background(), o)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(f.Stop)
	return f
}

// waitCampaign polls a campaign's status until cond holds.
func (e *env) waitCampaign(id string, within time.Duration, what string, cond func(*wire.CampaignStatus) bool) *wire.CampaignStatus {
	e.t.Helper()
	var st *wire.CampaignStatus
	var err error
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if st, err = e.cli.RolloutStatus(context.Background(), id); err == nil && cond(st) {
			return st
		}
	}
	e.t.Fatalf("campaign %s: %s did not happen within %s: %+v (%v)", id, what, within, st, err)
	return nil
}

// TestRolloutPausesInFirstWave rolls a bad release out to 200 simulated devices: half of them
// fail (health check or trial boot). The campaign must pause itself in its first wave, and no
// device outside that wave may have been assigned or have received the release. A newer good
// release then supersedes it and completes wave by wave, through a health gate.
func TestRolloutPausesInFirstWave(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 200 simulated devices")
	}
	e := newEnvWith(t, func(c *server.Config) { c.PollSeconds, c.RolloutEvery = 1, 200*time.Millisecond })
	ctx := context.Background()
	r100 := e.publish("1.0.0", 1, image("1.0.0", 4<<10))
	bad := e.publish("1.1.0", 2, image("1.1.0", 64<<10))
	f := e.simFleet(200, r100, func(o *sim.FleetOptions) {
		o.Fail = func(i int, target string) string {
			if target != bad.Target || i%2 == 1 {
				return ""
			}
			if i%4 == 0 {
				return "boot"
			}
			return "health"
		}
	})
	f.Start(ctx)

	camp, err := e.cli.CreateRollout(ctx, wire.CampaignSpec{Release: "thermostat@1.1.0", Target: "product=thermostat", Waves: "10%,50%,100%", HealthGate: "0s", Start: true})
	if err != nil {
		t.Fatal(err)
	}
	if camp.Waves[0] != 20 || camp.Waves[2] != 200 {
		t.Fatalf("waves %v, want 20/100/200", camp.Waves)
	}
	st := e.waitCampaign(camp.ID, 60*time.Second, "automatic pause", func(s *wire.CampaignStatus) bool { return s.Campaign.State == rollout.StatePaused })
	if st.Campaign.Wave != 1 || !strings.HasPrefix(st.Campaign.PauseReason, "wave 1:") {
		t.Fatalf("paused in wave %d (%q), want wave 1; waves %v; timeline %+v", st.Campaign.Wave, st.Campaign.PauseReason, st.Waves, st.Timeline)
	}
	if st.Waves[1][rollout.MemberPending] != 80 || st.Waves[2][rollout.MemberPending] != 100 {
		t.Fatalf("later waves were touched: %v", st.Waves)
	}
	wave1 := map[string]bool{}
	full, err := e.srv.Rollouts.Store.FindMembers(ctx, camp.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range full {
		if m.Wave == 0 {
			wave1[m.DeviceID] = true
		}
	}
	time.Sleep(1500 * time.Millisecond) // devices mid-install finish or roll back
	devs, err := e.cli.Devices(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		if !wave1[d.ID] && (d.Assigned == bad.Target || d.Installed.SHA256 == bad.SHA256) {
			t.Errorf("device %s outside wave 1 was assigned or runs %s", d.ID, bad.Version)
		}
	}
	for _, d := range f.Members {
		if !wave1[d.ID] && d.Installer.Received.Load() > 0 {
			t.Errorf("device %s outside wave 1 received %d bytes", d.ID, d.Installer.Received.Load())
		}
	}
	if len(st.Timeline) < 3 || st.Timeline[len(st.Timeline)-1].Actor != "engine" || st.Timeline[len(st.Timeline)-1].Action != "pause" {
		t.Errorf("timeline does not end with the engine's pause: %+v", st.Timeline)
	}

	// A newer release supersedes the paused campaign for every device and completes.
	good := e.publish("1.2.0", 3, image("1.2.0", 64<<10))
	camp2, err := e.cli.CreateRollout(ctx, wire.CampaignSpec{Release: "thermostat@1.2.0", Target: "product=thermostat", Waves: "10%,50%,100%", HealthGate: "1s", Start: true})
	if err != nil {
		t.Fatal(err)
	}
	e.waitCampaign(camp2.ID, 90*time.Second, "completion", func(s *wire.CampaignStatus) bool { return s.Campaign.State == rollout.StateCompleted })
	old, err := e.cli.RolloutStatus(ctx, camp.ID)
	if err != nil {
		t.Fatal(err)
	}
	if n := old.Waves[1][rollout.MemberSuperseded] + old.Waves[2][rollout.MemberSuperseded]; n != 180 {
		t.Errorf("%d members of the old campaign's later waves superseded, want 180: %v", n, old.Waves)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if f.Running()[good.SHA256] == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("devices run %v, want all 200 on %s", f.Running(), good.SHA256)
		}
	}
}

// TestRolloutConsentAndWindow: a soft feature campaign waits for the owner's consent, and a
// device outside its maintenance window downloads but does not install until a critical
// campaign waives the window.
func TestRolloutConsentAndWindow(t *testing.T) {
	e := newEnvWith(t, func(c *server.Config) { c.PollSeconds, c.RolloutEvery = 1, 200*time.Millisecond })
	ctx := context.Background()
	r100 := e.publish("1.0.0", 1, image("1.0.0", 4<<10))
	consent := make(chan struct{})
	// Device 0 has a window that is never now; device 1 asks its owner, who says yes once told.
	now := time.Now().UTC()
	closed := now.Add(3*time.Hour).Format("15:04") + "-" + now.Add(4*time.Hour).Format("15:04")
	f := e.simFleet(2, r100, func(o *sim.FleetOptions) {
		o.Window = func(i int) string {
			if i == 0 {
				return closed
			}
			return ""
		}
		o.Consent = func(i int, _ agent.Image) bool {
			select {
			case <-consent:
				return true
			default:
				return false
			}
		}
	})
	f.Start(ctx)
	feature := e.publishClass("1.1.0", 1, "feature", image("1.1.0", 32<<10))
	camp, err := e.cli.CreateRollout(ctx, wire.CampaignSpec{Release: "thermostat@1.1.0", Target: "product=thermostat", HealthGate: "0s", Start: true})
	if err != nil {
		t.Fatal(err)
	}
	if !camp.Consent {
		t.Fatal("a feature campaign is soft by default: it must ask for consent")
	}
	st := e.waitCampaign(camp.ID, 30*time.Second, "both devices waiting", func(s *wire.CampaignStatus) bool { return len(s.Waiting) == 2 })
	for _, m := range st.Waiting {
		if !strings.Contains(m.Detail, "consent") {
			t.Errorf("device %s waits for %q, want consent", m.DeviceID, m.Detail)
		}
	}
	close(consent)
	// Device 1 installs; device 0 consented too, but its window is closed.
	st = e.waitCampaign(camp.ID, 30*time.Second, "device 1 installing and device 0 waiting for its window", func(s *wire.CampaignStatus) bool {
		return s.Waves[0][rollout.MemberHealthy] == 1 && len(s.Waiting) == 1 && strings.Contains(s.Waiting[0].Detail, "maintenance window")
	})
	if st.Waiting[0].DeviceID != f.Members[0].ID {
		t.Fatalf("the wrong device waits: %+v", st.Waiting)
	}
	if got := f.Members[0].Installer.Current(); got != r100.SHA256 {
		t.Fatalf("device 0 installed outside its window")
	}
	// A critical security campaign waives the window and supersedes the feature campaign.
	crit := e.publish("1.1.1", 2, image("1.1.1", 32<<10))
	camp2, err := e.cli.CreateRollout(ctx, wire.CampaignSpec{Release: "thermostat@1.1.1", Target: "product=thermostat", HealthGate: "0s", IgnoreWindow: true, Start: true})
	if err != nil {
		t.Fatal(err)
	}
	e.waitCampaign(camp2.ID, 30*time.Second, "completion", func(s *wire.CampaignStatus) bool { return s.Campaign.State == rollout.StateCompleted })
	for deadline := time.Now().Add(20 * time.Second); f.Running()[crit.SHA256] != 2; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("devices run %v, want both on 1.1.1", f.Running())
		}
	}
	_ = feature
}

func (e *env) publishClass(version string, secVer int64, class string, content []byte) *wire.Release {
	e.t.Helper()
	rel, err := e.tryPublishWith(version, secVer, []string{testHardware}, class, content)
	if err != nil {
		e.t.Fatalf("publish %s: %v", version, err)
	}
	return rel
}

// TestRolloutCLI drives groups, rollout and simulate through the command tree against a real
// server, as an operator would.
func TestRolloutCLI(t *testing.T) {
	e := newEnvWith(t, func(c *server.Config) { c.PollSeconds, c.RolloutEvery = 1, 200*time.Millisecond })
	ctx := context.Background()
	e.publish("1.0.0", 1, image("1.0.0", 4<<10))
	g := []string{"--server", e.srv.URL, "--token", e.srv.AdminToken}
	simDir := filepath.Join(t.TempDir(), "sim")
	simCtx, stopSim := context.WithCancel(ctx)
	simDone := make(chan string)
	go func() {
		var out strings.Builder
		err := RunSimulate(simCtx, SimulateConfig{Server: e.srv.URL, Token: e.srv.AdminToken, Keys: e.keys, Dir: simDir, Devices: 12,
			Poll: time.Second, Product: testProduct, Hardware: testHardware, Regions: []string{"eu-west", "us-east"}, Seed: 1}, &out)
		if err != nil {
			out.WriteString("error: " + err.Error())
		}
		simDone <- out.String()
	}()
	defer func() { stopSim(); <-simDone }()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if ds, _ := e.cli.Devices(ctx, ""); len(ds) == 12 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the simulator did not enrol 12 devices")
		}
	}
	if out := cli(t, append(g, "groups", "create", "eu", "--filter", "product=thermostat,region=eu-*", "--window", "00:00-23:59")...); !strings.Contains(out, "group eu: 6 devices") {
		t.Fatalf("groups create: %s", out)
	}
	if out := cli(t, append(g, "groups", "list")...); !strings.Contains(out, "eu") || !strings.Contains(out, "region=eu-*") {
		t.Fatalf("groups list: %s", out)
	}
	e.publish("1.1.0", 2, image("1.1.0", 16<<10))
	// A bad window is the operator's mistake: 400 with the reason, on campaigns as on groups.
	for _, args := range [][]string{{"rollout", "create", "--release", "thermostat@1.1.0", "--target", "eu", "--window", "25:00-26:00"}, {"groups", "create", "bad", "--window", "25:00-26:00"}} {
		_, err := cliErr(append(g, args...)...)
		var ae *apperr.Error
		if !errors.As(err, &ae) || ae.Code != apperr.Invalid || !strings.Contains(ae.Msg, "25:00-26:00") {
			t.Errorf("%s with a bad window: %v, want an invalid-input error naming it", args[0], err)
		}
	}
	out := cli(t, append(g, "rollout", "create", "--release", "thermostat@1.1.0", "--target", "eu", "--wave-size", "2,4", "--health-gate", "0s", "--json")...)
	var camp wire.Campaign
	if err := json.Unmarshal([]byte(out), &camp); err != nil {
		t.Fatalf("rollout create --json: %v\n%s", err, out)
	}
	if camp.State != "created" || len(camp.Waves) != 2 || camp.Window != "00:00-23:59" {
		t.Fatalf("campaign %+v: want created, 2 waves, the group's window", camp)
	}
	cli(t, append(g, "rollout", "start", camp.ID)...)
	e.waitCampaign(camp.ID, 60*time.Second, "completion", func(s *wire.CampaignStatus) bool { return s.Campaign.State == "completed" })
	status := cli(t, append(g, "rollout", "status", camp.ID)...)
	for _, want := range []string{"COMPLETED", "HEALTHY", "admin    create", "admin    start", "engine   advance", "engine   complete"} {
		if !strings.Contains(status, want) {
			t.Errorf("rollout status lacks %q:\n%s", want, status)
		}
	}
	if out := cli(t, append(g, "rollout", "list")...); !strings.Contains(out, camp.ID) || !strings.Contains(out, "completed") {
		t.Errorf("rollout list: %s", out)
	}
	var badOut bytes.Buffer
	cmd := newRoot()
	cmd.SetArgs(append(g, "rollout", "pause", camp.ID))
	cmd.SetOut(&badOut)
	cmd.SetErr(&badOut)
	if err := cmd.ExecuteContext(ctx); err == nil || !strings.Contains(userMessage(err), "cannot pause a completed campaign") {
		t.Errorf("pausing a completed campaign: %v", err)
	}
	stopSim()
	if got := <-simDone; !strings.Contains(got, "1.1.0: 6") || !strings.Contains(got, "1.0.0: 6") {
		t.Errorf("simulator's last word: %s", got)
	}
	simDone = make(chan string, 1)
	simDone <- ""
}

// TestCommitCheckinAtOnce: a device that committed a new image checks in at once rather than
// after its poll interval (an hour here), so that a campaign with no health gate completes
// without waiting for the fleet's next polls.
func TestCommitCheckinAtOnce(t *testing.T) {
	e := newEnvWith(t, func(c *server.Config) { c.PollSeconds, c.RolloutEvery = 3600, 200*time.Millisecond })
	ctx := context.Background()
	r100 := e.publish("1.0.0", 1, image("1.0.0", 4<<10))
	e.publish("1.1.0", 2, image("1.1.0", 16<<10))
	f := e.simFleet(2, r100, func(o *sim.FleetOptions) { o.Poll, o.Spread = time.Hour, time.Millisecond })
	camp, err := e.cli.CreateRollout(ctx, wire.CampaignSpec{Release: "thermostat@1.1.0", Target: "product=thermostat", HealthGate: "0s", Start: true})
	if err != nil {
		t.Fatal(err)
	}
	e.waitCampaign(camp.ID, 20*time.Second, "both devices assigned", func(s *wire.CampaignStatus) bool { return s.Waves[0][rollout.MemberAssigned] == 2 })
	f.Start(ctx) // each device checks in once, installs, commits, and must check in again at once
	e.waitCampaign(camp.ID, 30*time.Second, "completion", func(s *wire.CampaignStatus) bool { return s.Campaign.State == rollout.StateCompleted })
}
