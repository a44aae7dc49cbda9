// Package testenv gives tests the real services named in the environment (PostgreSQL, an
// S3-compatible server), which `.ci/run` starts.
package testenv

import (
	"os"
	"testing"
)

// Service returns the value of env, where `.ci/run` names a real service for the tests (what
// says which suites need it). When env is unset the test skips, or fails if
// UPKEEP_REQUIRE_SERVICES=1 (CI sets it: there a missing service is a broken run, not a reason
// to skip).
func Service(t testing.TB, env, what string) string {
	t.Helper()
	v := os.Getenv(env)
	if v == "" {
		if os.Getenv("UPKEEP_REQUIRE_SERVICES") == "1" {
			t.Fatal(env + " is not set, and UPKEEP_REQUIRE_SERVICES=1 requires the " + what + " suites to run")
		} else {
			t.Skip(env + " is not set")
		}
	}
	return v
}
