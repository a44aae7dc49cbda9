package boot

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"upkeep.dev/upkeep/internal/testenv"
)

// device is a boot loader under test plus what its firmware does at power-on.
type device struct {
	bl      Bootloader
	powerOn func(t *testing.T)
}

// envDevice wraps an environment-backed adapter: the test plays the firmware's boot script
// (count the trial boot, fall back past the limit) and the kernel command line (booted slot).
func envDevice(t *testing.T, b *envBoot, booted *Slot) device {
	return device{bl: b, powerOn: func(t *testing.T) {
		ctx := context.Background()
		env, err := b.store.list(ctx)
		if err != nil {
			t.Fatal(err)
		}
		v := b.vars
		part, _ := b.parseSlot(env[v.Part])
		if part == "" {
			part = *booted
		}
		if env[v.Trying] == "1" {
			n, _ := strconv.Atoi(env[v.Count])
			limit, err := strconv.Atoi(env[v.Limit])
			if err != nil {
				limit = 1
			}
			n++
			kv := map[string]string{v.Count: strconv.Itoa(n)}
			if n > limit {
				committed, _ := b.parseSlot(env[v.Committed])
				part = committed
				kv = map[string]string{v.Part: b.slotValue(committed), v.Trying: "0", v.Count: "0"}
			}
			if err := b.store.set(ctx, kv); err != nil {
				t.Fatal(err)
			}
		}
		*booted = part
	}}
}

func newUBootDevice(t *testing.T) device {
	testenv.Tool(t, "fw_printenv", "libubootenv-tool")
	testenv.Tool(t, "fw_setenv", "libubootenv-tool")
	testenv.Tool(t, "mkenvimage", "u-boot-tools")
	dir := t.TempDir()
	env, conf := filepath.Join(dir, "uboot.env"), filepath.Join(dir, "fw_env.config")
	os.WriteFile(filepath.Join(dir, "init.txt"), []byte("boot_part=2\nbootlimit=1\n"), 0o600)
	if out, err := exec.Command("mkenvimage", "-s", "0x4000", "-o", env, filepath.Join(dir, "init.txt")).CombinedOutput(); err != nil {
		t.Fatalf("mkenvimage: %v %s", err, out)
	}
	os.WriteFile(conf, []byte(env+" 0x0000 0x4000\n"), 0o600)
	booted := SlotA
	u, err := NewUBoot(UBootConfig{ConfigFile: conf, SlotValues: map[Slot]string{SlotA: "2", SlotB: "3"},
		BootedSlot: func(context.Context) (Slot, error) { return booted, nil }, RebootCommand: []string{"true"}})
	if err != nil {
		t.Fatal(err)
	}
	return envDevice(t, &u.envBoot, &booted)
}

func newGRUBDevice(t *testing.T) device {
	testenv.Tool(t, "grub-editenv", "grub-common")
	env := filepath.Join(t.TempDir(), "grubenv")
	if out, err := exec.Command("grub-editenv", env, "create").CombinedOutput(); err != nil {
		t.Fatalf("grub-editenv create: %v %s", err, out)
	}
	booted := SlotA
	g, err := NewGRUB(GRUBConfig{EnvFile: env, BootedSlot: func(context.Context) (Slot, error) { return booted, nil }, RebootCommand: []string{"true"}})
	if err != nil {
		t.Fatal(err)
	}
	return envDevice(t, &g.envBoot, &booted)
}

func newSimDevice(t *testing.T) device {
	s, err := NewSim(filepath.Join(t.TempDir(), "env.json"))
	if err != nil {
		t.Fatal(err)
	}
	return device{bl: s, powerOn: func(t *testing.T) {
		if err := s.PowerOn(context.Background()); err != nil {
			t.Fatal(err)
		}
	}}
}

