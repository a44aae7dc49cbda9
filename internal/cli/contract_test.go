package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/httpapi"
	"upkeep.dev/upkeep/wire"
)

// The end-to-end tests check every request to /api/v1 and /device/v1, and every answer, against
// the OpenAPI document the server serves (internal/httpapi/openapi.json), with kin-openapi:
// server.Config.Wrap puts contractChecker in front of the real handler, and a test fails at
// cleanup with each violation (method, path, status and the validation error). Binary bodies
// (artifacts, blobs, uploaded files) are checked for their declared content type only.

// contractDoc is the document, loaded and validated once per test binary.
var contractDoc = sync.OnceValues(func() (*openapi3.T, error) {
	doc, err := openapi3.NewLoader().LoadFromData(httpapi.OpenAPI())
	if err != nil {
		return nil, err
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, err
	}
	return doc, nil
})

// contractChecker finds the operation of a request and validates the exchange.
type contractChecker struct {
	doc *openapi3.T
	// ops finds an operation by the ServeMux pattern its route was registered with
	// (x-upkeep-pattern): the server's own routing rules ({name...} matches slashes, which an
	// OpenAPI path template cannot say), so the checker and the server agree on every route.
	ops *http.ServeMux

	mu         sync.Mutex
	violations []string
	checked    int
}

type opKey struct{}

// found is what ops's handlers fill in for a request.
type found struct {
	route  *routers.Route
	params map[string]string
}

// checkContract returns a server.Config.Wrap that validates every exchange and fails t at
// cleanup when one breaks the document. A benchmark gets none: the validation (kin-openapi
// compiles a schema for each body) would take a third of the CPU it measures.
func checkContract(t testing.TB) func(http.Handler) http.Handler {
	t.Helper()
	if _, bench := t.(*testing.B); bench {
		return nil
	}
	c, err := newContractChecker()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		t.Logf("OpenAPI contract: %d exchanges checked, %d violations", c.checked, len(c.violations))
		for _, v := range c.violations {
			t.Errorf("OpenAPI contract: %s", v)
		}
	})
	return c.wrap
}

func newContractChecker() (*contractChecker, error) {
	doc, err := contractDoc()
	if err != nil {
		return nil, fmt.Errorf("load the OpenAPI document: %w", err)
	}
	c := &contractChecker{doc: doc, ops: http.NewServeMux()}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			pattern, _ := op.Extensions["x-upkeep-pattern"].(string)
			if pattern == "" {
				return nil, fmt.Errorf("%s %s has no x-upkeep-pattern", method, path)
			}
			route := &routers.Route{Spec: doc, Path: path, PathItem: item, Method: method, Operation: op}
			var names []string
			for _, p := range op.Parameters {
				if p.Value != nil && p.Value.In == openapi3.ParameterInPath {
					names = append(names, p.Value.Name)
				}
			}
			c.ops.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
				f := r.Context().Value(opKey{}).(*found)
				f.route, f.params = route, map[string]string{}
				for _, n := range names {
					f.params[n] = r.PathValue(n)
				}
			})
		}
	}
	return c, nil
}

// TestContractCheckerCatches: the checker reports an answer that breaks the document, a request
// the document refuses that the server accepted, and a route the document lacks; and passes a
// good exchange and a refused bad request.
func TestContractCheckerCatches(t *testing.T) {
	c, err := newContractChecker()
	if err != nil {
		t.Fatal(err)
	}
	h := c.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/v1/devices":
			io.WriteString(w, `[{"id": 1}]`) // id is a string; the required fields are missing
		case "/api/v1/deployments":
			if r.URL.Query().Get("refuse") != "" {
				w.WriteHeader(http.StatusBadRequest)
				io.WriteString(w, `{"code":"invalid","message":"no"}`)
				return
			}
			io.WriteString(w, `{"assigned": 1}`)
		case "/api/v1/enroll-tokens":
			io.WriteString(w, `[]`)
		default:
			io.WriteString(w, `{}`)
		}
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	send := func(method, path, body string) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	send("GET", "/api/v1/devices", "")
	send("POST", "/api/v1/deployments", `{"release": 5}`)
	send("POST", "/api/v1/deployments?refuse=1", `{"release": 5}`)
	send("GET", "/api/v1/enroll-tokens", "")
	send("GET", "/api/v1/not-a-route", "")
	want := []string{"GET /api/v1/devices -> 200: the answer breaks", "POST /api/v1/deployments -> 200: the server accepted a request the document refuses",
		"GET /api/v1/not-a-route -> 200: the server answered a route the document does not have"}
	if len(c.violations) != len(want) {
		t.Fatalf("%d violations, want %d:\n%s", len(c.violations), len(want), strings.Join(c.violations, "\n"))
	}
	for i, w := range want {
		if !strings.HasPrefix(c.violations[i], w) {
			t.Errorf("violation %d: %s\nwant %s...", i, c.violations[i], w)
		}
	}
}

