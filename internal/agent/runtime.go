package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// runtimeFile holds what the running agent tells `upkeep-agent status` about itself beyond the
// journal: when it next checks in. It is rewritten at each idle period, without fsync (after a
// power cut the agent starts over and writes it again), so the journal is not written for it.
const runtimeFile = "runtime.json"

// Runtime is the running agent's view of itself, for `upkeep-agent status`.
type Runtime struct {
	PID         int       `json:"pid"`
	NextCheckin time.Time `json:"next_checkin,omitzero"` // when the agent polls next
	PollSeconds int       `json:"poll_seconds"`          // the interval it polls at now
	// Push is the state of the push connection, when the agent keeps one (empty: polling only).
	Push      string    `json:"push,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

var runtimeMu sync.Mutex // the run loop and a push connection's goroutine both write the file

// noteIdle records when the agent checks in next.
func (a *Agent) noteIdle(next time.Time) {
	runtimeMu.Lock()
	a.runtime.NextCheckin, a.runtime.PollSeconds = next.UTC().Truncate(time.Second), int(a.poll/time.Second)
	rt := a.runtime
	runtimeMu.Unlock()
	a.writeRuntime(rt)
}

// SetPushState records the push connection's state ("connected", "reconnecting"...) for
// `upkeep-agent status`. Safe for concurrent use with the run loop.
func (a *Agent) SetPushState(state string) {
	runtimeMu.Lock()
	a.runtime.Push = state
	rt := a.runtime
	runtimeMu.Unlock()
	a.writeRuntime(rt)
}

func (a *Agent) writeRuntime(rt Runtime) {
	if a.cfg.Lightweight {
		return
	}
	rt.PID, rt.UpdatedAt = os.Getpid(), time.Now().UTC().Truncate(time.Second)
	b, _ := json.Marshal(rt) //nolint:errcheck // plain fields always marshal
	path := filepath.Join(a.cfg.StateDir, runtimeFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err == nil {
		err = os.Rename(tmp, path)
		if err != nil {
			a.log.Debug("runtime status", "err", err)
		}
	}
}

// ReadRuntime reads what the running agent last recorded; nil if it recorded nothing.
func ReadRuntime(stateDir string) (*Runtime, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, runtimeFile))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("agent runtime status: %w", err)
	}
	var rt Runtime
	if err := json.Unmarshal(b, &rt); err != nil {
		return nil, fmt.Errorf("agent runtime status: %w", err)
	}
	return &rt, nil
}
