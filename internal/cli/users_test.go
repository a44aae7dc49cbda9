package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/wire"
)

// cliIn runs the command tree with stdin.
func cliIn(stdin string, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := newRoot()
	cmd.SetArgs(args)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

// TestCLIUsersAndScopedDeployer: the first token belongs to the user "admin"; users are added
// with a password from stdin, listed, given another role and disabled; a user logs in; a
// deployer token limited to group "lab" deploys and runs campaigns there and is refused
// anything that reaches further; a viewer is refused a deployment whatever the CLI sends.
func TestCLIUsersAndScopedDeployer(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	g := []string{"--server", e.srv.URL, "--token", e.srv.AdminToken}
	if out := cli(t, append(g, "users", "list")...); !strings.Contains(out, "admin") || !strings.Contains(out, "enabled") {
		t.Fatalf("users list after the first start:\n%s", out)
	}
	if !strings.Contains(cli(t, append(g, "tokens", "list")...), " admin ") {
		t.Fatal("the first token is not the admin user's")
	}
	if out, err := cliIn("correct horse battery\n", append(g, "users", "add", "dana", "--role", "deployer", "--groups", "lab", "--password-stdin")...); err != nil || !strings.Contains(out, "limited to groups lab") {
		t.Fatalf("users add: %v\n%s", err, out)
	}
	if out, err := cliIn("", append(g, "users", "add", "x", "--role", "viewer")...); err == nil || !strings.Contains(out+err.Error(), "--password-stdin") {
		t.Fatalf("users add without a terminal nor --password-stdin: %v %s", err, out)
	}
	if _, err := cliIn("correct horse battery\n", append(g, "users", "add", "sam", "--role", "support", "--groups", "lab", "--password-stdin")...); err == nil || !strings.Contains(err.Error(), "deployer only") {
		t.Fatalf("a support user with a group scope: %v", err)
	}
	// dana logs in.
	st, body := post(t, e.srv.URL+"/api/v1/login", []byte(`{"user":"dana","password":"correct horse battery"}`), map[string]string{"Content-Type": "application/json"})
	if st != http.StatusOK || !strings.Contains(string(body), `"groups":["lab"]`) {
		t.Fatalf("login: %d %s", st, body)
	}

	// Two devices, one in group lab.
	var ids []string
	for _, serial := range []string{"SN-LAB", "SN-PROD"} {
		pub, key, _ := ed25519.GenerateKey(rand.Reader)
		enroll := signed(t, key, wire.EnrollPayload{PublicKey: hex.EncodeToString(pub), Time: time.Now().UTC(), Identity: wire.Identity{Serial: serial, Product: testProduct, HardwareID: testHardware}})
		if st, body := post(t, e.srv.URL+"/device/v1/enroll", enroll, map[string]string{wire.HeaderEnrollToken: e.enrollToken}); st != http.StatusOK {
			t.Fatalf("enrol: %d %s", st, body)
		}
		ids = append(ids, auth.DeviceID(pub))
	}
	cli(t, append(g, "groups", "create", "lab")...)
	cli(t, append(g, "groups", "add", "lab", ids[0])...)
	cli(t, append(g, "groups", "create", "prod")...)
	cli(t, append(g, "groups", "add", "prod", ids[1])...)
	e.publish("1.0.0", 1, image("1.0.0", 4<<10))

	tok := strings.TrimSpace(strings.SplitN(cli(t, append(g, "tokens", "create", "--name", "ci-lab", "--role", "deployer", "--groups", "lab")...), "\n", 2)[0])
	d := []string{"--server", e.srv.URL, "--token", tok}
	cli(t, append(d, "deploy", "--release", testProduct+"@1.0.0", "--device", ids[0])...)
	for _, args := range [][]string{
		{"deploy", "--release", testProduct + "@1.0.0", "--device", ids[1]},
		{"deploy", "--release", testProduct + "@1.0.0", "--device", ids[0], "--device", ids[1]},
		{"deploy", "--release", testProduct + "@1.0.0", "--all"},
		{"rollout", "create", "--release", testProduct + "@1.0.0", "--target", "prod"},
		{"rollout", "create", "--release", testProduct + "@1.0.0", "--target", "product=" + testProduct},
		{"groups", "add", "lab", ids[1]},
	} {
		out, err := cliErr(append(d, args...)...)
		if err == nil || !strings.Contains(err.Error(), "forbidden") || strings.Contains(err.Error(), ids[1]) {
			t.Fatalf("scoped deployer %v: %v\n%s", args, err, out)
		}
	}
	if out := cli(t, append(d, "rollout", "create", "--release", testProduct+"@1.0.0", "--target", "lab")...); !strings.Contains(out, "lab") {
		t.Fatalf("rollout create in scope: %s", out)
	}
	// An unscoped admin's campaign on prod cannot be driven by the scoped token.
	c, err := e.cli.CreateRollout(ctx, wire.CampaignSpec{Release: testProduct + "@1.0.0", Target: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cliErr(append(d, "rollout", "start", c.ID)...); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("scoped deployer started a campaign outside its scope: %v", err)
	}

	// A viewer is refused a deployment whatever the client sends.
	vtok := strings.TrimSpace(strings.SplitN(cli(t, append(g, "tokens", "create", "--name", "dash", "--role", "viewer")...), "\n", 2)[0])
	if _, err := cliErr("--server", e.srv.URL, "--token", vtok, "deploy", "--release", testProduct+"@1.0.0", "--all"); err == nil || !strings.Contains(err.Error(), "role viewer does not grant deploy") {
		t.Fatalf("viewer deploy: %v", err)
	}

	// Role change and disabling.
	cli(t, append(g, "users", "role", "dana", "viewer")...)
	if out := cli(t, append(g, "users", "list")...); !strings.Contains(out, "dana") || !strings.Contains(out, "viewer") {
		t.Fatalf("users list after role:\n%s", out)
	}
	cli(t, append(g, "users", "disable", "dana")...)
	if out := cli(t, append(g, "users", "list")...); !strings.Contains(out, "disabled") {
		t.Fatalf("users list after disable:\n%s", out)
	}
	if st, _ := post(t, e.srv.URL+"/api/v1/login", []byte(`{"user":"dana","password":"correct horse battery"}`), map[string]string{"Content-Type": "application/json"}); st != http.StatusUnauthorized {
		t.Fatalf("a disabled user logs in: %d", st)
	}
	if _, err := cliErr(append(g, "users", "disable", "admin")...); err == nil || !strings.Contains(err.Error(), "last enabled admin") {
		t.Fatalf("disable the last admin: %v", err)
	}
}
