package server_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/tuf"
)

func open(t *testing.T) *server.Server {
	t.Helper()
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	if _, err := tuf.InitKeySet(keys, 1, 1, tuf.DefaultLifetimes(), time.Now()); err != nil {
		t.Fatal(err)
	}
	cfg := server.DefaultConfig()
	cfg.Addr, cfg.DataDir, cfg.KeysDir = "127.0.0.1:0", filepath.Join(dir, "data"), keys
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := server.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestCloseWaitsForJobs checks that Close stops every background job, the server's own and one
// started later (as a policy change's re-signing is), and returns only once each has returned.
func TestCloseWaitsForJobs(t *testing.T) {
	s := open(t)
	if s.Jobs() < 6 {
		t.Fatalf("%d background jobs running, want the server's own (at least 6)", s.Jobs())
	}
	var finished atomic.Bool
	s.Go("slow", func(ctx context.Context) {
		<-ctx.Done()
		time.Sleep(200 * time.Millisecond) // work that outlives the cancellation
		finished.Store(true)
	})
	ticks := atomic.Int32{}
	s.Every("counter", 10*time.Millisecond, func(context.Context) { ticks.Add(1) }, nil)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !finished.Load() {
		t.Error("Close returned before a background job finished")
	}
	if n := s.Jobs(); n != 0 {
		t.Errorf("%d background jobs still running after Close", n)
	}
	after := ticks.Load()
	time.Sleep(50 * time.Millisecond)
	if ticks.Load() != after {
		t.Error("a periodic job ran after Close")
	}
}

// TestPolicyResignIsAServerJob checks that the re-signing a policy change starts runs as one of
// the server's jobs (so that Close waits for it), not on a goroutine nobody owns.
func TestPolicyResignIsAServerJob(t *testing.T) {
	s := open(t)
	defer s.Close()
	before := s.Jobs()
	started := make(chan struct{})
	release := make(chan struct{})
	s.Products.Resign = func(ctx context.Context, id string) error { return nil }
	s.Products.Go("probe", func(ctx context.Context) { close(started); <-release })
	<-started
	if s.Jobs() != before+1 {
		t.Errorf("jobs %d, want %d: the product service's jobs are not the server's", s.Jobs(), before+1)
	}
	close(release)
}
