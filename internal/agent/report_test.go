package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"upkeep.dev/upkeep/wire"
)

// TestRateLimitedReportKept: a report the server refuses with 429 and Retry-After (the device's
// report allowance is used up) loses no event: the events stay queued, the agent does
// not send them again before Retry-After ends, and sends them all after it.
func TestRateLimitedReportKept(t *testing.T) {
	var mu sync.Mutex
	refuse, tries := true, 0
	var got []wire.Event
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/device/v1/report" {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		tries++
		if refuse {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		var rep wire.Report
		if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
			t.Errorf("report: %v", err)
		}
		got = append(got, rep.Events...)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	a := testAgent(t, srv, Config{PollInterval: time.Minute})
	ctx := context.Background()
	a.event("fw-2", wire.StepDownload, wire.StatusOK, false, "")
	a.event("fw-2", wire.StepInstall, wire.StatusFailed, true, "disk full")
	if err := a.flush(ctx); err == nil {
		t.Fatal("a refused report flushed without error")
	}
	if n := len(a.State().Outbox); n != 2 {
		t.Fatalf("after a refused report %d events queued, want 2", n)
	}
	mu.Lock()
	refuse = false
	mu.Unlock()
	if err := a.flush(ctx); err == nil || tries != 1 {
		t.Fatalf("flush within Retry-After: err %v after %d tries; want it held back, 1 try", err, tries)
	}
	time.Sleep(1100 * time.Millisecond)
	if err := a.flush(ctx); err != nil {
		t.Fatalf("flush after Retry-After: %v", err)
	}
	if len(got) != 2 || got[1].Message != "disk full" || len(a.State().Outbox) != 0 {
		t.Fatalf("server got %d events %+v, %d still queued; want both delivered", len(got), got, len(a.State().Outbox))
	}
}