// inContract reports whether a path is one the document covers.
func inContract(path string) bool {
	return strings.HasPrefix(path, "/api/v1/") || strings.HasPrefix(path, "/device/v1/")
}

func (c *contractChecker) fail(r *http.Request, status int, format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.violations = append(c.violations, fmt.Sprintf("%s %s -> %d: %s", r.Method, r.URL.RequestURI(), status, fmt.Sprintf(format, args...)))
}

func (c *contractChecker) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !inContract(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		f := &found{}
		probe := r.Clone(context.WithValue(r.Context(), opKey{}, f))
		probe.Body = http.NoBody
		c.ops.ServeHTTP(discard{}, probe)

		body := &teeBody{rc: r.Body, json: isJSON(r.Header.Get("Content-Type"))}
		r.Body = body
		rec := &recorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		status := rec.status
		if status == 0 {
			status = http.StatusOK
		}
		if f.route == nil {
			// Not a route of the document: fine only when the server does not serve it either.
			if status != http.StatusNotFound && status != http.StatusMethodNotAllowed {
				c.fail(r, status, "the server answered a route the document does not have")
			}
			return
		}
		c.check(r, f, body, rec, status)
	})
}

// check validates one exchange: the request (a request the document refuses must be refused by
// the server too) and the answer (always).
func (c *contractChecker) check(r *http.Request, f *found, body *teeBody, rec *recorder, status int) {
	c.mu.Lock()
	c.checked++
	c.mu.Unlock()
	ctx := context.Background()
	req := r.Clone(ctx)
	req.Body = http.NoBody
	opts := &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, IncludeResponseStatus: true}
	switch {
	case body.n == 0:
	case !body.eof:
		opts.ExcludeRequestBody = true // the handler stopped reading: the body is not all here
	default:
		req.Body = io.NopCloser(bytes.NewReader(body.buf.Bytes()))
		req.ContentLength = int64(body.buf.Len())
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: f.params, Route: f.route, Options: opts}
	if err := openapi3filter.ValidateRequest(ctx, in); err != nil && status < 400 {
		c.fail(r, status, "the server accepted a request the document refuses: %v", err)
	}
	answer := io.NopCloser(bytes.NewReader(rec.body.Bytes()))
	if !rec.json {
		answer = io.NopCloser(strings.NewReader("-")) // a binary answer: its content type is checked, not its bytes
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: status, Header: rec.Header(), Body: answer, Options: opts}
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		c.fail(r, status, "the answer breaks the document: %v\n%.2000s", err, rec.body.Bytes())
	}
}

