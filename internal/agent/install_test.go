package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func stage(t *testing.T, in Installer, img *Image, data []byte) {
	t.Helper()
	ctx := context.Background()
	if err := in.Prepare(ctx, img); err != nil {
		t.Fatal(err)
	}
	w, err := in.Stage(ctx, img, 0)
	if err != nil {
		t.Fatal(err)
	}
	half := len(data) / 2
	w.Write(data[:half])
	w.Close()
	// Resume at the half, as after a power cut.
	if w, err = in.Stage(ctx, img, int64(half)); err != nil {
		t.Fatal(err)
	}
	w.Write(data[half:])
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// installers returns each non-A/B installer with the path where its result lands.
func installers(t *testing.T) map[string]func(dst string) Installer {
	mod, err := filepath.Abs("testdata/file-module.sh")
	if err != nil {
		t.Fatal(err)
	}
	return map[string]func(string) Installer{
		"file": func(dst string) Installer { return &FileInstaller{Path: dst} },
		"module": func(dst string) Installer {
			t.Setenv("TARGET_FILE", dst)
			return &ModuleInstaller{Executable: mod, WorkDir: filepath.Join(filepath.Dir(dst), "work")}
		},
	}
}

func TestInstallersCommitAndRollback(t *testing.T) {
	ctx := context.Background()
	oldData, newData := []byte("old firmware\n"), []byte("new firmware, longer than the old one\n")
	for name, mk := range installers(t) {
		t.Run(name+"/commit", func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "app.bin")
			os.WriteFile(dst, oldData, 0o644)
			in := mk(dst)
			img := &Image{Target: "p/1/app.bin", Version: "1", SHA256: sum(newData)}
			stage(t, in, img, newData)
			for range 2 { // Install is idempotent: a power cut may repeat it
				if _, err := in.Install(ctx, img); err != nil {
					t.Fatal(err)
				}
			}
			if o, err := in.Outcome(ctx, img); err != nil || o != OutcomeTrial {
				t.Fatalf("outcome %q %v, want trial", o, err)
			}
			if err := in.Commit(ctx, img); err != nil {
				t.Fatal(err)
			}
			if o, _ := in.Outcome(ctx, img); o != OutcomeCommitted {
				t.Fatalf("outcome %q, want committed", o)
			}
			if got, _ := os.ReadFile(dst); string(got) != string(newData) {
				t.Fatalf("file holds %q", got)
			}
		})
		t.Run(name+"/rollback", func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "app.bin")
			os.WriteFile(dst, oldData, 0o644)
			in := mk(dst)
			img := &Image{Target: "p/1/app.bin", Version: "1", SHA256: sum(newData)}
			stage(t, in, img, newData)
			if _, err := in.Install(ctx, img); err != nil {
				t.Fatal(err)
			}
			if _, err := in.Rollback(ctx, img); err != nil {
				t.Fatal(err)
			}
			if o, _ := in.Outcome(ctx, img); o != OutcomePrevious {
				t.Fatalf("outcome %q, want previous", o)
			}
			if got, _ := os.ReadFile(dst); string(got) != string(oldData) {
				t.Fatalf("file holds %q after rollback", got)
			}
		})
	}
}

func TestModuleErrorsCarryStderr(t *testing.T) {
	dir := t.TempDir()
	mod := filepath.Join(dir, "bad.sh")
	os.WriteFile(mod, []byte("#!/bin/sh\necho 'disk full' >&2\nexit 1\n"), 0o755)
	in := &ModuleInstaller{Executable: mod, WorkDir: filepath.Join(dir, "work")}
	img := &Image{Target: "p/1/x", SHA256: sum(nil)}
	_, err := in.Install(context.Background(), img)
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("err = %v, want the module's stderr", err)
	}
}

// A first install (no previous file) is a trial like any other: the health check still
// decides, and a rollback removes the new file.
func TestFileInstallerFirstInstall(t *testing.T) {
	ctx := context.Background()
	data := []byte("first firmware\n")
	for _, commit := range []bool{false, true} {
		dst := filepath.Join(t.TempDir(), "app.bin")
		in := &FileInstaller{Path: dst}
		img := &Image{Target: "p/1/app.bin", SHA256: sum(data), Length: int64(len(data))}
		stage(t, in, img, data)
		if _, err := in.Install(ctx, img); err != nil {
			t.Fatal(err)
		}
		if _, err := in.Install(ctx, img); err != nil { // again, as after a power cut
			t.Fatalf("install again: %v", err)
		}
		if o, err := in.Outcome(ctx, img); err != nil || o != OutcomeTrial {
			t.Fatalf("outcome after a first install: %s, %v; want %s (the health check decides)", o, err, OutcomeTrial)
		}
		if commit {
			if err := in.Commit(ctx, img); err != nil {
				t.Fatal(err)
			}
			if o, err := in.Outcome(ctx, img); err != nil || o != OutcomeCommitted {
				t.Errorf("outcome after commit: %s, %v; want %s", o, err, OutcomeCommitted)
			}
			if b, err := os.ReadFile(dst); err != nil || string(b) != string(data) {
				t.Errorf("committed file: %q, %v", b, err)
			}
		} else {
			if _, err := in.Rollback(ctx, img); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(dst); !os.IsNotExist(err) {
				t.Errorf("after rolling back a first install %s: %v, want it gone", dst, err)
			}
			if o, err := in.Outcome(ctx, img); err != nil || o != OutcomePrevious {
				t.Errorf("outcome after rollback: %s, %v; want %s", o, err, OutcomePrevious)
			}
		}
		left, _ := filepath.Glob(dst + ".upkeep-*")
		if len(left) != 0 {
			t.Errorf("left behind: %v", left)
		}
	}
}
