package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/agent"
	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/wire"
)

// cli runs the upkeep command tree in-process, as a user would from a shell.
func cli(t testing.TB, args ...string) string {
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
	cfg := server.DefaultConfig()
	cfg.Addr, cfg.DataDir, cfg.KeysDir, cfg.Logger, cfg.PollSeconds = "127.0.0.1:0", filepath.Join(dir, "data"), keys, quietLogger(), 1
	cfg.Wrap = checkContract(t)
	srv, err := server.Open(context.Background(), cfg)
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
	if b, err := exec.Command("go", "build", "-o", agentBin, "../../cmd/upkeep-agent").CombinedOutput(); err != nil {
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

// cliErr runs the upkeep command tree and returns its error instead of failing the test.
func cliErr(args ...string) (string, error) {
	var out bytes.Buffer
	cmd := newRoot()
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

// TestCLIRotateRoot: `keys rotate-root` keeps the current number of keys and threshold unless
// told otherwise, writes the new keys before the server trusts them, and archives the old ones
// only after the server accepted the new root.
func TestCLIRotateRoot(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	cli(t, "keys", "init", "--dir", keys, "--root-keys", "3", "--root-threshold", "2")
	if _, err := cliErr("keys", "init", "--dir", filepath.Join(dir, "none"), "--root-keys", "0"); err == nil {
		t.Fatal("keys init --root-keys 0 succeeded")
	}
	cfg := server.DefaultConfig()
	cfg.Addr, cfg.DataDir, cfg.KeysDir, cfg.Logger = "127.0.0.1:0", filepath.Join(dir, "data"), keys, quietLogger()
	cfg.Wrap = checkContract(t)
	srv, err := server.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	g := []string{"--server", srv.URL, "--token", srv.AdminToken}
	ctx := context.Background()
	c := &client.Client{Base: srv.URL, Token: srv.AdminToken}
	trusted, err := os.ReadFile(filepath.Join(keys, tuf.FileImageRoot))
	if err != nil {
		t.Fatal(err)
	}
	rootKeyIDs := func() []string {
		var ids []string
		for i := 1; ; i++ {
			k, err := tuf.LoadKey(filepath.Join(keys, tuf.RootKeyFile(i)))
			if err != nil {
				return ids
			}
			ids = append(ids, k.ID)
		}
	}
	old := rootKeyIDs()

	out := cli(t, append(g, "keys", "rotate-root", "--dir", keys)...)
	if !strings.Contains(out, "root version 2 uploaded: 3 keys, threshold 2") {
		t.Fatalf("rotate-root: %s", out)
	}
	root, err := c.LatestRoot(ctx, trusted)
	if err != nil {
		t.Fatal(err)
	}
	r := root.Signed.Roles[tuf.Root]
	now := rootKeyIDs()
	slices.Sort(now)
	ids := slices.Sorted(slices.Values(r.KeyIDs))
	if root.Signed.Version != 2 || r.Threshold != 2 || !slices.Equal(ids, now) {
		t.Fatalf("server root v%d trusts %v (threshold %d); the key files hold %v", root.Signed.Version, r.KeyIDs, r.Threshold, now)
	}
	for i, id := range old {
		k, err := tuf.LoadKey(filepath.Join(keys, "retired-root-v1", tuf.RootKeyFile(i+1)))
		if err != nil || k.ID != id {
			t.Fatalf("old key %d not archived: %v", i+1, err)
		}
	}

	// Nowhere to write the new keys: nothing is uploaded and the current keys stay.
	if err := os.Mkdir(filepath.Join(keys, "new-root-v3"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := cliErr(append(g, "keys", "rotate-root", "--dir", keys)...); err == nil {
		t.Fatal("rotate-root succeeded without writing its keys")
	}
	if _, err := cliErr(append(g, "keys", "rotate-root", "--dir", keys, "--root-threshold", "4")...); err == nil {
		t.Fatal("rotate-root accepted a threshold above the number of keys")
	}
	if root, err := c.LatestRoot(ctx, trusted); err != nil || root.Signed.Version != 2 {
		t.Fatalf("after failed rotations the server's root is %v (%v), want version 2", root.Signed.Version, err)
	}
	if got := rootKeyIDs(); !slices.Equal(slices.Sorted(slices.Values(got)), now) {
		t.Fatal("a failed rotation changed the root key files")
	}
	os.Remove(filepath.Join(keys, "new-root-v3"))

	// The saved keys are the ones the server trusts: they sign the next rotation, to 1-of-1.
	out = cli(t, append(g, "keys", "rotate-root", "--dir", keys, "--new-keys", "1", "--root-threshold", "1")...)
	if !strings.Contains(out, "root version 3 uploaded: 1 keys, threshold 1") {
		t.Fatalf("rotate-root to 1-of-1: %s", out)
	}
	if _, err := os.Stat(filepath.Join(keys, tuf.RootKeyFile(2))); err == nil {
		t.Fatal("root-2.key is still in place after rotating to one key")
	}
}

// TestCLIPublishNeedsSecurityVersion: a forgotten --security-version is an error, not 0 (which
// would let devices install any older release).
func TestCLIPublishNeedsSecurityVersion(t *testing.T) {
	f := filepath.Join(t.TempDir(), "fw.img")
	os.WriteFile(f, []byte("image"), 0o644)
	out, err := cliErr("--token", "t", "release", "publish", "--product", testProduct, "--hardware", testHardware, "--version", "1.0.0", f)
	if err == nil || !strings.Contains(err.Error()+out, "security-version") {
		t.Fatalf("publish without --security-version: %v\n%s", err, out)
	}
}
