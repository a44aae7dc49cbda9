package faultproxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

const blobPath = "/blob/fw.img"

// upstream serves a 100 KiB blob with Range support at blobPath, echoing Authorization back
// in X-Auth, and counts the requests that reach it.
func upstream(t *testing.T) (*Proxy, []byte, *atomic.Int64) {
	t.Helper()
	blob := make([]byte, 100<<10)
	for i := range blob {
		blob[i] = byte(i * 31)
	}
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("X-Auth", r.Header.Get("Authorization"))
		w.Header().Set("ETag", `"v1"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(blob))
	}))
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	p := New(u)
	t.Cleanup(p.Close)
	return p, blob, &hits
}

func get(t *testing.T, p *Proxy, hdr http.Header) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, p.URL()+blobPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	if hdr != nil {
		req.Header = hdr
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func TestProxyPassThrough(t *testing.T) {
	p, blob, _ := upstream(t)
	resp, body, err := get(t, p, http.Header{"Authorization": {"Bearer tok"}})
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, blob) {
		t.Fatalf("got %d, %d bytes, %v; want 200 and the blob", resp.StatusCode, len(body), err)
	}
	if got := resp.Header.Get("X-Auth"); got != "Bearer tok" {
		t.Errorf("upstream saw Authorization %q", got)
	}
	resp, body, err = get(t, p, http.Header{"Range": {"bytes=1000-"}, "If-Range": {`"v1"`}})
	if err != nil || resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, blob[1000:]) {
		t.Fatalf("range: got %d, %d bytes, %v; want 206 and the tail", resp.StatusCode, len(body), err)
	}
	if got, want := resp.Header.Get("Content-Range"), "bytes 1000-102399/102400"; got != want {
		t.Errorf("Content-Range %q, want %q", got, want)
	}
	reqs := p.Requests("/blob/")
	if len(reqs) != 2 || reqs[0].Range != "" || reqs[1].Range != "bytes=1000-" || reqs[1].IfRange != `"v1"` || reqs[1].Fault != nil {
		t.Errorf("recorded %+v", reqs)
	}
	if p.Count("/other/") != 0 {
		t.Errorf("counted requests under another prefix")
	}
}

func TestProxyFaults(t *testing.T) {
	tests := []struct {
		name  string
		fault Fault
		check func(t *testing.T, resp *http.Response, body, blob []byte, err error)
	}{
		{"drop", Drop{After: 10 << 10}, func(t *testing.T, resp *http.Response, body, blob []byte, err error) {
			if err == nil || len(body) > 10<<10 || !bytes.Equal(body, blob[:len(body)]) {
				t.Errorf("got %d bytes, err %v; want at most 10 KiB of the blob and an error", len(body), err)
			}
		}},
		{"truncate", Truncate{After: 5000}, func(t *testing.T, resp *http.Response, body, blob []byte, err error) {
			if !errors.Is(err, io.ErrUnexpectedEOF) || !bytes.Equal(body, blob[:5000]) {
				t.Errorf("got %d bytes, err %v; want 5000 bytes and unexpected EOF", len(body), err)
			}
			if resp.ContentLength != int64(len(blob)) {
				t.Errorf("Content-Length %d, want the full %d", resp.ContentLength, len(blob))
			}
		}},
		{"corrupt", Corrupt{At: 70000}, func(t *testing.T, resp *http.Response, body, blob []byte, err error) {
			if err != nil || len(body) != len(blob) {
				t.Fatalf("got %d bytes, err %v", len(body), err)
			}
			want := bytes.Clone(blob)
			want[70000] ^= 0xff
			if !bytes.Equal(body, want) {
				t.Errorf("body differs from the blob with byte 70000 flipped")
			}
		}},
		{"extra", Extra{Bytes: 3000}, func(t *testing.T, resp *http.Response, body, blob []byte, err error) {
			if err != nil || resp.ContentLength != -1 || len(body) != len(blob)+3000 || !bytes.Equal(body[:len(blob)], blob) {
				t.Errorf("got Content-Length %d, %d bytes, err %v; want -1 and the blob plus 3000", resp.ContentLength, len(body), err)
			}
		}},
		{"stall", Stall{After: 1000, For: 150 * time.Millisecond}, func(t *testing.T, resp *http.Response, body, blob []byte, err error) {
			if err != nil || !bytes.Equal(body, blob) {
				t.Errorf("got %d bytes, err %v; want the whole blob", len(body), err)
			}
		}},
		{"throttle", Throttle{Rate: 400 << 10}, func(t *testing.T, resp *http.Response, body, blob []byte, err error) {
			if err != nil || !bytes.Equal(body, blob) {
				t.Errorf("got %d bytes, err %v; want the whole blob", len(body), err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, blob, _ := upstream(t)
			p.Inject("/blob/", 1, tt.fault)
			start := time.Now()
			resp, body, err := get(t, p, nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			tt.check(t, resp, body, blob, err)
			if s, ok := tt.fault.(Stall); ok && time.Since(start) < s.For {
				t.Errorf("took %s, want at least the stall %s", time.Since(start), s.For)
			}
			if th, ok := tt.fault.(Throttle); ok {
				// 100 KiB at 400 KiB/s: about 250 ms.
				if want := time.Duration(int64(len(blob)) * int64(time.Second) / th.Rate * 8 / 10); time.Since(start) < want {
					t.Errorf("took %s, want at least %s at %d bytes/s", time.Since(start), want, th.Rate)
				}
			}
			// Only the next request was broken.
			if _, body, err := get(t, p, nil); err != nil || !bytes.Equal(body, blob) {
				t.Errorf("second request: %d bytes, err %v; want it untouched", len(body), err)
			}
			reqs := p.Requests("/blob/")
			if len(reqs) != 2 || reqs[0].Fault != tt.fault || reqs[1].Fault != nil {
				t.Errorf("recorded %+v", reqs)
			}
		})
	}
}

func TestProxyStatusDoesNotForward(t *testing.T) {
	p, blob, hits := upstream(t)
	p.Inject("/blob/", 2, Status{Code: http.StatusServiceUnavailable, RetryAfter: "7"})
	for i := range 2 {
		resp, _, _ := get(t, p, nil)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "7" {
			t.Errorf("request %d: %d, Retry-After %q; want 503, 7", i, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	if hits.Load() != 0 {
		t.Errorf("upstream saw %d requests, want none", hits.Load())
	}
	if resp, body, err := get(t, p, nil); err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, blob) {
		t.Errorf("third request: %d, err %v; want forwarded", resp.StatusCode, err)
	}
}

func TestProxyAlwaysAndClear(t *testing.T) {
	p, blob, _ := upstream(t)
	p.Inject("/elsewhere/", Always, Truncate{After: 1})
	p.Inject("/blob/", Always, Status{Code: http.StatusTooManyRequests})
	for range 3 {
		if resp, _, _ := get(t, p, nil); resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("status %d, want 429 every time", resp.StatusCode)
		}
	}
	p.Clear()
	if resp, body, err := get(t, p, nil); err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, blob) {
		t.Errorf("after Clear: %d, err %v; want forwarded", resp.StatusCode, err)
	}
	if got := p.Count("/blob/"); got != 4 {
		t.Errorf("counted %d requests, want 4", got)
	}
}

func TestProxyStallEndsWhenClientLeaves(t *testing.T) {
	p, _, _ := upstream(t)
	p.Inject("/blob/", Always, Stall{After: 100, For: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL()+blobPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil || len(body) != 100 {
		t.Fatalf("got %d bytes, err %v; want 100 and the deadline", len(body), err)
	}
	done := make(chan struct{})
	go func() { p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung on a stalled response")
	}
}

func TestProxyForwardsRequestBody(t *testing.T) {
	var got atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.Store(r.Method + " " + r.URL.RequestURI() + " " + string(b) + " " + strconv.FormatInt(r.ContentLength, 10))
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	p := New(u)
	defer p.Close()
	resp, err := http.Post(p.URL()+"/device/v1/checkin?x=1", "application/json", bytes.NewReader([]byte(`{"a":1}`)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := `POST /device/v1/checkin?x=1 {"a":1} 7`; resp.StatusCode != http.StatusCreated || got.Load() != want {
		t.Errorf("got %d, upstream saw %q; want 201, %q", resp.StatusCode, got.Load(), want)
	}
}
