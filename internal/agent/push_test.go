package agent

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"
)

// Nudges end the wait for the next poll, but at most one per MinNudgeGap: a flood of (forged)
// nudges costs one check-in per gap.
func TestNudgeRateLimited(t *testing.T) {
	a := &Agent{cfg: Config{StateDir: t.TempDir()}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	a.EnablePush(PushOptions{MinNudgeGap: 400 * time.Millisecond})
	ctx := context.Background()
	nudge := func() {
		select {
		case a.push.nudges <- struct{}{}:
		default:
		}
	}
	nudge()
	start := time.Now()
	if err := a.sleep(ctx, time.Hour); err != nil || time.Since(start) > 200*time.Millisecond {
		t.Fatalf("first nudge: %v after %s, want at once", err, time.Since(start))
	}
	for range 50 { // a flood: one waits in the channel, the rest are dropped
		nudge()
	}
	start = time.Now()
	if err := a.sleep(ctx, time.Hour); err != nil || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("second nudge: returned after %s, want the gap (400ms) since the first", time.Since(start))
	}
	nudge()
	start = time.Now()
	a.sleep(ctx, 100*time.Millisecond) //nolint:errcheck
	if d := time.Since(start); d > 300*time.Millisecond {
		t.Fatalf("a nudge inside the gap with the poll due sooner: waited %s, want the poll's 100ms", d)
	}
	if a.PushLastNudge().IsZero() || ReadPushStatus(a.cfg.StateDir).LastNudge.IsZero() {
		t.Fatal("last nudge not recorded")
	}
}
