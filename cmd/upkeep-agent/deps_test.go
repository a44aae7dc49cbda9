package main

import (
	"os/exec"
	"regexp"
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
	forbidden := regexp.MustCompile(`^(database/sql|html/template|net/http/pprof)$|sqlite|pgx|/internal/(store|web|httpapi|repo|fleet|release|client|sim|rollout|vuln|label|transparency|patch)(/|$)|cobra|prometheus`)
	for _, dep := range strings.Fields(string(out)) {
		if forbidden.MatchString(dep) {
			t.Errorf("upkeep-agent links %s", dep)
		}
	}
}
