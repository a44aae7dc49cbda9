package httpapi

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

// Defaults of the per-client limits (Server fields of the same meaning).
const (
	DefaultBodyTimeout      = 10 * time.Second
	DefaultMaxPerDevice     = 4
	DefaultMaxPerIP         = 32
	DefaultEnrollPerMinute  = 30
	DefaultReportsPerMinute = 20
)

// readDeviceBody reads a device request's whole body, at most limit bytes, into buf before the request
// takes any shared slot: a client that trickles its body holds only its own connection, never a
// place among MaxCheckins or MaxTokenRequests. The body must arrive within BodyTimeout
// (http.ResponseController's read deadline on the connection); after that the answer is 408 and
// the connection is closed. The deadline is lifted once the body is in, so that the server's
// background read does not cancel the request while it is being served.
func (s *Server) readDeviceBody(w http.ResponseWriter, r *http.Request, limit int64, buf *bytes.Buffer) error {
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(s.BodyTimeout)) //nolint:errcheck // not supported by test recorders
	lr := io.LimitedReader{R: r.Body, N: limit + 1}
	_, err := buf.ReadFrom(&lr)
	if err != nil {
		var ne net.Error
		if errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
			w.Header().Set("Connection", "close")
			return apperr.Wrap(apperr.Timeout, err, "request body not received within "+s.BodyTimeout.String())
		}
		return apperr.Wrap(apperr.Invalid, err, "reading the request body: "+err.Error())
	}
	rc.SetReadDeadline(time.Time{}) //nolint:errcheck // as above
	if int64(buf.Len()) > limit {
		return apperr.E(apperr.TooLarge, "request body is larger than %d bytes", limit)
	}
	return nil
}

// clientKey names the source of a request for per-client limits: its IP address, or for IPv6
// its /64 (one subscriber's share; an attacker holds a whole /64 as easily as one address).
// Only the connection's address counts: forwarding headers are the client's to forge.
func clientKey(r *http.Request) string {
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

// perKey counts requests in flight per key (a device or a source address), so that one client
// cannot take another's share of a global bound. Safe for concurrent use; a key's entry goes
// when its last request ends, so the map holds only clients with requests in flight.
type perKey struct {
	mu sync.Mutex
	n  map[string]int
}

// acquire counts a request of key in flight unless max of its requests already are; the caller
// that acquired releases.
func (p *perKey) acquire(key string, max int) bool {
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

func (p *perKey) release(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n[key] <= 1 {
		delete(p.n, key)
	} else {
		p.n[key]--
	}
}

// maxRateKeys bounds the clients a rate limiter remembers; past it, those whose allowance has
// refilled are forgotten, and if none has, new clients are refused until some have.
const maxRateKeys = 1 << 17

// rate is a token bucket per key: perMinute requests a minute, in bursts of at most perMinute.
// Safe for concurrent use.
type rate struct {
	mu sync.Mutex
	b  map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// allow takes one request's allowance of key at now. When none is left it returns false and how
// long until there is.
func (l *rate) allow(key string, perMinute int, now time.Time) (bool, time.Duration) {
	return l.take(key, perMinute, now, false)
}

// charge takes one request's allowance of key even if none is left (a request that proved
// costly after it was served), so that the next ones wait.
func (l *rate) charge(key string, perMinute int, now time.Time) {
	l.take(key, perMinute, now, true)
}

func (l *rate) take(key string, perMinute int, now time.Time, force bool) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b == nil {
		l.b = map[string]*bucket{}
	}
	per := time.Minute / time.Duration(perMinute) // time to earn one request
	b, ok := l.b[key]
	if !ok {
		if len(l.b) >= maxRateKeys {
			l.forget(now, per, perMinute)
			if len(l.b) >= maxRateKeys && !force {
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
func (l *rate) forget(now time.Time, per time.Duration, perMinute int) {
	for k, b := range l.b {
		if b.tokens+float64(now.Sub(b.at))/float64(per) >= float64(perMinute) {
			delete(l.b, k)
		}
	}
}

// busyFor refuses a request that exceeded its client's rate: 429 with the Retry-After when its
// allowance is back (whole seconds, at least 1).
func (s *Server) busyFor(w http.ResponseWriter, r *http.Request, wait time.Duration, msg string) {
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(wait.Seconds())))))
	s.fail(w, r, apperr.E(apperr.Busy, "%s", msg))
}

// maxRanges is the most byte ranges one artifact request may ask for. Go's ServeContent answers
// any number of small ranges with a multipart body whose per-part headers dwarf the bytes asked
// for; RFC 9110 14.2 lets a server ignore such a Range header, and then the whole file is
// served (200), no larger than a plain download. The agent asks for one range.
const maxRanges = 8

// tooManyRanges reports whether a Range header lists more than maxRanges ranges.
func tooManyRanges(h string) bool {
	return strings.Count(h, ",") >= maxRanges
}
