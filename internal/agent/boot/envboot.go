package boot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
)

// envVars names the boot-environment variables of the A/B scheme.
type envVars struct {
	Part      string // slot to boot next
	Committed string // slot to fall back to
	Trying    string // "1" while a trial is armed or running
	Count     string // boots of the trial so far (the firmware increments it)
	Limit     string // boots allowed before falling back
}

// envStore reads and writes a boot environment through a vendor tool.
type envStore interface {
	list(ctx context.Context) (map[string]string, error)
	set(ctx context.Context, kv map[string]string) error // one write for all variables
}

// envBoot implements Bootloader over a boot environment: U-Boot's and GRUB's share it.
// mu makes each method's read-modify-write atomic with respect to the others in this process.
type envBoot struct {
	mu         sync.Mutex
	store      envStore
	vars       envVars
	values     map[Slot]string // how slots are spelt in the environment
	bootedSlot func(ctx context.Context) (Slot, error)
	reboot     []string
}

func (b *envBoot) slotValue(s Slot) string {
	if v, ok := b.values[s]; ok {
		return v
	}
	return string(s)
}

func (b *envBoot) parseSlot(v string) (Slot, bool) {
	for s, sv := range b.values {
		if sv == v {
			return s, true
		}
	}
	s, err := ParseSlot(v)
	return s, err == nil
}

type envState struct {
	booted, part, committed Slot
	trying                  bool
}

func (b *envBoot) read(ctx context.Context) (envState, map[string]string, error) {
	booted, err := b.bootedSlot(ctx)
	if err != nil {
		return envState{}, nil, fmt.Errorf("booted slot: %w", err)
	}
	env, err := b.store.list(ctx)
	if err != nil {
		return envState{}, nil, err
	}
	st := envState{booted: booted, part: booted, committed: booted}
	if s, ok := b.parseSlot(env[b.vars.Part]); ok {
		st.part = s
	}
	if s, ok := b.parseSlot(env[b.vars.Committed]); ok {
		st.committed = s
	}
	st.trying = env[b.vars.Trying] == "1"
	return st, env, nil
}

// State implements Bootloader.
func (b *envBoot) State(ctx context.Context) (State, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st, _, err := b.read(ctx)
	if err != nil {
		return State{}, err
	}
	return State{Booted: st.booted, Committed: st.committed, Trying: st.trying && st.booted == st.part && st.booted != st.committed}, nil
}

// TryNext implements Bootloader.
func (b *envBoot) TryNext(ctx context.Context, slot Slot) error {
	if err := checkSlot(slot); err != nil {
		return fmt.Errorf("try next: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	st, env, err := b.read(ctx)
	if err != nil {
		return err
	}
	kv := map[string]string{b.vars.Part: b.slotValue(slot), b.vars.Trying: "1", b.vars.Count: "0", b.vars.Committed: b.slotValue(st.committed)}
	if _, err := strconv.Atoi(env[b.vars.Limit]); err != nil {
		kv[b.vars.Limit] = "1"
	}
	return b.store.set(ctx, kv)
}

// Commit implements Bootloader.
func (b *envBoot) Commit(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	st, _, err := b.read(ctx)
	if err != nil {
		return err
	}
	if !st.trying || st.booted != st.part {
		return nil
	}
	return b.store.set(ctx, map[string]string{b.vars.Committed: b.slotValue(st.booted), b.vars.Trying: "0", b.vars.Count: "0"})
}

// Abort implements Bootloader.
func (b *envBoot) Abort(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	st, _, err := b.read(ctx)
	if err != nil {
		return err
	}
	return b.store.set(ctx, map[string]string{b.vars.Part: b.slotValue(st.committed), b.vars.Trying: "0", b.vars.Count: "0"})
}

// Reboot implements Bootloader: it runs the reboot command, which does not return on success.
func (b *envBoot) Reboot(ctx context.Context) error {
	if len(b.reboot) == 0 {
		return errors.New("no reboot command configured")
	}
	return runTool(ctx, b.reboot[0], b.reboot[1:]...)
}

func runTool(ctx context.Context, name string, args ...string) error {
	_, err := output(ctx, name, args...)
	return err
}

func output(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		if msg := strings.TrimSpace(errb.String()); msg != "" {
			return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
		}
		return "", fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return out.String(), nil
}

// parseEnv reads NAME=value lines.
func parseEnv(s string) map[string]string {
	env := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			env[k] = v
		}
	}
	return env
}

// CmdlineSlot reads the booted slot from the kernel command line: upkeep.slot=a|b, which the
// boot script appends (see the UBoot and GRUB docs).
func CmdlineSlot(path string) func(ctx context.Context) (Slot, error) {
	return func(ctx context.Context) (Slot, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("kernel command line: %w", err)
		}
		for _, f := range strings.Fields(string(b)) {
			if v, ok := strings.CutPrefix(f, "upkeep.slot="); ok {
				return ParseSlot(v)
			}
		}
		return "", fmt.Errorf("%s has no upkeep.slot= parameter", path)
	}
}
