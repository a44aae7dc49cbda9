package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/wire"
)

// wantBusy checks a refusal under overload: 429, code busy, a Retry-After in the window; it
// returns the Retry-After in seconds.
func wantBusy(t *testing.T, w *httptest.ResponseRecorder) int {
	t.Helper()
	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("status %d, want 429", w.Code)
	}
	var e wire.Error
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Code != string(apperr.Busy) {
		t.Fatalf("body %q, want code %q", w.Body, apperr.Busy)
	}
	n, err := strconv.Atoi(w.Header().Get("Retry-After"))
	if err != nil || n < retryMinSeconds || n >= retryMinSeconds+retrySpreadSeconds {
		t.Fatalf("Retry-After %q, want %d-%d s", w.Header().Get("Retry-After"), retryMinSeconds, retryMinSeconds+retrySpreadSeconds-1)
	}
	return n
}

// TestCheckinShedsOverload: past MaxCheckins in flight a check-in is refused with 429 and a
// Retry-After spread over 30–89 s (so that shed devices do not come back together), and the
// refused one does not count as in flight.
func TestCheckinShedsOverload(t *testing.T) {
	s := &Server{MaxCheckins: 2, Metrics: NewMetrics()}
	s.inflight.Store(2)
	seen := map[int]bool{}
	for range 20 {
		w := httptest.NewRecorder()
		s.checkin(w, httptest.NewRequest(http.MethodPost, "/device/v1/checkin", strings.NewReader(`{}`)), "dev1")
		seen[wantBusy(t, w)] = true
	}
	if len(seen) < 2 {
		t.Errorf("20 refusals all said Retry-After %v: the retries are not spread", seen)
	}
	if got := s.inflight.Load(); got != 2 {
		t.Fatalf("%d in flight after a refusal, want 2", got)
	}
}

// TestTokenShedsOverload: device token requests (a signature check and a store read each) are
// bounded in the same way, before the body is read.
func TestTokenShedsOverload(t *testing.T) {
	s := &Server{MaxTokenRequests: 3, Metrics: NewMetrics()}
	s.tokensInflight.Store(3)
	w := httptest.NewRecorder()
	s.token(w, httptest.NewRequest(http.MethodPost, "/device/v1/token", strings.NewReader(`{}`)))
	wantBusy(t, w)
	if got := s.tokensInflight.Load(); got != 3 {
		t.Fatalf("%d token requests in flight after a refusal, want 3", got)
	}
}

// TestPollJitterWidensUnderLoad: the suggested jitter is a fifth of the poll interval, and half
// of it while more than half of MaxCheckins are in flight.
func TestPollJitterWidensUnderLoad(t *testing.T) {
	s := &Server{MaxCheckins: 100}
	if got := s.pollJitter(300); got != 60 {
		t.Errorf("idle: jitter %d, want 60", got)
	}
	s.inflight.Store(51)
	if got := s.pollJitter(300); got != 150 {
		t.Errorf("loaded: jitter %d, want 150", got)
	}
}
