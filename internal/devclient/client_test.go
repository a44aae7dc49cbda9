package devclient

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/wire"
)

// request is what the test server saw of one request.
type request struct {
	method, path string
	hdr          http.Header
	body         string
}

// recorder answers each request with answer and records it.
func recorder(t *testing.T, answer http.HandlerFunc) (*Client, *[]request) {
	t.Helper()
	var got []request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, request{r.Method, r.URL.Path, r.Header.Clone(), string(b)})
		answer(w, r)
	}))
	t.Cleanup(srv.Close)
	return &Client{HTTP: srv.Client(), Base: srv.URL}, &got
}

var installed = wire.Installed{Target: "fw-1.0.0.img", Version: "1.0.0", SecurityVersion: 1, SHA256: strings.Repeat("ab", 32)}

// The check-in's bytes are the protocol's: the agent's fields in order, the director version
// it trusts as If-None-Match, the token, the protocol version.
func TestCheckinRequest(t *testing.T) {
	c, got := recorder(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNotModified) })
	res, err := c.Checkin(context.Background(), "tok", wire.Checkin{Installed: installed, State: "idle", DirectorVersion: 7})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != http.StatusNotModified || res.Changed || res.Version != 7 || res.Poll != 0 || res.Jitter != 0 {
		t.Errorf("304 answer: %+v", res)
	}
	r := (*got)[0]
	want := `{"installed":{"target":"fw-1.0.0.img","version":"1.0.0","security_version":1,"sha256":"` + installed.SHA256 + `"},"state":"idle","director_version":7}`
	if r.method != http.MethodPost || r.path != "/device/v1/checkin" || r.body != want {
		t.Errorf("check-in %s %s %s, want POST /device/v1/checkin %s", r.method, r.path, r.body, want)
	}
	for k, v := range map[string]string{"If-None-Match": `"7"`, "Authorization": "Bearer tok", "Content-Type": "application/json", wire.HeaderProtocol: "1"} {
		if r.hdr.Get(k) != v {
			t.Errorf("%s: %q, want %q", k, r.hdr.Get(k), v)
		}
	}
}

