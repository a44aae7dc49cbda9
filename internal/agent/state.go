package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"upkeep.dev/upkeep/internal/agent/boot"
	"upkeep.dev/upkeep/internal/installpolicy"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/wire"
)

// Phases of the update journal. Each is written (fsync, rename) before the step it names is
// taken, so that after a power cut the agent knows what it was doing.
const (
	PhaseIdle        = "idle"
	PhaseDownloading = "downloading"  // streaming into the stage; Pending.Staged bytes are durable
	PhaseDownloaded  = "downloaded"   // complete, every signed hash matched
	PhaseInstalling  = "installing"   // Installer.Install running (idempotent)
	PhaseInstalled   = "installed"    // in place; a reboot may be next
	PhaseRebooting   = "rebooting"    // about to reboot into the trial
	PhaseVerifying   = "verifying"    // running the new image, health check under way
	PhaseCommitted   = "committed"    // the new image is permanent
	PhaseRollingBack = "rolling_back" // returning to the previous image
	PhaseFailed      = "failed"       // the update ended in failure; back to idle next
)

// Image is an installed or pending image.
type Image struct {
	Target          string    `json:"target"`
	Version         string    `json:"version"`
	SecurityVersion int64     `json:"security_version"`
	SHA256          string    `json:"sha256"`
	Length          int64     `json:"length,omitempty"`
	Slot            boot.Slot `json:"slot,omitempty"`   // A/B installer: the slot it goes to
	Staged          int64     `json:"staged,omitempty"` // bytes durably staged (download resume)
	Reboot          bool      `json:"reboot,omitempty"` // the installer asked for a reboot
	// HashFailures counts complete downloads whose hash differed from the signed one; the
	// image is fetched again from byte 0 until maxHashAttempts is reached.
	HashFailures int `json:"hash_failures,omitempty"`
	// Install is the director's signed install policy for this image; Waiting says why the
	// downloaded image is not installed yet (consent, maintenance window).
	Install *installpolicy.Policy `json:"install,omitempty"`
	Waiting string                `json:"waiting,omitempty"`
	// Delta is the delta this image is rebuilt from, and how far that got (nil: full image).
	Delta *DeltaPlan `json:"delta,omitempty"`
}

func (i *Image) where() string {
	if i.Slot != "" {
		return "slot " + string(i.Slot)
	}
	return ""
}

// CheckinBody is the check-in the agent sends in state st: what it runs, the journal's phase
// and the director version it trusts.
func (st *State) CheckinBody() wire.Checkin {
	i := st.Installed
	return wire.Checkin{Installed: wire.Installed{Target: i.Target, Version: i.Version, SecurityVersion: i.SecurityVersion, SHA256: i.SHA256}, State: st.Phase, DirectorVersion: st.DirectorVersion}
}

// State is the agent's persistent state and journal, kept in one file written atomically.
type State struct {
	DeviceID        string         `json:"device_id"`
	Identity        wire.Identity  `json:"identity"`
	Server          string         `json:"server"`
	Token           string         `json:"token,omitempty"`
	TokenExpires    time.Time      `json:"token_expires,omitzero"`
	Status          string         `json:"status"` // pending | accepted
	Installed       Image          `json:"installed"`
	DirectorVersion int64          `json:"director_version"` // director targets version last verified
	LastFullCheck   time.Time      `json:"last_full_check,omitzero"`
	FailedTarget    string         `json:"failed_target,omitempty"` // do not retry this image
	FailedSHA256    string         `json:"failed_sha256,omitempty"`
	LastError       string         `json:"last_error,omitempty"`
	Phase           string         `json:"phase"`
	Pending         *Image         `json:"pending,omitempty"`
	Outbox          []wire.Event   `json:"outbox,omitempty"` // events not yet reported
	Notice          *uptane.Notice `json:"notice,omitempty"` // lifecycle notice from the director
	// OptOut is the owner's opt-out of automatic updates, kept in its own file (SetOptOut) and
	// filled in by ReadStatus; the journal does not hold it.
	OptOut bool `json:"opt_out"`
}

const (
	stateFile   = "state.json"
	keyFile     = "device.key"
	consentFile = "consent"
	optOutFile  = "opt-out"
	maxOutbox   = 64
	dirMeta     = "director"
	imageMeta   = "image"
	rootFile    = "root.json"
)

func loadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no agent state in %s: run `upkeep-agent enroll` first: %w", dir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("read agent state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("agent state %s is corrupt: %w", filepath.Join(dir, stateFile), err)
	}
	if s.Phase == "" {
		s.Phase = PhaseIdle
	}
	return &s, nil
}

func saveState(dir string, s *State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode agent state: %w", err)
	}
	if err := boot.WriteFileAtomic(filepath.Join(dir, stateFile), b, 0o600); err != nil {
		return fmt.Errorf("save agent state: %w", err)
	}
	return nil
}

// ReadStatus reads the agent's state for `upkeep-agent status`, with the owner's opt-out.
func ReadStatus(dir string) (*State, error) {
	st, err := loadState(dir)
	if err != nil {
		return nil, err
	}
	st.OptOut = OptedOut(dir)
	return st, nil
}
