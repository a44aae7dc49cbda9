package httpapi_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/httpapi"
)

// BenchmarkCheckinHandler is a device's check-in through the whole handler chain (metrics,
// routing, token, body, fleet) without the network: the server's own share of a check-in,
// which `upkeep bench checkin` measures end to end next to nginx.
func BenchmarkCheckinHandler(b *testing.B) {
	s := newStack(b)
	srv := s.serve()
	_, tok := s.enrolled(srv)
	h := s.handler
	body := []byte(`{"installed":{"target":"thermostat/1.0.0/firmware-1.0.0.img","version":"1.0.0","security_version":1,"sha256":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},"state":"idle","director_version":1}`)
	req := httptest.NewRequest(http.MethodPost, "/device/v1/checkin", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	first := httptest.NewRecorder()
	h.ServeHTTP(first, withBody(req, body))
	req.Header.Set("If-None-Match", first.Header().Get("ETag")) // the usual answer: 304
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, withBody(req, body))
		if w.Code != http.StatusNotModified {
			b.Fatalf("check-in: %d %s", w.Code, w.Body)
		}
	}
}

func withBody(req *http.Request, body []byte) *http.Request {
	r := req.Clone(req.Context())
	r.Body = io.NopCloser(bytes.NewReader(body))
	return r
}

// BenchmarkOperatorGet is an operator's GET /api/v1/releases through the whole handler chain,
// with the full authorization path (bearer token, cached verification against the revocation
// generation, role → permission, last-use mark) and without it (the same routes registered
// bare). Each reports its p99 latency (p99-ns); the difference is what authorization adds.
//
//	go test ./internal/httpapi -run '^$' -bench BenchmarkOperatorGet -benchtime 20000x -count 3
func BenchmarkOperatorGet(b *testing.B) {
	for _, withAuth := range []bool{true, false} {
		name := "auth"
		if !withAuth {
			name = "noauth"
		}
		b.Run(name, func(b *testing.B) {
			s := newStack(b)
			if !withAuth {
				httpapi.SetNoAuth(s.api)
				s.handler = s.api.Handler()
			}
			var gen atomic.Int64
			s.api.Generation = gen.Load // as the server runs: cached tokens trusted while the generation holds
			h := s.handler
			req := httptest.NewRequest(http.MethodGet, "/api/v1/releases", nil)
			req.Header.Set("Authorization", "Bearer "+s.admin)
			lat := make([]time.Duration, 0, 1<<16)
			b.ReportAllocs()
			for b.Loop() {
				t0 := time.Now()
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				lat = append(lat, time.Since(t0))
				if w.Code != http.StatusOK {
					b.Fatalf("GET: %d %s", w.Code, w.Body)
				}
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
		})
	}
}
