package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/wire"
)

// TestDynamicAndScheduledCampaignsCLI: `rollout create --dynamic` over a filter that no device
// matches yet takes in a device that enrols after the start, which then installs the release;
// `rollout create --start-at` shows the campaign scheduled and the engine starts it at its time.
func TestDynamicAndScheduledCampaignsCLI(t *testing.T) {
	e := newEnvWith(t, func(c *server.Config) { c.PollSeconds, c.RolloutEvery = 1, 200*time.Millisecond })
	ctx := context.Background()
	g := []string{"--server", e.srv.URL, "--token", e.srv.AdminToken}
	v100 := image("1.0.0", 32<<10)
	r100 := e.publish("1.0.0", 1, v100)
	e.publish("1.0.1", 2, image("1.0.1", 40<<10))

	out := cli(t, append(g, "rollout", "create", "--release", "thermostat@1.0.1", "--target", "product=thermostat", "--dynamic",
		"--until", time.Now().Add(time.Hour).UTC().Format(time.RFC3339), "--health-gate", "0s", "--start", "--json")...)
	var camp wire.Campaign
	if err := json.Unmarshal([]byte(out), &camp); err != nil || camp.State != "running" || !camp.Dynamic {
		t.Fatalf("rollout create --dynamic: %v\n%s", err, out)
	}
	d := e.device("SN-LATE", v100, r100) // enrols after the start
	e.waitCampaign(camp.ID, 30*time.Second, "the late device joining", func(s *wire.CampaignStatus) bool {
		return len(s.Waves) > 0 && s.Waves[0]["assigned"] == 1
	})
	if err := d.Agent.Cycle(ctx); err != nil || d.Agent.State().Installed.Version != "1.0.1" {
		t.Fatalf("the late device: %v, runs %+v", err, d.Agent.State().Installed)
	}
	status := cli(t, append(g, "rollout", "status", camp.ID)...)
	if !strings.Contains(status, "dynamic: devices that come to match product=thermostat join the current wave, until") || !strings.Contains(status, "joined wave 1") {
		t.Errorf("rollout status does not show the dynamic intake:\n%s", status)
	}

	// Scheduled: a campaign for a second device starts at its time.
	e.publish("1.0.2", 3, image("1.0.2", 40<<10))
	start := time.Now().Add(2 * time.Second).UTC().Truncate(time.Second).Add(time.Second)
	out = cli(t, append(g, "rollout", "create", "--release", "thermostat@1.0.2", "--target", "product=thermostat", "--start-at", start.Format(time.RFC3339))...)
	if !strings.Contains(out, "scheduled") || !strings.Contains(out, "starts at "+start.Format(time.RFC3339)) {
		t.Fatalf("rollout create --start-at: %s", out)
	}
	cid := strings.Fields(strings.TrimPrefix(out, "campaign "))[0]
	cid = strings.TrimSuffix(cid, ":")
	if st := cli(t, append(g, "rollout", "status", cid)...); !strings.Contains(st, "SCHEDULED") || !strings.Contains(st, "scheduled: starts at") {
		t.Errorf("status of a scheduled campaign:\n%s", st)
	}
	s := e.waitCampaign(cid, 30*time.Second, "the scheduled start", func(s *wire.CampaignStatus) bool { return s.Campaign.State != "scheduled" })
	if s.Campaign.State != "running" && s.Campaign.State != "completed" || time.Now().Before(start) {
		t.Errorf("after its start time: %s at %s (start %s)", s.Campaign.State, time.Now().UTC(), start)
	}
}
