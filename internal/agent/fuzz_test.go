package agent

import (
	"net/http"
	"testing"
	"time"

	"upkeep.dev/upkeep/wire"
)

// FuzzServerHints feeds the agent's parsers of the server's scheduling headers (Retry-After,
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
		if d := pollHint(http.StatusNotModified, 0, h); d < 0 || d > maxPollHintSeconds*time.Second {
			t.Fatalf("poll hint %q: %s", v, d)
		}
		if d := jitterHint(http.StatusNotModified, 0, h, 5*time.Minute); d < 0 || d > 150*time.Second {
			t.Fatalf("jitter hint %q: %s, more than half the interval", v, d)
		}
	})
}
