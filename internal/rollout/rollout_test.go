package rollout

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/release"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// campaign is a running campaign in wave w with 100 members in waves of 10, 40 and 50.
func campaign(w int) *Campaign {
	return &Campaign{ID: "c1", State: StateRunning, Wave: w, Waves: []int{10, 50, 100}, SuccessThreshold: 0.9,
		FailureThreshold: 0.1, HealthGate: 5 * time.Minute, SilentAfter: 10 * time.Minute}
}

// members builds the members: counts per wave of each status, in order; the rest are pending.
func members(c *Campaign, spec map[int]map[string]int) []Member {
	var out []Member
	prev := 0
	for w, end := range c.Waves {
		n := 0
		for _, st := range statusOrder {
			for range spec[w][st] {
				out = append(out, Member{DeviceID: fmt.Sprintf("w%d-%d", w, n), Wave: w, Status: st, Since: t0.Add(-time.Hour), LastSeen: t0.Add(-time.Minute)})
				n++
			}
		}
		for ; n < end-prev; n++ {
			out = append(out, Member{DeviceID: fmt.Sprintf("w%d-%d", w, n), Wave: w, Status: MemberPending, Since: t0.Add(-time.Hour)})
		}
		prev = end
	}
	return out
}

var statusOrder = []string{MemberAssigned, MemberWaiting, MemberCommitted, MemberHealthy, MemberFailed, MemberSuperseded, MemberCancelled}

func TestPlanThresholds(t *testing.T) {
	tests := []struct {
		name     string
		wave     int
		spec     map[int]map[string]int
		assign   int // members to assign
		advance  bool
		pause    bool
		complete bool
	}{
		{name: "start releases the first wave", wave: 0, assign: 10},
		{name: "wave in flight: wait", wave: 0, spec: map[int]map[string]int{0: {MemberAssigned: 10}}},
		{name: "success just below threshold: wait", wave: 0, spec: map[int]map[string]int{0: {MemberHealthy: 8, MemberAssigned: 2}}},
		{name: "success at threshold: advance", wave: 0, spec: map[int]map[string]int{0: {MemberHealthy: 9, MemberAssigned: 1}}, advance: true, assign: 40},
		{name: "failures at threshold: carry on", wave: 0, spec: map[int]map[string]int{0: {MemberHealthy: 9, MemberFailed: 1}}, advance: true, assign: 40},
		{name: "failures above threshold: pause", wave: 0, spec: map[int]map[string]int{0: {MemberHealthy: 8, MemberFailed: 2}}, pause: true},
		{name: "superseded members do not count", wave: 0, spec: map[int]map[string]int{0: {MemberHealthy: 5, MemberFailed: 0, MemberSuperseded: 5}}, advance: true, assign: 40},
		{name: "failure share among the rest", wave: 0, spec: map[int]map[string]int{0: {MemberHealthy: 4, MemberFailed: 1, MemberSuperseded: 5}}, pause: true},
		{name: "waiting members neither succeed nor fail", wave: 0, spec: map[int]map[string]int{0: {MemberHealthy: 3, MemberWaiting: 7}}, advance: true, assign: 40},
		{name: "all waiting: wait", wave: 0, spec: map[int]map[string]int{0: {MemberWaiting: 10}}},
		{name: "late failures in an earlier wave pause", wave: 1, spec: map[int]map[string]int{0: {MemberHealthy: 8, MemberFailed: 2}, 1: {MemberAssigned: 40}}, pause: true},
		{name: "last wave done: complete", wave: 2, spec: map[int]map[string]int{0: {MemberHealthy: 10}, 1: {MemberHealthy: 40}, 2: {MemberHealthy: 45, MemberAssigned: 5}}, complete: true},
		{name: "pending members of a released wave go out", wave: 1, spec: map[int]map[string]int{0: {MemberHealthy: 10}, 1: {MemberAssigned: 30}}, assign: 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := campaign(tt.wave)
			d := Plan(c, members(c, tt.spec), t0)
			if len(d.Assign) != tt.assign || d.Advance != tt.advance || (d.Pause != "") != tt.pause || d.Complete != tt.complete {
				t.Fatalf("assign %d advance %t pause %q complete %t; want %d %t %t %t", len(d.Assign), d.Advance, d.Pause, d.Complete, tt.assign, tt.advance, tt.pause, tt.complete)
			}
			if tt.advance {
				for _, id := range d.Assign {
					if id[:2] != fmt.Sprintf("w%d", tt.wave+1) {
						t.Fatalf("advance assigned %s, outside wave %d", id, tt.wave+2)
					}
				}
			}
		})
	}
}

