package rollout_test

import (
	"context"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/rollout"
)

// A campaign created with StartAt waits in state scheduled, assigning nothing, until the
// engine's clock reaches its time; then a tick starts it.
func TestScheduledCampaignStartsAtItsTime(t *testing.T) {
	ctx := context.Background()
	env := newEngine(t, 6)
	start := env.now.Add(time.Hour)
	c, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.1", Target: "product=p", StartAt: start}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if c.State != rollout.StateScheduled || !c.StartAt.Equal(start) {
		t.Fatalf("created %s starting %s, want scheduled at %s", c.State, c.StartAt, start)
	}
	env.now = start.Add(-time.Second)
	if err := env.e.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := env.e.Store.FindCampaign(ctx, c.ID); got.State != rollout.StateScheduled || env.count("p/1.1/fw") != 0 {
		t.Fatalf("before its time: %s with %d assigned", got.State, env.count("p/1.1/fw"))
	}
	env.now = start
	if err := env.e.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := env.e.Store.FindCampaign(ctx, c.ID); got.State != rollout.StateRunning || env.count("p/1.1/fw") != 6 {
		t.Fatalf("at its time: %s with %d assigned, want running with 6", got.State, env.count("p/1.1/fw"))
	}
	st, err := env.e.Status(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if last := st.Timeline[len(st.Timeline)-1]; last.Actor != "engine" || last.Action != "start" {
		t.Errorf("timeline ends with %+v, want the engine's start", last)
	}

	// A scheduled campaign can be cancelled; a start in the past, or with --start, is refused.
	c2, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.2", Target: "product=p", StartAt: env.now.Add(time.Hour)}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if c2, err = env.e.Act(ctx, c2.ID, "cancel", "alice"); err != nil || c2.State != rollout.StateCancelled {
		t.Fatalf("cancel a scheduled campaign: %v", err)
	}
	for _, s := range []rollout.Spec{
		{Release: "p@1.2", Target: "product=p", StartAt: env.now.Add(-time.Minute)},
		{Release: "p@1.2", Target: "product=p", StartAt: env.now.Add(time.Hour), Start: true},
		{Release: "p@1.2", Target: "product=p", Until: env.now.Add(time.Hour)},
		{Release: "p@1.2", Devices: []string{"dev00"}, Dynamic: true},
		{Release: "p@1.2", Target: "product=p", Days: "mon,funday"},
	} {
		if _, err := env.e.Create(ctx, s, "alice"); !apperr.Is(err, apperr.Invalid) {
			t.Errorf("%+v: %v, want invalid", s, err)
		}
	}
}

// A dynamic campaign takes into its current wave the devices that start to match its target
// after it started: one enrolled later, one whose attributes changed; not one that does not
// match, and none after its Until.
func TestDynamicCampaignTakesInNewDevices(t *testing.T) {
	ctx := context.Background()
	env := newEngine(t, 4) // dev00, dev02 in eu; dev01, dev03 in us
	until := env.now.Add(24 * time.Hour)
	c, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.1", Target: "region=eu", Dynamic: true, Until: until, Waves: "1,100", Start: true}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if env.count("p/1.1/fw") != 1 {
		t.Fatalf("first wave assigned %d", env.count("p/1.1/fw"))
	}
	late := &fleet.Device{ID: "dev99", PublicKey: []byte{99}, Serial: "99", Product: "p", HardwareID: "hw", Status: fleet.StatusAccepted,
		InstalledTarget: "p/1.0/fw", InstalledSHA256: "00", EnrolledAt: env.now, Attributes: map[string]string{"region": "eu"}}
	if err := env.db.CreateDevice(ctx, late); err != nil {
		t.Fatal(err)
	}
	moved := map[string]string{"region": "eu"}
	if err := env.db.UpdateDevice(ctx, "dev01", fleet.DeviceUpdate{Attributes: &moved}); err != nil {
		t.Fatal(err)
	}
	env.now = env.now.Add(rollout.DynamicRest)
	if err := env.e.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	ms, err := env.e.Store.FindMembers(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]rollout.Member{}
	for _, m := range ms {
		got[m.DeviceID] = m
	}
	for _, id := range []string{"dev99", "dev01"} {
		m, ok := got[id]
		if !ok || m.Wave != 0 || m.Status != rollout.MemberAssigned {
			t.Errorf("%s: %+v (member %v), want assigned in the current wave 1", id, m, ok)
		}
	}
	if _, ok := got["dev03"]; ok {
		t.Error("dev03 (region us) joined")
	}
	st, _ := env.e.Status(ctx, c.ID)
	if last := st.Timeline[len(st.Timeline)-1]; last.Action != "join" {
		t.Errorf("timeline ends with %+v, want a join", last)
	}

	// After Until nobody joins.
	env.now = until.Add(time.Second)
	usToEU := map[string]string{"region": "eu"}
	if err := env.db.UpdateDevice(ctx, "dev03", fleet.DeviceUpdate{Attributes: &usToEU}); err != nil {
		t.Fatal(err)
	}
	if err := env.e.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if ms, _ := env.e.Store.FindMembers(ctx, c.ID); len(ms) != 4 {
		t.Errorf("%d members after Until, want the 4 of before", len(ms))
	}
}