func isJSON(contentType string) bool {
	mt, _, _ := mime.ParseMediaType(contentType)
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// maxRecorded bounds the bytes of a JSON body kept for validation.
const maxRecorded = 16 << 20

// teeBody keeps what the handler reads of a request body: all of a JSON body (up to
// maxRecorded), a byte of any other.
type teeBody struct {
	rc       io.ReadCloser
	json     bool
	buf      bytes.Buffer
	n        int64
	overflow bool // a JSON body larger than maxRecorded: not validated
	eof      bool // the handler read it all
}

func (b *teeBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n += int64(n)
	switch {
	case b.json && !b.overflow && b.buf.Len()+n <= maxRecorded:
		b.buf.Write(p[:n])
	case b.json:
		b.overflow = true
	case b.buf.Len() == 0 && n > 0:
		b.buf.Write(p[:1])
	}
	if err == io.EOF {
		b.eof = !b.overflow
	}
	return n, err
}

func (b *teeBody) Close() error { return b.rc.Close() }

// recorder passes an answer through and keeps its status and, for JSON, its body.
type recorder struct {
	http.ResponseWriter
	status int
	json   bool
	body   bytes.Buffer
}

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
		w.json = isJSON(w.Header().Get("Content-Type"))
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.json && w.body.Len()+len(p) <= maxRecorded {
		w.body.Write(p)
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection (flushes, deadlines).
func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// discard is the ResponseWriter of the routing probe.
type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(p []byte) (int, error) { return len(p), nil }
func (discard) WriteHeader(int)             {}

// TestContractRarelyUsedRoutes drives, through the contract check, the routes the other
// end-to-end tests do not reach: the document itself, a login session (session, password,
// logout), one group read and deleted, and a waiver granted, listed and revoked.
func TestContractRarelyUsedRoutes(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	get := func(path string, hdr map[string]string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if st, b := get("/api/v1/openapi.json", nil); st != http.StatusOK || !bytes.Equal(b, httpapi.OpenAPI()) {
		t.Fatalf("GET /api/v1/openapi.json without a credential: %d", st)
	}

	// A user with a password, a session, a new password, logout.
	if _, err := e.cli.CreateUser(ctx, wire.UserRequest{Name: "vera", Role: "viewer", Password: "first password here"}); err != nil {
		t.Fatal(err)
	}
	if err := e.cli.SetUserPassword(ctx, "vera", "second password here"); err != nil {
		t.Fatal(err)
	}
	if s, err := e.cli.Session(ctx); err != nil || s.Kind != "token" {
		t.Fatalf("session of the admin token: %+v %v", s, err)
	}
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/api/v1/login", strings.NewReader(`{"user":"vera","password":"second password here"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var ss wire.Session
	json.NewDecoder(resp.Body).Decode(&ss)
	resp.Body.Close()
	var cookie string
	for _, c := range resp.Cookies() {
		if c.Name == wire.SessionCookie {
			cookie = c.Name + "=" + c.Value
		}
	}
	if resp.StatusCode != http.StatusOK || cookie == "" || ss.CSRFToken == "" {
		t.Fatalf("login: %d, cookie %q, %+v", resp.StatusCode, cookie, ss)
	}
	if st, b := get("/api/v1/session", map[string]string{"Cookie": cookie}); st != http.StatusOK {
		t.Fatalf("GET /api/v1/session with the cookie: %d %s", st, b)
	}
	if st, b := post(t, e.srv.URL+"/api/v1/logout", nil, map[string]string{"Cookie": cookie, wire.HeaderCSRF: ss.CSRFToken}); st != http.StatusNoContent {
		t.Fatalf("logout: %d %s", st, b)
	}
	if st, _ := get("/api/v1/session", map[string]string{"Cookie": cookie}); st != http.StatusUnauthorized {
		t.Fatalf("the session after logout: %d", st)
	}

	// A group, read and deleted.
	if _, err := e.cli.PutGroup(ctx, wire.Group{Name: "lab", Filter: "product=" + testProduct}); err != nil {
		t.Fatal(err)
	}
	if g, err := e.cli.Group(ctx, "lab"); err != nil || g.Name != "lab" {
		t.Fatalf("group lab: %+v %v", g, err)
	}
	if err := e.cli.DeleteGroup(ctx, "lab"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cli.Group(ctx, "lab"); !apperr.Is(err, apperr.NotFound) {
		t.Fatalf("group lab after its deletion: %v", err)
	}

	// A waiver, listed and revoked.
	e.publish("1.0.0", 1, image("1.0.0", 4<<10))
	w, err := e.cli.AddWaiver(ctx, client.Waiver{Product: testProduct, Version: "1.0.0", Vuln: "CVE-2024-0001", Reason: "not reachable", CreatedBy: "A. Lovelace"})
	if err != nil {
		t.Fatal(err)
	}
	if ws, err := e.cli.Waivers(ctx, testProduct); err != nil || len(ws) != 1 || ws[0].ID != w.ID {
		t.Fatalf("waivers: %+v %v", ws, err)
	}
	if err := e.cli.RevokeWaiver(ctx, w.ID, "A. Lovelace"); err != nil {
		t.Fatal(err)
	}
}
