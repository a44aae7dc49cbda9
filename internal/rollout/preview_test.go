package rollout_test

import (
	"context"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/rollout"
)

// TestPreview: a preview counts the devices a campaign would take in, as Create resolves them,
// leaves out the stale ones, refuses what Create refuses, and creates nothing.
func TestPreview(t *testing.T) {
	env := newEngine(t, 10)
	ctx := context.Background()
	spec := rollout.Spec{Release: "p@1.1", Target: "region=eu"}
	p, err := env.e.Preview(ctx, spec)
	if err != nil || p.Devices != 5 || p.Stale != 0 {
		t.Fatalf("preview %+v, %v; want 5 devices", p, err)
	}
	if cs, _ := env.e.Campaigns(ctx); len(cs) != 0 {
		t.Fatalf("a preview created %d campaigns", len(cs))
	}
	env.now = env.now.Add(8 * 24 * time.Hour) // nobody checked in for 8 days
	if p, err := env.e.Preview(ctx, spec); err != nil || p.Devices != 0 || p.Stale != 5 {
		t.Fatalf("preview after 8 days %+v, %v; want 5 stale", p, err)
	}
	env.now = env.now.Add(-8 * 24 * time.Hour)
	c, err := env.e.Create(ctx, spec, "tester")
	if err != nil {
		t.Fatal(err)
	}
	if n := c.Waves[len(c.Waves)-1]; n != p.Devices {
		t.Errorf("created with %d members, preview said %d", n, p.Devices)
	}
	for _, bad := range []struct {
		spec rollout.Spec
		code apperr.Code
	}{
		{rollout.Spec{Release: "p@9.9", Target: "region=eu"}, apperr.NotFound},
		{rollout.Spec{Release: "p", Target: "region=eu"}, apperr.Invalid},
		{rollout.Spec{Release: "p@1.1"}, apperr.Invalid},
		{rollout.Spec{Release: "p@1.1", Target: "group:none"}, apperr.NotFound},
	} {
		if _, err := env.e.Preview(ctx, bad.spec); apperr.CodeOf(err) != bad.code {
			t.Errorf("preview %+v: %v, want %s", bad.spec, err, bad.code)
		}
	}
}