// TestAdapterConformance runs one scenario list against the simulator and the real U-Boot and
// GRUB tools, each on an environment file of its own (never the host's).
func TestAdapterConformance(t *testing.T) {
	adapters := map[string]func(*testing.T) device{"sim": newSimDevice, "uboot": newUBootDevice, "grub": newGRUBDevice}
	type step struct {
		do   string // try-b, commit, abort, boot
		want State
	}
	scenarios := map[string][]step{
		"fresh":                    {{"", State{Booted: SlotA, Committed: SlotA}}},
		"trial boots the new slot": {{"try-b", State{Booted: SlotA, Committed: SlotA}}, {"boot", State{Booted: SlotB, Committed: SlotA, Trying: true}}},
		"commit keeps it":          {{"try-b", State{SlotA, SlotA, false}}, {"boot", State{SlotB, SlotA, true}}, {"commit", State{SlotB, SlotB, false}}, {"boot", State{SlotB, SlotB, false}}},
		"no commit falls back":     {{"try-b", State{SlotA, SlotA, false}}, {"boot", State{SlotB, SlotA, true}}, {"boot", State{SlotA, SlotA, false}}},
		"abort before reboot":      {{"try-b", State{SlotA, SlotA, false}}, {"abort", State{SlotA, SlotA, false}}, {"boot", State{SlotA, SlotA, false}}},
		"commit when not trying":   {{"commit", State{SlotA, SlotA, false}}, {"boot", State{SlotA, SlotA, false}}},
		"abort a running trial":    {{"try-b", State{SlotA, SlotA, false}}, {"boot", State{SlotB, SlotA, true}}, {"abort", State{SlotB, SlotA, false}}, {"boot", State{SlotA, SlotA, false}}},
	}
	ctx := context.Background()
	for name, mk := range adapters {
		for sname, steps := range scenarios {
			t.Run(name+"/"+sname, func(t *testing.T) {
				d := mk(t)
				for i, s := range steps {
					var err error
					switch s.do {
					case "try-b":
						err = d.bl.TryNext(ctx, SlotB)
					case "commit":
						err = d.bl.Commit(ctx)
					case "abort":
						err = d.bl.Abort(ctx)
					case "boot":
						d.powerOn(t)
					}
					if err != nil {
						t.Fatalf("step %d %s: %v", i, s.do, err)
					}
					got, err := d.bl.State(ctx)
					if err != nil {
						t.Fatal(err)
					}
					if got != s.want {
						t.Fatalf("after step %d %q: %+v, want %+v", i, s.do, got, s.want)
					}
				}
			})
		}
	}
}

func TestAdapterToolErrors(t *testing.T) {
	t.Run("u-boot", func(t *testing.T) {
		testenv.Tool(t, "fw_printenv", "libubootenv-tool")
		_, err := NewUBoot(UBootConfig{ConfigFile: filepath.Join(t.TempDir(), "missing.config")})
		if err == nil || !strings.Contains(err.Error(), "fw_printenv") || !strings.Contains(err.Error(), "Configuration file wrong") {
			t.Errorf("u-boot with a missing config: %v", err)
		}
	})
	t.Run("grub", func(t *testing.T) {
		testenv.Tool(t, "grub-editenv", "grub-common")
		_, err := NewGRUB(GRUBConfig{EnvFile: filepath.Join(t.TempDir(), "no", "such", "grubenv")})
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("grub with a missing env file: %v, want fs.ErrNotExist", err)
		}
		env := filepath.Join(t.TempDir(), "grubenv")
		if err := os.WriteFile(env, []byte("not an environment block"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err = NewGRUB(GRUBConfig{EnvFile: env})
		if err == nil || !strings.Contains(err.Error(), "grub-editenv") || !strings.Contains(err.Error(), "invalid environment block") {
			t.Errorf("grub with a corrupt env file: %v, want grub-editenv's stderr", err)
		}
	})
}

func TestCmdlineSlot(t *testing.T) {
	p := filepath.Join(t.TempDir(), "cmdline")
	os.WriteFile(p, []byte("console=ttyS0 root=/dev/mmcblk0p3 upkeep.slot=b quiet\n"), 0o600)
	if s, err := CmdlineSlot(p)(context.Background()); err != nil || s != SlotB {
		t.Fatalf("got %q %v", s, err)
	}
	os.WriteFile(p, []byte("console=ttyS0\n"), 0o600)
	if _, err := CmdlineSlot(p)(context.Background()); err == nil {
		t.Fatal("no upkeep.slot= accepted")
	}
}
