package httpapi_test

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/sso"
	"upkeep.dev/upkeep/wire"
)

// browser is a console client: a cookie jar, no redirects followed, same-origin form posts.
type browser struct {
	t    testing.TB
	base string // the server's URL with the console's base path, ending in "/"
	c    *http.Client
}

func newBrowser(t testing.TB, srv *httptest.Server, basePath string) *browser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return &browser{t: t, base: srv.URL + basePath, c: c}
}

// page is a console answer.
type page struct {
	status int
	header http.Header
	body   string
}

func (b *browser) do(method, path string, form url.Values, hdr map[string]string) page {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.base+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", strings.TrimSuffix(b.base[:strings.Index(b.base[8:], "/")+8], "/"))
		req.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return page{status: resp.StatusCode, header: resp.Header, body: string(raw)}
}

func (b *browser) get(path string) page { b.t.Helper(); return b.do(http.MethodGet, path, nil, nil) }

func (b *browser) post(path string, form url.Values) page {
	b.t.Helper()
	return b.do(http.MethodPost, path, form, nil)
}

var (
	csrfField  = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	inlineCode = regexp.MustCompile(`(?i)<script(?:\s[^>]*)?>[^<]|<style|<[a-z][^>]*\sstyle=|<[a-z][^>]*\son[a-z]+=|javascript:`)
)

// field returns the first csrf field of a page.
func (p page) csrf(t testing.TB) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no csrf field in:\n%s", p.body)
	}
	return m[1]
}

// wantPage checks a console page: status, HTML, the security headers, nothing inline.
func wantPage(t testing.TB, p page, status int, contains ...string) {
	t.Helper()
	if p.status != status {
		t.Fatalf("status %d, want %d:\n%s", p.status, status, p.body)
	}
	if !strings.HasPrefix(p.header.Get("Content-Type"), "text/html") {
		t.Errorf("Content-Type %q", p.header.Get("Content-Type"))
	}
	if csp := p.header.Get("Content-Security-Policy"); csp != "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'" {
		t.Errorf("CSP %q", csp)
	}
	if p.header.Get("X-Content-Type-Options") != "nosniff" || p.header.Get("Referrer-Policy") == "" || p.header.Get("Cache-Control") != "no-store" {
		t.Errorf("headers %v", p.header)
	}
	if m := inlineCode.FindString(p.body); m != "" {
		t.Errorf("inline script or style %q in:\n%s", m, p.body)
	}
	for _, c := range contains {
		if !strings.Contains(p.body, c) {
			t.Errorf("page lacks %q:\n%s", c, p.body)
		}
	}
}

// addUser creates a user with a password.
func (s *stack) addUser(name, role, password string) {
	s.t.Helper()
	if err := s.db.CreateUser(context.Background(), &auth.User{Name: name, Role: role, PasswordHash: auth.HashPassword(password), CreatedAt: time.Now()}); err != nil {
		s.t.Fatal(err)
	}
}

// login signs a browser in through the login form and returns the session's CSRF token.
func (b *browser) login(user, password string) string {
	b.t.Helper()
	lp := b.get("login")
	wantPage(b.t, lp, http.StatusOK, "Sign in")
	r := b.post("login", url.Values{"csrf": {lp.csrf(b.t)}, "user": {user}, "password": {password}})
	if r.status != http.StatusSeeOther {
		b.t.Fatalf("login: %d %s", r.status, r.body)
	}
	home := b.get("")
	wantPage(b.t, home, http.StatusOK, "Overview")
	return home.csrf(b.t)
}

const testPassword = "correct horse battery"

