package demo

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDemoOnce runs the README's main job headless: every device ends on the security fix, and
// the bad release's campaign pauses itself in its first wave, with the devices outside that
// wave counted from the fleet as never having received it.
func TestDemoOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole demo")
	}
	var out bytes.Buffer
	err := Run(context.Background(), Config{Devices: 10, Once: true, Addr: "127.0.0.1:0", ImageSize: 64 << 10, Timeout: 2 * time.Minute, Out: &out,
		Played: func(ctx context.Context, consoleURL, user, password string) error {
			if !strings.Contains(out.String(), "console: "+consoleURL+" (user "+user+", password "+password+")") {
				t.Errorf("the demo does not print the console's URL and login:\n%s", out.String())
			}
			checkConsole(t, consoleURL, user, password)
			return nil
		}})
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	text := out.String()
	if !strings.Contains(text, "/p/thermostat") {
		t.Errorf("the demo names no public page:\n%s", text)
	}
	if _, after, ok := strings.Cut(text, "keys created in "); ok {
		keys, _, _ := strings.Cut(after, " ")
		if _, err := os.Stat(filepath.Dir(keys)); !os.IsNotExist(err) {
			t.Errorf("the demo left its folder with the offline keys behind: %s (%v)", filepath.Dir(keys), err)
		}
	} else {
		t.Errorf("no keys line:\n%s", text)
	}
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if got := lines[len(lines)-1]; got != "10/10 devices updated to 1.0.1" {
		t.Errorf("last line %q, want %q", got, "10/10 devices updated to 1.0.1")
	}
	// Waves of 10%, 50%, 100% over 10 devices: one device in the first wave.
	if !strings.Contains(text, "the campaign paused itself; 9 of 10 devices never received 1.0.2") {
		t.Errorf("act two did not pause in its first wave:\n%s", text)
	}
}

// checkConsole signs in to the demo's console with its login, as a browser does, and finds the
// fleet on the overview and the second act's paused campaign among the rollouts.
func checkConsole(t *testing.T, base, user, password string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	get := func(path string) string {
		t.Helper()
		resp, err := c.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d", path, resp.StatusCode)
		}
		return string(b)
	}
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(get("login"))
	if m == nil {
		t.Fatal("no login form")
	}
	resp, err := c.PostForm(base+"login", url.Values{"csrf": {m[1]}, "user": {user}, "password": {password}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if home := get(""); !strings.Contains(home, "Devices: 10") {
		t.Errorf("the console's overview does not show the demo's 10 devices:\n%s", home)
	}
	if paused := get("rollouts?state=paused"); !strings.Contains(paused, "thermostat@1.0.2") {
		t.Errorf("the console does not show the paused campaign:\n%s", paused)
	}
	if done := get("rollouts?state=completed"); !strings.Contains(done, "thermostat@") {
		t.Logf("no completed campaign listed (the first act deploys without a campaign)")
	}
}
