package devclient

import (
	"net/http"
	"testing"
	"time"

	"upkeep.dev/upkeep/wire"
)

// FuzzServerHints feeds the parsers of the server's scheduling headers (Retry-After,
// Upkeep-Poll-Seconds, Upkeep-Poll-Jitter-Seconds) arbitrary values: whatever a server or a
// proxy sends, the waits stay within their bounds and nothing panics.
func FuzzServerHints(f *testing.F) {
	for _, s := range []string{"", "30", "-1", "0", "9223372036854775807", "99999999999999999999", "1e9", " 7 ", "Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT"} {
		f.Add(s)
	}
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		if d := retryAfterAt(v, now); d < 0 || d > MaxRetryAfter {
			t.Fatalf("Retry-After %q: %s, outside [0, %s]", v, d, MaxRetryAfter)
		}
		h := http.Header{wire.HeaderPollInterval: {v}, wire.HeaderPollJitter: {v}}
		poll := hintSeconds(http.StatusNotModified, 0, h, wire.HeaderPollInterval)
		if poll < 0 || poll > maxPollHintSeconds*time.Second {
			t.Fatalf("poll hint %q: %s", v, poll)
		}
		jitter := hintSeconds(http.StatusNotModified, 0, h, wire.HeaderPollJitter)
		if jitter < 0 || jitter > maxPollHintSeconds*time.Second {
			t.Fatalf("jitter hint %q: %s", v, jitter)
		}
		if d := NextPoll(5*time.Minute, jitter); d < 150*time.Second || d > 450*time.Second {
			t.Fatalf("jitter hint %q: next poll in %s, beyond half the interval", v, d)
		}
		if d := NextPoll(poll, jitter); d < poll/2 || d > poll+poll/2 {
			t.Fatalf("hints %q: next poll in %s, interval %s", v, d, poll)
		}
	})
}
