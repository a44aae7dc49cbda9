// Package rollout holds campaigns: a release rolled out to a set of devices in waves, with
// success and failure thresholds, a post-install health gate, consent and maintenance-window
// policy, and supersession. The state machine (Plan) is pure: it reads a campaign and its
// members at an instant and says what to do. The Engine applies its decisions through ports.
package rollout

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
)

// Campaign states.
const (
	StateCreated   = "created"
	StateScheduled = "scheduled" // created with a start time; the engine starts it then
	StateRunning   = "running"
	StatePaused    = "paused"
	StateCompleted = "completed"
	StateCancelled = "cancelled"
)

// Member statuses: where one device stands in one campaign.
const (
	MemberPending    = "pending"    // in a wave not yet released
	MemberAssigned   = "assigned"   // the director names the release; the device has not finished
	MemberTimedOut   = "timedout"   // assigned for AssignTimeout without a word from the device
	MemberWaiting    = "waiting"    // downloaded; waits for its owner's consent or its maintenance window
	MemberCommitted  = "committed"  // installed and committed; the health gate runs
	MemberHealthy    = "healthy"    // committed and kept checking in for the health gate's duration
	MemberFailed     = "failed"     // install failed, rolled back, or the health gate failed
	MemberSuperseded = "superseded" // a newer campaign took the device over
	MemberCancelled  = "cancelled"  // the campaign was cancelled before the device finished
)

