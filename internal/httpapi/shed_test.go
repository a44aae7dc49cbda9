package httpapi

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// TestCheckinShedsOverload: past MaxCheckins in flight a check-in is refused with 503 and a
// Retry-After of 30–89 s, and the refused one does not count as in flight.
func TestCheckinShedsOverload(t *testing.T) {
	s := &Server{MaxCheckins: 2, Metrics: NewMetrics()}
	s.inflight.Store(2)
	w := httptest.NewRecorder()
	s.checkin(w, httptest.NewRequest(http.MethodPost, "/device/v1/checkin", strings.NewReader(`{}`)), "dev1")
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", w.Code)
	}
	if n, err := strconv.Atoi(w.Header().Get("Retry-After")); err != nil || n < 30 || n >= 90 {
		t.Fatalf("Retry-After %q", w.Header().Get("Retry-After"))
	}
	if got := s.inflight.Load(); got != 2 {
		t.Fatalf("%d in flight after a refusal, want 2", got)
	}
}
