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
	// Days are the weekdays (UTC) the window opens on, "mon,wed,sat"; empty: every day. A
	// window spanning midnight belongs to the day it opens. An agent that predates the field
	// ignores it and installs in the window on any day: the server therefore assigns a
	// days-restricted campaign's devices only on its days (docs/ROLLOUTS.md).
	Days string `json:"days,omitempty"`
}

// Validate checks the policy's window and days, if it names them.
func (p *Policy) Validate() error {
	if p == nil {
		return nil
	}
	if p.Window != "" {
		if err := ValidWindow(p.Window); err != nil {
			return err
		}
	}
	return ValidDays(p.Days)
}

// Allows reports whether the policy lets a device install at t: no window (its own applies),
// a waived one, or t inside the window on one of its days.
func (p *Policy) Allows(t time.Time) bool {
	if p == nil || p.IgnoreWindow {
		return true
	}
	return InWindowOn(p.Window, p.Days, t)
}

var weekdays = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

// ParseDays parses comma-separated weekdays (mon, tue, wed, thu, fri, sat, sun; any case) into a
// set indexed by time.Weekday. Empty means every day.
func ParseDays(s string) ([7]bool, error) {
	var set [7]bool
	if strings.TrimSpace(s) == "" {
		for i := range set {
			set[i] = true
		}
		return set, nil
	}
	for _, part := range strings.Split(s, ",") {
		d, ok := weekdays[strings.ToLower(strings.TrimSpace(part))]
		if !ok {
			return set, fmt.Errorf("weekday %q: want mon, tue, wed, thu, fri, sat or sun, comma-separated", strings.TrimSpace(part))
		}
		set[d] = true
	}
	return set, nil
}

// ValidDays returns ParseDays's error, if any.
func ValidDays(s string) error {
	_, err := ParseDays(s)
	return err
}

// CanonicalDays writes a valid day list in week order, lower case: "mon,wed,sat".
func CanonicalDays(s string) string {
	set, err := ParseDays(s)
	if err != nil || strings.TrimSpace(s) == "" {
		return ""
	}
	var out []string
	for _, d := range []time.Weekday{time.Monday, time.Tuesday, time.Wednesday, time.Thursday, time.Friday, time.Saturday, time.Sunday} {
		if set[d] {
			out = append(out, strings.ToLower(d.String()[:3]))
		}
	}
	return strings.Join(out, ",")
}

// OnDay reports whether t (UTC) falls on one of days (empty: every day).
func OnDay(days string, t time.Time) bool {
	set, err := ParseDays(days)
	if err != nil {
		return false // an unreadable day list allows no day: fail closed
	}
	return set[t.UTC().Weekday()]
}

// InWindowOn reports whether t (taken in UTC) falls inside the window on one of days. The part
// of a window that spans midnight belongs to the day it opened: "23:00-01:00" on "sat" holds
// from Saturday 23:00 to Sunday 01:00. An empty window is the whole day; empty days are every
// day. A window that does not parse restricts nothing (as InWindow); days that do not parse
// allow nothing.
func InWindowOn(window, days string, t time.Time) bool {
	set, err := ParseDays(days)
	if err != nil {
		return false
	}
	t = t.UTC()
	if window == "" {
		return set[t.Weekday()]
	}
	start, end, err := ParseWindow(window)
	if err != nil {
		return true // no valid window: no restriction
	}
	m := t.Hour()*60 + t.Minute()
	switch {
	case start < end:
		return m >= start && m < end && set[t.Weekday()]
	case m >= start: // the evening part: opened today
		return set[t.Weekday()]
	case m < end: // the morning part: opened yesterday
		return set[t.AddDate(0, 0, -1).Weekday()]
	}
	return false
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

// InWindow reports whether t (taken in UTC) falls inside the window, on any day. A window that
// does not parse restricts nothing. InWindowOn also takes weekdays.
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
