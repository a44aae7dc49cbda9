package server

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"upkeep.dev/upkeep/wire"
)

// BenchmarkTenantCheckin is a device's check-in through a tenant stack's whole handler chain,
// served directly (the stack's own handler at /device/v1/checkin) and through the default
// stack's front handler under the tenant's prefix (/t/acme/device/v1/checkin), and the default
// stack's own check-in through the front with a tenant registered. The three are interleaved in
// each iteration, each first in turn, so that a machine whose load changes during the run weighs
// on all alike. Each is reported as its median (direct-ns, prefixed-ns, default-ns) and its mean
// (mean-...); the ratio of the medians, prefixed/direct, is what tenants cost a check-in (the
// ratio of the means, which the slow tail of a loaded machine weighs on, beside it).
//
//	go test ./internal/server -run '^$' -bench BenchmarkTenantCheckin -benchtime 100000x -count 3
func BenchmarkTenantCheckin(b *testing.B) {
	s, req := openForTenant(b, nil)
	defer s.Close()
	created, err := s.tenants.AddTenant(context.Background(), req)
	if err != nil {
		b.Fatal(err)
	}
	ts := s.Tenant("acme")
	front := s.Handler()
	tenantTok := enrolled(b, front, "/t/acme", created.AdminToken)
	defaultTok := enrolled(b, front, "", s.AdminToken)
	body := []byte(`{"installed":{"target":"thermostat/1.0.0/firmware-1.0.0.img","version":"1.0.0","security_version":1,"sha256":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},"state":"idle","director_version":1}`)
	type path struct {
		name string
		req  *http.Request
		h    http.Handler
		lat  []time.Duration
	}
	paths := []*path{
		{name: "direct-ns", req: httptest.NewRequest(http.MethodPost, "/device/v1/checkin", nil), h: ts.Handler()},
		{name: "prefixed-ns", req: httptest.NewRequest(http.MethodPost, "/t/acme/device/v1/checkin", nil), h: front},
		{name: "default-ns", req: httptest.NewRequest(http.MethodPost, "/device/v1/checkin", nil), h: front},
	}
	for i, p := range paths {
		tok := tenantTok
		if i == 2 {
			tok = defaultTok
		}
		p.req.Header.Set("Authorization", "Bearer "+tok)
		first := httptest.NewRecorder()
		p.h.ServeHTTP(first, withBody(p.req, body))
		p.req.Header.Set("If-None-Match", first.Header().Get("ETag")) // the usual answer: 304
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		for j := range paths {
			p := paths[(i+j)%len(paths)] // each goes first in turn
			r := withBody(p.req, body)
			w := httptest.NewRecorder()
			t0 := time.Now()
			p.h.ServeHTTP(w, r)
			p.lat = append(p.lat, time.Since(t0))
			if w.Code != http.StatusNotModified {
				b.Fatalf("check-in %s: %d %s", p.name, w.Code, w.Body)
			}
		}
	}
	med, mean := map[string]float64{}, map[string]float64{}
	for _, p := range paths {
		var sum time.Duration
		for _, d := range p.lat {
			sum += d
		}
		mean[p.name] = float64(sum.Nanoseconds()) / float64(len(p.lat))
		slices.Sort(p.lat)
		med[p.name] = float64(p.lat[len(p.lat)/2].Nanoseconds())
		b.ReportMetric(med[p.name], p.name)
		b.ReportMetric(mean[p.name], "mean-"+p.name)
	}
	b.ReportMetric(med["prefixed-ns"]/med["direct-ns"], "prefixed/direct")
	b.ReportMetric(mean["prefixed-ns"]/mean["direct-ns"], "mean-prefixed/direct")
}

func withBody(req *http.Request, body []byte) *http.Request {
	r := req.Clone(req.Context())
	r.Body = io.NopCloser(bytes.NewReader(body))
	return r
}

// enrolled enrols a new device at prefix (an enrolment token made with the admin token) and
// returns its device token.
func enrolled(tb testing.TB, h http.Handler, prefix, admin string) string {
	tb.Helper()
	call := func(path string, body any, hdr map[string]string) []byte {
		b, _ := json.Marshal(body)
		req := httptest.NewRequest(http.MethodPost, prefix+path, bytes.NewReader(b))
		req.RemoteAddr = "127.0.0.1:1234"
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK && w.Code != http.StatusCreated {
			tb.Fatalf("%s: %d %s", path, w.Code, w.Body)
		}
		return w.Body.Bytes()
	}
	var tok wire.EnrollTokenResponse
	json.Unmarshal(call("/api/v1/enroll-tokens", wire.EnrollTokenRequest{Name: "bench"}, map[string]string{"Authorization": "Bearer " + admin}), &tok) //nolint:errcheck // checked below
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	p, _ := json.Marshal(wire.EnrollPayload{PublicKey: hex.EncodeToString(pub), Time: time.Now().UTC(), Identity: wire.Identity{Serial: "SN-1", Product: "thermostat", HardwareID: "tstat-v2"}})
	var resp wire.EnrollResponse
	json.Unmarshal(call("/device/v1/enroll", wire.SignedRequest{Payload: p, Signature: hex.EncodeToString(ed25519.Sign(key, p))}, map[string]string{wire.HeaderEnrollToken: tok.Token}), &resp) //nolint:errcheck // checked below
	if resp.Token == "" {
		tb.Fatalf("enrolment at %q gave no token", prefix)
	}
	return resp.Token
}
