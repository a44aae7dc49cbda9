// Package installpolicy says when a device may install an image it has verified: the owner's
// consent, a maintenance window, and a campaign's waiver of that window. The server signs a
// Policy into the director target's custom fields (package uptane), so a network attacker cannot
// waive consent or a window; the agent's install gate reads it back.
//
// ParseWindow is the one parser of maintenance windows: campaigns, groups, the agent's own
// window and the signed policy all go through it.
package installpolicy

import (
	"fmt"
	"strings"
	"time"
)

// Policy tells a device when it may install its assigned image.
type Policy struct {
	Campaign     string `json:"campaign,omitempty"`
	Consent      bool   `json:"consent,omitempty"`       // wait for the owner's consent
	Window       string `json:"window,omitempty"`        // HH:MM-HH:MM UTC; empty: the device's own
	IgnoreWindow bool   `json:"ignore_window,omitempty"` // critical: install outside any window
}

// Validate checks the policy's window, if it names one.
func (p *Policy) Validate() error {
	if p == nil || p.Window == "" {
		return nil
	}
	return ValidWindow(p.Window)
}

// ParseWindow parses a maintenance window "HH:MM-HH:MM" (UTC) into minutes after midnight. A
// window whose end is before its start spans midnight.
func ParseWindow(s string) (start, end int, err error) {
	a, b, ok := strings.Cut(s, "-")
	if ok {
		if start, err = hhmm(a); err == nil {
			end, err = hhmm(b)
		}
	}
	if !ok || err != nil || start == end {
		return 0, 0, fmt.Errorf("maintenance window %q: want HH:MM-HH:MM, start and end different", s)
	}
	return start, end, nil
}

// ValidWindow returns ParseWindow's error, if any.
func ValidWindow(s string) error {
	_, _, err := ParseWindow(s)
	return err
}

func hhmm(s string) (int, error) {
	t, err := time.Parse("15:04", strings.TrimSpace(s))
	if err != nil {
		return 0, err
	}
	return t.Hour()*60 + t.Minute(), nil
}

// InWindow reports whether t (taken in UTC) falls inside the window. A window that does not
// parse restricts nothing.
func InWindow(window string, t time.Time) bool {
	start, end, err := ParseWindow(window)
	if err != nil {
		return true // no valid window: no restriction
	}
	t = t.UTC()
	m := t.Hour()*60 + t.Minute()
	if start < end {
		return m >= start && m < end
	}
	return m >= start || m < end
}
