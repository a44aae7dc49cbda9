package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/rollout"
)

func testLeases(t *testing.T, s Store) {
	acquire := func(holder string, ttl time.Duration, want bool) {
		t.Helper()
		got, err := s.AcquireLease(ctx, "engine", holder, ttl)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("AcquireLease(%s) = %t, want %t", holder, got, want)
		}
	}
	acquire("a", time.Minute, true)  // free
	acquire("b", time.Minute, false) // held by another
	acquire("a", time.Minute, true)  // renewed by its holder
	if ok, err := s.AcquireLease(ctx, "other", "b", time.Minute); err != nil || !ok {
		t.Fatalf("another lease: %t, %v; want it free", ok, err)
	}
	acquire("a", 100*time.Millisecond, true) // renewed, shorter
	acquire("b", time.Minute, false)
	time.Sleep(300 * time.Millisecond) // past expiry by the database's clock
	acquire("b", time.Minute, true)    // expired: another takes it
	acquire("a", time.Minute, false)
}

func testCampaigns(t *testing.T, s Store) {
	c := &rollout.Campaign{ID: "c1", Release: "p@1", Target: "p/1/fw", Product: "p", Selector: "product=p", Waves: []int{2, 3},
		SuccessThreshold: 0.95, FailureThreshold: 0.05, State: rollout.StateCreated, Wave: -1, CreatedAt: t0, UpdatedAt: t0}
	ms := []rollout.Member{{DeviceID: "d1", Wave: 0, Status: rollout.MemberPending, Since: t0}, {DeviceID: "d2", Wave: 0, Status: rollout.MemberPending, Since: t0},
		{DeviceID: "d3", Wave: 1, Status: rollout.MemberPending, Since: t0}}
	if err := s.CreateCampaign(ctx, c, ms); err != nil {
		t.Fatal(err)
	}
	got, err := s.FindCampaign(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(c, got); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
	c.State, c.Wave, c.Baseline = rollout.StateRunning, 0, []int{1, 0}
	if err := s.UpdateCampaign(ctx, c, rollout.StateCreated); err != nil {
		t.Fatal(err)
	}
	wantCode(t, s.UpdateCampaign(ctx, c, rollout.StateCreated), apperr.Conflict)
	if got, err = s.FindCampaign(ctx, "c1"); err != nil || !slices.Equal(got.Baseline, []int{1, 0}) {
		t.Fatalf("baseline %v, %v; want [1 0]", got.Baseline, err)
	}

	// Only members still in a from status move, and MoveMembers says which.
	moved, err := s.MoveMembers(ctx, "c1", []string{"d1", "d2"}, []string{rollout.MemberPending}, rollout.MemberAssigned, "", t0)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(moved)
	if !slices.Equal(moved, []string{"d1", "d2"}) {
		t.Fatalf("moved %v, want [d1 d2]", moved)
	}
	moved, err = s.MoveMembers(ctx, "c1", []string{"d1", "d2", "d3"}, []string{rollout.MemberPending}, rollout.MemberAssigned, "", t0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(moved, []string{"d3"}) {
		t.Fatalf("moved %v, want only the pending d3", moved)
	}

	// The campaign lock is released by unlock, and taken again after it.
	for range 2 {
		unlock, err := s.LockCampaign(ctx, "c1")
		if err != nil {
			t.Fatal(err)
		}
		unlock()
	}
}

// testDynamicCampaigns: a campaign's weekday days, dynamic intake and scheduled start round
// trip; AddMembers adds only devices not yet members; a group keeps its window's weekdays.
func testDynamicCampaigns(t *testing.T, s Store) {
	c := &rollout.Campaign{ID: "dyn1", Release: "p@1", Target: "p/1/fw", Product: "p", Selector: "region=eu-*", Waves: []int{1},
		SuccessThreshold: 0.95, FailureThreshold: 0.05, State: rollout.StateScheduled, Wave: -1, Window: "02:00-04:00", Days: "mon,wed,sat",
		Dynamic: true, Until: t0.Add(48 * time.Hour), StartAt: t0.Add(time.Hour), CreatedAt: t0, UpdatedAt: t0}
	if err := s.CreateCampaign(ctx, c, []rollout.Member{{DeviceID: "d1", Wave: 0, Status: rollout.MemberPending, Since: t0}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.FindCampaign(ctx, "dyn1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(c, got); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
	if cs, err := s.FindCampaigns(ctx, rollout.StateScheduled); err != nil || len(cs) != 1 || cs[0].ID != "dyn1" {
		t.Fatalf("scheduled campaigns: %v, %v", cs, err)
	}
	added, err := s.AddMembers(ctx, "dyn1", []rollout.Member{
		{DeviceID: "d1", Wave: 0, Status: rollout.MemberPending, Since: t0.Add(time.Minute)},
		{DeviceID: "d2", Wave: 0, Status: rollout.MemberPending, Since: t0.Add(time.Minute), Detail: "joined"},
	})
	if err != nil || !slices.Equal(added, []string{"d2"}) {
		t.Fatalf("AddMembers: %v, %v; want [d2]", added, err)
	}
	ms, err := s.FindMembers(ctx, "dyn1")
	if err != nil || len(ms) != 2 || !ms[0].Since.Equal(t0) || ms[1].Detail != "joined" {
		t.Fatalf("members %+v, %v", ms, err)
	}
	g := &rollout.Group{Name: "weekends", Filter: "region=eu-*", Window: "02:00-04:00", Days: "sat,sun", CreatedAt: t0}
	if err := s.PutGroup(ctx, g); err != nil {
		t.Fatal(err)
	}
	if got, err := s.FindGroup(ctx, "weekends"); err != nil || got.Days != "sat,sun" {
		t.Fatalf("group %+v, %v", got, err)
	}
	if gs, err := s.FindGroups(ctx); err != nil || !slices.ContainsFunc(gs, func(g *rollout.Group) bool { return g.Name == "weekends" && g.Days == "sat,sun" }) {
		t.Fatalf("groups %+v, %v", gs, err)
	}
}