// A dynamic campaign may start with no device: it waits in one wave for the first to match.
func TestDynamicCampaignStartsEmpty(t *testing.T) {
	ctx := context.Background()
	env := newEngine(t, 2)
	c, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.1", Target: "region=mars", Dynamic: true, Start: true}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if c.State != rollout.StateRunning {
		t.Fatalf("state %s", c.State)
	}
	if _, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.1", Target: "region=mars"}, "alice"); !apperr.Is(err, apperr.Invalid) {
		t.Errorf("a static campaign over no device: %v, want invalid", err)
	}
	mars := map[string]string{"region": "mars"}
	if err := env.db.UpdateDevice(ctx, "dev00", fleet.DeviceUpdate{Attributes: &mars}); err != nil {
		t.Fatal(err)
	}
	env.now = env.now.Add(rollout.DynamicRest)
	if err := env.e.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if env.count("p/1.1/fw") != 1 {
		t.Fatalf("%d assigned, want dev00", env.count("p/1.1/fw"))
	}
	if got, _ := env.e.Store.FindCampaign(ctx, c.ID); got.State != rollout.StateRunning {
		t.Errorf("a dynamic campaign without Until is %s, want running", got.State)
	}
}

// A campaign whose window recurs on chosen weekdays assigns its members only on those days (an
// agent that predates the signed Days field would install in the window on any day).
func TestWeekdayCampaignAssignsOnItsDays(t *testing.T) {
	ctx := context.Background()
	env := newEngine(t, 3) // env.now is Wednesday 2026-11-25
	c, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.1", Target: "product=p", Window: "02:00-04:00", Days: "sat,mon", Start: true}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if c.Days != "mon,sat" {
		t.Errorf("days %q, want mon,sat", c.Days)
	}
	if n := env.count("p/1.1/fw"); n != 0 {
		t.Fatalf("%d assigned on a Wednesday", n)
	}
	env.now = time.Date(2026, 11, 28, 1, 0, 0, 0, time.UTC) // Saturday
	if err := env.e.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if n := env.count("p/1.1/fw"); n != 3 {
		t.Fatalf("%d assigned on the Saturday, want 3", n)
	}
}

// BenchmarkTickDynamic is the cost of one engine tick of a running campaign over 3,000 devices
// (1,500 members): "static" is the reference (the tick every campaign pays), "dynamic" the same
// campaign with its intake scanning one page of DynamicScan devices each tick.
func BenchmarkTickDynamic(b *testing.B) {
	for _, dynamic := range []bool{false, true} {
		name := "static"
		if dynamic {
			name = "dynamic"
		}
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			env := newEngine(b, 3000)
			if _, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.1", Target: "region=eu", Dynamic: dynamic, Waves: "100%", Start: true}, "alice"); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				env.now = env.now.Add(rollout.DynamicRest) // a new pass may start at every tick
				if err := env.e.Tick(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// A scheduled campaign leaves an older running campaign alone until it starts.
func TestScheduledCampaignSupersedesAtItsStart(t *testing.T) {
	ctx := context.Background()
	env := newEngine(t, 2)
	old, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.1", Target: "product=p", Waves: "1,100", Start: true}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	start := env.now.Add(time.Hour)
	if _, err := env.e.Create(ctx, rollout.Spec{Release: "p@1.2", Target: "product=p", StartAt: start}, "alice"); err != nil {
		t.Fatal(err)
	}
	if st := statuses(t, env.e, old.ID); st[rollout.MemberSuperseded] != 0 {
		t.Fatalf("older campaign's members %v before the newer one starts, want none superseded", st)
	}
	env.now = start
	for range 2 {
		if err := env.e.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := env.count("p/1.2/fw"); n != 2 {
		t.Fatalf("%d devices assigned 1.2 after the start, want 2", n)
	}
	if st := statuses(t, env.e, old.ID); st[rollout.MemberSuperseded] != 2 {
		t.Errorf("older campaign's members %v after the newer one started, want both superseded", st)
	}
}
