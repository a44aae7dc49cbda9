package httpapi

import (
	"bytes"
	"net/http"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/limit"
)

// Defaults of the per-client limits (Server fields of the same meaning).
const (
	DefaultBodyTimeout      = limit.DefaultBodyTimeout
	DefaultMaxPerDevice     = limit.DefaultMaxPerDevice
	DefaultMaxPerIP         = limit.DefaultMaxPerIP
	DefaultEnrollPerMinute  = 30
	DefaultReportsPerMinute = 20
)

// readDeviceBody reads a device request's whole body, at most limit bytes, into buf before the
// request takes any shared slot (limit.ReadBody): a client that trickles its body holds only its
// own connection, never a place among MaxCheckins or MaxTokenRequests. After BodyTimeout the
// answer is 408 and the connection is closed.
func (s *Server) readDeviceBody(w http.ResponseWriter, r *http.Request, n int64, buf *bytes.Buffer) error {
	return limit.ReadBody(w, r, n, s.BodyTimeout, buf)
}

// clientKey names the source of a request for per-client limits (limit.ClientKey).
func clientKey(r *http.Request) string { return limit.ClientKey(r) }

// perKey counts requests in flight per key (limit.PerKey).
type perKey struct{ limit.PerKey }

func (p *perKey) acquire(key string, max int) bool { return p.Acquire(key, max) }
func (p *perKey) release(key string)               { p.Release(key) }

// rate is a token bucket per key (limit.Rate).
type rate struct{ limit.Rate }

func (l *rate) allow(key string, perMinute int, now time.Time) (bool, time.Duration) {
	return l.Allow(key, perMinute, now)
}

func (l *rate) charge(key string, perMinute int, now time.Time) { l.Charge(key, perMinute, now) }

// busyFor refuses a request that exceeded its client's rate: 429 with the Retry-After when its
// allowance is back (whole seconds, at least 1).
func (s *Server) busyFor(w http.ResponseWriter, r *http.Request, wait time.Duration, msg string) {
	limit.RetryAfter(w, wait)
	s.fail(w, r, apperr.E(apperr.Busy, "%s", msg))
}

// tooManyRanges reports whether a Range header lists more than limit.MaxRanges ranges; the
// agent asks for one.
func tooManyRanges(h string) bool { return limit.TooManyRanges(h) }
