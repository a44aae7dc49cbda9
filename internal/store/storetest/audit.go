package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/audit"
)

// testAudit: appends form one chain, also from many goroutines at once; filters and keyset
// pages select what they say; text is cleaned and bounded; pruning moves the checkpoint and the
// kept chain still verifies from it.
func testAudit(t *testing.T, s Store) {
	if c, n, err := audit.VerifyStore(ctx, s); err != nil || n != 0 || c != (audit.Chain{}) {
		t.Fatalf("empty chain: %+v %d %v", c, n, err)
	}
	rec := func(at time.Time, actor, action, target string, outcome int) *audit.Record {
		r := &audit.Record{Time: at, ActorType: audit.ActorToken, Actor: actor, ActorID: "abcd", Action: action, Target: target, IP: "192.0.2.1", UserAgent: "test", Outcome: outcome}
		if err := s.AppendRecord(ctx, r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	r1 := rec(t0, "ci", "release.publish", "p@1.0.0", 201)
	if r1.Seq != 1 || r1.PrevHash != "" || r1.Hash != audit.Hash(r1) {
		t.Fatalf("first record: %+v", r1)
	}
	r2 := rec(t0.Add(time.Minute), "dana", "device.accept", "d1", 204)
	if r2.Seq != 2 || r2.PrevHash != r1.Hash {
		t.Fatalf("second record: %+v", r2)
	}
	rec(t0.Add(2*time.Minute), "dana", "device.reject", "d2", 403)
	rec(t0.Add(3*time.Minute), "", "token.create", "", 401)
	odd := &audit.Record{Time: t0.Add(4 * time.Minute).Add(1234 * time.Nanosecond), ActorType: audit.ActorUser, Actor: "x\x00y\xff", Action: "login",
		UserAgent: string(make([]byte, 5000)), Outcome: 401}
	if err := s.AppendRecord(ctx, odd); err != nil {
		t.Fatal(err)
	}

	find := func(f audit.Filter) []int64 {
		t.Helper()
		rs, err := s.FindRecords(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		var seqs []int64
		for _, r := range rs {
			seqs = append(seqs, r.Seq)
		}
		return seqs
	}
	for _, c := range []struct {
		f    audit.Filter
		want string
	}{
		{audit.Filter{}, "[5 4 3 2 1]"},
		{audit.Filter{Actor: "dana"}, "[3 2]"},
		{audit.Filter{Action: "device"}, "[3 2]"},
		{audit.Filter{Action: "device.accept"}, "[2]"},
		{audit.Filter{Action: "dev"}, "[]"},
		{audit.Filter{Target: "p@1.0.0"}, "[1]"},
		{audit.Filter{Outcome: audit.OutcomeOK}, "[2 1]"},
		{audit.Filter{Outcome: audit.OutcomeDenied}, "[5 4 3]"},
		{audit.Filter{Outcome: "403"}, "[3]"},
		{audit.Filter{Since: t0.Add(time.Minute), Until: t0.Add(3 * time.Minute)}, "[3 2]"},
		{audit.Filter{Limit: 2}, "[5 4]"},
		{audit.Filter{Limit: 2, Before: 4}, "[3 2]"},
	} {
		if got := fmt.Sprint(find(c.f)); got != c.want && !(c.want == "[]" && got == "[]") {
			t.Errorf("FindRecords(%+v) = %s, want %s", c.f, got, c.want)
		}
	}
	rs, err := s.FindRecords(ctx, audit.Filter{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := rs[0]; got.Actor != "x\uFFFDy\uFFFD" || len(got.UserAgent) > audit.MaxUserAgent || !got.Time.Equal(t0.Add(4*time.Minute+time.Microsecond)) || got.Hash != audit.Hash(got) {
		t.Errorf("cleaned record read back: %+v (hash %s)", got, audit.Hash(got))
	}

	// Two writers at once (two replicas on PostgreSQL lock the same head row).
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				errs <- s.AppendRecord(ctx, &audit.Record{Time: t0.Add(time.Hour), ActorType: audit.ActorToken, Actor: fmt.Sprintf("w%d", w), Action: "group.put", Target: fmt.Sprint(i), Outcome: 200})
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	c, n, err := audit.VerifyStore(ctx, s)
	if err != nil || n != 45 || c.HeadSeq != 45 {
		t.Fatalf("after concurrent appends: %+v %d %v", c, n, err)
	}

	// Pruning what is older than t0+2m removes 1 and 2; the chain verifies from the checkpoint.
	if n, err := s.PruneRecords(ctx, t0.Add(2*time.Minute), 0); err != nil || n != 2 {
		t.Fatalf("PruneRecords = %d, %v", n, err)
	}
	c, n, err = audit.VerifyStore(ctx, s)
	if err != nil || n != 43 || c.CheckpointSeq != 2 || c.CheckpointHash != r2.Hash {
		t.Fatalf("after pruning: %+v %d %v", c, n, err)
	}
	// A bounded prune goes no further than max records.
	if n, err := s.PruneRecords(ctx, t0.Add(2*time.Hour), 1); err != nil || n != 1 {
		t.Fatalf("bounded PruneRecords = %d, %v", n, err)
	}
	if n, err := s.PruneRecords(ctx, t0, 0); err != nil || n != 0 {
		t.Fatalf("PruneRecords with nothing to prune = %d, %v", n, err)
	}
	if c, n, err := audit.VerifyStore(ctx, s); err != nil || n != 42 || c.CheckpointSeq != 3 {
		t.Fatalf("after the bounded prune: %+v %d %v", c, n, err)
	}
	// Appends go on after pruning.
	r := rec(t0.Add(3*time.Hour), "ci", "deploy", "", 200)
	if r.Seq != 46 {
		t.Fatalf("append after pruning: seq %d", r.Seq)
	}
	// A callback's error stops an export and is returned.
	stop := errors.New("stop")
	if err := s.ExportRecords(ctx, func(audit.Chain) error { return nil }, func(*audit.Record) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("ExportRecords callback error: %v", err)
	}
}
