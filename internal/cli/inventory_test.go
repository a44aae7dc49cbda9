package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/agent"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/wire"
)

// TestInventoryGroupCampaignAgentBinary is the README's group example end to end with the real
// upkeep-agent binary: an inventory script prints region=eu-west, the agent sends it, the group
// `eu` (filter product=thermostat,region=eu-*) matches the device and not one without the
// attribute, and a campaign over the group updates it. `upkeep-agent status` then shows the
// next check-in and the acknowledged inventory digest.
func TestInventoryGroupCampaignAgentBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent binary")
	}
	e := newEnvWith(t, func(c *server.Config) { c.PollSeconds, c.RolloutEvery = 1, 200*time.Millisecond })
	ctx := context.Background()
	g := []string{"--server", e.srv.URL, "--token", e.srv.AdminToken}
	v100 := image("1.0.0", 64<<10)
	r100 := e.publish("1.0.0", 1, v100)
	other := e.device("SN-US", v100, r100) // in-process agent without inventory scripts

	dir := t.TempDir()
	agentBin := filepath.Join(dir, "upkeep-agent")
	if b, err := exec.Command("go", "build", "-o", agentBin, "../../cmd/upkeep-agent").CombinedOutput(); err != nil {
		t.Fatalf("build agent: %v\n%s", err, b)
	}
	invDir := filepath.Join(dir, "inventory.d")
	os.MkdirAll(invDir, 0o755)
	os.WriteFile(filepath.Join(invDir, "mender-inventory-region"), []byte("#!/bin/sh\necho region=eu-west\necho ipv4=10.0.0.2\necho ipv4=10.0.0.3\n"), 0o755)
	os.WriteFile(filepath.Join(invDir, "notes.txt"), []byte("region=us-east\n"), 0o644) // not executable: not run
	state := filepath.Join(dir, "device")
	os.MkdirAll(filepath.Join(state, "slots"), 0o700)
	os.WriteFile(filepath.Join(state, "slots", "slot-a.img"), v100, 0o600)
	os.WriteFile(filepath.Join(dir, "root.json"), e.imageRoot, 0o600)
	os.WriteFile(filepath.Join(dir, "director-root.json"), e.directorRoot, 0o600)
	enroll := exec.Command(agentBin, "enroll", "--state", state, "--server", e.srv.URL, "--token", e.enrollToken, "--serial", "SN-EU",
		"--product", testProduct, "--hardware", testHardware, "--image-root", filepath.Join(dir, "root.json"),
		"--director-root", filepath.Join(dir, "director-root.json"), "--installed-target", r100.Target,
		"--installed-version", "1.0.0", "--installed-security-version", "1", "--installed-sha256", r100.SHA256)
	enroll.Env = append(os.Environ(), "UPKEEP_CONFIG=/dev/null")
	if b, err := enroll.CombinedOutput(); err != nil || !strings.Contains(string(b), "accepted") {
		t.Fatalf("enroll: %v\n%s", err, b)
	}
	st, err := agent.ReadStatus(state)
	if err != nil {
		t.Fatal(err)
	}
	id := st.DeviceID
	run := exec.Command(agentBin, "run", "--state", state, "--boot", "sim", "--poll", "1s", "--inventory-dir", invDir)
	run.Env = append(os.Environ(), "UPKEEP_CONFIG=/dev/null")
	var agentLog bytes.Buffer
	run.Stderr = &agentLog
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { run.Process.Kill(); run.Wait() }()

	// The inventory reaches the server: the device's attributes, built-in ones included.
	var dev wire.Device
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if err := json.Unmarshal([]byte(cli(t, append(g, "devices", "show", id, "--json")...)), &dev); err == nil && dev.Attributes["region"] == "eu-west" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent's inventory did not reach the server: %+v\n%s", dev.Attributes, agentLog.String())
		}
	}
	if dev.Attributes["ipv4"] != "10.0.0.2\n10.0.0.3" || dev.Attributes[agent.AttrArch] == "" || dev.Attributes[agent.AttrAgent] != "dev" {
		t.Errorf("attributes %q: want the ipv4 list and the built-in arch and agent version", dev.Attributes)
	}

	// The README's group matches it at once, and not the device without the attribute.
	cli(t, append(g, "groups", "create", "eu", "--filter", "product=thermostat,region=eu-*")...)
	show := cli(t, append(g, "groups", "show", "eu")...)
	if !strings.Contains(show, "group eu: 1 devices") || !strings.Contains(show, id) || strings.Contains(show, other.Agent.State().DeviceID) {
		t.Fatalf("groups show eu:\n%s", show)
	}

	// A campaign over the group updates it.
	v101 := image("1.0.1", 80<<10)
	e.publish("1.0.1", 2, v101)
	out := cli(t, append(g, "rollout", "create", "--release", "thermostat@1.0.1", "--target", "eu", "--health-gate", "0s", "--start", "--json")...)
	var camp wire.Campaign
	if err := json.Unmarshal([]byte(out), &camp); err != nil {
		t.Fatalf("rollout create: %v\n%s", err, out)
	}
	e.waitCampaign(camp.ID, 60*time.Second, "completion", func(s *wire.CampaignStatus) bool { return s.Campaign.State == "completed" })
	if st, _ := agent.ReadStatus(state); st.Installed.Version != "1.0.1" {
		t.Fatalf("agent runs %+v after the campaign\n%s", st.Installed, agentLog.String())
	}
	if err := other.Agent.Cycle(ctx); err != nil || other.Agent.State().Installed.Version != "1.0.0" {
		t.Errorf("the device outside the group: %v, runs %s", err, other.Agent.State().Installed.Version)
	}

	// Idle visibility: status shows the next check-in and the push state; the log says when.
	var status struct {
		NextCheckin     *time.Time `json:"next_checkin"`
		Push            string     `json:"push"`
		InventoryDigest string     `json:"inventory_digest"`
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		b, err := exec.Command(agentBin, "status", "--state", state).Output()
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		json.Unmarshal(b, &status)
		if status.NextCheckin != nil && status.NextCheckin.After(time.Now().Add(-5*time.Second)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status shows no next check-in:\n%s", b)
		}
	}
	// Push is on by default; this server has no broker to offer.
	if status.Push != "not offered" || len(status.InventoryDigest) != 64 {
		t.Errorf("status push %q, inventory digest %q", status.Push, status.InventoryDigest)
	}
	if !strings.Contains(agentLog.String(), `"msg":"idle until the next check-in"`) || !strings.Contains(agentLog.String(), `"msg":"inventory sent"`) {
		t.Errorf("agent log lacks the idle or inventory line:\n%.2000s", agentLog.String())
	}
}
