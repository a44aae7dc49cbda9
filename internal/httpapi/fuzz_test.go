package httpapi_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/wire"
)

// serveRecorded sends one request straight to the handler.
func serveRecorded(h http.Handler, method, path string, body []byte, hdr map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// checkAnswer fails on a server error, and on an error answer that is not a JSON {code, message}.
func checkAnswer(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code >= 500 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if rec.Code >= 400 {
		var e wire.Error
		dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil || e.Code == "" || e.Message == "" {
			t.Fatalf("status %d with body %q: not a JSON error (%v)", rec.Code, rec.Body, err)
		}
	}
}

func FuzzCheckin(f *testing.F) {
	s := newStack(f)
	srv := s.serve()
	_, tok := s.enrolled(srv)
	h := s.handler

	f.Add([]byte(`{}`), "")
	f.Add([]byte(`{"installed":{"target":"thermostat/1.0.0/fw.img","version":"1.0.0","security_version":3,"sha256":"00"},"state":"idle","director_version":0}`), `"0"`)
	f.Add([]byte(`{"director_version":1}`), `"1"`)
	f.Add([]byte(`{"director_version":-9223372036854775808}`), "")
	f.Add([]byte(`{"director_version":1e400}`), "")
	f.Add([]byte(`{"director_version":"1"}`), "")
	f.Add([]byte(`{"installed":null,"state":null}`), "")
	f.Add([]byte(`{"unknown":1}`), "")
	f.Add([]byte(`{} {}`), "")
	f.Add([]byte(`{}}`), "")
	f.Add([]byte(`{"state":"`+strings.Repeat("x", wire.MaxCheckinBody)+`"}`), "")
	f.Add([]byte(`[`), "")
	f.Add([]byte("\xef\xbb\xbf{}"), "")
	f.Add([]byte(``), "*")
	f.Fuzz(func(t *testing.T, body []byte, ifNoneMatch string) {
		rec := serveRecorded(h, http.MethodPost, "/device/v1/checkin", body, map[string]string{"Authorization": "Bearer " + tok, "If-None-Match": ifNoneMatch})
		checkAnswer(t, rec)
		switch rec.Code {
		case http.StatusOK:
			var resp wire.CheckinResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
				t.Fatalf("checkin answer %q: %v", rec.Body, err)
			}
		case http.StatusNotModified, http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("unexpected status %d: %s", rec.Code, rec.Body)
		}
	})
}

func FuzzEnroll(f *testing.F) {
	s := newStack(f)
	srv := s.serve()
	enrolTok := s.enrollToken(srv)
	h := s.handler

	d := newDevice(f)
	good := d.enrollBody(f)
	other := newDevice(f)
	f.Add(good, "")
	f.Add(good, enrolTok)
	f.Add(other.enrollBody(f), "upk_enroll_wrong")
	f.Add(mustJSON(f, other.sign(mustJSON(f, d.payload("SN-1", time.Now())))), "")
	f.Add(mustJSON(f, d.sign(mustJSON(f, d.payload("SN-1", time.Now().Add(-time.Hour))))), "")
	f.Add(append(bytes.Clone(good), ` {}`...), "")
	f.Add(append(bytes.Clone(good), `}`...), "")
	f.Add(bytes.Replace(good, []byte(`"signature"`), []byte(`"signature2"`), 1), "")
	f.Add([]byte(`{"payload":{"public_key":"","identity":{},"time":"2026-01-01T00:00:00Z","installed":{}},"signature":""}`), "")
	f.Add([]byte(`{"payload":null,"signature":null}`), "")
	f.Add([]byte(`{"payload":"x","signature":"00"}`), "")
	f.Add([]byte(`{"payload":{"public_key":"`+strings.Repeat("0", 64)+`","identity":{"serial":"s","product":"p","hardware_id":"h"},"time":"2026-01-01T00:00:00Z"},"signature":"`+strings.Repeat("0", 128)+`"}`), "")
	f.Add([]byte(`{"payload":`), "")
	f.Add(bytes.Repeat([]byte("["), wire.MaxEnrollBody+1), "")
	f.Add([]byte(``), enrolTok)
	f.Fuzz(func(t *testing.T, body []byte, enrollToken string) {
		rec := serveRecorded(h, http.MethodPost, "/device/v1/enroll", body, map[string]string{wire.HeaderEnrollToken: enrollToken})
		checkAnswer(t, rec)
		switch rec.Code {
		case http.StatusOK, http.StatusAccepted:
			var resp wire.EnrollResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
				t.Fatalf("enrol answer %q: %v", rec.Body, err)
			}
			if resp.DeviceID == "" || (resp.Token != "") != (rec.Code == http.StatusOK) {
				t.Fatalf("status %d with answer %+v", rec.Code, resp)
			}
		case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusRequestEntityTooLarge,
			http.StatusConflict,        // a signed request already used (replay)
			http.StatusTooManyRequests: // the per-address enrolment rate
		default:
			t.Fatalf("unexpected status %d: %s", rec.Code, rec.Body)
		}
	})
}

// FuzzInventory: whatever a device sends as its inventory, the server stores it whole (200 with
// its digest) or refuses it with 400 or 413 and a JSON error, never a server error.
func FuzzInventory(f *testing.F) {
	s := newStack(f)
	s.api.InventoryPerMinute = 1 << 30
	srv := s.serve()
	_, tok := s.enrolled(srv)
	h := s.handler
	f.Add([]byte(`{"attributes":{"region":["eu-west"],"ipv4":["10.0.0.2/24","192.168.1.9/24"]}}`))
	f.Add([]byte(`{"attributes":{}}`))
	f.Add([]byte(`{"attributes":null}`))
	f.Add([]byte(`{"attributes":{"":["x"]}}`))
	f.Add([]byte(`{"attributes":{"k":[]}}`))
	f.Add([]byte(`{"attributes":{"k":["a\nb"]}}`))
	f.Add([]byte(`{"attributes":{"k":["\u0000"]}}`))
	f.Add([]byte(`{"attributes":{"k":"v"}}`))
	f.Add([]byte(`{"attributes":{"k":["` + strings.Repeat("v", 1100) + `"]}}`))
	f.Add([]byte(`{"unknown":1}`))
	f.Add([]byte(`{}{}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := serveRecorded(h, http.MethodPost, wire.PathInventory, body, map[string]string{"Authorization": "Bearer " + tok})
		checkAnswer(t, rec)
		switch rec.Code {
		case http.StatusOK:
			var resp wire.InventoryResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || len(resp.Digest) != 64 {
				t.Fatalf("200 with %q: %v", rec.Body, err)
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	})
}
