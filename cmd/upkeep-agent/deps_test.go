package main

import (
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestAgentDependencies keeps the device binary small: it must not link database drivers,
// templates, web assets or any server package.
func TestAgentDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	forbidden := regexp.MustCompile(`^(database/sql|html/template|net/http/pprof)$|sqlite|pgx|/internal/(store|web|httpapi|repo|fleet|release|client|sim|rollout|vuln|label|transparency|patch|exposure|bench|server|cli)(/|$)|cobra|prometheus`)
	deps := strings.Fields(string(out))
	for _, dep := range deps {
		if forbidden.MatchString(dep) {
			t.Errorf("upkeep-agent links %s", dep)
		}
	}
	if !slices.Contains(deps, "upkeep.dev/upkeep/internal/devclient") {
		t.Error("upkeep-agent does not speak the device protocol through internal/devclient")
	}
}

// TestDeviceClientDependencies: the device protocol's client, which the agent and the benches
// share, depends on the protocol's types (wire) and go-tuf's metadata only, never on the
// agent or a server package.
func TestDeviceClientDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "upkeep.dev/upkeep/internal/devclient").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "upkeep.dev/") && dep != "upkeep.dev/upkeep/wire" && dep != "upkeep.dev/upkeep/internal/devclient" {
			t.Errorf("internal/devclient links %s", dep)
		}
	}
}
