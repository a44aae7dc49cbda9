package boot

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
)

// UBootConfig configures the U-Boot adapter.
type UBootConfig struct {
	// ConfigFile is the fw_env.config the tools use (-c); it names the environment device or
	// file, offset and size (two lines for a redundant environment).
	ConfigFile string
	PrintEnv   string // default "fw_printenv"
	SetEnv     string // default "fw_setenv"
	// SlotValues spell the slots in boot_part, e.g. {"a": "2", "b": "3"}; default "a" and "b".
	SlotValues map[Slot]string
	// BootedSlot tells which slot is running; default: upkeep.slot= on /proc/cmdline.
	BootedSlot    func(ctx context.Context) (Slot, error)
	RebootCommand []string // default {"reboot"}
	// UpstreamTools says SetEnv is U-Boot's own tools/env fw_setenv, whose -s script lines
	// read "name value". By default it is libubootenv's (Debian's libubootenv-tool, Yocto's
	// libubootenv), whose script lines read "name=value". Each tool ignores or rejects the
	// other's syntax, so every write is read back and checked.
	UpstreamTools bool
}

// UBoot drives U-Boot's A/B boot through fw_printenv and fw_setenv, with U-Boot's own
// boot-count variables: boot_part (the slot to boot), upgrade_available, bootcount and
// bootlimit, plus upkeep_committed (the slot to fall back to). Several variables are written in
// one fw_setenv call, which the tools write as one environment image (atomically with a
// redundant environment). The -s script is used rather than name/value pairs on the command
// line because U-Boot's own fw_setenv joins all arguments after the first into one value.
//
// The board's boot script does the rest. A sketch of the U-Boot side (bootcount enabled, with
// CONFIG_BOOTCOUNT_ENV so that U-Boot increments bootcount itself while upgrade_available=1):
//
//	# altbootcmd runs when bootcount > bootlimit: go back to the committed slot
//	setenv altbootcmd 'setenv boot_part ${upkeep_committed}; setenv upgrade_available 0; setenv bootcount 0; saveenv; run bootcmd'
//	# bootcmd boots boot_part (here SlotValues {a: "2", b: "3"}, the partition numbers) and
//	# tells the kernel the slot letter
//	setenv bootcmd 'if test ${boot_part} = 3; then setenv slot b; else setenv slot a; fi;
//	    setenv bootargs ${bootargs} root=/dev/mmcblk0p${boot_part} upkeep.slot=${slot}; run loadkernel; bootz ...'
type UBoot struct{ envBoot }

var _ Bootloader = (*UBoot)(nil)

type ubootEnv struct{ cfg UBootConfig }

func (u ubootEnv) list(ctx context.Context) (map[string]string, error) {
	out, err := output(ctx, u.cfg.PrintEnv, "-c", u.cfg.ConfigFile)
	if err != nil {
		return nil, fmt.Errorf("read u-boot environment: %w", err)
	}
	return parseEnv(out), nil
}

func (u ubootEnv) set(ctx context.Context, kv map[string]string) error {
	sep := "="
	if u.cfg.UpstreamTools {
		sep = " "
	}
	var script strings.Builder
	for _, k := range slices.Sorted(maps.Keys(kv)) {
		script.WriteString(k + sep + kv[k] + "\n")
	}
	f, err := os.CreateTemp("", "upkeep-fw_setenv-*")
	if err != nil {
		return fmt.Errorf("write u-boot environment: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = f.WriteString(script.String())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write u-boot environment: script: %w", err)
	}
	if err := runTool(ctx, u.cfg.SetEnv, "-c", u.cfg.ConfigFile, "-s", f.Name()); err != nil {
		return fmt.Errorf("write u-boot environment: %w", err)
	}
	env, err := u.list(ctx)
	if err != nil {
		return err
	}
	for _, k := range slices.Sorted(maps.Keys(kv)) {
		if env[k] != kv[k] {
			return fmt.Errorf("write u-boot environment: %s is %q after %s -s, want %q (check UpstreamTools)", k, env[k], u.cfg.SetEnv, kv[k])
		}
	}
	return nil
}

// NewUBoot makes the adapter. The environment must exist (fw_printenv must read it).
func NewUBoot(cfg UBootConfig) (*UBoot, error) {
	if cfg.ConfigFile == "" {
		cfg.ConfigFile = "/etc/fw_env.config"
	}
	if cfg.PrintEnv == "" {
		cfg.PrintEnv = "fw_printenv"
	}
	if cfg.SetEnv == "" {
		cfg.SetEnv = "fw_setenv"
	}
	if cfg.BootedSlot == nil {
		cfg.BootedSlot = CmdlineSlot("/proc/cmdline")
	}
	if cfg.RebootCommand == nil {
		cfg.RebootCommand = []string{"reboot"}
	}
	u := &UBoot{envBoot{
		store:      ubootEnv{cfg},
		vars:       envVars{Part: "boot_part", Committed: "upkeep_committed", Trying: "upgrade_available", Count: "bootcount", Limit: "bootlimit"},
		values:     cfg.SlotValues,
		bootedSlot: cfg.BootedSlot,
		reboot:     cfg.RebootCommand,
	}}
	if _, err := u.store.list(context.Background()); err != nil {
		return nil, err
	}
	return u, nil
}
