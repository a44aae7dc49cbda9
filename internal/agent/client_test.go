package agent

import (
	"net/http"
	"testing"
	"time"
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
