package rollout_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/installpolicy"
	"upkeep.dev/upkeep/internal/product"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/rollout"
	"upkeep.dev/upkeep/internal/store/postgres"
	"upkeep.dev/upkeep/internal/store/sqlite"
	"upkeep.dev/upkeep/internal/store/sqlstore"
	"upkeep.dev/upkeep/internal/store/storetest"
	"upkeep.dev/upkeep/wire"
)

// engineEnv is an Engine on a real SQLite store, with the director's signing replaced by a
// recorder (the end-to-end tests in cmd/upkeep cover real signing).
type engineEnv struct {
	e        *rollout.Engine
	db       *sqlstore.DB
	mu       sync.Mutex
	assigned map[string]string // device -> target
	now      time.Time
}

func newEngine(t testing.TB, devices int) *engineEnv {
	t.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "upkeep.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	env := newEngineOn(t, db, time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC))
	env.seed(t, devices)
	return env
}

// newEngineOn makes an Engine on db whose assignments env records.
func newEngineOn(t testing.TB, db *sqlstore.DB, now time.Time) *engineEnv {
	env := &engineEnv{db: db, assigned: map[string]string{}, now: now}
	env.e = &rollout.Engine{Store: db, Devices: db, Releases: db, Now: func() time.Time { return env.now },
		Assign: func(ctx context.Context, d *fleet.Device, rel *release.Release, p *installpolicy.Policy) error {
			env.mu.Lock()
			env.assigned[d.ID] = rel.Target
			env.mu.Unlock()
			return db.UpdateDevice(ctx, d.ID, fleet.DeviceUpdate{Assigned: &rel.Target})
		},
		Unassign: func(ctx context.Context, d *fleet.Device) error {
			env.mu.Lock()
			delete(env.assigned, d.ID)
			env.mu.Unlock()
			return db.UpdateDevice(ctx, d.ID, fleet.DeviceUpdate{Assigned: &d.InstalledTarget})
		}}
	return env
}

