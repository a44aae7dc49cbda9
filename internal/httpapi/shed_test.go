package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

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
// bounded in the same way, once their body is in.
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

// TestPerClientShares: one device's check-ins, beyond MaxPerDevice in flight, are refused while
// another device's are served; one address's token requests likewise beyond MaxPerIP.
func TestPerClientShares(t *testing.T) {
	s := &Server{MaxCheckins: 100, MaxTokenRequests: 100, MaxPerDevice: 2, MaxPerIP: 1, Metrics: NewMetrics()}
	s.perDevice.acquire("dev1", 2)
	s.perDevice.acquire("dev1", 2)
	w := httptest.NewRecorder()
	s.checkin(w, httptest.NewRequest(http.MethodPost, "/device/v1/checkin", strings.NewReader(`{}`)), "dev1")
	wantBusy(t, w)
	if !s.perDevice.acquire("dev2", 2) {
		t.Fatal("dev1's check-ins took dev2's share")
	}
	req := httptest.NewRequest(http.MethodPost, "/device/v1/token", strings.NewReader(`{}`))
	s.perIP.acquire(clientKey(req), 1)
	w = httptest.NewRecorder()
	s.token(w, req)
	wantBusy(t, w)
	if got := s.tokensInflight.Load(); got != 0 {
		t.Fatalf("%d token requests in flight after a refusal by address, want 0", got)
	}
}

func TestClientKey(t *testing.T) {
	for addr, want := range map[string]string{
		"192.0.2.7:4000":              "192.0.2.7",
		"[::ffff:192.0.2.7]:4000":     "192.0.2.7",
		"[2001:db8:1:2:3:4:5:6]:4000": "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:4000": "2001:db8:1:2::/64",
		"not an address":              "not an address",
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = addr
		if got := clientKey(r); got != want {
			t.Errorf("clientKey(%s) = %s, want %s", addr, got, want)
		}
	}
}

// TestRate: a client gets perMinute requests in a burst, then one each 60/perMinute seconds,
// told how long to wait; a charge past the allowance delays the next request.
func TestRate(t *testing.T) {
	var l rate
	t0 := time.Unix(1000, 0)
	for i := range 6 {
		if ok, _ := l.allow("a", 6, t0); !ok {
			t.Fatalf("request %d of a burst of 6 refused", i)
		}
	}
	ok, wait := l.allow("a", 6, t0)
	if ok || wait != 10*time.Second {
		t.Fatalf("7th request: ok %v, wait %s; want refused, 10s", ok, wait)
	}
	if ok, _ := l.allow("b", 6, t0); !ok {
		t.Fatal("a's use refused b")
	}
	if ok, _ := l.allow("a", 6, t0.Add(10*time.Second)); !ok {
		t.Fatal("refused after the wait it was told")
	}
	l.charge("a", 6, t0.Add(10*time.Second))
	if ok, wait := l.allow("a", 6, t0.Add(15*time.Second)); ok || wait != 15*time.Second {
		t.Fatalf("after a charge: ok %v, wait %s; want refused, 15s", ok, wait)
	}
}