func TestCheckinAnswers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer http.HandlerFunc
		want   CheckinResult
	}{
		{"304 with header hints", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(wire.HeaderPollInterval, "600")
			w.Header().Set(wire.HeaderPollJitter, "120")
			w.WriteHeader(http.StatusNotModified)
		}, CheckinResult{Status: 304, Version: 3, Poll: 10 * time.Minute, Jitter: 2 * time.Minute}},
		{"200: the body wins", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(wire.HeaderPollInterval, "600")
			w.Header().Set(wire.HeaderPollJitter, "120")
			json.NewEncoder(w).Encode(wire.CheckinResponse{Changed: true, DirectorVersion: 4, PollSeconds: 300, PollJitterSeconds: 60})
		}, CheckinResult{Status: 200, Changed: true, Version: 4, Poll: 5 * time.Minute, Jitter: time.Minute}},
		{"200 without hints in the body", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(wire.HeaderPollJitter, "30")
			json.NewEncoder(w).Encode(wire.CheckinResponse{DirectorVersion: 3})
		}, CheckinResult{Status: 200, Version: 3, Jitter: 30 * time.Second}},
	} {
		c, _ := recorder(t, tc.answer)
		got, err := c.Checkin(context.Background(), "tok", wire.Checkin{Installed: installed, State: "idle", DirectorVersion: 3})
		if err != nil || got != tc.want {
			t.Errorf("%s: %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
}

// 429 and 5xx are transient and carry the server's Retry-After; other refusals are
// *ServerError.
func TestErrorsClassified(t *testing.T) {
	status, retry := 0, ""
	c, _ := recorder(t, func(w http.ResponseWriter, r *http.Request) {
		if retry != "" {
			w.Header().Set("Retry-After", retry)
		}
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(wire.Error{Code: "busy", Message: "later"})
	})
	for _, tc := range []struct {
		status    int
		retry     string
		transient bool
		wait      time.Duration
	}{
		{http.StatusTooManyRequests, "45", true, 45 * time.Second},
		{http.StatusServiceUnavailable, "99999999999999999999", true, MaxRetryAfter},
		{http.StatusInternalServerError, "", true, 0},
		{http.StatusUnauthorized, "45", false, 0},
	} {
		status, retry = tc.status, tc.retry
		_, err := c.Checkin(context.Background(), "tok", wire.Checkin{})
		var te *TransientError
		var se *ServerError
		if errors.As(err, &te) != tc.transient || !errors.As(err, &se) || se.Status != tc.status || se.Code != "busy" {
			t.Errorf("%d: %v, transient %v", tc.status, err, tc.transient)
			continue
		}
		if te != nil && te.RetryAfter != tc.wait {
			t.Errorf("%d with Retry-After %s: wait %s, want %s", tc.status, tc.retry, te.RetryAfter, tc.wait)
		}
		if err := c.Report(context.Background(), "tok", wire.Report{}); !errors.As(err, &se) {
			t.Errorf("report answered %d: %v", tc.status, err)
		}
	}
	if _, err := (&Client{Base: "http://127.0.0.1:1"}).Checkin(context.Background(), "tok", wire.Checkin{}); !errors.As(err, new(*TransientError)) {
		t.Errorf("no server: %v, want a transient error", err)
	}
}

// Enrolment and token requests are signed by the device key; the enrolment token goes along
// only when there is one, and 202 (pending) is an answer, not an error.
func TestSignedRequests(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	c, got := recorder(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(wire.HeaderEnrollToken) == "" && r.URL.Path == "/device/v1/enroll" {
			w.WriteHeader(http.StatusAccepted)
			json.NewEncoder(w).Encode(wire.EnrollResponse{DeviceID: "d1", Status: "pending"})
			return
		}
		json.NewEncoder(w).Encode(wire.EnrollResponse{DeviceID: "d1", Status: "accepted", Token: "t1"})
	})
	ctx := context.Background()
	p := wire.EnrollPayload{PublicKey: hex.EncodeToString(pub), Identity: wire.Identity{Serial: "S1", Product: "p", HardwareID: "h"}, Time: time.Unix(0, 0).UTC(), Installed: installed}
	if r, err := c.Enroll(ctx, key, p, ""); err != nil || r.Status != "pending" || r.Token != "" {
		t.Errorf("enrol without a token: %+v, %v", r, err)
	}
	if r, err := c.Enroll(ctx, key, p, "upk_enroll_x"); err != nil || r.Token != "t1" {
		t.Errorf("enrol with a token: %+v, %v", r, err)
	}
	if r, err := c.Token(ctx, key, wire.TokenPayload{DeviceID: "d1", Time: time.Unix(0, 0).UTC()}); err != nil || r.Token != "t1" {
		t.Errorf("token: %+v, %v", r, err)
	}
	for i, want := range []struct{ path, enrollToken, payload string }{
		{"/device/v1/enroll", "", `{"public_key":"` + hex.EncodeToString(pub) + `","identity":{"serial":"S1","product":"p","hardware_id":"h"},"time":"1970-01-01T00:00:00Z","installed":{"target":"fw-1.0.0.img","version":"1.0.0","security_version":1,"sha256":"` + installed.SHA256 + `"}}`},
		{"/device/v1/enroll", "upk_enroll_x", ""},
		{"/device/v1/token", "", `{"device_id":"d1","time":"1970-01-01T00:00:00Z"}`},
	} {
		r := (*got)[i]
		var sr wire.SignedRequest
		if err := json.Unmarshal([]byte(r.body), &sr); err != nil {
			t.Fatal(err)
		}
		sig, _ := hex.DecodeString(sr.Signature)
		if r.path != want.path || r.hdr.Get(wire.HeaderEnrollToken) != want.enrollToken || r.hdr.Get("Authorization") != "" || !ed25519.Verify(pub, sr.Payload, sig) {
			t.Errorf("request %d: %s, enrol token %q, authorization %q, signature valid %v", i, r.path, r.hdr.Get(wire.HeaderEnrollToken), r.hdr.Get("Authorization"), ed25519.Verify(pub, sr.Payload, sig))
		}
		if want.payload != "" && string(sr.Payload) != want.payload {
			t.Errorf("request %d payload %s, want %s", i, sr.Payload, want.payload)
		}
		if _, ok := r.hdr[wire.HeaderEnrollToken]; ok && want.enrollToken == "" {
			t.Errorf("request %d sends an empty enrolment token header", i)
		}
	}
}

func TestFetcher(t *testing.T) {
	c, got := recorder(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/repo/image/2.root.json":
			http.NotFound(w, r)
		case "/repo/image/timestamp.json":
			io.WriteString(w, `{"signed":{}}`)
		default:
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	tokens := 0
	f := c.Fetcher(context.Background(), func(context.Context) (string, error) { tokens++; return "tok", nil })
	var dl *metadata.ErrDownloadHTTP
	if _, err := f.DownloadFile(c.Base+ImagePath+"2.root.json", 1000, 0); !errors.As(err, &dl) || dl.StatusCode != 404 {
		t.Errorf("404: %v, want ErrDownloadHTTP", err)
	}
	if b, err := f.DownloadFile(c.Base+ImagePath+"timestamp.json", 1000, 0); err != nil || string(b) != `{"signed":{}}` {
		t.Errorf("timestamp: %q, %v", b, err)
	}
	var lm *metadata.ErrDownloadLengthMismatch
	if _, err := f.DownloadFile(c.Base+ImagePath+"timestamp.json", 5, 0); !errors.As(err, &lm) {
		t.Errorf("longer than the limit: %v", err)
	}
	var te *TransientError
	if _, err := f.DownloadFile(c.Base+ImagePath+"snapshot.json", 1000, 0); !errors.As(err, &te) || te.RetryAfter != 30*time.Second {
		t.Errorf("503: %v", err)
	}
	if tokens != 4 || (*got)[0].hdr.Get("Authorization") != "Bearer tok" || (*got)[0].body != "" || (*got)[0].hdr.Get("Content-Type") != "" {
		t.Errorf("%d tokens asked; first request headers %v", tokens, (*got)[0].hdr)
	}
	if _, err := c.Fetcher(context.Background(), nil).DownloadFile(c.Base+ImagePath+"timestamp.json", 1000, 0); err != nil || (*got)[len(*got)-1].hdr.Get("Authorization") != "" {
		t.Errorf("without a token: %v, %v", err, (*got)[len(*got)-1].hdr)
	}
}

func TestFetchArtifact(t *testing.T) {
	const data = "0123456789"
	mode := ""
	c, got := recorder(t, func(w http.ResponseWriter, r *http.Request) {
		switch mode {
		case "whole":
			io.WriteString(w, data)
		case "wrong":
			w.Header().Set("Content-Range", "bytes 2-9/10")
			w.WriteHeader(http.StatusPartialContent)
			io.WriteString(w, data[2:])
		default:
			w.Header().Set("ETag", `"etag"`)
			http.ServeContent(w, r, "a.img", time.Time{}, strings.NewReader(data))
		}
	})
	ctx := context.Background()
	resp, err := c.FetchArtifact(ctx, "tok", c.TargetURL("p/1/a.img"), 4, `"etag"`)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	r := (*got)[0]
	if string(b) != data[4:] || r.path != "/device/v1/targets/p/1/a.img" || r.hdr.Get("Range") != "bytes=4-" || r.hdr.Get("If-Range") != `"etag"` || r.hdr.Get("Authorization") != "Bearer tok" {
		t.Errorf("resume: %q, request %+v", b, r)
	}
	if resp, err := c.FetchArtifact(ctx, "", c.TargetURL("a.img"), 0, `"etag"`); err != nil || resp.StatusCode != 200 {
		t.Errorf("from 0: %v", err)
	} else {
		resp.Body.Close()
		if r := (*got)[1]; r.hdr.Get("Range") != "" || r.hdr.Get("If-Range") != "" || r.hdr.Get("Authorization") != "" {
			t.Errorf("from 0 without a token: %v", r.hdr)
		}
	}
	mode = "whole"
	if _, err := c.FetchArtifact(ctx, "tok", c.TargetURL("a.img"), 4, ""); !errors.Is(err, ErrRangeIgnored) || !errors.As(err, new(*TransientError)) {
		t.Errorf("range ignored: %v", err)
	}
	mode = "wrong"
	if _, err := c.FetchArtifact(ctx, "tok", c.TargetURL("a.img"), 4, ""); err == nil || errors.Is(err, ErrRangeIgnored) || !errors.As(err, new(*TransientError)) {
		t.Errorf("resumed elsewhere: %v", err)
	}
}

// TestBaseWithPath: a tenant's server URL has a path (https://host/t/acme); every request and
// URL the client makes goes under it.
func TestBaseWithPath(t *testing.T) {
	c, got := recorder(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNotModified) })
	c.Base += "/t/acme"
	if _, err := c.Checkin(context.Background(), "tok", wire.Checkin{DirectorVersion: 1}); err != nil {
		t.Fatal(err)
	}
	if len(*got) != 1 || (*got)[0].path != "/t/acme/device/v1/checkin" {
		t.Fatalf("check-in went to %+v, want /t/acme/device/v1/checkin", *got)
	}
	if u := c.TargetURL("p/1.0/f.img"); !strings.HasSuffix(u, "/t/acme/device/v1/targets/p/1.0/f.img") {
		t.Fatalf("target URL %s is not under the base's path", u)
	}
}

// TestBackoff: retries start after FirstBackoff and double up to MaxBackoff; a retry waits the
// backoff ±20%, never less than a Retry-After, and never more than 10 minutes without one.
func TestBackoff(t *testing.T) {
	var b time.Duration
	var steps []time.Duration
	for range 10 {
		b = NextBackoff(b)
		steps = append(steps, b)
	}
	want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 320 * time.Second, MaxBackoff, MaxBackoff, MaxBackoff}
	if !slices.Equal(steps, want) {
		t.Fatalf("backoff steps %v, want %v", steps, want)
	}
	for range 1000 {
		if w := RetryWait(MaxBackoff, 0); w > 10*time.Minute || w < MaxBackoff*4/5 {
			t.Fatalf("retry after the longest backoff in %s", w)
		}
		if w := RetryWait(FirstBackoff, time.Hour); w < time.Hour || w > 72*time.Minute {
			t.Fatalf("retry with Retry-After 1h in %s", w)
		}
	}
}
