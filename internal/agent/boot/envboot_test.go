package boot

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/testenv"
)

// TestEnvBootSerialises checks that Commit and Abort racing in one process end in a state Sim
// could reach: grub-editenv is wrapped so that every read lingers, which without a lock lets
// both calls read the same trial and write over each other.
func TestEnvBootSerialises(t *testing.T) {
	testenv.Tool(t, "grub-editenv", "grub-common")
	dir := t.TempDir()
	slow := filepath.Join(dir, "slow-editenv")
	script := "#!/bin/sh\ngrub-editenv \"$@\" || exit\n[ \"$2\" = list ] && sleep 0.3\nexit 0\n"
	if err := os.WriteFile(slow, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	env := filepath.Join(dir, "grubenv")
	if out, err := exec.Command("grub-editenv", env, "create").CombinedOutput(); err != nil {
		t.Fatalf("grub-editenv create: %v %s", err, out)
	}
	ctx := context.Background()
	booted := SlotA
	g, err := NewGRUB(GRUBConfig{EnvFile: env, Editenv: slow, BootedSlot: func(context.Context) (Slot, error) { return booted, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.TryNext(ctx, SlotB); err != nil {
		t.Fatal(err)
	}
	booted = SlotB
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = g.Commit(ctx) }()
	time.Sleep(100 * time.Millisecond)
	go func() { defer wg.Done(); _ = g.Abort(ctx) }()
	wg.Wait()
	kv, err := g.store.list(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Commit then Abort: b committed and next. Abort then Commit: a committed and next.
	if kv["upkeep_slot"] != kv["upkeep_committed"] {
		t.Fatalf("next slot %q but committed %q: the calls interleaved", kv["upkeep_slot"], kv["upkeep_committed"])
	}
}

// TestUBootWriteIsCheckedBack checks that a fw_setenv that exits 0 without applying the script
// (libubootenv skips lines in U-Boot's "name value" syntax) is reported, not trusted.
func TestUBootWriteIsCheckedBack(t *testing.T) {
	d := newUBootDevice(t)
	u := d.bl.(*envBoot)
	store := u.store.(ubootEnv)
	store.cfg.UpstreamTools = true // wrong for the libubootenv tools installed here
	u.store = store
	err := u.TryNext(context.Background(), SlotB)
	if err == nil || !strings.Contains(err.Error(), "boot_part") {
		t.Fatalf("TryNext with the wrong script syntax: %v, want a read-back error", err)
	}
}

// TestGRUBWriteKeepsMode checks that replacing the grubenv by rename keeps its permissions.
func TestGRUBWriteKeepsMode(t *testing.T) {
	d := newGRUBDevice(t)
	g := d.bl.(*envBoot)
	path := g.store.(grubEnv).cfg.EnvFile
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := g.TryNext(context.Background(), SlotB); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o644 {
		t.Fatalf("mode after write %v, want 0644", got)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".grubenv.tmp-*")); len(left) != 0 {
		t.Fatalf("temp files left: %v", left)
	}
}