// Campaign is one rollout of a release.
type Campaign struct {
	ID       string
	Release  string // product@version
	Target   string // TUF target name of the release
	Product  string
	Selector string // what the operator targeted: "group:NAME" or a filter
	Class    string // security | feature
	// Waves are the cumulative member counts at the end of each wave; the last equals the
	// number of members.
	Waves            []int
	WaveSpec         string  // as the operator wrote it
	SuccessThreshold float64 // share of a wave's deciding members that must be healthy to advance
	FailureThreshold float64 // share of a released wave's members whose failure pauses the campaign
	// HealthGate is how long a committed device must keep checking in before it counts as
	// healthy: it must check in at or after commit+HealthGate. One silent for SilentAfter after
	// committing fails the gate.
	HealthGate  time.Duration
	SilentAfter time.Duration
	// AssignTimeout is how long an assigned member may stay silent (no install started, no
	// commit, no failure) before it counts as timed out: neither success nor failure, out of
	// the wave's deciding members. 0: never.
	AssignTimeout time.Duration
	// Stale is how many targeted devices were left out at creation because they had not checked
	// in for the campaign's stale-after time.
	Stale int
	// Install policy sent to devices in the signed director metadata.
	Consent      bool   // soft: the owner must consent before install
	Window       string // HH:MM-HH:MM (UTC); empty: the device's own window
	IgnoreWindow bool   // a critical campaign installs outside maintenance windows
	// Days are the weekdays (UTC) its window opens on ("mon,wed,sat"; empty: every day).
	// Members are assigned only on those days (installpolicy.Policy.Days).
	Days string
	// Dynamic campaigns take in devices that start to match the target after creation (newly
	// enrolled, accepted, or with changed attributes) into the current wave, until Until (zero:
	// until cancelled). They do not complete before Until.
	Dynamic bool
	Until   time.Time
	// StartAt is when a scheduled campaign starts (state scheduled until then); zero: none.
	StartAt     time.Time
	Actor       string // who created it
	State       string
	Wave        int // index of the newest released wave; -1 before start
	PauseReason string
	// Baseline holds, per wave, how many members had failed when an operator last resumed the
	// campaign: they accepted those failures, so the failure threshold judges only the ones
	// after. Nil before the first resume.
	Baseline  []int
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Member is one device's place in a campaign.
type Member struct {
	DeviceID string
	Wave     int
	Status   string
	Since    time.Time // when Status last changed
	Detail   string    // why, for failed, waiting and superseded members
	LastSeen time.Time // the device's last check-in, for the health gate
	Running  string    // target the device last reported running
	Assigned string    // target the director names for the device now
	// Downloaded is what the device fetched for the campaign's image (a delta or the whole
	// image) and ImageLength that image's length, from its download report; 0 before it.
	Downloaded, ImageLength int64
}

// Defaults for thresholds and the health gate.
const (
	DefaultSuccess     = 0.95
	DefaultFailure     = 0.05
	DefaultHealthGate  = 2 * time.Minute
	DefaultSilentAfter = 10 * time.Minute
	// DefaultAssignTimeout: a day covers a device that polls hourly and installs in a nightly
	// maintenance window; one silent longer is most likely off.
	DefaultAssignTimeout = 24 * time.Hour
	// DefaultStaleAfter: devices not seen for a week are left out of a new campaign.
	DefaultStaleAfter = 7 * 24 * time.Hour
	MaxWaves          = 32
)

// Counts are the members of one wave by status.
type Counts map[string]int

// Total is the number of members counted.
func (c Counts) Total() int {
	n := 0
	for _, v := range c {
		n += v
	}
	return n
}

// Baseline counts, per wave, the members failed now: what a resume accepts.
func Baseline(c *Campaign, members []Member) []int {
	out := make([]int, len(c.Waves))
	for i, k := range WaveCounts(c, members) {
		out[i] = k[MemberFailed]
	}
	return out
}

// WaveCounts counts members per wave.
func WaveCounts(c *Campaign, members []Member) []Counts {
	out := make([]Counts, len(c.Waves))
	for i := range out {
		out[i] = Counts{}
	}
	for _, m := range members {
		if m.Wave >= 0 && m.Wave < len(out) {
			out[m.Wave][m.Status]++
		}
	}
	return out
}

// Decision is what Plan says to do now.
type Decision struct {
	// Reconciled are assigned or waiting members whose device already reports the campaign's
	// image: their commit report was missed (it raced the assignment, or a replica died
	// between storing it and handing it on). They count as committed from now.
	Reconciled []string
	Assign     []string          // members to assign now
	Healthy    []string          // committed members that passed the health gate
	TimedOut   []string          // assigned members silent for the campaign's AssignTimeout
	Unhealthy  map[string]string // committed members that failed the health gate, with why
	Advance    bool              // the next wave is released (its members are in Assign)
	Pause      string            // non-empty: pause with this reason
	Complete   bool
}

// Plan is the state machine. Given a running campaign and all its members at now, it decides
// which members to assign, which committed members passed or failed the health gate, and
// whether the campaign advances, pauses or completes. It never changes its arguments.
//
// A wave's deciding members exclude superseded, cancelled and waiting (owner consent or
// window) members, an owner's choice being neither success nor failure, timed-out members (an
// assignment AssignTimeout old with no word from the device: most likely off), and the failures
// an operator accepted by resuming. A wave of only timed-out members does not advance: nothing
// shows the release works. A wave advances when
// healthy/deciding >= SuccessThreshold (with at least one healthy member, or every member out of
// the wave). The campaign pauses when failed/members > FailureThreshold in any released wave,
// counting only failures past the wave's Baseline (those an operator accepted by resuming) out
// of the members not already failed then.
func Plan(c *Campaign, members []Member, now time.Time) Decision {
	var d Decision
	if c.State != StateRunning {
		return d
	}
	healthy := map[string]bool{}
	members = slices.Clone(members) // reconciled members change below; the caller's stay as they are
	for i, m := range members {
		if slices.Contains(inFlight, m.Status) && m.Running != "" && m.Running == c.Target {
			d.Reconciled = append(d.Reconciled, m.DeviceID)
			m.Status, m.Since = MemberCommitted, now
			members[i] = m
		}
	}
	timedOut := map[string]bool{}
	for _, m := range members {
		if m.Status == MemberAssigned && m.Assigned == c.Target && m.Wave <= c.Wave && c.AssignTimeout > 0 && now.Sub(m.Since) >= c.AssignTimeout {
			d.TimedOut = append(d.TimedOut, m.DeviceID)
			timedOut[m.DeviceID] = true
		}
		if m.Status != MemberCommitted || m.Wave > c.Wave {
			continue
		}
		seen := m.LastSeen
		if seen.Before(m.Since) {
			seen = m.Since // not seen since committing: the gate counts from the commit
		}
		switch {
		case now.Sub(seen) > c.SilentAfter:
			if d.Unhealthy == nil {
				d.Unhealthy = map[string]string{}
			}
			d.Unhealthy[m.DeviceID] = fmt.Sprintf("health gate: silent for %s after committing", now.Sub(seen).Round(time.Second))
		case now.Sub(m.Since) >= c.HealthGate && m.LastSeen.After(m.Since) && !m.LastSeen.Before(m.Since.Add(c.HealthGate)):
			// Still checking in when the gate ended: one check-in right after committing says
			// nothing about the minutes after.
			d.Healthy = append(d.Healthy, m.DeviceID)
			healthy[m.DeviceID] = true
		}
	}
	counts := WaveCounts(c, members)
	for _, m := range members { // the health gate's verdicts count now
		if m.Wave < 0 || m.Wave >= len(counts) {
			continue
		}
		if timedOut[m.DeviceID] {
			counts[m.Wave][MemberAssigned]--
			counts[m.Wave][MemberTimedOut]++
		} else if healthy[m.DeviceID] {
			counts[m.Wave][MemberCommitted]--
			counts[m.Wave][MemberHealthy]++
		} else if _, bad := d.Unhealthy[m.DeviceID]; bad {
			counts[m.Wave][MemberCommitted]--
			counts[m.Wave][MemberFailed]++
		}
	}
	for w := 0; w <= c.Wave && w < len(counts); w++ {
		k := counts[w]
		base := 0
		if w < len(c.Baseline) {
			base = min(c.Baseline[w], k[MemberFailed])
		}
		n := k.Total() - k[MemberSuperseded] - k[MemberCancelled] - base
		failed := k[MemberFailed] - base
		if n > 0 && failed*basisPoints > bp(c.FailureThreshold)*n {
			d.Pause = fmt.Sprintf("wave %d: %d of %d devices failed or rolled back (threshold %s)", w+1, failed, n, pct(c.FailureThreshold))
			if base > 0 {
				d.Pause += fmt.Sprintf(" since the resume, which accepted %d", base)
			}
			return d
		}
	}
	release := func(w int) {
		for _, m := range members {
			// Pending members go out; so do assigned ones the director does not name the image
			// for (the engine was stopped between marking and signing them).
			if m.Wave == w && (m.Status == MemberPending || m.Status == MemberAssigned && m.Assigned != c.Target) {
				d.Assign = append(d.Assign, m.DeviceID)
			}
		}
	}
	for w := 0; w <= c.Wave && w < len(counts); w++ {
		release(w) // a wave's members still pending (a restart between two writes) go out now
	}
	if c.Wave < 0 {
		return d
	}
	cur := min(c.Wave, len(counts)-1)
	k := counts[cur]
	deciding := k.Total() - k[MemberSuperseded] - k[MemberCancelled] - k[MemberWaiting] - k[MemberTimedOut]
	if cur < len(c.Baseline) {
		deciding -= min(c.Baseline[cur], k[MemberFailed]) // failures a resume accepted decide nothing
	}
	done := deciding <= 0 && k[MemberWaiting] == 0 && k[MemberTimedOut] == 0 ||
		deciding > 0 && k[MemberHealthy] > 0 && k[MemberHealthy]*basisPoints >= bp(c.SuccessThreshold)*deciding
	if !done {
		return d
	}
	if c.Wave+1 < len(c.Waves) {
		d.Advance = true
		release(c.Wave + 1)
		return d
	}
	if c.Dynamic && (c.Until.IsZero() || now.Before(c.Until)) {
		return d // still taking devices in
	}
	d.Complete = true
	return d
}

// basisPoints is one whole in basis points. Thresholds are compared in integers, counts times
// 10,000 against basis points times counts: in floating point 0.29*100 is 28.999999999999996,
// and 29 failures of 100 paused a campaign whose threshold was 29%.
const basisPoints = 10000

// bp is a share in basis points, to the nearest.
func bp(share float64) int { return int(math.Round(share * basisPoints)) }

func pct(f float64) string {
	return strconv.FormatFloat(f*100, 'f', -1, 64) + "%"
}

// Sizes turns a wave specification into cumulative member counts for n members.
//
//	"1%,10%,50%,100%"  cumulative shares (rounded up, at least one device each)
//	"10,100,1000"      per-wave counts; members past the last count form a final wave
//	"exp:10:2"         10 devices, then doubling each wave, until everyone is in
//
// An empty spec is one wave of everyone.
func Sizes(spec string, n int) ([]int, error) {
	if n <= 0 {
		return nil, apperr.E(apperr.Invalid, "the campaign targets no device")
	}
	spec = strings.TrimSpace(spec)
	var out []int
	add := func(c int) {
		c = min(max(c, 1), n)
		if len(out) == 0 || c > out[len(out)-1] {
			out = append(out, c)
		}
	}
	switch {
	case spec == "":
		add(n)
	case strings.HasPrefix(spec, "exp:"):
		parts := strings.Split(spec[4:], ":")
		first, err1 := strconv.Atoi(parts[0])
		factor := 2.0
		var err2 error
		if len(parts) == 2 {
			factor, err2 = strconv.ParseFloat(parts[1], 64)
		}
		if len(parts) > 2 || err1 != nil || err2 != nil || first < 1 || factor <= 1 {
			return nil, apperr.E(apperr.Invalid, "wave rate %q: want exp:FIRST[:FACTOR], FIRST ≥ 1, FACTOR > 1", spec)
		}
		size, total := float64(first), 0
		for total < n {
			total += int(math.Ceil(size))
			add(total)
			size *= factor
		}
	default:
		parts := strings.Split(spec, ",")
		percent := strings.HasSuffix(strings.TrimSpace(parts[0]), "%")
		total := 0
		for _, p := range parts {
			p = strings.TrimSpace(p)
			if strings.HasSuffix(p, "%") != percent {
				return nil, apperr.E(apperr.Invalid, "waves %q: use shares (1%%,10%%,100%%) or counts (10,100), not both", spec)
			}
			if percent {
				v, err := strconv.ParseFloat(strings.TrimSuffix(p, "%"), 64)
				if err != nil || v <= 0 || v > 100 {
					return nil, apperr.E(apperr.Invalid, "wave %q: want a share in (0%%, 100%%]", p)
				}
				c := int(math.Ceil(v / 100 * float64(n)))
				if len(out) > 0 && c <= out[len(out)-1] && c < n {
					return nil, apperr.E(apperr.Invalid, "waves %q: shares are cumulative and must grow", spec)
				}
				add(c)
				continue
			}
			v, err := strconv.Atoi(p)
			if err != nil || v < 1 {
				return nil, apperr.E(apperr.Invalid, "wave size %q: want a positive count", p)
			}
			total += v
			add(total)
		}
		add(n) // the rest, if the spec stopped short
	}
	if len(out) > MaxWaves {
		return nil, apperr.E(apperr.Invalid, "waves %q make %d waves; at most %d", spec, len(out), MaxWaves)
	}
	return out, nil
}

// WaveOf gives the wave of the i-th member (0-based) under cumulative sizes.
func WaveOf(sizes []int, i int) int {
	w, _ := slices.BinarySearch(sizes, i+1)
	return w
}

// Transition checks an operator action against the campaign's state and returns the new state.
func Transition(state, action string) (string, error) {
	next := map[string]map[string]string{
		"start":  {StateCreated: StateRunning, StateScheduled: StateRunning},
		"pause":  {StateRunning: StatePaused},
		"resume": {StatePaused: StateRunning},
		"cancel": {StateCreated: StateCancelled, StateScheduled: StateCancelled, StateRunning: StateCancelled, StatePaused: StateCancelled},
	}
	to, ok := next[action]
	if !ok {
		return "", apperr.E(apperr.Invalid, "unknown action %q: start, pause, resume or cancel", action)
	}
	s, ok := to[state]
	if !ok {
		return "", apperr.E(apperr.Conflict, "cannot %s a %s campaign", action, state)
	}
	return s, nil
}
