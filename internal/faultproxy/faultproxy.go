// Package faultproxy is an HTTP reverse proxy for tests that misbehaves on request. It forwards
// every request to a real server, headers and status included (Range, If-Range, Authorization,
// 206, Content-Range), and can be told to break the next few responses whose path has a given
// prefix: drop or reset the connection mid-body, stall, throttle, truncate, corrupt a byte, answer with an
// overload status and Retry-After, or send more bytes than the real body. It records every
// request it sees so that tests can assert what a client asked for and when.
package faultproxy

import (
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Fault is a way to break one response. The concrete faults are the types below.
type Fault interface{ fault() }

// Drop resets the connection after After body bytes.
type Drop struct{ After int64 }

// Stall stops sending for For after After body bytes, then sends the rest.
type Stall struct {
	After int64
	For   time.Duration
}

// Truncate announces the full Content-Length but sends only After body bytes, then closes.
type Truncate struct{ After int64 }

// Corrupt flips every bit of the body byte at offset At (counted in the response body, not in
// the resource a Range request addresses).
type Corrupt struct{ At int64 }

// Status answers Code with an optional Retry-After header, without asking the server.
type Status struct {
	Code       int
	RetryAfter string
}

// Extra sends Bytes bytes after the real body and drops Content-Length.
type Extra struct{ Bytes int64 }

// Throttle sends the whole body, but at about Rate bytes per second: a slow link.
type Throttle struct{ Rate int64 }

func (Drop) fault()     {}
func (Stall) fault()    {}
func (Truncate) fault() {}
func (Corrupt) fault()  {}
func (Status) fault()   {}
func (Extra) fault()    {}
func (Throttle) fault() {}

// Always makes Inject apply a fault to every matching request until Clear.
const Always = -1

// Request is what the proxy saw of one request.
type Request struct {
	Time    time.Time // when it arrived
	Method  string
	Path    string
	Range   string
	IfRange string
	Fault   Fault // nil if it was forwarded untouched
}

type rule struct {
	prefix string
	left   int // Always, or how many more requests to break
	f      Fault
}

// Proxy is a listening fault-injecting proxy. Its methods are safe for concurrent use.
type Proxy struct {
	target *url.URL
	srv    *http.Server
	ln     net.Listener
	tr     *http.Transport
	done   chan struct{}
	once   sync.Once

	mu    sync.Mutex
	rules []*rule
	seen  []Request
}

// New starts a proxy for target on a loopback port. It panics if it cannot listen, as
// httptest.NewServer does.
func New(target *url.URL) *Proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic("faultproxy: listen: " + err.Error())
	}
	p := &Proxy{target: target, ln: ln, done: make(chan struct{}),
		tr: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 16}}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go p.srv.Serve(ln) //nolint:errcheck // ends with Close
	return p
}

// URL is the proxy's base URL, without a trailing slash.
func (p *Proxy) URL() string { return "http://" + p.ln.Addr().String() }

// Close stops the proxy, ending stalled responses.
func (p *Proxy) Close() {
	p.once.Do(func() { close(p.done) })
	p.srv.Close()
	p.tr.CloseIdleConnections()
}

// Inject breaks the next times requests whose path starts with prefix with f (or every one
// with Always). Rules apply in the order they were added; a used-up rule is skipped.
func (p *Proxy) Inject(prefix string, times int, f Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = append(p.rules, &rule{prefix: prefix, left: times, f: f})
}

// Clear removes every fault; requests are forwarded untouched from now on.
func (p *Proxy) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = nil
}

// Requests returns, oldest first, the requests seen whose path starts with prefix.
func (p *Proxy) Requests(prefix string) []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Request
	for _, r := range p.seen {
		if strings.HasPrefix(r.Path, prefix) {
			out = append(out, r)
		}
	}
	return out
}

// Count returns how many requests whose path starts with prefix the proxy has seen.
func (p *Proxy) Count(prefix string) int { return len(p.Requests(prefix)) }

