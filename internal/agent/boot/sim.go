package boot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// simEnv is the persisted environment of Sim, named after the U-Boot variables it models.
type simEnv struct {
	BootPart         Slot `json:"boot_part"`         // slot the next boot starts
	Committed        Slot `json:"committed"`         // slot to fall back to
	UpgradeAvailable int  `json:"upgrade_available"` // 1 while a trial is armed or running
	Bootcount        int  `json:"bootcount"`         // boots since the trial was armed
	Bootlimit        int  `json:"bootlimit"`         // trial boots allowed before falling back
	Booted           Slot `json:"booted"`            // slot started by the last power-on
}

func (e simEnv) validate() error {
	for _, s := range []Slot{e.BootPart, e.Committed, e.Booted} {
		if err := checkSlot(s); err != nil {
			return err
		}
	}
	switch {
	case e.UpgradeAvailable != 0 && e.UpgradeAvailable != 1:
		return fmt.Errorf("upgrade_available is %d, want 0 or 1", e.UpgradeAvailable)
	case e.Bootcount < 0:
		return fmt.Errorf("bootcount is %d, want >= 0", e.Bootcount)
	case e.Bootlimit < 1:
		return fmt.Errorf("bootlimit is %d, want >= 1", e.Bootlimit)
	}
	return nil
}

// Sim is a file-backed simulated boot loader with U-Boot semantics, for tests, the demo and
// the fleet simulator. Its environment is a small JSON file:
//
//	{"boot_part":"a","committed":"a","upgrade_available":0,"bootcount":0,"bootlimit":1,"booted":"a"}
//
// Every call reads the file, applies its change and writes it back with WriteFileAtomic, so
// the file is the only state and a simulated crash at any point leaves a consistent
// environment. Sim is safe for concurrent use by multiple goroutines; separate processes
// must not share one environment file.
type Sim struct {
	path string
	mu   sync.Mutex
}

var _ Bootloader = (*Sim)(nil)

// NewSim opens the environment file at path. If it is missing, NewSim creates it (and its
// folder) with slot a committed and booted and a bootlimit of 1. A corrupt file is an error
// naming the path.
func NewSim(path string) (*Sim, error) {
	s := &Sim{path: path}
	_, err := s.load()
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("boot env dir: %w", err)
		}
		err = s.save(simEnv{BootPart: SlotA, Committed: SlotA, Bootlimit: 1, Booted: SlotA})
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Sim) load() (simEnv, error) {
	var e simEnv
	b, err := os.ReadFile(s.path)
	if err != nil {
		return e, fmt.Errorf("read boot env: %w", err)
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return e, fmt.Errorf("corrupt boot env %s: %w", s.path, err)
	}
	if err := e.validate(); err != nil {
		return e, fmt.Errorf("corrupt boot env %s: %w", s.path, err)
	}
	return e, nil
}

func (s *Sim) save(e simEnv) error {
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode boot env: %w", err)
	}
	if err := WriteFileAtomic(s.path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save boot env: %w", err)
	}
	return nil
}

// update runs fn on the loaded environment under the lock and persists the result if fn
// changed it.
func (s *Sim) update(ctx context.Context, fn func(*simEnv)) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("boot env: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.load()
	if err != nil {
		return err
	}
	old := e
	fn(&e)
	if e == old {
		return nil // nothing changed: spare the flash a write
	}
	return s.save(e)
}

// PowerOn simulates the boot ROM and boot loader at power-on: during a trial it counts the
// boot and, once bootcount exceeds bootlimit, falls back to the committed slot and ends the
// trial; then it boots boot_part.
func (s *Sim) PowerOn(ctx context.Context) error {
	return s.update(ctx, func(e *simEnv) {
		if e.UpgradeAvailable == 1 {
			e.Bootcount++
			if e.Bootcount > e.Bootlimit {
				e.BootPart, e.UpgradeAvailable, e.Bootcount = e.Committed, 0, 0
			}
		}
		e.Booted = e.BootPart
	})
}

// Reboot implements Bootloader. It is a simulated power cycle, the same as PowerOn.
func (s *Sim) Reboot(ctx context.Context) error { return s.PowerOn(ctx) }

// TryNext implements Bootloader.
func (s *Sim) TryNext(ctx context.Context, slot Slot) error {
	if err := checkSlot(slot); err != nil {
		return fmt.Errorf("try next: %w", err)
	}
	return s.update(ctx, func(e *simEnv) {
		e.BootPart, e.UpgradeAvailable, e.Bootcount = slot, 1, 0
	})
}

// Commit implements Bootloader. It only acts once the armed slot has actually been booted.
func (s *Sim) Commit(ctx context.Context) error {
	return s.update(ctx, func(e *simEnv) {
		if e.UpgradeAvailable == 1 && e.Booted == e.BootPart {
			e.Committed, e.UpgradeAvailable, e.Bootcount = e.Booted, 0, 0
		}
	})
}

// Abort implements Bootloader.
func (s *Sim) Abort(ctx context.Context) error {
	return s.update(ctx, func(e *simEnv) {
		e.BootPart, e.UpgradeAvailable, e.Bootcount = e.Committed, 0, 0
	})
}

// State implements Bootloader.
func (s *Sim) State(ctx context.Context) (State, error) {
	if err := ctx.Err(); err != nil {
		return State{}, fmt.Errorf("boot env: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.load()
	if err != nil {
		return State{}, err
	}
	return State{
		Booted:    e.Booted,
		Committed: e.Committed,
		Trying:    e.UpgradeAvailable == 1 && e.Booted == e.BootPart && e.Booted != e.Committed,
	}, nil
}
