package browsertest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"

// site is a tiny site under the console's CSP: a good page and pages that each break one rule.
func site(t *testing.T) *httptest.Server {
	page := func(body string) string {
		return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Test page</title>` +
			`<link rel="icon" href="data:,"></head><body><main><h1>Test page</h1>` + body + `</main></body></html>`
	}
	pages := map[string]string{
		"/good":    page(`<p id="msg">Hello</p><form action="/good" method="get"><label for="q">Search</label><input id="q" name="q"><button id="go" type="submit">Go</button></form><script src="/ok.js"></script>`),
		"/error":   page(`<p>x</p><script src="/error.js"></script>`),
		"/throw":   page(`<p>x</p><script src="/throw.js"></script>`),
		"/inline":  page(`<p>x</p><script>document.title = "inline";</script>`),
		"/missing": page(`<p>x</p><script src="/missing.js"></script>`),
		"/bad":     page(`<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw="><input type="text"><p class="low">faint</p>`),
	}
	scripts := map[string]string{
		"/ok.js":    `document.getElementById("msg").textContent = "Hello from script";`,
		"/error.js": `console.error("something broke");`,
		"/throw.js": `throw new Error("uncaught in test");`,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", csp)
		if s, ok := scripts[r.URL.Path]; ok {
			w.Header().Set("Content-Type", "text/javascript")
			fmt.Fprint(w, s)
			return
		}
		p, ok := pages[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, p)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// recorder is a testing.TB that keeps the failures the browser reports instead of failing.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	errors []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func (r *recorder) failures() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.errors, "\n")
}

// TestBrowser: a good page under the strict CSP passes: its script runs, a form can be filled
// and submitted, a screenshot is written to $UPKEEP_TEST_SCREENSHOTS, axe-core (injected
// through the DevTools protocol despite script-src 'self') finds nothing serious.
func TestBrowser(t *testing.T) {
	srv := site(t)
	dir := t.TempDir()
	t.Setenv(Screenshots, dir)
	b := New(t)
	b.Navigate(srv.URL + "/good")
	b.WaitText("#msg", "Hello from script")
	b.Fill("#q", "rollout")
	b.ClickAndWait("#go", "#msg")
	if got := b.Location(); !strings.HasSuffix(got, "/good?q=rollout") {
		t.Errorf("location after submit = %s", got)
	}
	if n := b.Count("input"); n != 1 {
		t.Errorf("Count(input) = %d, want 1", n)
	}
	path := b.Screenshot("good")
	if filepath.Dir(path) != dir {
		t.Errorf("screenshot in %s, want %s", path, dir)
	}
	png, err := os.ReadFile(path)
	if err != nil || !strings.HasPrefix(string(png), "\x89PNG") {
		t.Errorf("screenshot is not a PNG: %v", err)
	}
	b.Axe(t)
}

// TestProblemsFail: a console error, an uncaught exception, an inline script the CSP blocks and
// a sub-request answered 404 each fail the test, naming what happened.
func TestProblemsFail(t *testing.T) {
	srv := site(t)
	r := &recorder{TB: t}
	b := New(r)
	for _, c := range []struct{ path, want string }{
		{"/error", "something broke"},
		{"/throw", "uncaught in test"},
		{"/inline", "Content Security Policy"},
		{"/missing", "404"},
	} {
		b.Navigate(srv.URL + c.path)
		b.Text("h1") // give late events a round trip to arrive
		b.Check()
		if got := r.failures(); !strings.Contains(got, c.want) {
			t.Errorf("%s: failures %q, want one containing %q", c.path, got, c.want)
		}
		r.mu.Lock()
		r.errors = nil
		r.mu.Unlock()
	}
	// An expected problem does not fail.
	b.Allow("missing.js")
	b.Navigate(srv.URL + "/missing")
	b.Text("h1")
	b.Check()
	if got := r.failures(); got != "" {
		t.Errorf("allowed missing.js still fails: %s", got)
	}
}

// TestAxeFindsViolations: on a deliberately bad page (an image without alternative text, an
// input without a label) axe-core reports serious or critical violations, and Axe fails.
func TestAxeFindsViolations(t *testing.T) {
	srv := site(t)
	b := New(t)
	b.Navigate(srv.URL + "/bad")
	vs, err := b.AxeViolations()
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, v := range vs {
		if v.Serious() {
			ids[v.ID] = true
		}
	}
	for _, want := range []string{"image-alt", "label"} {
		if !ids[want] {
			t.Errorf("serious violations %v, want %s among them", ids, want)
		}
	}
	r := &recorder{TB: t}
	b.Axe(r)
	if got := r.failures(); !strings.Contains(got, "image-alt") {
		t.Errorf("Axe failures %q, want image-alt", got)
	}
}