func TestPlanOnlyWhenRunning(t *testing.T) {
	for _, st := range []string{StateCreated, StatePaused, StateCancelled, StateCompleted} {
		c := campaign(0)
		c.State = st
		if d := Plan(c, members(c, nil), t0); len(d.Assign) != 0 || d.Advance || d.Complete || d.Pause != "" {
			t.Errorf("%s campaign: %+v, want nothing", st, d)
		}
	}
}

func TestPlanHealthGate(t *testing.T) {
	c := campaign(0)
	c.Waves = []int{3}
	ms := []Member{
		{DeviceID: "young", Status: MemberCommitted, Since: t0.Add(-2 * time.Minute), LastSeen: t0},                          // gate still running
		{DeviceID: "passed", Status: MemberCommitted, Since: t0.Add(-6 * time.Minute), LastSeen: t0.Add(-time.Second)},       // kept checking in
		{DeviceID: "silent", Status: MemberCommitted, Since: t0.Add(-20 * time.Minute), LastSeen: t0.Add(-11 * time.Minute)}, // went quiet after committing
	}
	d := Plan(c, ms, t0)
	if !slices.Equal(d.Healthy, []string{"passed"}) {
		t.Errorf("healthy %v, want [passed]", d.Healthy)
	}
	if _, ok := d.Unhealthy["silent"]; !ok || len(d.Unhealthy) != 1 {
		t.Errorf("unhealthy %v, want silent", d.Unhealthy)
	}
	if d.Pause == "" {
		t.Error("one of three failing the health gate is above 10%: want a pause")
	}
	// Not seen since committing, however long ago: never healthy.
	ms = []Member{{DeviceID: "unseen", Status: MemberCommitted, Since: t0.Add(-6 * time.Minute), LastSeen: t0.Add(-7 * time.Minute)}}
	c.Waves = []int{1}
	if d := Plan(c, ms, t0); len(d.Healthy) != 0 {
		t.Errorf("a device not seen since it committed passed the gate")
	}
}

func TestSizes(t *testing.T) {
	tests := []struct {
		spec string
		n    int
		want []int
		bad  bool
	}{
		{"", 7, []int{7}, false},
		{"1%,10%,50%,100%", 200, []int{2, 20, 100, 200}, false},
		{"1%,10%,50%,100%", 20, []int{1, 2, 10, 20}, false},
		{"1%,10%", 1000, []int{10, 100, 1000}, false},
		{"10,100", 1000, []int{10, 110, 1000}, false},
		{"10,100", 50, []int{10, 50}, false},
		{"exp:10", 100, []int{10, 30, 70, 100}, false},
		{"exp:1:10", 1000, []int{1, 11, 111, 1000}, false},
		{"10%,5%", 100, nil, true},
		{"10%,20", 100, nil, true},
		{"0%", 100, nil, true},
		{"exp:0", 100, nil, true},
		{"exp:1:1", 100, nil, true},
		{"-5", 100, nil, true},
		{"1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1", 100, nil, true},
	}
	for _, tt := range tests {
		got, err := Sizes(tt.spec, tt.n)
		if (err != nil) != tt.bad || !slices.Equal(got, tt.want) {
			t.Errorf("Sizes(%q, %d) = %v, %v; want %v (error %t)", tt.spec, tt.n, got, err, tt.want, tt.bad)
		}
	}
	if _, err := Sizes("", 0); err == nil {
		t.Error("no members: want an error")
	}
	sizes := []int{2, 20, 100}
	for i, want := range map[int]int{0: 0, 1: 0, 2: 1, 19: 1, 20: 2, 99: 2} {
		if got := WaveOf(sizes, i); got != want {
			t.Errorf("WaveOf(%d) = %d, want %d", i, got, want)
		}
	}
}

func TestTransition(t *testing.T) {
	ok := map[[2]string]string{
		{StateCreated, "start"}: StateRunning, {StateRunning, "pause"}: StatePaused, {StatePaused, "resume"}: StateRunning,
		{StateCreated, "cancel"}: StateCancelled, {StateRunning, "cancel"}: StateCancelled, {StatePaused, "cancel"}: StateCancelled,
	}
	for _, st := range []string{StateCreated, StateRunning, StatePaused, StateCompleted, StateCancelled} {
		for _, a := range []string{"start", "pause", "resume", "cancel", "explode"} {
			got, err := Transition(st, a)
			if want, allowed := ok[[2]string{st, a}]; allowed != (err == nil) || got != want {
				t.Errorf("Transition(%s, %s) = %q, %v", st, a, got, err)
			}
		}
	}
}

