package storetest

import (
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/deltagen"
)

// Delta generation jobs: one per destination image and source digest, a failed one queued
// again, claims that never hand one job to two workers, stale claims taken up again, progress,
// the end, and the listing per release.
func testDeltaJobs(t *testing.T, s Store) {
	job := func(version, from, src string) *deltagen.Job {
		return &deltagen.Job{Product: "p", Version: version, From: from, Image: "p/" + version + "/img", Source: "p/" + from + "/img",
			ImageSHA256: "d" + version, ImageLength: 100, SourceSHA256: src, SourceLength: 90, Devices: 3, CreatedAt: t0}
	}
	for _, j := range []*deltagen.Job{job("2", "1", "s1"), job("2", "1b", "s1b"), job("3", "2", "d2")} {
		if added, err := s.AddDeltaJob(ctx, j); err != nil || !added || j.ID == 0 || j.State != deltagen.Queued {
			t.Fatalf("add %+v: %v %v", j, added, err)
		}
	}
	if added, err := s.AddDeltaJob(ctx, job("2", "1", "s1")); err != nil || added {
		t.Fatalf("the same pair again: added %v, %v", added, err)
	}
	a, err := s.ClaimDeltaJob(ctx, t0.Add(time.Minute), t0.Add(-time.Hour))
	if err != nil || a == nil || a.From != "1" || a.State != deltagen.Running || a.ImageLength != 100 || a.SourceSHA256 != "s1" {
		t.Fatalf("claim: %+v, %v", a, err)
	}
	b, err := s.ClaimDeltaJob(ctx, t0.Add(time.Minute), t0.Add(-time.Hour))
	if err != nil || b == nil || b.ID == a.ID {
		t.Fatalf("second claim: %+v, %v (first %d)", b, err, a.ID)
	}
	if err := s.ProgressDeltaJob(ctx, a.ID, 50, t0.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	c, err := s.ClaimDeltaJob(ctx, t0.Add(3*time.Minute), t0.Add(-time.Hour))
	if err != nil || c == nil || c.Version != "3" {
		t.Fatalf("third claim: %+v, %v", c, err)
	}
	if none, err := s.ClaimDeltaJob(ctx, t0.Add(3*time.Minute), t0.Add(-time.Hour)); err != nil || none != nil {
		t.Fatalf("claim with none queued: %+v, %v", none, err)
	}
	// b's worker stopped: after its last update plus the stale time, it is claimed again.
	if again, err := s.ClaimDeltaJob(ctx, t0.Add(20*time.Minute), t0.Add(10*time.Minute)); err != nil || again == nil || again.ID != a.ID && again.ID != b.ID {
		t.Fatalf("stale claim: %+v, %v", again, err)
	}
	a.State, a.Done, a.PatchSHA256, a.PatchSHA512, a.PatchLength, a.UpdatedAt = deltagen.Done, 100, "ps", "ps5", 7, t0.Add(30*time.Minute)
	if err := s.FinishDeltaJob(ctx, a); err != nil {
		t.Fatal(err)
	}
	c.State, c.Error, c.UpdatedAt = deltagen.Failed, "image missing", t0.Add(30*time.Minute)
	if err := s.FinishDeltaJob(ctx, c); err != nil {
		t.Fatal(err)
	}
	js, err := s.FindDeltaJobs(ctx, "p", "2")
	if err != nil || len(js) != 2 || js[0].ID != a.ID || js[0].State != deltagen.Done || js[0].PatchLength != 7 || js[0].Done != 100 || js[0].PatchSHA512 != "ps5" || !js[0].CreatedAt.Equal(t0) {
		t.Fatalf("jobs of p@2: %+v, %v", js, err)
	}
	if all, err := s.FindDeltaJobs(ctx, "p", ""); err != nil || len(all) != 3 {
		t.Fatalf("jobs of p: %d, %v", len(all), err)
	}
	if added, err := s.AddDeltaJob(ctx, job("3", "2", "d2")); err != nil || !added {
		t.Fatalf("a failed pair planned again: added %v, %v", added, err)
	}
	if js, err := s.FindDeltaJobs(ctx, "p", "3"); err != nil || len(js) != 1 || js[0].State != deltagen.Queued || js[0].Error != "" {
		t.Fatalf("failed job queued again: %+v, %v", js, err)
	}
}
