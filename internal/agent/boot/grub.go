package boot

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
)

// GRUBConfig configures the GRUB adapter.
type GRUBConfig struct {
	EnvFile    string // the grubenv file, e.g. /boot/grub/grubenv
	Editenv    string // default "grub-editenv"
	BootedSlot func(ctx context.Context) (Slot, error)
	// RebootCommand defaults to {"reboot"}.
	RebootCommand []string
}

// GRUB drives an A/B boot through GRUB's environment block with grub-editenv. Variables:
// upkeep_slot (next slot), upkeep_committed, upkeep_trying, upkeep_bootcount and
// upkeep_bootlimit. All variables of a step are written by one grub-editenv call on a copy of
// the file, which then replaces the original by rename: grub-editenv itself truncates and
// rewrites the file in place, and a power cut in between would leave GRUB no environment.
//
// The grub.cfg side, a sketch: count the trial boots and fall back once the count exceeds
// upkeep_bootlimit. GRUB script has no arithmetic, so the count climbs a ladder that caps it at
// 3, which covers limits of 1 and 2. save_env needs the grubenv on a plain file system (not
// LVM, RAID, btrfs or zfs).
//
//	load_env
//	if [ "${upkeep_trying}" = 1 ]; then
//	  if [ "${upkeep_bootcount}" = 0 ]; then set upkeep_bootcount=1
//	  elif [ "${upkeep_bootcount}" = 1 ]; then set upkeep_bootcount=2
//	  else set upkeep_bootcount=3; fi
//	  if [ "${upkeep_bootcount}" -gt "${upkeep_bootlimit}" ]; then
//	    set upkeep_slot="${upkeep_committed}"
//	    set upkeep_trying=0
//	    set upkeep_bootcount=0
//	  fi
//	  save_env upkeep_slot upkeep_trying upkeep_bootcount
//	fi
//	if [ "${upkeep_slot}" = "b" ]; then set root=(hd0,gpt3); else set root=(hd0,gpt2); fi
//	linux /boot/vmlinuz root=... upkeep.slot=${upkeep_slot}
type GRUB struct{ envBoot }

var _ Bootloader = (*GRUB)(nil)

type grubEnv struct{ cfg GRUBConfig }

func (g grubEnv) list(ctx context.Context) (map[string]string, error) {
	out, err := output(ctx, g.cfg.Editenv, g.cfg.EnvFile, "list")
	if err != nil {
		return nil, fmt.Errorf("read grub environment: %w", err)
	}
	return parseEnv(out), nil
}

func (g grubEnv) set(ctx context.Context, kv map[string]string) (err error) {
	dir, base := filepath.Split(g.cfg.EnvFile)
	if dir == "" {
		dir = "."
	}
	old, err := os.ReadFile(g.cfg.EnvFile)
	if err != nil {
		return fmt.Errorf("write grub environment: %w", err)
	}
	fi, err := os.Stat(g.cfg.EnvFile)
	if err != nil {
		return fmt.Errorf("write grub environment: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("write grub environment: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(fi.Mode().Perm()); err == nil {
		_, err = tmp.Write(old)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write grub environment: copy: %w", err)
	}
	args := []string{tmp.Name(), "set"}
	for _, k := range slices.Sorted(maps.Keys(kv)) {
		args = append(args, k+"="+kv[k])
	}
	if err := runTool(ctx, g.cfg.Editenv, args...); err != nil {
		return fmt.Errorf("write grub environment: %w", err)
	}
	if err := os.Rename(tmp.Name(), g.cfg.EnvFile); err != nil {
		return fmt.Errorf("write grub environment: %w", err)
	}
	if err := SyncDir(dir); err != nil {
		return fmt.Errorf("write grub environment: %w", err)
	}
	return nil
}

// NewGRUB makes the adapter. The environment file must exist (`grub-editenv FILE create`).
func NewGRUB(cfg GRUBConfig) (*GRUB, error) {
	if cfg.EnvFile == "" {
		cfg.EnvFile = "/boot/grub/grubenv"
	}
	if cfg.Editenv == "" {
		cfg.Editenv = "grub-editenv"
	}
	if cfg.BootedSlot == nil {
		cfg.BootedSlot = CmdlineSlot("/proc/cmdline")
	}
	if cfg.RebootCommand == nil {
		cfg.RebootCommand = []string{"reboot"}
	}
	// grub-editenv list would create a missing file; a wrong path must fail instead.
	if _, err := os.Stat(cfg.EnvFile); err != nil {
		return nil, fmt.Errorf("grub environment: %w", err)
	}
	g := &GRUB{envBoot{
		store:      grubEnv{cfg},
		vars:       envVars{Part: "upkeep_slot", Committed: "upkeep_committed", Trying: "upkeep_trying", Count: "upkeep_bootcount", Limit: "upkeep_bootlimit"},
		bootedSlot: cfg.BootedSlot,
		reboot:     cfg.RebootCommand,
	}}
	if _, err := g.store.list(context.Background()); err != nil {
		return nil, err
	}
	return g, nil
}