func TestNewer(t *testing.T) {
	a := &release.Release{SecurityVersion: 2, PublishedAt: t0}
	b := &release.Release{SecurityVersion: 1, PublishedAt: t0.Add(time.Hour)}
	c := &release.Release{SecurityVersion: 2, PublishedAt: t0.Add(time.Hour)}
	if !Newer(a, b) || Newer(b, a) || !Newer(c, a) || Newer(a, c) || Newer(a, a) {
		t.Error("Newer orders by security version, then publication")
	}
}

func TestFilter(t *testing.T) {
	f, err := ParseFilter("product=thermostat, region=eu-*, version!=1.0.*")
	if err != nil {
		t.Fatal(err)
	}
	if f.Product() != "thermostat" {
		t.Errorf("Product() = %q", f.Product())
	}
	for _, bad := range []string{"", "product", "=x", "a=[", ","} {
		if _, err := ParseFilter(bad); err == nil {
			t.Errorf("ParseFilter(%q) accepted", bad)
		}
	}
}

// TestFilterInventoryLists: an inventory list (a repeated key, stored joined by a line break)
// matches KEY=VALUE when one of its values does, and KEY!=VALUE when none does.
func TestFilterInventoryLists(t *testing.T) {
	d := &fleet.Device{Product: "thermostat", Attributes: map[string]string{"region": "eu-west", "ipv4": "10.0.0.2\n192.168.1.9"}}
	for _, tc := range []struct {
		filter string
		want   bool
	}{
		{"region=eu-*", true},
		{"attr.region=eu-west", true},
		{"region=us-*", false},
		{"ipv4=192.168.*", true},
		{"ipv4=10.0.0.2", true},
		{"ipv4=172.*", false},
		{"ipv4!=172.*", true},
		{"ipv4!=10.*", false},
		{"missing=*", true}, // an absent attribute is the empty value
		{"missing=?*", false},
	} {
		f, err := ParseFilter(tc.filter)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.Match(d); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.filter, got, tc.want)
		}
	}
}

func TestPlanReconcilesMissedCommits(t *testing.T) {
	c := campaign(0)
	c.Target = "p/1.1/fw"
	c.Waves = []int{2}
	ms := []Member{
		{DeviceID: "a", Status: MemberAssigned, Since: t0.Add(-time.Hour), Running: "p/1.1/fw"},
		{DeviceID: "b", Status: MemberAssigned, Since: t0.Add(-time.Hour), Running: "p/1.0/fw"},
	}
	d := Plan(c, ms, t0)
	if !slices.Equal(d.Reconciled, []string{"a"}) || ms[0].Status != MemberAssigned {
		t.Fatalf("reconciled %v (caller's member now %s), want [a] and the argument untouched", d.Reconciled, ms[0].Status)
	}
}

// TestPlanAssignTimeout: an assigned member that says nothing for the campaign's AssignTimeout
// is timed out, out of the wave's deciding members and not a failure.
func TestPlanAssignTimeout(t *testing.T) {
	tests := []struct {
		name      string
		timeout   time.Duration
		healthy   int
		assigned  int           // assigned members, each assigned age ago
		age       time.Duration // how long ago they were assigned
		timedOut  int           // members already timed out
		failed    int
		wantOut   int // members Plan times out now
		advance   bool
		wantPause bool
	}{
		{name: "no timeout: silent members hold the wave", timeout: 0, healthy: 8, assigned: 2, age: 48 * time.Hour},
		{name: "before the deadline: wait", timeout: 24 * time.Hour, healthy: 8, assigned: 2, age: 24*time.Hour - time.Second},
		{name: "at the deadline: timed out, the wave advances", timeout: 24 * time.Hour, healthy: 8, assigned: 2, age: 24 * time.Hour, wantOut: 2, advance: true},
		{name: "already timed out: out of the count", timeout: 24 * time.Hour, healthy: 8, timedOut: 2, advance: true},
		{name: "timed out is no failure", timeout: 24 * time.Hour, healthy: 7, failed: 1, timedOut: 2, advance: false},
		{name: "everyone timed out: no evidence, wait", timeout: 24 * time.Hour, assigned: 10, age: 48 * time.Hour, wantOut: 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := campaign(0)
			c.Waves, c.AssignTimeout, c.Target = []int{10, 20}, tt.timeout, "p/2/fw"
			var ms []Member
			add := func(n int, status string, since time.Time) {
				for range n {
					ms = append(ms, Member{DeviceID: fmt.Sprintf("m%d", len(ms)), Status: status, Since: since, Assigned: c.Target, LastSeen: t0.Add(-time.Minute)})
				}
			}
			add(tt.healthy, MemberHealthy, t0.Add(-time.Hour))
			add(tt.assigned, MemberAssigned, t0.Add(-tt.age))
			add(tt.timedOut, MemberTimedOut, t0.Add(-time.Hour))
			add(tt.failed, MemberFailed, t0.Add(-time.Hour))
			for i := range 10 {
				ms = append(ms, Member{DeviceID: fmt.Sprintf("next%d", i), Wave: 1, Status: MemberPending, Since: t0})
			}
			d := Plan(c, ms, t0)
			if len(d.TimedOut) != tt.wantOut || d.Advance != tt.advance || (d.Pause != "") != tt.wantPause {
				t.Fatalf("timed out %d, advance %t, pause %q; want %d, %t, %t", len(d.TimedOut), d.Advance, d.Pause, tt.wantOut, tt.advance, tt.wantPause)
			}
		})
	}
}

