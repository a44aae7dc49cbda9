package storetest

import (
	"fmt"
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

// testCampaignPages: keyset pages of campaigns, newest first (ties by id), all or of some
// states, cover each exactly once; CountCampaigns and CountMembers agree with what was stored.
func testCampaignPages(t *testing.T, s Store) {
	var all []*rollout.Campaign
	for i := range 23 {
		c := &rollout.Campaign{ID: fmt.Sprintf("p%02d", i), Release: "p@1", Target: "p/1/fw", Product: "p", Waves: []int{1, 2},
			State: []string{rollout.StateRunning, rollout.StateCompleted, rollout.StatePaused}[i%3], CreatedAt: t0.Add(time.Duration(i/2) * time.Minute), UpdatedAt: t0}
		var ms []rollout.Member
		for j := range i % 4 {
			ms = append(ms, rollout.Member{DeviceID: fmt.Sprintf("d%d", j), Wave: min(j, 1), Status: []string{rollout.MemberPending, rollout.MemberHealthy}[j%2], Since: t0})
		}
		if err := s.CreateCampaign(ctx, c, ms); err != nil {
			t.Fatal(err)
		}
		all = append(all, c)
	}
	for _, states := range [][]string{nil, {rollout.StateRunning, rollout.StatePaused}, {rollout.StateCompleted}, {"nothing"}} {
		var want []string
		for i := len(all) - 1; i >= 0; i-- { // created in order, ties (two a minute) by the greater id
			if len(states) == 0 || slices.Contains(states, all[i].State) {
				want = append(want, all[i].ID)
			}
		}
		var got []string
		p := rollout.CampaignPage{States: states, Limit: 4}
		for range 20 {
			page, err := s.PageCampaigns(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range page {
				got = append(got, c.ID)
			}
			if len(page) < p.Limit {
				break
			}
			last := page[len(page)-1]
			p.After = &rollout.CampaignCursor{CreatedAt: last.CreatedAt, ID: last.ID}
		}
		if !slices.Equal(got, want) {
			t.Errorf("states %v:\n got %v\nwant %v", states, got, want)
		}
		if n, err := s.CountCampaigns(ctx, states...); err != nil || n != len(want) {
			t.Errorf("CountCampaigns(%v) = %d, %v; want %d", states, n, err, len(want))
		}
	}
	_, err := s.PageCampaigns(ctx, rollout.CampaignPage{Limit: rollout.MaxCampaignPage + 1})
	wantCode(t, err, apperr.Invalid)
	counts, err := s.CountMembers(ctx, []string{"p03", "p07", "p08", "nope"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, k := range counts {
		got[fmt.Sprintf("%s/%d/%s", k.Campaign, k.Wave, k.Status)] += k.N
	}
	want := map[string]int{"p03/0/pending": 1, "p03/1/healthy": 1, "p03/1/pending": 1, "p07/0/pending": 1, "p07/1/healthy": 1, "p07/1/pending": 1}
	if diff := cmp.Diff(want, got); diff != "" { // p08: no members
		t.Errorf("CountMembers (-want +got):\n%s", diff)
	}
	_, err = s.CountMembers(ctx, make([]string, rollout.MaxCountMembers+1))
	wantCode(t, err, apperr.Invalid)
}
