package ddi

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/limit"
)

// Fuzz targets for every parser of what a DDI client (or an operator's request) sends. Seeds:
// the f.Add calls and testdata/fuzz/<target>/. .ci/run runs each for 5,000 inputs.

// wantClassified fails unless err is nil or an apperr the handlers answer with a 4xx.
func wantClassified(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if st := apperr.HTTPStatus(apperr.CodeOf(err)); st < 400 || st >= 500 {
		t.Fatalf("error %v answers %d, want a 4xx", err, st)
	}
}

// FuzzFeedback: deployment and cancel feedback, and confirmation feedback, parse or are refused
// as the client's error; what parses has a known execution and result and a bounded number of
// detail lines, and its event message is at most a little over 1 KiB.
func FuzzFeedback(f *testing.F) {
	f.Add([]byte(`{"id":1,"time":"20261206T024700","status":{"execution":"proceeding","result":{"finished":"none","progress":{"cnt":1,"of":2}},"details":["Installing Update started"]}}`))
	f.Add([]byte(`{"status":{"execution":"closed","result":{"finished":"failure"},"code":-1,"details":["ERROR : hash mismatch"]}}`))
	f.Add([]byte(`{"confirmation":"confirmed","code":0,"details":[]}`))
	f.Add([]byte(`{"status":{"execution":"closed"}} {"x":1}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		fb, err := parseFeedback(body)
		wantClassified(t, err)
		if err == nil {
			if len(fb.Status.Details) > 256 {
				t.Fatalf("%d detail lines accepted", len(fb.Status.Details))
			}
			found := false
			for _, e := range executions {
				found = found || e == fb.Status.Execution
			}
			if !found {
				t.Fatalf("execution %q accepted", fb.Status.Execution)
			}
			if m := message("DDI x", fb); len(m) > 1100+len(body) {
				t.Fatalf("message of %d bytes from a body of %d", len(m), len(body))
			}
		}
		cf, err := parseConfirmation(body)
		wantClassified(t, err)
		if err == nil && cf.Confirmation != "confirmed" && cf.Confirmation != "denied" {
			t.Fatalf("confirmation %q accepted", cf.Confirmation)
		}
	})
}

// FuzzConfigData: a configData body applied to attributes either is refused as the client's
// error or yields attributes that pass the enrolment rules.
func FuzzConfigData(f *testing.F) {
	f.Add([]byte(`{"mode":"merge","data":{"region":"eu","hwRevision":"2"}}`))
	f.Add([]byte(`{"mode":"remove","data":{"region":""}}`))
	f.Add([]byte(`{"mode":"replace","data":{"a":"b"}}`))
	f.Add([]byte(`{"data":{"":"x"}}`))
	f.Add([]byte(`{"mode":"append","data":{}}`))
	old := map[string]string{"region": "us", "serialNo": "42"}
	f.Fuzz(func(t *testing.T, body []byte) {
		attrs, err := configDataAttrs(old, body)
		wantClassified(t, err)
		if err != nil {
			return
		}
		if len(attrs) > 32 {
			t.Fatalf("%d attributes accepted", len(attrs))
		}
		for k, v := range attrs {
			if k == "" || len(k) > 64 || len(v) > 256 || !utf8.ValidString(k+v) || strings.ContainsRune(k+v, 0) {
				t.Fatalf("attribute %q=%q accepted", k, v)
			}
		}
		if old["region"] != "us" || len(old) != 2 {
			t.Fatal("the device's attributes were changed in place")
		}
	})
}

// FuzzAuthorization: the Authorization header parses to one of the two schemes with a token of
// printable ASCII, or not at all; a target token is accepted only if it is the one derived for
// the controller, whatever the header.
func FuzzAuthorization(f *testing.F) {
	key := []byte("0123456789abcdef0123456789abcdef")
	s := &Service{Config: Config{TokenKey: key, GatewayToken: "gw-secret"}}
	good := s.TargetToken("ctrl-a", 0)
	f.Add("TargetToken " + good)
	f.Add("targettoken  " + good + " ")
	f.Add("GatewayToken gw-secret")
	f.Add("Bearer x")
	f.Add("TargetToken")
	f.Add("TargetToken \x00\xff")
	f.Fuzz(func(t *testing.T, header string) {
		scheme, tok, ok := parseAuthorization(header)
		if !ok {
			if scheme != "" || tok != "" {
				t.Fatalf("refused header gave %q %q", scheme, tok)
			}
			return
		}
		if scheme != SchemeTarget && scheme != SchemeGateway {
			t.Fatalf("scheme %q", scheme)
		}
		if tok == "" || len(tok) > 256 || strings.ContainsAny(tok, " \t\r\n") {
			t.Fatalf("token %q", tok)
		}
		for i := 0; i < len(tok); i++ {
			if tok[i] < '!' || tok[i] > '~' {
				t.Fatalf("token %q holds byte %#x", tok, tok[i])
			}
		}
		if scheme == SchemeTarget && tok == good {
			return
		}
		if scheme == SchemeTarget && tok == s.TargetToken("ctrl-a", 1) {
			t.Fatal("a token of another generation matched")
		}
	})
}

// FuzzPathValues: the tenant, controller id and action id of a DDI path, through the real
// ServeMux patterns: a controller id is accepted only as ValidControllerID says (so it can be
// written into links and logs), an action id only as a positive integer; nothing panics.
func FuzzPathValues(f *testing.F) {
	f.Add("DEFAULT", "ctrl-a", "1")
	f.Add("default", "dev:01.x_y", "9223372036854775807")
	f.Add("DEFAULT", "-lead", "0")
	f.Add("D%2FX", "a%00b", "-1")
	f.Add("DEFAULT", strings.Repeat("a", 65), "1e3")
	f.Fuzz(func(t *testing.T, tenant, id, action string) {
		if err := ValidControllerID(id); err == nil {
			if len(id) > 64 || strings.ContainsAny(id, "/ %\x00\"<>\\") {
				t.Fatalf("controller id %q accepted", id)
			}
		} else {
			wantClassified(t, err)
		}
		if n, err := parseActionID(action); err == nil && n <= 0 {
			t.Fatalf("action %q parsed as %d", action, n)
		} else {
			wantClassified(t, err)
		}
		// Through the routes: no store is reached without a valid token, so an empty Service
		// answers every request with a 4xx.
		svc := &Service{Config: Config{TokenKey: []byte("k")}}
		mux := http.NewServeMux()
		for p, h := range svc.Routes() {
			mux.Handle(p, h)
		}
		target := "/" + tenant + "/controller/v1/" + id + "/deploymentBase/" + action
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \t\r\n#?") {
			return
		}
		req, err := http.NewRequest(http.MethodGet, "http://x"+target, nil)
		if err != nil {
			return
		}
		req.RemoteAddr = "192.0.2.1:1234"
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, req)
		if w.Code < 300 || w.Code >= 500 {
			t.Fatalf("GET %q: %d", target, w.Code)
		}
	})
}

// FuzzArtifactRange: any Range (and If-Range) on an artifact is answered without panic, with
// at most the file's size plus the multipart framing of limit.MaxRanges parts; more ranges than
// that get the whole file (200).
func FuzzArtifactRange(f *testing.F) {
	f.Add("bytes=10-19", "")
	f.Add("bytes=0-0,2-2,4-4,6-6,8-8,10-10,12-12,14-14,16-16,18-18", "")
	f.Add("bytes=-5", `"etag"`)
	f.Add("bytes=5-", "")
	f.Add("bytes=99999-", "")
	f.Add("items=1-2", "")
	content := bytes.Repeat([]byte("0123456789"), 100)
	f.Fuzz(func(t *testing.T, rng, ifRange string) {
		req := httptest.NewRequest(http.MethodGet, "/a", nil)
		req.Header.Set("Range", rng)
		if ifRange != "" {
			req.Header.Set("If-Range", ifRange)
		}
		w := httptest.NewRecorder()
		serveFile(w, req, bytes.NewReader(content), `"etag"`)
		body, _ := io.ReadAll(w.Body)
		if len(body) > len(content)+(limit.MaxRanges+1)*200 {
			t.Fatalf("Range %q: %d bytes for a file of %d", rng, len(body), len(content))
		}
		if limit.TooManyRanges(rng) && w.Code != http.StatusOK {
			t.Fatalf("Range %q of %d ranges: %d, want the whole file", rng, strings.Count(rng, ",")+1, w.Code)
		}
	})
}

// FuzzDeviceRequest: the body of POST /api/v1/ddi/devices (`upkeep devices create --ddi`) parses
// to one object without unknown fields or is refused as the client's error.
func FuzzDeviceRequest(f *testing.F) {
	f.Add([]byte(`{"id":"ctrl-a","product":"p","hardware_id":"h"}`))
	f.Add([]byte(`{"id":"ctrl-a","extra":1}`))
	f.Add([]byte(`{"id":"a"}{"id":"b"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		w := httptest.NewRecorder()
		_, err := parseDeviceRequest(http.MaxBytesReader(w, io.NopCloser(bytes.NewReader(body)), 4<<10))
		wantClassified(t, err)
	})
}