// TestPlanThresholdEdges: thresholds compare exactly at the edge, where floating point did not
// (0.29*100 > 28.99, 0.07*100 = 7.000000000000001), and a failure threshold of 0 pauses on the
// first failure.
func TestPlanThresholdEdges(t *testing.T) {
	tests := []struct {
		name             string
		success, failure float64
		healthy, failed  int // of 100 members in one wave; the rest assigned
		pause, complete  bool
	}{
		{name: "29 of 100 failed at 29%: carry on", success: 0.5, failure: 0.29, healthy: 0, failed: 29},
		{name: "30 of 100 failed at 29%: pause", success: 0.5, failure: 0.29, healthy: 0, failed: 30, pause: true},
		{name: "57 of 100 failed at 57%: carry on", success: 0.5, failure: 0.57, failed: 57},
		{name: "no failure at 0%: carry on", success: 0.5, failure: 0, healthy: 10},
		{name: "first failure at 0%: pause", success: 0.5, failure: 0, healthy: 10, failed: 1, pause: true},
		{name: "7 of 100 healthy at 7%: complete", success: 0.07, failure: 0.5, healthy: 7, complete: true},
		{name: "6 of 100 healthy at 7%: wait", success: 0.07, failure: 0.5, healthy: 6},
		{name: "95 of 100 healthy at 95%: complete", success: 0.95, failure: 0.05, healthy: 95, complete: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Campaign{ID: "c1", State: StateRunning, Wave: 0, Waves: []int{100}, SuccessThreshold: tt.success, FailureThreshold: tt.failure, SilentAfter: time.Hour}
			var ms []Member
			for i := range 100 {
				st := MemberAssigned
				switch {
				case i < tt.healthy:
					st = MemberHealthy
				case i < tt.healthy+tt.failed:
					st = MemberFailed
				}
				ms = append(ms, Member{DeviceID: fmt.Sprint(i), Status: st, Since: t0})
			}
			d := Plan(c, ms, t0)
			if (d.Pause != "") != tt.pause || d.Complete != tt.complete {
				t.Fatalf("pause %q complete %t; want pause %t complete %t", d.Pause, d.Complete, tt.pause, tt.complete)
			}
		})
	}
}

// TestPlanHealthGateNeedsALateCheckin: a committed device is healthy only once it checked in at
// or after the end of the health gate; the check-in right after its commit is not enough.
func TestPlanHealthGateNeedsALateCheckin(t *testing.T) {
	commit := t0.Add(-3 * time.Minute)
	tests := []struct {
		name    string
		gate    time.Duration
		seen    time.Time
		healthy bool
	}{
		{name: "seen only right after committing", gate: 2 * time.Minute, seen: commit.Add(time.Second)},
		{name: "seen just before the gate ended", gate: 2 * time.Minute, seen: commit.Add(2*time.Minute - time.Second)},
		{name: "seen as the gate ended", gate: 2 * time.Minute, seen: commit.Add(2 * time.Minute), healthy: true},
		{name: "seen after the gate ended", gate: 2 * time.Minute, seen: t0.Add(-time.Second), healthy: true},
		{name: "no gate: a check-in after the commit", gate: 0, seen: commit.Add(time.Second), healthy: true},
		{name: "no gate: not seen since committing", gate: 0, seen: commit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Campaign{ID: "c1", State: StateRunning, Wave: 0, Waves: []int{1}, SuccessThreshold: 1, FailureThreshold: 0.5, HealthGate: tt.gate, SilentAfter: time.Hour}
			d := Plan(c, []Member{{DeviceID: "d", Status: MemberCommitted, Since: commit, LastSeen: tt.seen}}, t0)
			if got := len(d.Healthy) == 1; got != tt.healthy {
				t.Fatalf("healthy %t, want %t", got, tt.healthy)
			}
		})
	}
}
