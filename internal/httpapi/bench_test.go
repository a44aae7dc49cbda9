package httpapi_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
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
