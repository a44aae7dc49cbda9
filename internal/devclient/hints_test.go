package devclient

import (
	"net/http"
	"testing"
	"time"

	"upkeep.dev/upkeep/wire"
)

func TestRetryAfterBounded(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{" 7 ", 7 * time.Second},
		{"0", 0},
		{"-30", 0},
		{"junk", 0},
		{"21600", MaxRetryAfter},
		{"86400", MaxRetryAfter},
		{"9223372036854775807", MaxRetryAfter}, // seconds that overflow a Duration
		{"99999999999999999999999", MaxRetryAfter}, // beyond int64
		{"-99999999999999999999999", 0},            // beyond int64, negative
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0}, // a date in the past
		{now.AddDate(5, 0, 0).Format(http.TimeFormat), MaxRetryAfter},
	} {
		if got := retryAfterAt(tc.in, now); got != tc.want {
			t.Errorf("Retry-After %q: %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestPollHintBodyWinsOn200(t *testing.T) {
	h := http.Header{wire.HeaderPollInterval: {"60"}}
	if got := hintSeconds(http.StatusOK, 90, h, wire.HeaderPollInterval); got != 90*time.Second {
		t.Errorf("200 with poll_seconds 90: %s, want 90s", got)
	}
	if got := hintSeconds(http.StatusOK, 0, h, wire.HeaderPollInterval); got != time.Minute {
		t.Errorf("200 without poll_seconds: %s, want the header's 60s", got)
	}
	if got := hintSeconds(http.StatusNotModified, 0, nil, wire.HeaderPollInterval); got != 0 {
		t.Errorf("304 without a hint: %s, want none", got)
	}
}

func TestJitterHint(t *testing.T) {
	h := http.Header{wire.HeaderPollJitter: {"30"}}
	for _, tc := range []struct {
		status, body int
		hdr          http.Header
		want         time.Duration
	}{
		{http.StatusOK, 45, h, 45 * time.Second},         // the body wins on a 200
		{http.StatusNotModified, 0, h, 30 * time.Second}, // the header on a 304
		{http.StatusNotModified, 0, http.Header{wire.HeaderPollJitter: {"-3"}}, 0},
		{http.StatusNotModified, 0, http.Header{wire.HeaderPollJitter: {"1e99"}}, 0},
		{http.StatusNotModified, 0, http.Header{wire.HeaderPollJitter: {"99999999999999999999"}}, maxPollHintSeconds * time.Second},
		{http.StatusNotModified, 0, nil, 0},
	} {
		if got := hintSeconds(tc.status, tc.body, tc.hdr, wire.HeaderPollJitter); got != tc.want {
			t.Errorf("jitter hint (%d, %d, %v) = %s, want %s", tc.status, tc.body, tc.hdr, got, tc.want)
		}
	}
}

// NextPoll is the agent's rule, which the benches share: within the suggested spread, at most
// half the interval; ±20% without one.
func TestNextPoll(t *testing.T) {
	for _, tc := range []struct {
		poll, jitter, lo, hi time.Duration
	}{
		{time.Minute, 10 * time.Second, 50 * time.Second, 70 * time.Second},
		{time.Minute, 0, 48 * time.Second, 72 * time.Second},                     // no hint: ±20%
		{40 * time.Second, 30 * time.Second, 20 * time.Second, 60 * time.Second}, // at most half the interval
		{time.Minute, time.Hour, 30 * time.Second, 90 * time.Second},
		{0, 10 * time.Second, 0, 0},
	} {
		for range 200 {
			if d := NextPoll(tc.poll, tc.jitter); d < tc.lo || d > tc.hi {
				t.Fatalf("NextPoll(%s, %s) = %s, want within [%s, %s]", tc.poll, tc.jitter, d, tc.lo, tc.hi)
			}
		}
	}
	if d := Spread(time.Minute, -time.Second); d != time.Minute {
		t.Errorf("Spread with a negative spread: %s, want the interval", d)
	}
}
