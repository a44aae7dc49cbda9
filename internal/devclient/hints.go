package devclient

import (
	"crypto/rand"
	"errors"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MaxRetryAfter caps the wait a server's Retry-After can impose on a device. A longer value,
// from a misconfigured or hostile server, would silence the device for days; past the cap the
// device asks again and gets a fresh answer.
const MaxRetryAfter = 6 * time.Hour

// retryAfter parses a Retry-After header (RFC 9110 10.2.3: delay-seconds or an HTTP-date). It
// returns 0 for an absent, malformed, negative or past value, and at most MaxRetryAfter; a huge
// number of seconds does not overflow.
func retryAfter(v string) time.Duration {
	return retryAfterAt(v, time.Now())
}

func retryAfterAt(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if s, err := strconv.ParseInt(v, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		switch {
		case s <= 0: // negative (or a negative overflow): ignore
			return 0
		case s >= int64(MaxRetryAfter/time.Second):
			return MaxRetryAfter
		}
		d = time.Duration(s) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return max(0, min(d, MaxRetryAfter))
}

// hintSeconds reads a number of seconds the server suggests: from the body on a 200 when it
// carries one, else from the header key; bounded by maxPollHintSeconds, 0 when absent or not
// positive.
func hintSeconds(status, bodySeconds int, hdr http.Header, key string) time.Duration {
	s := int64(0)
	if status == http.StatusOK && bodySeconds > 0 {
		s = int64(bodySeconds)
	} else if v := hdr.Get(key); v != "" {
		if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
			s = n // beyond int64: the largest, clamped below
		}
	}
	if s <= 0 {
		return 0
	}
	return time.Duration(min(s, maxPollHintSeconds)) * time.Second
}

// maxPollHintSeconds bounds a poll hint (a week), so that scaling it cannot overflow.
const maxPollHintSeconds = 7 * 24 * 3600

// NextPoll is the wait before the next poll, given the interval and the spread the server
// suggested (CheckinResult.Poll and Jitter, or the device's own interval): a random time within
// poll ± jitter, the spread at most half the interval; ±20% when jitter is 0 (none suggested).
// Devices that poll at a random time within the spread do not come back in lockstep.
func NextPoll(poll, jitter time.Duration) time.Duration {
	if jitter <= 0 {
		return Jitter(poll)
	}
	return Spread(poll, min(jitter, poll/2))
}

// Backoff bounds a device's retries after failed check-ins: the first after FirstBackoff, each
// next one twice as late, never later than MaxBackoff (before jitter, ±20%). The cap keeps a
// fleet's return after an outage of any length within 10 minutes (MaxBackoff plus 20%), while
// the server's Retry-After, which a device never undercuts, still spreads the returns.
const (
	FirstBackoff = 5 * time.Second
	MaxBackoff   = 8 * time.Minute
)

// NextBackoff is the retry delay after a failure that followed a delay of prev (0: the first).
func NextBackoff(prev time.Duration) time.Duration {
	return min(max(2*prev, FirstBackoff), MaxBackoff)
}

// RetryWait is how long to wait before a retry that backoff and the server's Retry-After
// call for: the backoff jittered, never sooner than retryAfter.
func RetryWait(backoff, retryAfter time.Duration) time.Duration {
	return max(Jitter(max(backoff, retryAfter)), retryAfter)
}

// Jitter spreads d by ±20%, so that a fleet's retries and polls do not fall together.
func Jitter(d time.Duration) time.Duration { return Spread(d, d/5) }

// Spread returns a random wait in [d-j, d+j], j at most d; 0 if d is not positive, d if j is
// not.
func Spread(d, j time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	if j <= 0 {
		return d
	}
	j = min(j, d)
	n, err := rand.Int(rand.Reader, big.NewInt(int64(2*j)+1))
	if err != nil {
		return d
	}
	return max(0, d-j+time.Duration(n.Int64()))
}
