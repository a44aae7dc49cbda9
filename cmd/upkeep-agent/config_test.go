package main

import (
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.env")
	os.WriteFile(path, []byte("# comment\n\nUPKEEP_POLL=30s   # inline\nUPKEEP_STATE=\"/data/upkeep\"\nUPKEEP_INSTALLER=file\n"), 0o644)
	t.Setenv("UPKEEP_INSTALLER", "module") // the environment wins over the file
	os.Unsetenv("UPKEEP_POLL")
	os.Unsetenv("UPKEEP_STATE")
	t.Cleanup(func() { os.Unsetenv("UPKEEP_POLL"); os.Unsetenv("UPKEEP_STATE") })
	if err := loadConfig(path, true); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"UPKEEP_POLL": "30s", "UPKEEP_STATE": "/data/upkeep", "UPKEEP_INSTALLER": "module"} {
		if got := os.Getenv(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	os.WriteFile(path, []byte("POLL=1\n"), 0o644)
	if err := loadConfig(path, true); err == nil {
		t.Error("a line without the UPKEEP_ prefix was accepted")
	}
	if err := loadConfig(filepath.Join(dir, "missing"), false); err != nil {
		t.Errorf("optional missing config: %v", err)
	}
	if err := loadConfig(filepath.Join(dir, "missing"), true); err == nil {
		t.Error("a missing --config file was accepted")
	}
	// The packaged example must load.
	if err := loadConfig("../../packaging/agent.env", true); err != nil {
		t.Errorf("packaging/agent.env: %v", err)
	}
}

// TestHelp checks that asking for help prints the usage and succeeds, and that a command's -h
// shows no enrolment token taken from the environment.
func TestHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "help"} {
		if !isHelp(arg) {
			t.Errorf("%s is not help", arg)
		}
	}
	t.Setenv("UPKEEP_ENROLL_TOKEN", "upk_enroll_secret-value")
	var out strings.Builder
	err := run(context.Background(), "enroll", []string{"-h"}, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("enroll -h: %v, want flag.ErrHelp (exit 0)", err)
	}
}

// TestPollFlag: --poll (or UPKEEP_POLL) is the owner's choice and is kept whatever interval the
// server suggests (agent.Config.FixedPoll); without it the agent follows the server.
func TestPollFlag(t *testing.T) {
	os.Unsetenv("UPKEEP_POLL")
	config := func(args ...string) (bool, error) {
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		var c common
		c.register(fs)
		if err := fs.Parse(append([]string{"--state", t.TempDir(), "--installer", "file", "--file-path", filepath.Join(t.TempDir(), "f")}, args...)); err != nil {
			return false, err
		}
		cfg, err := c.config(nil)
		return cfg.FixedPoll, err
	}
	if fixed, err := config("--poll", "30s"); err != nil || !fixed {
		t.Errorf("--poll 30s: fixed %v, %v; want kept", fixed, err)
	}
	if fixed, err := config(); err != nil || fixed {
		t.Errorf("no --poll: fixed %v, %v; want the server's interval", fixed, err)
	}
	t.Setenv("UPKEEP_POLL", "45s")
	if fixed, err := config(); err != nil || !fixed {
		t.Errorf("UPKEEP_POLL: fixed %v, %v; want kept", fixed, err)
	}
}
