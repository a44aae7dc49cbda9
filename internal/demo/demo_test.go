package demo

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
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
	err := Run(context.Background(), Config{Devices: 10, Once: true, Addr: "127.0.0.1:0", ImageSize: 64 << 10, Timeout: 2 * time.Minute, Out: &out})
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