// take records r and returns the fault that applies to it, if any.
func (p *Proxy) take(r *http.Request) Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	var f Fault
	for _, ru := range p.rules {
		if ru.left != 0 && strings.HasPrefix(r.URL.Path, ru.prefix) {
			if ru.left > 0 {
				ru.left--
			}
			f = ru.f
			break
		}
	}
	p.seen = append(p.seen, Request{Time: time.Now(), Method: r.Method, Path: r.URL.Path,
		Range: r.Header.Get("Range"), IfRange: r.Header.Get("If-Range"), Fault: f})
	return f
}

// hopByHop are the headers that belong to one connection, not to the message (RFC 9110 7.6.1).
var hopByHop = []string{"Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// ServeHTTP implements http.Handler: it forwards r, or answers it with the fault that applies.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f := p.take(r)
	if s, ok := f.(Status); ok {
		if s.RetryAfter != "" {
			w.Header().Set("Retry-After", s.RetryAfter)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(s.Code)
		io.WriteString(w, `{"code":"unavailable","message":"try again later"}`) //nolint:errcheck
		return
	}
	u := *p.target
	u.Path, u.RawPath, u.RawQuery = strings.TrimRight(u.Path, "/")+r.URL.Path, "", r.URL.RawQuery
	out, err := http.NewRequestWithContext(r.Context(), r.Method, u.String(), r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out.ContentLength, out.Header = r.ContentLength, r.Header.Clone()
	for _, h := range hopByHop {
		out.Header.Del(h)
	}
	resp, err := p.tr.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	for _, h := range hopByHop {
		w.Header().Del(h)
	}
	if _, ok := f.(Extra); ok {
		w.Header().Del("Content-Length")
	}
	w.WriteHeader(resp.StatusCode)
	p.copyBody(w, r, resp.Body, f)
}

// copyBody sends body to w, breaking it as f says.
func (p *Proxy) copyBody(w http.ResponseWriter, r *http.Request, body io.Reader, f Fault) {
	rc := http.NewResponseController(w)
	cut, flip := int64(-1), int64(-1)
	switch f := f.(type) {
	case Drop:
		cut = f.After
	case Stall:
		cut = f.After
	case Truncate:
		cut = f.After
	case Corrupt:
		flip = f.At
	}
	buf := make([]byte, 32<<10)
	var sent int64
	for {
		if cut >= 0 && sent >= cut {
			rc.Flush() //nolint:errcheck
			switch f := f.(type) {
			case Drop:
				if conn, _, err := rc.Hijack(); err == nil {
					if tc, ok := conn.(*net.TCPConn); ok {
						tc.SetLinger(0) //nolint:errcheck // a reset, not an orderly close
					}
					conn.Close()
				}
				return
			case Truncate:
				return
			case Stall:
				select {
				case <-time.After(f.For):
				case <-r.Context().Done():
					return
				case <-p.done:
					return
				}
				cut = -1
			}
		}
		chunk := buf
		if cut >= 0 && cut-sent < int64(len(chunk)) {
			chunk = chunk[:cut-sent]
		}
		n, err := body.Read(chunk)
		if flip >= sent && flip < sent+int64(n) {
			chunk[flip-sent] ^= 0xff
		}
		if n > 0 {
			if _, werr := w.Write(chunk[:n]); werr != nil {
				return
			}
			sent += int64(n)
			if th, ok := f.(Throttle); ok && th.Rate > 0 {
				rc.Flush() //nolint:errcheck
				select {
				case <-time.After(time.Duration(int64(n) * int64(time.Second) / th.Rate)):
				case <-r.Context().Done():
					return
				case <-p.done:
					return
				}
			}
		}
		if err != nil {
			break
		}
	}
	if e, ok := f.(Extra); ok {
		for i := range buf {
			buf[i] = 'X'
		}
		for left := e.Bytes; left > 0; {
			n := min(left, int64(len(buf)))
			if _, err := w.Write(buf[:n]); err != nil {
				return
			}
			left -= n
		}
	}
}
