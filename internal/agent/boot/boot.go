// Package boot is the device agent's A/B boot layer. The agent writes a new image into the
// inactive slot (Slots), arms a one-shot trial boot of that slot (Bootloader.TryNext), reboots,
// checks its health and then commits the slot (Bootloader.Commit). If the new image never
// commits, the boot loader falls back to the last committed slot on its own.
//
// Every state file the package writes goes through WriteFileAtomic (temp file, fsync, rename,
// fsync of the folder), so a power cut leaves either the old or the new content, never a mix.
package boot

import (
	"context"
	"fmt"
)

// Slot names one of the two A/B image slots. Its string form is persisted.
type Slot string

// The two slots.
const (
	SlotA Slot = "a"
	SlotB Slot = "b"
)

// Other returns the opposite slot: SlotB for SlotA and SlotA for SlotB. It returns "" for an
// invalid slot.
func (s Slot) Other() Slot {
	switch s {
	case SlotA:
		return SlotB
	case SlotB:
		return SlotA
	}
	return ""
}

func (s Slot) valid() bool { return s == SlotA || s == SlotB }

// ParseSlot parses "a" or "b" (also "A" or "B").
func ParseSlot(s string) (Slot, error) {
	switch s {
	case "a", "A":
		return SlotA, nil
	case "b", "B":
		return SlotB, nil
	}
	return "", fmt.Errorf("invalid boot slot %q: want \"a\" or \"b\"", s)
}

func checkSlot(s Slot) error {
	if !s.valid() {
		return fmt.Errorf("invalid boot slot %q: want \"a\" or \"b\"", string(s))
	}
	return nil
}

// State is what the boot loader reports after a boot.
type State struct {
	Booted    Slot // slot the system is running now
	Committed Slot // slot the boot loader falls back to (the last committed one)
	Trying    bool // Booted is on trial: not committed yet
}

// Bootloader is the agent's view of an A/B boot loader (U-Boot's
// upgrade_available/bootcount/bootlimit model).
//
// Implementations must be safe for concurrent use by multiple goroutines; each method is
// atomic with respect to the others. Every method returns ctx.Err() (possibly wrapped) if ctx
// is done before it starts, an error for an invalid slot, and a wrapped I/O error if the boot
// environment cannot be read or persisted; in that case the environment is left as it was
// before the call. Changes are persisted before a method returns nil, so they survive a power
// cut.
type Bootloader interface {
	// State reads the current boot state.
	State(ctx context.Context) (State, error)
	// TryNext arms a one-shot trial boot of slot at the next boot. If the trial is not
	// committed within the boot limit, the boot loader boots Committed again.
	TryNext(ctx context.Context, slot Slot) error
	// Commit makes the booted slot the committed one and ends the trial. No-op if not trying.
	Commit(ctx context.Context) error
	// Abort ends a trial: the next boot starts the committed slot. No-op if nothing armed.
	Abort(ctx context.Context) error
	// Reboot restarts the device. On real hardware it does not return on success;
	// the simulator performs a simulated power cycle and returns nil.
	Reboot(ctx context.Context) error
}
