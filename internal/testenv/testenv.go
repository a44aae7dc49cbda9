// Package testenv gives tests the real services named in the environment (PostgreSQL, an
// S3-compatible server), which `.ci/run` starts, and the installed tools they run (chromium,
// zbarimg, the boot loaders' environment tools), which `.ci/run` installs.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
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

// Required reports whether a missing service or tool fails the test rather than skipping it: in
// CI (the CI environment variable set, as `.ci/run` does) or with UPKEEP_REQUIRE_SERVICES=1.
func Required() bool {
	return os.Getenv("CI") != "" || os.Getenv("UPKEEP_REQUIRE_SERVICES") == "1"
}

// Tool returns the path of the installed program name, which pkg (a Debian package) provides.
// When it is not installed the test skips, or fails where Required says so (`.ci/run`
// installs every tool the tests use: there a missing one is a broken run, not a reason to skip).
func Tool(t testing.TB, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		msg := name + " is not installed (Debian package " + pkg + ")"
		if Required() {
			t.Fatal(msg + ", and CI requires the tests that use it to run")
		} else {
			t.Skip(msg)
		}
	}
	return path
}

// Binary returns the path of a program built with `go install` that a test runs (an OpenID
// provider, say): the path in the variable env if set, else name in PATH, else name in
// $GOPATH/bin (~/go/bin). When it is missing the test skips, or fails where Required says so;
// install says how to get it.
func Binary(t testing.TB, env, name, install string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s=%s: %v", env, p, err)
		}
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		home, _ := os.UserHomeDir()
		gopath = filepath.Join(home, "go")
	}
	if p := filepath.Join(filepath.SplitList(gopath)[0], "bin", name); fileExists(p) {
		return p
	}
	msg := name + " is not installed (" + install + "; or set " + env + " to its path)"
	if Required() {
		t.Fatal(msg + ", and CI requires the tests that use it to run")
	} else {
		t.Skip(msg)
	}
	return ""
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}