// seed stores devices running p 1.0 and the releases 1.1, 1.2 and 1.3.
func (env *engineEnv) seed(t testing.TB, devices int) {
	t.Helper()
	ctx := context.Background()
	db := env.db
	for i := range devices {
		d := &fleet.Device{ID: fmt.Sprintf("dev%02d", i), PublicKey: []byte{byte(i), byte(i >> 8)}, Serial: fmt.Sprint(i), Product: "p", HardwareID: "hw",
			Status: fleet.StatusAccepted, InstalledTarget: "p/1.0/fw", InstalledSHA256: "00", EnrolledAt: env.now,
			Attributes: map[string]string{"region": []string{"eu", "us"}[i%2]}}
		if err := db.CreateDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	for i, v := range []string{"1.1", "1.2", "1.3"} {
		r := &release.Release{Product: "p", Version: v, HardwareIDs: []string{"hw"}, SecurityVersion: int64(i + 2), Class: "security",
			Target: "p/" + v + "/fw", Length: 1, SHA256: fmt.Sprintf("%02d", i+1), SHA512: "00", TargetsVersion: int64(i + 2), PublishedAt: env.now.Add(time.Duration(i) * time.Hour)}
		if err := db.CreateRelease(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
}

func (env *engineEnv) count(target string) int {
	env.mu.Lock()
	defer env.mu.Unlock()
	n := 0
	for _, t := range env.assigned {
		if t == target {
			n++
		}
	}
	return n
}

func statuses(t *testing.T, e *rollout.Engine, id string) map[string]int {
	t.Helper()
	ms, err := e.Store.FindMembers(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, m := range ms {
		out[m.Status]++
	}
	return out
}

func TestEngineCancelDuringWave(t *testing.T) {
	ctx := context.Background()
	env := newEngine(t, 10)
	c, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.1", Target: "product=p", Waves: "4,100"}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.e.Act(ctx, c.ID, "start", "alice"); err != nil {
		t.Fatal(err)
	}
	if n := env.count("p/1.1/fw"); n != 4 {
		t.Fatalf("start assigned %d devices, want the first wave's 4", n)
	}
	// One device commits; then the operator cancels mid-wave.
	ms, _ := env.e.Store.FindMembers(ctx, c.ID)
	var first string
	for _, m := range ms {
		if m.Status == rollout.MemberAssigned {
			first = m.DeviceID
			break
		}
	}
	if err := env.e.OnReport(ctx, first, wire.Report{Events: []wire.Event{{Target: "p/1.1/fw", Step: wire.StepCommit, Status: wire.StatusOK}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.e.Act(ctx, c.ID, "cancel", "bob"); err != nil {
		t.Fatal(err)
	}
	got := statuses(t, env.e, c.ID)
	if got[rollout.MemberCommitted] != 1 || got[rollout.MemberCancelled] != 9 {
		t.Fatalf("after cancel: %v, want 1 committed and 9 cancelled", got)
	}
	if n := env.count("p/1.1/fw"); n != 1 {
		t.Fatalf("%d devices still assigned after cancel; only the committed one keeps it", n)
	}
	if err := env.e.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := env.e.Act(ctx, c.ID, "resume", "bob"); err == nil {
		t.Fatal("resumed a cancelled campaign")
	}
	st, err := env.e.Status(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	var actors []string
	for _, a := range st.Timeline {
		actors = append(actors, a.Actor+":"+a.Action)
	}
	if fmt.Sprint(actors) != "[alice:create alice:start bob:cancel]" {
		t.Fatalf("timeline %v", actors)
	}
}

func TestEngineSupersession(t *testing.T) {
	ctx := context.Background()
	env := newEngine(t, 10)
	old, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.2", Target: "region=eu", Waves: "2,100"}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.e.Act(ctx, old.ID, "start", "alice"); err != nil {
		t.Fatal(err)
	}
	// A newer release to everyone takes the old campaign's devices over.
	newer, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.3", Target: "product=p"}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if got := statuses(t, env.e, old.ID); got[rollout.MemberSuperseded] != 5 {
		t.Fatalf("old campaign: %v, want all 5 superseded", got)
	}
	// An older release is never assigned over a newer one.
	older, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.1", Target: "product=p"}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if got := statuses(t, env.e, older.ID); got[rollout.MemberSuperseded] != 10 {
		t.Fatalf("older campaign: %v, want all 10 superseded from the start", got)
	}
	if _, err := env.e.Act(ctx, older.ID, "start", "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := env.e.Act(ctx, newer.ID, "start", "alice"); err != nil {
		t.Fatal(err)
	}
	if n := env.count("p/1.3/fw"); n != 10 {
		t.Fatalf("%d devices on 1.3, want 10", n)
	}
	if n := env.count("p/1.1/fw"); n != 0 {
		t.Fatalf("%d devices assigned the older 1.1", n)
	}
}

func TestEngineGroups(t *testing.T) {
	ctx := context.Background()
	env := newEngine(t, 6)
	st := env.e.Store
	if err := st.PutGroup(ctx, &rollout.Group{Name: "pilot", Window: "02:00-04:00", CreatedAt: env.now}); err != nil {
		t.Fatal(err)
	}
	if err := st.AddGroupDevices(ctx, "pilot", []string{"dev00", "dev03"}); err != nil {
		t.Fatal(err)
	}
	c, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.1", Target: "pilot"}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if c.Waves[0] != 2 || c.Window != "02:00-04:00" {
		t.Fatalf("group campaign: waves %v window %q, want 2 devices and the group's window", c.Waves, c.Window)
	}
	if _, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.1", Target: "nosuchgroup"}, "alice"); err == nil {
		t.Fatal("unknown group accepted")
	}
	if _, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.1", Target: "region=mars"}, "alice"); err == nil {
		t.Fatal("a filter that selects nothing was accepted")
	}
}

// TestEngineRollbackCountsAsFailure: a device whose trial boot did not survive reports only a
// (successful) rollback; that is a failed member, and enough of them pause the campaign.
func TestEngineRollbackCountsAsFailure(t *testing.T) {
	ctx := context.Background()
	env := newEngine(t, 10)
	c, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.1", Target: "product=p", Waves: "4,100"}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.e.Act(ctx, c.ID, "start", "alice"); err != nil {
		t.Fatal(err)
	}
	ms, err := env.e.Store.FindMembers(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	var assigned []string
	for _, m := range ms {
		if m.Status == rollout.MemberAssigned {
			assigned = append(assigned, m.DeviceID)
		}
	}
	rolledBack := wire.Event{Target: "p/1.1/fw", Step: wire.StepRollback, Status: wire.StatusOK, Fatal: true, Message: "trial did not survive"}
	if err := env.e.OnReport(ctx, assigned[0], wire.Report{Events: []wire.Event{rolledBack}}); err != nil {
		t.Fatal(err)
	}
	if got := statuses(t, env.e, c.ID); got[rollout.MemberFailed] != 1 {
		t.Fatalf("after a rollback report: %v, want 1 failed", got)
	}
	if err := env.e.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := env.e.Store.FindCampaign(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != rollout.StatePaused {
		t.Fatalf("campaign %s after 1 of 4 rolled back, want paused", got.State)
	}
}

// TestEngineStartAssignsALimitAndWakesTheEngine: starting a campaign over more devices than an
// operator's request should wait for assigns the first ActLimit of them, leaves the rest pending
// and wakes the engine, whose next tick assigns them; no device is assigned twice.
func TestEngineStartAssignsALimitAndWakesTheEngine(t *testing.T) {
	ctx := context.Background()
	env := newEngine(t, 10)
	var calls int
	assign := env.e.Assign
	env.e.Assign = func(ctx context.Context, d *fleet.Device, rel *release.Release, p *installpolicy.Policy) error {
		calls++
		return assign(ctx, d, rel, p)
	}
	env.e.ActLimit = 3
	c, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.1", Target: "product=p", Waves: "100%"}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-env.e.Woken():
		t.Fatal("woken before anything was left to do")
	default:
	}
	if _, err := env.e.Act(ctx, c.ID, "start", "alice"); err != nil {
		t.Fatal(err)
	}
	if got := statuses(t, env.e, c.ID); got[rollout.MemberAssigned] != 3 || got[rollout.MemberPending] != 7 {
		t.Fatalf("after start: %v, want 3 assigned and 7 pending", got)
	}
	select {
	case <-env.e.Woken():
	default:
		t.Fatal("start left members pending but did not wake the engine")
	}
	if err := env.e.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if n := env.count("p/1.1/fw"); n != 10 || calls != 10 {
		t.Fatalf("after the tick: %d devices assigned in %d calls, want 10 in 10", n, calls)
	}
}

// TestEngineTickDuringStart: the engine's tick running while an operator's start assigns a large
// wave must not assign the same devices again (each assignment re-signs a director view, and the
// device verifies it again).
func TestEngineTickDuringStart(t *testing.T) {
	ctx := context.Background()
	env := newEngine(t, 250)
	calls := map[string]int{}
	assign := env.e.Assign
	env.e.Assign = func(ctx context.Context, d *fleet.Device, rel *release.Release, p *installpolicy.Policy) error {
		env.mu.Lock()
		calls[d.ID]++
		env.mu.Unlock()
		return assign(ctx, d, rel, p)
	}
	c, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.1", Target: "product=p", Waves: "100%"}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { _, err := env.e.Act(ctx, c.ID, "start", "alice"); done <- err }()
	for ticking := true; ticking; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			ticking = false
		default:
			if err := env.e.Tick(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := env.e.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	env.mu.Lock()
	defer env.mu.Unlock()
	for id, n := range calls {
		if n != 1 {
			t.Errorf("device %s assigned %d times", id, n)
		}
	}
	if len(calls) != 250 {
		t.Errorf("%d devices assigned, want 250", len(calls))
	}
}

// report sends one event for the campaign's target from each device.
func (env *engineEnv) report(t *testing.T, ev wire.Event, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if err := env.e.OnReport(context.Background(), id, wire.Report{Events: []wire.Event{ev}}); err != nil {
			t.Fatal(err)
		}
	}
}

// members lists the campaign's members in status.
func (env *engineEnv) members(t *testing.T, id, status string) []string {
	t.Helper()
	ms, err := env.e.Store.FindMembers(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		if m.Status == status {
			out = append(out, m.DeviceID)
		}
	}
	return out
}

// checkIn records a check-in of every device at the engine's now.
func (env *engineEnv) checkIn(t *testing.T, ids ...string) {
	t.Helper()
	seen := map[string]time.Time{}
	for _, id := range ids {
		seen[id] = env.now
	}
	if err := env.e.Devices.TouchDevices(context.Background(), seen); err != nil {
		t.Fatal(err)
	}
}

func (env *engineEnv) state(t *testing.T, id string) *rollout.Campaign {
	t.Helper()
	c, err := env.e.Store.FindCampaign(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestEngineResumeAfterAutoPause: a campaign that paused itself runs on when resumed (the
// failures the operator accepted no longer count), completes, and pauses again on new failures.
func TestEngineResumeAfterAutoPause(t *testing.T) {
	ctx := context.Background()
	env := newEngine(t, 10)
	c, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.1", Target: "product=p", Waves: "4,100"}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.e.Act(ctx, c.ID, "start", "alice"); err != nil {
		t.Fatal(err)
	}
	commit := wire.Event{Target: "p/1.1/fw", Step: wire.StepCommit, Status: wire.StatusOK}
	rollback := wire.Event{Target: "p/1.1/fw", Step: wire.StepRollback, Status: wire.StatusOK, Fatal: true, Message: "trial did not survive"}
	wave1 := env.members(t, c.ID, rollout.MemberAssigned)
	env.report(t, rollback, wave1[0])
	if err := env.e.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if got := env.state(t, c.ID); got.State != rollout.StatePaused {
		t.Fatalf("after 1 of 4 rolled back: %s, want paused", got.State)
	}
	got, err := env.e.Act(ctx, c.ID, "resume", "bob")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != rollout.StateRunning {
		t.Fatalf("resume left the campaign %s (%s), want running", got.State, got.PauseReason)
	}
	// The rest of the first wave commits and stays healthy: the second wave goes out.
	env.report(t, commit, wave1[1:]...)
	env.now = env.now.Add(rollout.DefaultHealthGate + time.Second)
	env.checkIn(t, wave1[1:]...)
	if err := env.e.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	wave2 := env.members(t, c.ID, rollout.MemberAssigned)
	if got := env.state(t, c.ID); got.State != rollout.StateRunning || got.Wave != 1 || len(wave2) != 6 {
		t.Fatalf("after the first wave passed: %s at wave %d with %d assigned, want running at wave 2 with 6", got.State, got.Wave+1, len(wave2))
	}
	// A new failure past the threshold pauses it again.
	env.report(t, rollback, wave2[0])
	if err := env.e.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if got := env.state(t, c.ID); got.State != rollout.StatePaused {
		t.Fatalf("after a new failure in wave 2: %s, want paused", got.State)
	}
	// Resumed again, it completes once the rest are healthy.
	if _, err := env.e.Act(ctx, c.ID, "resume", "bob"); err != nil {
		t.Fatal(err)
	}
	env.report(t, commit, wave2[1:]...)
	env.now = env.now.Add(rollout.DefaultHealthGate + time.Second)
	env.checkIn(t, wave2[1:]...)
	if err := env.e.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if got := env.state(t, c.ID); got.State != rollout.StateCompleted {
		t.Fatalf("after every other device passed: %s (%s), want completed", got.State, got.PauseReason)
	}
}

// TestEnginesShareAPostgresCampaign: two engines (two replicas) on one PostgreSQL database
// start, resume and tick the same campaign at once; every device is assigned exactly once.
func TestEnginesShareAPostgresCampaign(t *testing.T) {
	ctx := context.Background()
	dsn := storetest.PostgresDSN(t)
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	var envs []*engineEnv
	for range 2 {
		db, err := postgres.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		env := newEngineOn(t, db, now)
		env.e.ActLimit = 7
		envs = append(envs, env)
	}
	a, b := envs[0], envs[1]
	calls := map[string]int{}
	var mu sync.Mutex
	for _, env := range envs {
		assign := env.e.Assign
		env.e.Assign = func(ctx context.Context, d *fleet.Device, rel *release.Release, p *installpolicy.Policy) error {
			mu.Lock()
			calls[d.ID]++
			mu.Unlock()
			return assign(ctx, d, rel, p)
		}
	}
	a.seed(t, 300)
	c, err := a.e.Create(ctx, rollout.Spec{Release: "p@1.1", Target: "product=p", Waves: "100%"}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	wg.Go(func() {
		if _, err := a.e.Act(ctx, c.ID, "start", "alice"); err != nil {
			errs <- err
		}
		for range 20 {
			if err := a.e.Tick(ctx); err != nil {
				errs <- err
			}
		}
	})
	for range 2 {
		wg.Go(func() {
			for range 20 {
				if err := b.e.Tick(ctx); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, env := range envs {
		if err := env.e.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for id, n := range calls {
		if n != 1 {
			t.Errorf("device %s assigned %d times", id, n)
		}
	}
	if len(calls) != 300 {
		t.Errorf("%d devices assigned, want 300", len(calls))
	}
	if got := statuses(t, a.e, c.ID); got[rollout.MemberAssigned] != 300 {
		t.Errorf("members %v, want 300 assigned", got)
	}
}

// TestEngineOfflineDevices: devices not seen for the stale-after time are left out of a new
// campaign (and counted), and assigned devices that stay silent time out instead of holding
// their wave for ever; one that speaks again is back.
func TestEngineOfflineDevices(t *testing.T) {
	ctx := context.Background()
	env := newEngine(t, 10)
	env.now = env.now.Add(30 * 24 * time.Hour)
	env.checkIn(t, "dev00", "dev01", "dev02", "dev03", "dev04", "dev05", "dev06", "dev07") // dev08 and dev09: not since enrolling
	all, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.1", Target: "product=p", StaleAfter: -1}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if all.Stale != 0 || all.Waves[len(all.Waves)-1] != 10 {
		t.Fatalf("with no stale-after: %v members, %d left out; want all 10", all.Waves, all.Stale)
	}
	if _, err := env.e.Act(ctx, all.ID, "cancel", "alice"); err != nil {
		t.Fatal(err)
	}

	c, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.1", Target: "product=p", Waves: "4,100"}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if c.Stale != 2 || c.Waves[len(c.Waves)-1] != 8 {
		t.Fatalf("campaign of %v with %d left out, want 8 members and 2 left out", c.Waves, c.Stale)
	}
	if got := env.state(t, c.ID); got.Stale != 2 || got.AssignTimeout != rollout.DefaultAssignTimeout {
		t.Fatalf("stored: %d left out, assign timeout %s", got.Stale, got.AssignTimeout)
	}
	if _, err := env.e.Act(ctx, c.ID, "start", "alice"); err != nil {
		t.Fatal(err)
	}
	wave1 := env.members(t, c.ID, rollout.MemberAssigned)
	env.now = env.now.Add(rollout.DefaultAssignTimeout)
	if err := env.e.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if got := env.members(t, c.ID, rollout.MemberTimedOut); len(got) != 4 {
		t.Fatalf("%d members timed out a day after the assignment, want the first wave's 4", len(got))
	}
	env.report(t, wire.Event{Target: "p/1.1/fw", Step: wire.StepCommit, Status: wire.StatusOK}, wave1[0])
	if got := env.members(t, c.ID, rollout.MemberCommitted); len(got) != 1 {
		t.Fatalf("a timed-out device that committed: %d committed, want 1", len(got))
	}
}

// TestEngineNeverAssignsAnOlderImage: a device that already runs a newer release than the
// campaign's is left out, whether it ran it at creation or installed it since.
func TestEngineNeverAssignsAnOlderImage(t *testing.T) {
	ctx := context.Background()
	env := newEngine(t, 4)
	newer := "p/1.3/fw"
	if err := env.db.UpdateDevice(ctx, "dev00", fleet.DeviceUpdate{InstalledTarget: &newer}); err != nil {
		t.Fatal(err)
	}
	c, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.2", Target: "product=p"}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if got := env.members(t, c.ID, rollout.MemberSuperseded); len(got) != 1 || got[0] != "dev00" {
		t.Fatalf("superseded at creation: %v, want dev00, which runs 1.3", got)
	}
	// dev01 installs 1.3 (another campaign, or by hand) before this one starts.
	if err := env.db.UpdateDevice(ctx, "dev01", fleet.DeviceUpdate{InstalledTarget: &newer}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.e.Act(ctx, c.ID, "start", "alice"); err != nil {
		t.Fatal(err)
	}
	if got := env.members(t, c.ID, rollout.MemberSuperseded); len(got) != 2 {
		t.Fatalf("superseded after start: %v, want dev00 and dev01", got)
	}
	env.mu.Lock()
	defer env.mu.Unlock()
	for _, id := range []string{"dev00", "dev01"} {
		if tg, ok := env.assigned[id]; ok {
			t.Errorf("%s, which runs 1.3, was assigned %s", id, tg)
		}
	}
	if len(env.assigned) != 2 {
		t.Errorf("assigned %v, want dev02 and dev03", env.assigned)
	}
}

// smallIN is a device store that refuses a lookup of more than 500 ids at once, as a database
// limits a statement's parameters.
type smallIN struct{ fleet.Store }

func (s smallIN) FindDevices(ctx context.Context, f fleet.DeviceFilter) ([]*fleet.Device, error) {
	if len(f.IDs) > 500 {
		return nil, fmt.Errorf("%d ids in one query", len(f.IDs))
	}
	return s.Store.FindDevices(ctx, f)
}

// TestEngineDevicesWithTarget: explicit devices (those exposed to an advisory) with a target
// give the devices in both, the selector says so, and a long list is looked up in chunks.
func TestEngineDevicesWithTarget(t *testing.T) {
	ctx := context.Background()
	env := newEngine(t, 6)
	env.e.Devices = smallIN{env.e.Devices}
	exposed := []string{"dev00", "dev01", "dev02", "dev03"}
	for i := range 1200 { // not in the fleet (any more)
		exposed = append(exposed, fmt.Sprintf("gone%04d", i))
	}
	c, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.1", Devices: exposed, DevicesFrom: "fixes:CVE-2026-1", Target: "region=eu"}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	ms, err := env.e.Store.FindMembers(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range ms {
		got = append(got, m.DeviceID)
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"dev00", "dev02"}) {
		t.Fatalf("members %v, want the exposed devices in eu: [dev00 dev02]", got)
	}
	if c.Selector != "fixes:CVE-2026-1 in region=eu" {
		t.Fatalf("selector %q", c.Selector)
	}
	all, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.2", Devices: exposed, DevicesFrom: "fixes:CVE-2026-1"}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if n := all.Waves[len(all.Waves)-1]; n != 4 || all.Selector != "fixes:CVE-2026-1" {
		t.Fatalf("without a target: %d members, selector %q; want the 4 exposed, fixes:CVE-2026-1", n, all.Selector)
	}
}

// TestEngineVerifyFailureCounts: a fatal verification failure the device reports for the
// campaign's image fails its member (and counts toward the pause); one without a target, or for
// another image, is not this campaign's.
func TestEngineVerifyFailureCounts(t *testing.T) {
	ctx := context.Background()
	env := newEngine(t, 4)
	c, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.1", Target: "product=p"}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.e.Act(ctx, c.ID, "start", "alice"); err != nil {
		t.Fatal(err)
	}
	verify := func(target string) wire.Event {
		return wire.Event{Target: target, Step: wire.StepVerify, Status: wire.StatusFailed, Fatal: true, Message: "director targets: signature threshold not met"}
	}
	env.report(t, verify(""), "dev00")
	env.report(t, verify("p/1.2/fw"), "dev01")
	if got := env.members(t, c.ID, rollout.MemberFailed); len(got) != 0 {
		t.Fatalf("failed %v after verification failures of no or another image, want none", got)
	}
	env.report(t, verify("p/1.1/fw"), "dev02")
	if got := env.members(t, c.ID, rollout.MemberFailed); !slices.Equal(got, []string{"dev02"}) {
		t.Fatalf("failed %v, want dev02, which failed to verify the campaign's image", got)
	}
	if err := env.e.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if got := env.state(t, c.ID); got.State != rollout.StatePaused {
		t.Fatalf("after 1 of 4 failed verification: %s, want paused", got.State)
	}
}

// TestEngineZeroFailureThreshold: a failure threshold of 0 is kept, not taken for "unset"
// (TestPlanThresholdEdges: it pauses on the first failure).
func TestEngineZeroFailureThreshold(t *testing.T) {
	ctx := context.Background()
	env := newEngine(t, 10)
	zero := 0.0
	c, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.1", Target: "product=p", FailureThreshold: &zero}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if c.FailureThreshold != 0 {
		t.Fatalf("failure threshold %v, want 0", c.FailureThreshold)
	}
	if d, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.1", Target: "product=p"}, "alice"); err != nil || d.FailureThreshold != rollout.DefaultFailure {
		t.Fatalf("unset failure threshold: %v, %v; want the default", d, err)
	}
}

func TestEngineFollowsProductDelivery(t *testing.T) {
	ctx := context.Background()
	env := newEngine(t, 4)
	env.e.Products = env.db
	// No policy declared: automatic, security campaigns forced by default.
	c, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.1", Target: "product=p"}, "alice")
	if err != nil || c.Consent {
		t.Fatalf("no policy: %+v %v, want a campaign without consent", c, err)
	}
	setDelivery := func(delivery string) {
		t.Helper()
		pol := product.DefaultPolicy()
		pol.Delivery = delivery
		b, _ := json.Marshal(pol)
		prev := time.Time{}
		if p, err := env.db.FindProduct(ctx, "p"); err == nil {
			prev = p.UpdatedAt
		}
		if err := env.db.PutProduct(ctx, &product.Product{Name: "p", Policy: b, UpdatedAt: env.now.Add(time.Duration(len(delivery)) * time.Second)}, prev, nil); err != nil {
			t.Fatal(err)
		}
	}
	setDelivery(product.DeliveryConsent)
	c, err = env.e.Create(ctx, rollout.Spec{Release: "p@1.2", Target: "product=p"}, "alice")
	if err != nil || !c.Consent {
		t.Fatalf("consent product: %+v %v, want a campaign that needs consent", c, err)
	}
	if _, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.2", Target: "product=p", Mode: "forced"}, "alice"); !apperr.Is(err, apperr.Invalid) {
		t.Fatalf("forced campaign for a consent product: %v, want refused", err)
	}
	setDelivery(product.DeliveryNone)
	if _, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.3", Target: "product=p"}, "alice"); !apperr.Is(err, apperr.Invalid) {
		t.Fatalf("campaign for a product declared without updates: %v, want refused", err)
	}
}

