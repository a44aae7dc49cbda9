package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/tuf"
)

// TestHelpShowsNoSecret checks that a token in the environment never appears in --help, where
// a flag default taken from the environment would print it.
func TestHelpShowsNoSecret(t *testing.T) {
	const secret = "upk_admin_do-not-print-me"
	t.Setenv("UPKEEP_TOKEN", secret)
	t.Setenv("UPKEEP_S3_SECRET_KEY", secret)
	t.Setenv("UPKEEP_DB", "postgres://u:"+secret+"@db/upkeep")
	t.Setenv("UPKEEP_OIDC_CLIENT_SECRET", secret)
	for _, args := range [][]string{{"--help"}, {"serve", "--help"}, {"devices", "list", "--help"}, {"release", "publish", "--help"}, {"login", "--help"}} {
		out := cli(t, args...)
		if strings.Contains(out, secret) {
			t.Errorf("upkeep %s shows the secret:\n%s", strings.Join(args, " "), out)
		}
		if args[0] == "devices" && !strings.Contains(out, "env UPKEEP_TOKEN") {
			t.Errorf("upkeep %s does not name UPKEEP_TOKEN:\n%s", strings.Join(args, " "), out)
		}
	}
}

// TestTokenFromEnvironment checks that the environment still sets a flag that is not given, and
// that the flag wins over it.
func TestTokenFromEnvironment(t *testing.T) {
	e := newEnv(t)
	t.Setenv("UPKEEP_SERVER", e.srv.URL)
	t.Setenv("UPKEEP_TOKEN", e.srv.AdminToken)
	if out := cli(t, "devices", "list"); !strings.Contains(out, "ID") && out != "" {
		t.Logf("devices list: %s", out)
	}
	if _, err := cliErr("--token", "upk_admin_wrong", "devices", "list"); err == nil {
		t.Error("a wrong --token was ignored in favour of UPKEEP_TOKEN")
	}
}

// TestServeConfigFile starts `upkeep serve --config FILE`: the file sets the listen address and
// folders, the environment wins over the file, and a flag wins over both.
func TestServeConfigFile(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	if _, err := tuf.InitKeySet(keys, 1, 1, tuf.DefaultLifetimes(), time.Now()); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "server.env")
	body := "# test\nUPKEEP_ADDR=127.0.0.1:0\nUPKEEP_DATA=" + filepath.Join(dir, "from-file") + "\nUPKEEP_KEYS=" + keys + "\nUPKEEP_POLL_SECONDS=42 # inline\n"
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	serve := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var out lockedBuffer
		cmd := newRoot()
		cmd.SetArgs(append([]string{"serve", "--config", conf}, args...))
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		done := make(chan error, 1)
		go func() { done <- cmd.ExecuteContext(ctx) }()
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(out.String(), "serving on") {
			select {
			case err := <-done:
				t.Fatalf("serve ended: %v\n%s", err, out.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("serve did not start:\n%s", out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	serve()
	if _, err := os.Stat(filepath.Join(dir, "from-file", "upkeep.db")); err != nil {
		t.Errorf("the file's UPKEEP_DATA was not used: %v", err)
	}
	t.Setenv("UPKEEP_DATA", filepath.Join(dir, "from-env"))
	serve()
	if _, err := os.Stat(filepath.Join(dir, "from-env", "upkeep.db")); err != nil {
		t.Errorf("the environment did not win over the file: %v", err)
	}
	serve("--data", filepath.Join(dir, "from-flag"))
	if _, err := os.Stat(filepath.Join(dir, "from-flag", "upkeep.db")); err != nil {
		t.Errorf("the flag did not win: %v", err)
	}
	if err := os.WriteFile(conf, []byte("ADDR=1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := cliErr("serve", "--config", conf); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("a malformed config file: %v, want an error naming its line", err)
	}
}

// TestQuietCommandsSpeak checks the commands that used to say nothing: accept confirms, and an
// import that finds nothing to import fails.
func TestQuietCommandsSpeak(t *testing.T) {
	e := newEnv(t)
	g := []string{"--server", e.srv.URL, "--token", e.srv.AdminToken}
	empty := t.TempDir()
	out, err := cliErr(append(g, "advisories", "import", empty)...)
	if err == nil || !strings.Contains(err.Error(), "nothing was imported") {
		t.Errorf("import of an empty folder: %v\n%s", err, out)
	}
}
