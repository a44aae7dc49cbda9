// Package limit holds the per-client limits of the device-facing APIs (internal/httpapi's
// /device/v1 and internal/ddi's hawkBit DDI): reading a request body within a deadline before
// the request takes any shared place (ReadBody), the source of a request (ClientKey), requests in
// flight per key (PerKey), a request rate per key (Rate), and the Retry-After of a refusal.
package limit

import (
	"bytes"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
)

// Defaults of the per-client limits, shared by the device APIs.
const (
	DefaultBodyTimeout  = 10 * time.Second
	DefaultMaxPerDevice = 4
	DefaultMaxPerIP     = 32
)

// ReadBody reads a request's whole body, at most limit bytes, into buf, before the request takes
// any shared place: a client that trickles its body holds only its own connection. The body must
// arrive within timeout (http.ResponseController's read deadline on the connection); after that
// the error is apperr.Timeout (408), "Connection: close" is set and the connection is closed. The
// deadline is lifted once the body is in, so that the server's background read does not cancel
// the request while it is being served. A body over limit is apperr.TooLarge.
func ReadBody(w http.ResponseWriter, r *http.Request, limit int64, timeout time.Duration, buf *bytes.Buffer) error {
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(timeout)) //nolint:errcheck // not supported by test recorders
	lr := io.LimitedReader{R: r.Body, N: limit + 1}
	_, err := buf.ReadFrom(&lr)
	if err != nil {
		var ne net.Error
		if errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
			w.Header().Set("Connection", "close")
			return apperr.Wrap(apperr.Timeout, err, "request body not received within "+timeout.String())
		}
		return apperr.Wrap(apperr.Invalid, err, "reading the request body: "+err.Error())
	}
	rc.SetReadDeadline(time.Time{}) //nolint:errcheck // as above
	if int64(buf.Len()) > limit {
		return apperr.E(apperr.TooLarge, "request body is larger than %d bytes", limit)
	}
	return nil
}

// ClientKey names the source of a request for per-client limits: its IP address, or for IPv6
// its /64 (one subscriber's share; an attacker holds a whole /64 as easily as one address).
// Only the connection's address counts: forwarding headers are the client's to forge.
func ClientKey(r *http.Request) string {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	a := ap.Addr().Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// PerKey counts requests in flight per key (a device or a source address), so that one client
// cannot take another's share of a global bound. The zero value is ready; safe for concurrent
// use. A key's entry goes when its last request ends, so the map holds only clients with
// requests in flight.
type PerKey struct {
	mu sync.Mutex
	n  map[string]int
}

// Acquire counts a request of key in flight unless max of its requests already are; the caller
// that acquired releases.
func (p *PerKey) Acquire(key string, max int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n == nil {
		p.n = map[string]int{}
	}
	if p.n[key] >= max {
		return false
	}
	p.n[key]++
	return true
}

// Release ends a request that Acquire counted.
func (p *PerKey) Release(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n[key] <= 1 {
		delete(p.n, key)
	} else {
		p.n[key]--
	}
}

// MaxRateKeys bounds the clients a Rate remembers; past it, those whose allowance has refilled
// are forgotten, and if none has, new clients are refused until some have.
const MaxRateKeys = 1 << 17

// Rate is a token bucket per key: perMinute requests a minute, in bursts of at most perMinute.
// The zero value is ready; safe for concurrent use.
type Rate struct {
	mu sync.Mutex
	b  map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// Allow takes one request's allowance of key at now. When none is left it returns false and how
// long until there is.
func (l *Rate) Allow(key string, perMinute int, now time.Time) (bool, time.Duration) {
	return l.take(key, perMinute, now, false)
}

// Charge takes one request's allowance of key even if none is left (a request that proved
// costly after it was served), so that the next ones wait.
func (l *Rate) Charge(key string, perMinute int, now time.Time) {
	l.take(key, perMinute, now, true)
}

func (l *Rate) take(key string, perMinute int, now time.Time, force bool) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b == nil {
		l.b = map[string]*bucket{}
	}
	per := time.Minute / time.Duration(perMinute) // time to earn one request
	b, ok := l.b[key]
	if !ok {
		if len(l.b) >= MaxRateKeys {
			l.forget(now, per, perMinute)
			if len(l.b) >= MaxRateKeys && !force {
				return false, time.Minute
			}
		}
		b = &bucket{tokens: float64(perMinute), at: now}
		l.b[key] = b
	}
	b.tokens = math.Min(float64(perMinute), b.tokens+float64(now.Sub(b.at))/float64(per))
	b.at = now
	if b.tokens < 1 && !force {
		return false, time.Duration((1 - b.tokens) * float64(per))
	}
	b.tokens = math.Max(b.tokens-1, -float64(perMinute)) // a charge past zero delays by at most a minute
	return true, 0
}

// forget drops the buckets that have refilled: their clients are as if never seen.
func (l *Rate) forget(now time.Time, per time.Duration, perMinute int) {
	for k, b := range l.b {
		if b.tokens+float64(now.Sub(b.at))/float64(per) >= float64(perMinute) {
			delete(l.b, k)
		}
	}
}

// RetryAfter sets the Retry-After header of a refusal to wait, in whole seconds, at least 1
// (RFC 9110 10.2.3).
func RetryAfter(w http.ResponseWriter, wait time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(wait.Seconds())))))
}

// MaxRanges is the most byte ranges one artifact request may ask for. Go's ServeContent answers
// any number of small ranges with a multipart body whose per-part headers dwarf the bytes asked
// for; RFC 9110 14.2 lets a server ignore such a Range header, and then the whole file is
// served (200), no larger than a plain download.
const MaxRanges = 8

// TooManyRanges reports whether a Range header lists more than MaxRanges ranges.
func TooManyRanges(h string) bool {
	return strings.Count(h, ",") >= MaxRanges
}
