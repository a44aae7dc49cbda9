package main

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
	"upkeep.dev/upkeep/wire"
)

// cli runs the upkeep command tree in-process, as a user would from a shell.
func cli(t *testing.T, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	cmd := newRoot()
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("upkeep %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// TestCLIAndAgentBinary drives the operator CLI and the real upkeep-agent binary against a real
// server: keys init, publish, enroll, run, deploy, devices list.
func TestCLIAndAgentBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent binary")
	}
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	out := cli(t, "keys", "init", "--dir", keys)
	if !strings.Contains(out, "OFFLINE") || !strings.Contains(out, "targets.key") {
		t.Fatalf("keys init output does not say which keys stay offline:\n%s", out)
	}
	if fi, err := os.Stat(filepath.Join(keys, "targets.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("targets.key mode: %v %v", fi.Mode(), err)
	}
	cfg := DefaultServerConfig()
	cfg.Addr, cfg.DataDir, cfg.KeysDir, cfg.Logger, cfg.PollSeconds = "127.0.0.1:0", filepath.Join(dir, "data"), keys, quietLogger(), 1
	srv, err := OpenServer(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	g := []string{"--server", srv.URL, "--token", srv.AdminToken}

	v100, v101 := image("1.0.0", 100<<10), image("1.0.1", 120<<10)
	f100, f101 := filepath.Join(dir, "fw-1.0.0.img"), filepath.Join(dir, "fw-1.0.1.img")
	os.WriteFile(f100, v100, 0o644)
	os.WriteFile(f101, v101, 0o644)
	pub := func(v, sv, f string) string {
		return cli(t, append(g, "release", "publish", "--product", testProduct, "--hardware", testHardware, "--version", v,
			"--security-version", sv, "--class", "security", "--key", filepath.Join(keys, "targets.key"), f)...)
	}
	if out := pub("1.0.0", "1", f100); !strings.Contains(out, "published thermostat@1.0.0") {
		t.Fatalf("publish: %s", out)
	}
	token := strings.TrimSpace(cli(t, append(g, "enroll-token", "--name", "line-1")...))

	agentBin := filepath.Join(dir, "upkeep-agent")
	if b, err := exec.Command("go", "build", "-o", agentBin, "../upkeep-agent").CombinedOutput(); err != nil {
		t.Fatalf("build agent: %v\n%s", err, b)
	}
	state := filepath.Join(dir, "device")
	os.MkdirAll(filepath.Join(state, "slots"), 0o700)
	os.WriteFile(filepath.Join(state, "slots", "slot-a.img"), v100, 0o600)
	rels := cli(t, append(g, "release", "list")...)
	if !strings.Contains(rels, "thermostat@1.0.0") {
		t.Fatalf("release list: %s", rels)
	}
	enroll := exec.Command(agentBin, "enroll", "--state", state, "--server", srv.URL, "--token", token, "--serial", "SN-9",
		"--product", testProduct, "--hardware", testHardware, "--image-root", filepath.Join(keys, "root.json"),
		"--director-root", filepath.Join(keys, "director-root.json"), "--installed-target", "thermostat/1.0.0/fw-1.0.0.img",
		"--installed-version", "1.0.0", "--installed-security-version", "1")
	if b, err := enroll.CombinedOutput(); err != nil || !strings.Contains(string(b), "accepted") {
		t.Fatalf("enroll: %v\n%s", err, b)
	}
	runCmd := exec.Command(agentBin, "run", "--state", state, "--boot", "sim", "--poll", "1s")
	var agentLog bytes.Buffer
	runCmd.Stderr = &agentLog
	if err := runCmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { runCmd.Process.Kill(); runCmd.Wait() }()

	pub("1.0.1", "2", f101)
	var devs []wire.Device
	json.Unmarshal([]byte(cli(t, append(g, "devices", "list", "--json")...)), &devs)
	if len(devs) != 1 {
		t.Fatalf("devices: %+v", devs)
	}
	cli(t, append(g, "deploy", "--release", "thermostat@1.0.1", "--device", devs[0].ID)...)
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := agent.ReadStatus(state)
		if err == nil && st.Installed.Version == "1.0.1" && st.Phase == agent.PhaseIdle {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent did not install 1.0.1: %+v\n%s", st, agentLog.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	status, err := exec.Command(agentBin, "status", "--state", state).Output()
	if err != nil || !strings.Contains(string(status), `"version": "1.0.1"`) || strings.Contains(string(status), "upk_dev.") {
		t.Fatalf("status: %v\n%s", err, status)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		list := cli(t, append(g, "devices", "list")...)
		if strings.Contains(list, "1.0.1") && strings.Contains(list, "idle") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server does not show the update:\n%s", list)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if ev := cli(t, append(g, "devices", "events", devs[0].ID)...); !strings.Contains(ev, "commit") {
		t.Fatalf("events: %s", ev)
	}
}
