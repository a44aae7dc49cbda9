package agent

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/devclient"
	"upkeep.dev/upkeep/wire"
)

// testAgent is an enrolled-looking agent talking to srv, with its state in memory and dir.
func testAgent(t *testing.T, srv *httptest.Server, cfg Config) *Agent {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	cfg = cfg.withDefaults()
	a := &Agent{cfg: cfg, installer: cfg.Installer, state: &State{DeviceID: "dev-1", Phase: PhaseIdle, Token: "tok", TokenExpires: time.Now().Add(time.Hour), LastFullCheck: now(cfg)},
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), poll: cfg.PollInterval}
	a.api = &devclient.Client{Base: srv.URL, HTTP: srv.Client()}
	return a
}

// The server's poll hint counts on a 304 check-in answer too, within a factor of ten of the
// configured interval.
func TestPollHintOnNotModified(t *testing.T) {
	hint := "600"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/device/v1/checkin" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set(wire.HeaderPollInterval, hint)
		w.WriteHeader(http.StatusNotModified)
	}))
	defer srv.Close()
	a := testAgent(t, srv, Config{PollInterval: 5 * time.Minute})
	for _, tc := range []struct {
		hint string
		want time.Duration
	}{
		{"600", 10 * time.Minute},
		{"5", 30 * time.Second},                     // at most ten times more often than configured
		{"999999999999999999999", 50 * time.Minute}, // at most ten times less often
		{"junk", 50 * time.Minute},                  // ignored: the last hint stays
		{"-1", 50 * time.Minute},
		{"120", 2 * time.Minute},
	} {
		hint = tc.hint
		if err := a.Cycle(context.Background()); err != nil {
			t.Fatalf("cycle: %v", err)
		}
		if a.poll != tc.want {
			t.Errorf("after a 304 with %s: %s, poll every %s, want %s", wire.HeaderPollInterval, tc.hint, a.poll, tc.want)
		}
	}
}

// TestIdleLogLine checks that the agent says, at info level, when it goes idle and when it will
// check in next.
func TestIdleLogLine(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotModified)
	}))
	defer srv.Close()
	a := testAgent(t, srv, Config{PollInterval: time.Hour})
	var logs lockedLog
	a.log = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "idle until the next check-in") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	out := logs.String()
	if !strings.Contains(out, `"level":"INFO","msg":"idle until the next check-in"`) || !strings.Contains(out, `"next_checkin":`) {
		t.Errorf("no idle line at info level with the next check-in time:\n%s", out)
	}
}

type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// With FixedPoll (the owner's --poll), the server's suggested interval does not replace the
// configured one.
func TestFixedPollKeepsInterval(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(wire.HeaderPollInterval, "300")
		w.WriteHeader(http.StatusNotModified)
	}))
	defer srv.Close()
	a := testAgent(t, srv, Config{PollInterval: 20 * time.Second, FixedPoll: true})
	if err := a.Cycle(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a.poll != 20*time.Second {
		t.Errorf("poll %s after the server suggested 300s, want the owner's 20s", a.poll)
	}
}
