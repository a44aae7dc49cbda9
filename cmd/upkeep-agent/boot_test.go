package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The A/B installer has no default boot loader: a device that was not told which one it has
// must not fall back to the simulator, which writes images to files and "reboots" by editing
// JSON while reporting success.
func TestRunRefusesABWithoutBootloader(t *testing.T) {
	t.Setenv("UPKEEP_BOOT", "")
	os.Unsetenv("UPKEEP_BOOT")
	t.Setenv("UPKEEP_INSTALLER", "")
	err := run(context.Background(), "run", []string{"--state", t.TempDir()}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "UPKEEP_BOOT") || !strings.Contains(err.Error(), "uboot, grub or sim") {
		t.Fatalf("run without --boot: %v, want a refusal naming --boot/UPKEEP_BOOT", err)
	}
}

func TestSimBootloaderOnlyWhenSetAndLogged(t *testing.T) {
	t.Setenv("UPKEEP_BOOT", "")
	os.Unsetenv("UPKEEP_BOOT")
	state := t.TempDir()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	for _, tc := range []struct {
		boot    string
		wantErr bool
	}{{"", true}, {"sim", false}, {"lilo", true}} {
		c := common{state: state, installer: "ab", bootKind: tc.boot, slots: filepath.Join(state, "slots")}
		cfg, err := c.config(log)
		if (err != nil) != tc.wantErr {
			t.Errorf("--boot %q: err %v, want error %v", tc.boot, err, tc.wantErr)
		}
		if err == nil && cfg.Bootloader == nil {
			t.Errorf("--boot %q: no boot loader configured", tc.boot)
		}
	}
	if !strings.Contains(logs.String(), "simulated boot loader") {
		t.Errorf("starting with --boot sim logged %q, want a warning that the boot loader is simulated", logs.String())
	}
}

func TestWindowCheckedAtStart(t *testing.T) {
	state := t.TempDir()
	log := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))
	for _, tc := range []struct {
		window  string
		wantErr bool
	}{{"", false}, {"02:00-05:00", false}, {"22:00-02:00", false}, {"2-5", true}, {"25:00-05:00", true}, {"02:00", true}} {
		c := common{state: state, installer: "ab", bootKind: "sim", slots: filepath.Join(state, "slots"), window: tc.window}
		if _, err := c.config(log); (err != nil) != tc.wantErr {
			t.Errorf("--window %q: err %v, want error %v", tc.window, err, tc.wantErr)
		}
	}
}