func TestEngineCancelledMidInstallKeepsItsCommit(t *testing.T) {
	ctx := context.Background()
	env := newEngine(t, 4)
	c, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.1", Target: "product=p", Waves: "100%"}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.e.Act(ctx, c.ID, "start", "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := env.e.Act(ctx, c.ID, "cancel", "alice"); err != nil {
		t.Fatal(err)
	}
	d, _ := env.db.FindDevice(ctx, "dev00")
	if d.Assigned != "p/1.0/fw" {
		t.Fatalf("after cancel the director names %q, want the running p/1.0/fw", d.Assigned)
	}
	// dev00 was mid-install: it commits 1.1 after the cancel (the report is stored first).
	target := "p/1.1/fw"
	if err := env.db.UpdateDevice(ctx, "dev00", fleet.DeviceUpdate{InstalledTarget: &target}); err != nil {
		t.Fatal(err)
	}
	commit := wire.Report{Events: []wire.Event{{Step: wire.StepCommit, Status: wire.StatusOK, Target: target}}}
	if err := env.e.OnReport(ctx, "dev00", commit); err != nil {
		t.Fatal(err)
	}
	if d, _ = env.db.FindDevice(ctx, "dev00"); d.Assigned != target {
		t.Fatalf("after the commit the director names %q, want %s: the device would reinstall the old image", d.Assigned, target)
	}
	// A device that did not commit stays pointed at its image.
	if d, _ = env.db.FindDevice(ctx, "dev01"); d.Assigned != "p/1.0/fw" {
		t.Fatalf("dev01 names %q", d.Assigned)
	}
}
