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

	// A group's window recurs on chosen weekdays; a campaign over the group carries them.
	cli(t, append(g, "groups", "create", "nights", "--filter", "product=thermostat", "--window", "02:00-04:00", "--days", "sat,MON")...)
	if show := cli(t, append(g, "groups", "show", "nights")...); !strings.Contains(show, "window 02:00-04:00 UTC on mon,sat") {
		t.Errorf("groups show nights:\n%s", show)
	}
	if _, err := cliErr(append(g, "groups", "create", "bad", "--window", "02:00-04:00", "--days", "someday")...); err == nil || !strings.Contains(userMessage(err), "someday") {
		t.Errorf("a bad weekday: %v, want an error naming it", err)
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
	var nights wire.Campaign
	out = cli(t, append(g, "rollout", "create", "--release", "thermostat@1.0.2", "--target", "nights", "--start-at", start.Add(time.Hour).Format(time.RFC3339), "--json")...)
	if err := json.Unmarshal([]byte(out), &nights); err != nil || nights.Window != "02:00-04:00" || nights.Days != "mon,sat" || nights.State != "scheduled" {
		t.Errorf("campaign over the group: %+v, %v; want its window and days, scheduled", nights, err)
	}
	s := e.waitCampaign(cid, 30*time.Second, "the scheduled start", func(s *wire.CampaignStatus) bool { return s.Campaign.State != "scheduled" })
	if s.Campaign.State != "running" && s.Campaign.State != "completed" || time.Now().Before(start) {
		t.Errorf("after its start time: %s at %s (start %s)", s.Campaign.State, time.Now().UTC(), start)
	}
}
