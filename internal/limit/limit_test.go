package limit

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
)

// TestReadBodyDeadline: a body that trickles past the timeout is apperr.Timeout and the
// connection is to be closed; a whole body within it is read; a body over the limit is
// apperr.TooLarge.
func TestReadBodyDeadline(t *testing.T) {
	var got error
	done := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var buf bytes.Buffer
		got = ReadBody(w, r, 64, 200*time.Millisecond, &buf)
		if got == nil && buf.String() != "hello" {
			t.Errorf("body %q", buf.String())
		}
		w.WriteHeader(apperr.HTTPStatus(apperr.CodeOf(got)))
		done <- struct{}{}
	}))
	defer srv.Close()

	resp, err := http.Post(srv.URL, "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	<-done
	if got != nil {
		t.Fatalf("whole body: %v", got)
	}
	resp, err = http.Post(srv.URL, "text/plain", strings.NewReader(strings.Repeat("x", 65)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	<-done
	if !apperr.Is(got, apperr.TooLarge) {
		t.Fatalf("large body: %v", got)
	}

	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
	<-done
	if !apperr.Is(got, apperr.Timeout) {
		t.Fatalf("slow body: %v", got)
	}
}

// TestPerKeyAndRate: shares are per key and come back when released; a rate refuses past its
// burst with the wait until the next request, other keys unaffected.
func TestPerKeyAndRate(t *testing.T) {
	var p PerKey
	if !p.Acquire("a", 1) || p.Acquire("a", 1) || !p.Acquire("b", 1) {
		t.Fatal("per-key shares")
	}
	p.Release("a")
	if !p.Acquire("a", 1) {
		t.Fatal("released share not back")
	}
	var l Rate
	t0 := time.Unix(0, 0)
	for range 6 {
		if ok, _ := l.Allow("a", 6, t0); !ok {
			t.Fatal("refused within the burst")
		}
	}
	if ok, wait := l.Allow("a", 6, t0); ok || wait != 10*time.Second {
		t.Fatalf("past the burst: %v %s", ok, wait)
	}
	if ok, _ := l.Allow("b", 6, t0); !ok {
		t.Fatal("another key refused")
	}
	w := httptest.NewRecorder()
	RetryAfter(w, 1500*time.Millisecond)
	if got := w.Header().Get("Retry-After"); got != "2" {
		t.Fatalf("Retry-After %q", got)
	}
	if TooManyRanges("bytes=0-1,2-3") || !TooManyRanges("bytes="+strings.Repeat("0-1,", MaxRanges)) {
		t.Fatal("TooManyRanges")
	}
}
