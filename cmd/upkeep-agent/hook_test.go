package main

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/agent"
)

// A hung health script is killed, with what it started, when its context ends, and the check
// fails instead of blocking the agent.
func TestHealthCommandKilledOnTimeout(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	c := common{healthCmd: "sleep 30 & echo $! > " + pidFile + "; wait"}
	cfg := c.withHealth(agent.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := cfg.Health(ctx)
	if took := time.Since(start); took > hookWaitDelay+time.Second {
		t.Errorf("the hung health command returned after %s, want soon after the 300ms deadline", took)
	}
	if err == nil || !strings.Contains(err.Error(), "health check") {
		t.Fatalf("hung health command: %v, want a failed health check", err)
	}
	b, rerr := os.ReadFile(pidFile)
	if rerr != nil {
		t.Fatal(rerr)
	}
	pid := strings.TrimSpace(string(b))
	time.Sleep(100 * time.Millisecond)
	if stat, err := os.ReadFile("/proc/" + pid + "/stat"); err == nil && !strings.Contains(string(stat), ") Z ") {
		t.Errorf("the health script's child %s still runs after the timeout", pid)
	}
}

func TestHookTimeoutFlag(t *testing.T) {
	t.Setenv("UPKEEP_HOOK_TIMEOUT", "")
	os.Unsetenv("UPKEEP_HOOK_TIMEOUT")
	state := t.TempDir()
	var c common
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	c.register(fs)
	if c.hookTimeout != 5*time.Minute {
		t.Errorf("default hook timeout %s, want 5m", c.hookTimeout)
	}
	if err := fs.Parse([]string{"--state", state, "--installer", "file", "--file-path", filepath.Join(state, "app"), "--hook-timeout", "42s"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := c.config(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HookTimeout != 42*time.Second {
		t.Errorf("HookTimeout %s, want the flag's 42s", cfg.HookTimeout)
	}
}
