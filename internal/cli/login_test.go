package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/sso"
)

// TestCLILoginLogout: `upkeep login` with a wrong password is refused with a message that says
// only that; with the right one it keeps a personal token (the user's role, 12 h, mode 0600,
// keyed by server URL) that later commands use without --token: a permitted command works, a
// forbidden one gets 403 naming the role. A revoked token and an expired login say so;
// `upkeep logout` revokes the token on the server and forgets it.
func TestCLILoginLogout(t *testing.T) {
	e := newEnv(t)
	config := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", config)
	t.Setenv("UPKEEP_TOKEN", "")
	admin := []string{"--server", e.srv.URL, "--token", e.srv.AdminToken}
	if _, err := cliIn("correct horse battery\n", append(admin, "users", "add", "lena", "--role", "release-manager", "--password-stdin")...); err != nil {
		t.Fatal(err)
	}
	me := []string{"--server", e.srv.URL}

	// Wrong password, unknown user: the same answer.
	for _, user := range []string{"lena", "nobody"} {
		if out, err := cliIn("wrong password!\n", append(me, "login", "--user", user, "--password-stdin")...); err == nil || !strings.Contains(err.Error(), "wrong user name or password") {
			t.Fatalf("login %s with a wrong password: %v\n%s", user, err, out)
		}
	}
	if _, err := cliErr(append(me, "release", "list")...); err == nil || !strings.Contains(err.Error(), "upkeep login") {
		t.Fatalf("no token and no login: %v", err)
	}
	// No terminal and no --password-stdin: a clear error, nothing sent.
	if _, err := cliIn("", append(me, "login", "--user", "lena")...); err == nil || !strings.Contains(err.Error(), "--password-stdin") {
		t.Fatalf("login without a terminal: %v", err)
	}

	out, err := cliIn("correct horse battery\n", append(me, "login", "--user", "lena", "--password-stdin")...)
	if err != nil || !strings.Contains(out, "logged in to "+e.srv.URL+" as lena (role release-manager)") {
		t.Fatalf("login: %v\n%s", err, out)
	}
	path := filepath.Join(config, "upkeep", "credentials")
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v %v", st, err)
	}
	var creds credentials
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &creds); err != nil {
		t.Fatal(err)
	}
	saved := creds.Servers[e.srv.URL]
	if saved.User != "lena" || saved.Role != "release-manager" || !strings.HasPrefix(saved.Token, "upk_admin_") {
		t.Fatalf("saved login: %+v", saved)
	}
	if d := time.Until(saved.ExpiresAt); d < 11*time.Hour || d > 13*time.Hour {
		t.Fatalf("token expires in %s, want 12 h", d)
	}
	// The session the login used is over; the token is lena's, listed with her name.
	if out := cli(t, append(admin, "tokens", "list")...); !regexp.MustCompile(saved.TokenID + `\s+upkeep login lena@\S*\s+release-manager\s+all\s+lena`).MatchString(out) {
		t.Fatalf("tokens list:\n%s", out)
	}

	// Later commands use it.
	cli(t, append(me, "release", "list")...)
	if _, err := cliErr(append(me, "users", "list")...); err == nil || !strings.Contains(err.Error(), "role release-manager does not grant users:read") {
		t.Fatalf("a forbidden command: %v", err)
	}
	// --token still wins over the saved login.
	if out := cli(t, append(admin, "users", "list")...); !strings.Contains(out, "lena") {
		t.Fatalf("users list with --token:\n%s", out)
	}

	// Revoked by an admin: 401 that says so.
	cli(t, append(admin, "tokens", "revoke", saved.TokenID)...)
	if _, err := cliErr(append(me, "release", "list")...); err == nil || !strings.Contains(err.Error(), "was revoked") {
		t.Fatalf("a revoked token: %v", err)
	}
	// Logging in again replaces it.
	if _, err := cliIn("correct horse battery\n", append(me, "login", "--user", "lena", "--password-stdin", "--ttl", "1h")...); err != nil {
		t.Fatal(err)
	}
	cli(t, append(me, "release", "list")...)

	// A file others may read is refused.
	os.Chmod(path, 0o644)
	if _, err := cliErr(append(me, "release", "list")...); err == nil || !strings.Contains(err.Error(), "open to other users") {
		t.Fatalf("a world-readable credentials file: %v", err)
	}
	os.Chmod(path, 0o600)

	// Expired: the CLI says to log in again.
	b, _ = os.ReadFile(path)
	json.Unmarshal(b, &creds)
	saved = creds.Servers[e.srv.URL]
	expired := creds
	expired.Servers = map[string]savedLogin{e.srv.URL: {Token: saved.Token, TokenID: saved.TokenID, User: "lena", ExpiresAt: time.Now().Add(-time.Minute)}}
	if err := expired.save(path); err != nil {
		t.Fatal(err)
	}
	if _, err := cliErr(append(me, "release", "list")...); err == nil || !strings.Contains(err.Error(), "expired") || !strings.Contains(err.Error(), "upkeep login again") {
		t.Fatalf("an expired login: %v", err)
	}
	if err := creds.save(path); err != nil {
		t.Fatal(err)
	}

	// Logout revokes it on the server and forgets it.
	if out := cli(t, append(me, "logout")...); !strings.Contains(out, "token "+saved.TokenID+" revoked") {
		t.Fatalf("logout: %s", out)
	}
	if _, err := cliErr("--server", e.srv.URL, "--token", saved.Token, "release", "list"); err == nil || !strings.Contains(err.Error(), "was revoked") {
		t.Fatalf("the token after logout: %v", err)
	}
	if _, err := cliErr(append(me, "release", "list")...); err == nil || !strings.Contains(err.Error(), "upkeep login") {
		t.Fatalf("after logout: %v", err)
	}
	if _, err := cliErr(append(me, "logout")...); err == nil || !strings.Contains(err.Error(), "not logged in") {
		t.Fatalf("logout twice: %v", err)
	}
}

// TestServeOIDCFlags: the flags that are not sso.Config fields (secret file, role map) and the
// combinations serve refuses before it starts.
func TestServeOIDCFlags(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("s3cret\n"), 0o600)
	var c sso.Config
	c.Issuer = "https://idp.example/"
	if err := oidcConfig(&c, secret, "groups:release=release-manager,groups:eu=deployer:eu"); err != nil {
		t.Fatal(err)
	}
	if c.ClientSecret != "s3cret" || len(c.RoleMap) != 2 || c.RoleMap[1].Groups[0] != "eu" {
		t.Fatalf("config: %+v", c)
	}
	for name, f := range map[string]func() error{
		"secret twice": func() error {
			c := sso.Config{Issuer: "https://i/", ClientSecret: "x"}
			return oidcConfig(&c, secret, "")
		},
		"bad role":           func() error { c := sso.Config{Issuer: "https://i/"}; return oidcConfig(&c, "", "groups:x=root") },
		"map without issuer": func() error { c := sso.Config{}; return oidcConfig(&c, "", "groups:x=viewer") },
		"missing file":       func() error { c := sso.Config{Issuer: "https://i/"}; return oidcConfig(&c, secret+".none", "") },
	} {
		if f() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