// TestConsoleLogin: / shows the login page to a stranger, with the public pages linked; the form
// signs in with the same session as the JSON login; the overview follows; logout needs the
// CSRF token and ends the session.
func TestConsoleLogin(t *testing.T) {
	s := newStack(t)
	s.addUser("alice", auth.RoleViewer, testPassword)
	srv := s.serve()
	b := newBrowser(t, srv, "/")
	wantPage(t, b.get(""), http.StatusOK, "Sign in", `href="/p/"`, `action="/login"`)
	if r := b.get("devices"); r.status != http.StatusSeeOther || r.header.Get("Location") != "/login?next=devices" {
		t.Fatalf("GET /devices without a session: %d %v", r.status, r.header)
	}
	lp := b.get("login?next=devices")
	wantPage(t, lp, http.StatusOK, `name="next" value="devices"`)
	tok := lp.csrf(t)
	// A wrong password: 401, the form again.
	wantPage(t, b.post("login", url.Values{"csrf": {tok}, "user": {"alice"}, "password": {"wrong password!!"}}), http.StatusUnauthorized, "wrong user name or password", `value="alice"`)
	lp = b.get("login?next=devices")
	r := b.post("login", url.Values{"csrf": {lp.csrf(t)}, "user": {"alice"}, "password": {testPassword}, "next": {"devices"}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/devices" {
		t.Fatalf("login: %d %v %s", r.status, r.header, r.body)
	}
	var cookie *http.Cookie
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == wire.SessionCookie {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/" {
		t.Fatalf("session cookie %+v", cookie)
	}
	home := b.get("")
	wantPage(t, home, http.StatusOK, "Overview", "alice", "Log out", `hx-headers='{"X-CSRF-Token": "`)
	// The JSON API takes the same session.
	who := call(t, srv, http.MethodGet, "/api/v1/session", nil, map[string]string{"Cookie": wire.SessionCookie + "=" + cookie.Value})
	if who.status != http.StatusOK || !strings.Contains(string(who.body), `"user":"alice"`) {
		t.Fatalf("session: %d %s", who.status, who.body)
	}
	// Logout without the token is refused; with it, the session ends.
	wantPage(t, b.post("logout", url.Values{}), http.StatusForbidden, "CSRF")
	if r := b.post("logout", url.Values{"csrf": {home.csrf(t)}}); r.status != http.StatusSeeOther {
		t.Fatalf("logout: %d %s", r.status, r.body)
	}
	if r := call(t, srv, http.MethodGet, "/api/v1/session", nil, map[string]string{"Cookie": wire.SessionCookie + "=" + cookie.Value}); r.status != http.StatusUnauthorized {
		t.Fatalf("session after logout: %d", r.status)
	}
	wantPage(t, b.get(""), http.StatusOK, "Sign in")
}

// TestConsoleLoginCSRF: the login form is refused from another site (Sec-Fetch-Site, Origin)
// and without the double-submit token of its cookie; the post-login destination never leaves
// the site.
func TestConsoleLoginCSRF(t *testing.T) {
	s := newStack(t)
	s.api.LoginsPerMinute = 100
	s.addUser("alice", auth.RoleViewer, testPassword)
	srv := s.serve()
	b := newBrowser(t, srv, "/")
	tok := b.get("login").csrf(t)
	good := url.Values{"csrf": {tok}, "user": {"alice"}, "password": {testPassword}}
	for name, hdr := range map[string]map[string]string{
		"cross-site":   {"Sec-Fetch-Site": "cross-site"},
		"same-site":    {"Sec-Fetch-Site": "same-site"},
		"other origin": {"Origin": "https://evil.example"},
	} {
		if r := b.do(http.MethodPost, "login", good, hdr); r.status != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", name, r.status)
		}
	}
	if r := b.post("login", url.Values{"csrf": {"guess"}, "user": {"alice"}, "password": {testPassword}}); r.status != http.StatusForbidden {
		t.Errorf("wrong token: %d", r.status)
	}
	other := newBrowser(t, srv, "/") // a form token, but not this browser's cookie
	if r := other.post("login", good); r.status != http.StatusForbidden {
		t.Errorf("token without its cookie: %d", r.status)
	}
	for _, next := range []string{"//evil.example/", "https://evil.example/", `\evil`, "/abs", "a/../../x", "javascript:alert(1)"} {
		b := newBrowser(t, srv, "/")
		tok := b.get("login").csrf(t)
		r := b.post("login", url.Values{"csrf": {tok}, "user": {"alice"}, "password": {testPassword}, "next": {next}})
		if r.status != http.StatusSeeOther || r.header.Get("Location") != "/" {
			t.Errorf("next %q: %d to %q, want / ", next, r.status, r.header.Get("Location"))
		}
	}
}

// TestConsoleStatic: static files are served with their hash as ETag, cached for good when
// named with it, and revalidated otherwise.
func TestConsoleStatic(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	b := newBrowser(t, srv, "/")
	lp := b.get("login")
	for _, name := range []string{"console.css", "htmx.min.js", "sse.min.js"} {
		m := regexp.MustCompile(`"/(static/` + regexp.QuoteMeta(name) + `\?v=([0-9a-f]+))"`).FindStringSubmatch(lp.body)
		if m == nil {
			t.Fatalf("login page does not link %s", name)
		}
		r := b.get(m[1])
		if r.status != http.StatusOK || r.header.Get("Cache-Control") != "public, max-age=31536000, immutable" || r.header.Get("ETag") != `"`+m[2]+`"` || r.header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: %d %v", name, r.status, r.header)
		}
		if r := b.do(http.MethodGet, "static/"+name, nil, map[string]string{"If-None-Match": `"` + m[2] + `"`}); r.status != http.StatusNotModified {
			t.Errorf("%s revalidated: %d", name, r.status)
		}
	}
	if r := b.get("static/nothing.js"); r.status != http.StatusNotFound {
		t.Errorf("unknown static file: %d", r.status)
	}
}

