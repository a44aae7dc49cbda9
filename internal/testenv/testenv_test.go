package testenv

import "testing"

// recorder is a testing.TB that records whether the helper skipped or failed.
type recorder struct {
	testing.TB
	skipped, failed bool
}

func (r *recorder) Helper()               {}
func (r *recorder) Skip(...any)           { r.skipped = true }
func (r *recorder) Fatal(...any)          { r.failed = true }
func (r *recorder) Fatalf(string, ...any) { r.failed = true }

// TestServiceRequired: without its variable (UPKEEP_TEST_S3, UPKEEP_TEST_POSTGRES) a service's
// suites skip, unless UPKEEP_REQUIRE_SERVICES=1 (CI), where they fail; set, it is returned.
func TestServiceRequired(t *testing.T) {
	for _, env := range []string{"UPKEEP_TEST_S3", "UPKEEP_TEST_POSTGRES"} {
		t.Setenv(env, "")
		for _, c := range []struct {
			require       string
			skip, failure bool
		}{{"", true, false}, {"1", false, true}} {
			t.Setenv("UPKEEP_REQUIRE_SERVICES", c.require)
			r := &recorder{TB: t}
			Service(r, env, "its")
			if r.skipped != c.skip || r.failed != c.failure {
				t.Errorf("%s unset, UPKEEP_REQUIRE_SERVICES=%q: skipped %v failed %v, want %v %v", env, c.require, r.skipped, r.failed, c.skip, c.failure)
			}
		}
		t.Setenv(env, "service-address")
		if got := Service(&recorder{TB: t}, env, "its"); got != "service-address" {
			t.Errorf("Service(%s) = %q", env, got)
		}
	}
}

// TestToolRequired: a missing tool skips the test, unless CI is set or
// UPKEEP_REQUIRE_SERVICES=1, where it fails; an installed one's path is returned.
func TestToolRequired(t *testing.T) {
	for _, c := range []struct {
		ci, require   string
		skip, failure bool
	}{{"", "", true, false}, {"true", "", false, true}, {"", "1", false, true}, {"1", "1", false, true}} {
		t.Setenv("CI", c.ci)
		t.Setenv("UPKEEP_REQUIRE_SERVICES", c.require)
		r := &recorder{TB: t}
		Tool(r, "upkeep-no-such-tool", "no-such-package")
		if r.skipped != c.skip || r.failed != c.failure {
			t.Errorf("missing tool, CI=%q UPKEEP_REQUIRE_SERVICES=%q: skipped %v failed %v, want %v %v", c.ci, c.require, r.skipped, r.failed, c.skip, c.failure)
		}
		r = &recorder{TB: t}
		if got := Tool(r, "sh", "dash"); got == "" || r.skipped || r.failed {
			t.Errorf("Tool(sh) = %q, skipped %v failed %v", got, r.skipped, r.failed)
		}
	}
}
