package rollout_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/rollout"
	"upkeep.dev/upkeep/wire"
)

// flakyStore is the real store whose ApplyChange fails while fail is set: a database that
// drops the one transaction a campaign step writes.
type flakyStore struct {
	rollout.Store
	fail atomic.Bool
}

var errInjected = errors.New("injected failure")

func (s *flakyStore) ApplyChange(ctx context.Context, ch rollout.Change) error {
	if s.fail.Load() {
		return errInjected
	}
	return s.Store.ApplyChange(ctx, ch)
}

// TestEngineCancelIsAllOrNothing: a cancel that fails half way (the director cannot withdraw
// one device's assignment; then the database drops the final write) leaves the campaign in its
// state with no member cancelled, and a retry cancels it whole. Before, the campaign was marked
// cancelled first: devices kept the assignment and the retry was refused.
func TestEngineCancelIsAllOrNothing(t *testing.T) {
	ctx := context.Background()
	env := newEngine(t, 6)
	store := &flakyStore{Store: env.db}
	env.e.Store = store
	c, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.1", Target: "product=p", Start: true}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if n := env.count("p/1.1/fw"); n != 6 {
		t.Fatalf("start assigned %d, want 6", n)
	}
	unassign := env.e.Unassign
	var calls atomic.Int32
	env.e.Unassign = func(ctx context.Context, d *fleet.Device) error {
		if calls.Add(1) == 3 {
			return errInjected
		}
		return unassign(ctx, d)
	}
	cancelledIntact := func(what string) {
		t.Helper()
		if got := env.state(t, c.ID); got.State != rollout.StateRunning {
			t.Fatalf("%s: campaign %s, want still running", what, got.State)
		}
		if got := statuses(t, env.e, c.ID); got[rollout.MemberCancelled] != 0 || got[rollout.MemberAssigned] != 6 {
			t.Fatalf("%s: members %v, want all 6 still assigned", what, got)
		}
	}
	if _, err := env.e.Act(ctx, c.ID, "cancel", "bob"); !errors.Is(err, errInjected) {
		t.Fatalf("cancel with a failing withdrawal: %v, want the injected failure", err)
	}
	cancelledIntact("after a failed withdrawal")
	// The campaign still runs: a tick puts back what the failed cancel had withdrawn.
	if err := env.e.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if n := env.count("p/1.1/fw"); n != 6 {
		t.Fatalf("tick after the failed cancel: %d assigned, want 6", n)
	}

	store.fail.Store(true)
	if _, err := env.e.Act(ctx, c.ID, "cancel", "bob"); !errors.Is(err, errInjected) {
		t.Fatalf("cancel with a failing store: %v, want the injected failure", err)
	}
	cancelledIntact("after a failed write")

	store.fail.Store(false)
	got, err := env.e.Act(ctx, c.ID, "cancel", "bob")
	if err != nil {
		t.Fatalf("retried cancel: %v", err)
	}
	if got.State != rollout.StateCancelled {
		t.Fatalf("retried cancel left the campaign %s", got.State)
	}
	if st := statuses(t, env.e, c.ID); st[rollout.MemberCancelled] != 6 {
		t.Fatalf("after the retried cancel: %v, want 6 cancelled", st)
	}
	if n := env.count("p/1.1/fw"); n != 0 {
		t.Fatalf("%d devices still assigned after the cancel", n)
	}
	st, err := env.e.Status(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	var cancels int
	for _, a := range st.Timeline {
		if a.Action == "cancel" {
			cancels++
		}
	}
	if cancels != 1 {
		t.Fatalf("timeline has %d cancels, want the one that landed: %+v", cancels, st.Timeline)
	}
}

// TestEngineStepsAreAllOrNothing: a tick whose write fails (advance, automatic pause) and an
// operator's pause or resume whose write fails leave the campaign and its members as they
// were; the retry lands the whole step.
func TestEngineStepsAreAllOrNothing(t *testing.T) {
	ctx := context.Background()
	env := newEngine(t, 10)
	store := &flakyStore{Store: env.db}
	env.e.Store = store
	c, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.1", Target: "product=p", Waves: "4,100", Start: true}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	wave1 := env.members(t, c.ID, rollout.MemberAssigned)
	env.report(t, wire.Event{Target: "p/1.1/fw", Step: wire.StepCommit, Status: wire.StatusOK}, wave1...)
	env.now = env.now.Add(rollout.DefaultHealthGate + time.Second)
	env.checkIn(t, wave1...)

	// Advance: the health verdicts and the next wave land together or not at all.
	store.fail.Store(true)
	if err := env.e.Tick(ctx); !errors.Is(err, errInjected) {
		t.Fatalf("tick with a failing store: %v", err)
	}
	if got := env.state(t, c.ID); got.Wave != 0 || len(env.members(t, c.ID, rollout.MemberHealthy)) != 0 || env.count("p/1.1/fw") != 4 {
		t.Fatalf("a failed advance changed the campaign: wave %d, %d healthy, %d assigned", got.Wave+1, len(env.members(t, c.ID, rollout.MemberHealthy)), env.count("p/1.1/fw"))
	}
	store.fail.Store(false)
	if err := env.e.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if got := env.state(t, c.ID); got.Wave != 1 || len(env.members(t, c.ID, rollout.MemberHealthy)) != 4 || env.count("p/1.1/fw") != 10 {
		t.Fatalf("retried advance: wave %d, %d healthy, %d assigned; want wave 2, 4, 10", got.Wave+1, len(env.members(t, c.ID, rollout.MemberHealthy)), env.count("p/1.1/fw"))
	}

	// Automatic pause: the failure verdict and the pause land together.
	wave2 := env.members(t, c.ID, rollout.MemberAssigned)
	env.report(t, wire.Event{Target: "p/1.1/fw", Step: wire.StepCommit, Status: wire.StatusOK}, wave2[0])
	env.now = env.now.Add(rollout.DefaultSilentAfter + time.Minute) // wave2[0] silent since its commit
	env.checkIn(t, append(wave1, wave2[1:]...)...)
	store.fail.Store(true)
	if err := env.e.Tick(ctx); !errors.Is(err, errInjected) {
		t.Fatalf("tick with a failing store: %v", err)
	}
	if got := env.state(t, c.ID); got.State != rollout.StateRunning || len(env.members(t, c.ID, rollout.MemberFailed)) != 0 {
		t.Fatalf("a failed automatic pause changed the campaign: %s, failed %v", got.State, env.members(t, c.ID, rollout.MemberFailed))
	}
	store.fail.Store(false)
	if err := env.e.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if got := env.state(t, c.ID); got.State != rollout.StatePaused || len(env.members(t, c.ID, rollout.MemberFailed)) != 1 {
		t.Fatalf("retried tick: %s with failed %v, want paused with one failed", got.State, env.members(t, c.ID, rollout.MemberFailed))
	}

	// Resume: refused whole by the store, then retried.
	store.fail.Store(true)
	if _, err := env.e.Act(ctx, c.ID, "resume", "bob"); !errors.Is(err, errInjected) {
		t.Fatalf("resume with a failing store: %v", err)
	}
	if got := env.state(t, c.ID); got.State != rollout.StatePaused || got.Baseline != nil {
		t.Fatalf("a failed resume changed the campaign: %s, baseline %v", got.State, got.Baseline)
	}
	store.fail.Store(false)
	if got, err := env.e.Act(ctx, c.ID, "resume", "bob"); err != nil || got.State != rollout.StateRunning {
		t.Fatalf("retried resume: %v, %v", got, err)
	}
}