// TestConsoleTenantPrefix: under a tenant's prefix every link, form and cookie stays below it.
func TestConsoleTenantPrefix(t *testing.T) {
	s := newStack(t)
	s.addUser("alice", auth.RoleViewer, testPassword)
	s.api.CookiePath = "/t/acme/"
	s.handler = s.api.Handler()
	srv := httptest.NewServer(http.StripPrefix("/t/acme", s.handler)) // as the server's tenant front does
	t.Cleanup(srv.Close)
	b := newBrowser(t, srv, "/t/acme/")
	lp := b.get("")
	wantPage(t, lp, http.StatusOK, `action="/t/acme/login"`, `href="/t/acme/static/console.css?v=`, `href="/t/acme/p/"`)
	if r := b.get("devices"); r.header.Get("Location") != "/t/acme/login?next=devices" {
		t.Fatalf("redirect to %q", r.header.Get("Location"))
	}
	b.login("alice", testPassword)
	// Every page route answers under the prefix (503: a service this stack lacks), and links
	// nowhere outside it.
	param := regexp.MustCompile(`\{[^}]*\}`)
	for _, rt := range s.api.Registered() {
		method, path, _ := strings.Cut(rt.Pattern, " ")
		if !rt.Page || method != http.MethodGet || strings.HasSuffix(path, "/events") {
			continue
		}
		path = strings.TrimPrefix(strings.ReplaceAll(param.ReplaceAllString(path, "x"), "x$", ""), "/")
		p := b.get(path)
		if p.status == http.StatusUnauthorized || p.status >= 500 && p.status != http.StatusServiceUnavailable || p.status == http.StatusSeeOther && !strings.HasPrefix(p.header.Get("Location"), "/t/acme/") {
			t.Errorf("GET /t/acme/%s: %d %v", path, p.status, p.header.Get("Location"))
		}
		for _, m := range regexp.MustCompile(`(?:href|action|src|hx-get|sse-connect)="([^"]*)"`).FindAllStringSubmatch(p.body, -1) {
			if !strings.HasPrefix(m[1], "/t/acme/") && m[1] != "#main" && m[1] != "data:," && !strings.HasPrefix(m[1], "#") {
				t.Errorf("GET /t/acme/%s: link %q outside the tenant's prefix", path, m[1])
			}
		}
	}
	home := b.get("")
	for _, m := range regexp.MustCompile(`(?:href|action|src)="([^"]*)"`).FindAllStringSubmatch(home.body, -1) {
		if !strings.HasPrefix(m[1], "/t/acme/") && m[1] != "#main" && m[1] != "data:," {
			t.Errorf("link %q outside the tenant's prefix", m[1])
		}
	}
}

// providerStub stands for the OpenID provider's side of internal/sso (whose own tests run a
// real provider): every callback signs in the user it names.
type providerStub struct{ user *auth.User }

func (p providerStub) Begin(ctx context.Context, cli sso.CLI) (string, string, error) {
	return "https://idp.example/authorize", "attempt", nil
}

func (p providerStub) Finish(ctx context.Context, cb sso.Callback) (*auth.User, sso.CLI, error) {
	return p.user, sso.CLI{}, nil
}

// TestConsoleSSO: with single sign-on configured the login page offers it, and the callback
// reached by a browser starts the session and returns to the console (a program still gets
// the session as JSON).
func TestConsoleSSO(t *testing.T) {
	s := newStack(t)
	s.addUser("rita", auth.RoleViewer, testPassword)
	u, err := s.db.FindUser(context.Background(), "rita")
	if err != nil {
		t.Fatal(err)
	}
	s.api.SSO = providerStub{user: u}
	s.handler = s.api.Handler()
	srv := s.serve()
	b := newBrowser(t, srv, "/")
	wantPage(t, b.get("login"), http.StatusOK, `href="/api/v1/oidc/login"`, "single sign-on")
	r := b.do(http.MethodGet, "api/v1/oidc/callback?state=s&code=c", nil, map[string]string{"Accept": "text/html,application/xhtml+xml"})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/" {
		t.Fatalf("callback from a browser: %d %v", r.status, r.header)
	}
	wantPage(t, b.get(""), http.StatusOK, "Overview", "rita")
	if r := call(t, srv, http.MethodGet, "/api/v1/oidc/callback?state=s&code=c", nil, nil); r.status != http.StatusOK || !strings.Contains(string(r.body), `"user":"rita"`) {
		t.Fatalf("callback from a program: %d %s", r.status, r.body)
	}
}
