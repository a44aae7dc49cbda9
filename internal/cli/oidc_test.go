package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/sso"
	"upkeep.dev/upkeep/internal/testenv"
	"upkeep.dev/upkeep/wire"
)

// The OpenID provider of these tests is the example provider of github.com/zitadel/oidc (a real
// OP: discovery, keys, a login form, code flow with PKCE, token and userinfo endpoints), which
// .ci/run installs as zitadel-oidc-op.
const opInstall = "go install github.com/zitadel/oidc/v3/example/server@v3.52.0, renamed zitadel-oidc-op"

// opUser is a user of the example provider's users file (its storage.User).
type opUser struct {
	ID, Username, Password, FirstName, LastName, Email string
	EmailVerified                                      bool
	PreferredLanguage                                  string
}

var opUsers = []opUser{
	{ID: "sub-rita", Username: "rita", Password: "rita-secret-pw", FirstName: "Rita", LastName: "Release", Email: "rita@example.com"},
	{ID: "sub-dave", Username: "dave", Password: "dave-secret-pw", FirstName: "Dave", LastName: "Deploy", Email: "dave@example.com"},
	{ID: "sub-uma", Username: "uma", Password: "uma-secret-pw", FirstName: "Uma", LastName: "Unmapped", Email: "uma@example.com"},
}

// testRoleMap maps the provider's users by their email claim (which comes from the userinfo
// endpoint: the example provider puts no profile claims in the ID token).
const testRoleMap = "email:rita@example.com=release-manager,email:dave@example.com=deployer:lab"

// freePort returns a port that was free a moment ago.
func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startOP starts the example provider on port with the test users, the clients "web" and "api"
// (secret "secret") allowed to redirect to redirectURI, and returns its issuer.
func startOP(t *testing.T, port int, redirectURI string) string {
	t.Helper()
	bin := testenv.Binary(t, "UPKEEP_TEST_OIDC_OP", "zitadel-oidc-op", opInstall)
	dir := t.TempDir()
	users := map[string]opUser{}
	for _, u := range opUsers {
		u.EmailVerified, u.PreferredLanguage = true, "en"
		users[u.ID] = u
	}
	b, _ := json.Marshal(users)
	usersFile := filepath.Join(dir, "users.json")
	if err := os.WriteFile(usersFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "op.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), fmt.Sprintf("PORT=%d", port), "USERS_FILE="+usersFile, "REDIRECT_URI="+redirectURI)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logFile.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			t.Logf("provider log:\n%s", tail(string(b), 4000))
		}
	})
	issuer := fmt.Sprintf("http://localhost:%d/", port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(issuer + ".well-known/openid-configuration")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return issuer
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the provider did not start on port %d: %v", port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// tokenSwap rewrites the ID token of the provider's token endpoint answers when set: the
// fault a network attacker, or a token endpoint that is not the provider, would bring.
type tokenSwap struct {
	swap atomic.Pointer[func(idToken string) string]
}

func (s *tokenSwap) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	f := s.swap.Load()
	if err != nil || f == nil || !strings.HasSuffix(r.URL.Path, "/oauth/token") {
		return resp, err
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	if raw, ok := body["id_token"].(string); ok {
		body["id_token"] = (*f)(raw)
	}
	b, _ := json.Marshal(body)
	resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
	resp.Header.Del("Content-Length")
	return resp, nil
}

// ssoEnv is a server configured for single sign-on against a running provider.
type ssoEnv struct {
	*env
	issuer, callback string
	swap             *tokenSwap
	log              *syncBuffer // the server's log
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// wantLogged checks that the server logged the cause of a refusal (which the answer must not
// carry).
func (e *ssoEnv) wantLogged(t *testing.T, what, cause string) {
	t.Helper()
	if !strings.Contains(e.log.String(), cause) {
		t.Fatalf("%s: the server did not log %q:\n%s", what, cause, tail(e.log.String(), 3000))
	}
}

func newSSOEnv(t *testing.T) *ssoEnv {
	port := freePort(t)
	s := &ssoEnv{swap: &tokenSwap{}, log: &syncBuffer{}}
	s.issuer = fmt.Sprintf("http://localhost:%d/", port)
	s.env = newEnvWith(t, func(c *server.Config) {
		rules, err := sso.ParseRoleMap(testRoleMap)
		if err != nil {
			t.Fatal(err)
		}
		c.Logger = slog.New(slog.NewTextHandler(s.log, nil))
		c.OIDC = sso.Config{Issuer: s.issuer, ClientID: "web", ClientSecret: "secret", RoleMap: rules,
			HTTPClient: &http.Client{Transport: s.swap, Timeout: 10 * time.Second}}
	})
	s.callback = s.srv.URL + "/api/v1/oidc/callback"
	startOP(t, port, s.callback)
	return s
}

// browser is a person's browser: a cookie jar, redirects followed except into the callback
// when stopAtCallback is set.
type browser struct {
	t              *testing.T
	c              *http.Client
	callback       string
	stopAtCallback bool
	lastCallback   string
}

func newBrowser(t *testing.T, callback string) *browser {
	jar, _ := cookiejar.New(nil)
	b := &browser{t: t, callback: callback}
	b.c = &http.Client{Jar: jar, Timeout: 30 * time.Second, CheckRedirect: func(r *http.Request, via []*http.Request) error {
		if strings.HasPrefix(r.URL.String(), b.callback) {
			b.lastCallback = r.URL.String()
			if b.stopAtCallback {
				return http.ErrUseLastResponse
			}
		}
		return nil
	}}
	return b
}

type answer struct {
	status int
	body   string
	final  *url.URL
}

func (b *browser) do(method, u string, form url.Values, header map[string]string) answer {
	b.t.Helper()
	var rd io.Reader
	if form != nil {
		rd = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, body: string(body), final: resp.Request.URL}
}

var loginFormID = regexp.MustCompile(`name="id" value="([^"]+)"`)

// login goes through the whole flow as a person would: Upkeep's login route redirects to the
// provider, whose login form is posted with the user's password; the provider redirects to
// the callback. It returns the last answer (the callback's unless stopAtCallback).
func (b *browser) login(start, user, password string) answer {
	b.t.Helper()
	page := b.do(http.MethodGet, start, nil, nil)
	m := loginFormID.FindStringSubmatch(page.body)
	if page.status != http.StatusOK || m == nil {
		b.t.Fatalf("no login form at %s: %d %s", page.final, page.status, tail(page.body, 500))
	}
	form := url.Values{"id": {m[1]}, "username": {user}, "password": {password}}
	post := *page.final
	post.Path, post.RawQuery = "/login/username", ""
	return b.do(http.MethodPost, post.String(), form, nil)
}

func (b *browser) session(base string) (wire.Session, int) {
	b.t.Helper()
	a := b.do(http.MethodGet, base+"/api/v1/session", nil, nil)
	var s wire.Session
	json.Unmarshal([]byte(a.body), &s)
	return s, a.status
}

func wantRefusal(t *testing.T, what string, a answer, status int, msg string, secrets ...string) {
	t.Helper()
	var e wire.Error
	if err := json.Unmarshal([]byte(a.body), &e); err != nil || a.status != status || !strings.Contains(e.Message, msg) {
		t.Fatalf("%s: %d %s, want %d with %q", what, a.status, a.body, status, msg)
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(a.body, s) {
			t.Fatalf("%s: the answer leaks %q: %s", what, s, a.body)
		}
	}
}

// TestSSOLogin drives the browser flow against a real OpenID provider: a mapped user logs in,
// gets a session whose role comes from the role map (and a deployer its group scope), reads
// what the role grants and is refused what it does not, makes a personal token; a second
// login finds the same user by issuer and subject. An unmapped account is refused with 403,
// and a disabled user stays disabled.
func TestSSOLogin(t *testing.T) {
	e := newSSOEnv(t)
	start := e.srv.URL + "/api/v1/oidc/login"

	b := newBrowser(t, e.callback)
	a := b.login(start, "rita", "rita-secret-pw")
	if a.status != http.StatusOK || !strings.HasPrefix(a.final.String(), e.callback) {
		t.Fatalf("callback: %d at %s: %s", a.status, a.final, a.body)
	}
	var got wire.Session
	if err := json.Unmarshal([]byte(a.body), &got); err != nil || got.User != "rita" || got.Role != "release-manager" || got.Kind != "session" || got.CSRFToken == "" {
		t.Fatalf("callback answer: %s", a.body)
	}
	s, st := b.session(e.srv.URL)
	if st != http.StatusOK || s.User != "rita" || s.Role != "release-manager" {
		t.Fatalf("session: %d %+v", st, s)
	}
	if a := b.do(http.MethodGet, e.srv.URL+"/api/v1/releases", nil, nil); a.status != http.StatusOK {
		t.Fatalf("a permitted route: %d %s", a.status, a.body)
	}
	wantRefusal(t, "a forbidden route", b.do(http.MethodGet, e.srv.URL+"/api/v1/users", nil, nil), http.StatusForbidden, "role release-manager does not grant users:read")
	// A state-changing request needs the CSRF token; with it, a personal token for the CLI.
	wantRefusal(t, "no CSRF token", b.do(http.MethodPost, e.srv.URL+"/api/v1/session/token", nil, nil), http.StatusForbidden, "CSRF")
	pt := b.do(http.MethodPost, e.srv.URL+"/api/v1/session/token", nil, map[string]string{wire.HeaderCSRF: got.CSRFToken})
	var tok wire.OperatorToken
	if err := json.Unmarshal([]byte(pt.body), &tok); pt.status != http.StatusCreated || err != nil || tok.Role != "release-manager" || tok.User != "rita" {
		t.Fatalf("personal token: %d %s", pt.status, pt.body)
	}
	if d := time.Until(tok.ExpiresAt); d < 11*time.Hour || d > 13*time.Hour {
		t.Fatalf("personal token expires in %s, want 12 h", d)
	}

	// The user row: made at the first login, with the provider's issuer.
	us, err := e.cli.Users(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, u := range us {
		if u.Name == "rita" {
			found = u.Issuer == e.issuer && u.Role == "release-manager" && !u.HasPassword
		}
	}
	if !found {
		t.Fatalf("no SSO user rita in %+v", us)
	}
	// A second login (another browser) finds the same user.
	if a := newBrowser(t, e.callback).login(start, "rita", "rita-secret-pw"); a.status != http.StatusOK {
		t.Fatalf("second login: %d %s", a.status, a.body)
	}

	// A deployer through the map gets its group scope.
	d := newBrowser(t, e.callback)
	if a := d.login(start, "dave", "dave-secret-pw"); a.status != http.StatusOK || !strings.Contains(a.body, `"groups":["lab"]`) || !strings.Contains(a.body, `"role":"deployer"`) {
		t.Fatalf("deployer login: %d %s", a.status, a.body)
	}

	// An account no rule maps: 403, no session, no user.
	u := newBrowser(t, e.callback)
	wantRefusal(t, "unmapped account", u.login(start, "uma", "uma-secret-pw"), http.StatusForbidden, "maps to no Upkeep role", "sub-uma", "uma@example.com")
	if _, st := u.session(e.srv.URL); st != http.StatusUnauthorized {
		t.Fatalf("unmapped account has a session: %d", st)
	}

	// The role map is the source of truth for the role: an admin's change lasts until the next
	// login, which brings the mapped role back (and ended the older session with the change).
	cli(t, "--server", e.srv.URL, "--token", e.srv.AdminToken, "users", "role", "rita", "viewer")
	if _, st := b.session(e.srv.URL); st != http.StatusUnauthorized {
		t.Fatalf("the session after a role change: %d", st)
	}
	b = newBrowser(t, e.callback)
	if a := b.login(start, "rita", "rita-secret-pw"); a.status != http.StatusOK || !strings.Contains(a.body, `"role":"release-manager"`) {
		t.Fatalf("login after a role change: %d %s", a.status, a.body)
	}

	// Disabled: the session ends, and the next SSO login is refused; the user stays disabled.
	cli(t, "--server", e.srv.URL, "--token", e.srv.AdminToken, "users", "disable", "rita")
	if _, st := b.session(e.srv.URL); st != http.StatusUnauthorized {
		t.Fatalf("a disabled user's session: %d", st)
	}
	wantRefusal(t, "disabled user", newBrowser(t, e.callback).login(start, "rita", "rita-secret-pw"), http.StatusForbidden, "disabled")
	if out := cli(t, "--server", e.srv.URL, "--token", e.srv.AdminToken, "users", "list"); !regexp.MustCompile(`rita +release-manager +all +sso .*disabled`).MatchString(out) {
		t.Fatalf("rita is not disabled any more:\n%s", out)
	}
}

// TestSSOAttacks: a callback with another state (login CSRF), a replayed code, an ID token from
// a second provider that the server does not trust, a real ID token whose claims were changed,
// and a provider's refusal all end without a session, with a 400 or 401 that names no code,
// state or token.
func TestSSOAttacks(t *testing.T) {
	e := newSSOEnv(t)
	start := e.srv.URL + "/api/v1/oidc/login"
	cbURL, _ := url.Parse(e.callback)
	attemptCookie := func(b *browser) string {
		for _, c := range b.c.Jar.Cookies(cbURL) {
			if c.Name == "upkeep_oidc" {
				return c.Value
			}
		}
		return ""
	}
	// stopped runs the flow up to the provider's redirect into the callback and returns its URL.
	stopped := func(user, pw string) (*browser, *url.URL) {
		b := newBrowser(t, e.callback)
		b.stopAtCallback = true
		b.login(start, user, pw)
		u, err := url.Parse(b.lastCallback)
		if err != nil || u.Query().Get("code") == "" {
			t.Fatalf("no callback with a code: %q", b.lastCallback)
		}
		b.stopAtCallback = false
		return b, u
	}

	// Wrong state: the callback carries another attempt's state (an attacker's own login).
	b, cb := stopped("rita", "rita-secret-pw")
	q := cb.Query()
	code, state := q.Get("code"), q.Get("state")
	q.Set("state", state+"x")
	cb.RawQuery = q.Encode()
	wantRefusal(t, "wrong state", b.do(http.MethodGet, cb.String(), nil, nil), http.StatusBadRequest, "no login attempt", code, state)
	if _, st := b.session(e.srv.URL); st != http.StatusUnauthorized {
		t.Fatalf("wrong state gave a session: %d", st)
	}
	// No attempt cookie at all: the callback of another browser.
	_, cb = stopped("rita", "rita-secret-pw")
	wantRefusal(t, "another browser's callback", newBrowser(t, e.callback).do(http.MethodGet, cb.String(), nil, nil), http.StatusBadRequest, "no login attempt", cb.Query().Get("code"))

	// Replayed code: a login succeeds; the same callback with the same attempt cookie again is
	// refused by the provider (a code is used once).
	b = newBrowser(t, e.callback)
	b.stopAtCallback = true
	b.login(start, "rita", "rita-secret-pw")
	cookie := attemptCookie(b)
	b.stopAtCallback = false
	if a := b.do(http.MethodGet, b.lastCallback, nil, nil); a.status != http.StatusOK {
		t.Fatalf("first use of the code: %d %s", a.status, a.body)
	}
	r := newBrowser(t, e.callback)
	r.c.Jar.SetCookies(cbURL, []*http.Cookie{{Name: "upkeep_oidc", Value: cookie, Path: "/api/v1/oidc/"}})
	cb, _ = url.Parse(b.lastCallback)
	wantRefusal(t, "replayed code", r.do(http.MethodGet, b.lastCallback, nil, nil), http.StatusUnauthorized, "refused the login code", cb.Query().Get("code"), cookie)
	if _, st := r.session(e.srv.URL); st != http.StatusUnauthorized {
		t.Fatalf("a replayed code gave a session: %d", st)
	}
	e.wantLogged(t, "replayed code", "invalid_grant")

	// An ID token of a second provider, which the server does not trust, for the same client id
	// and with the nonce of the victim's attempt, put in place of the real one.
	port2 := freePort(t)
	issuer2 := startOP(t, port2, e.callback)
	b, cb = stopped("rita", "rita-secret-pw")
	nonce := strings.Split(attemptCookie(b), ".")[2]
	foreign := idTokenFrom(t, issuer2, e.callback, nonce, "rita", "rita-secret-pw")
	swapTo := func(string) string { return foreign }
	e.swap.swap.Store(&swapTo)
	wantRefusal(t, "foreign ID token", b.do(http.MethodGet, cb.String(), nil, nil), http.StatusUnauthorized, "did not verify", foreign, cb.Query().Get("code"))
	if _, st := b.session(e.srv.URL); st != http.StatusUnauthorized {
		t.Fatalf("a foreign ID token gave a session: %d", st)
	}
	e.wantLogged(t, "foreign ID token", "failed to verify signature")

	// A genuine ID token of the trusted provider, but from another login (the attacker's own,
	// with its own nonce): signature, issuer and audience hold, the nonce does not.
	own := idTokenFrom(t, e.issuer, e.callback, "attackers-own-nonce-0123456789", "dave", "dave-secret-pw")
	swapOwn := func(string) string { return own }
	e.swap.swap.Store(&swapOwn)
	b, cb = stopped("rita", "rita-secret-pw")
	wantRefusal(t, "another login's ID token", b.do(http.MethodGet, cb.String(), nil, nil), http.StatusUnauthorized, "did not verify", own)
	e.wantLogged(t, "another login's ID token", "nonce mismatch")

	// The real provider's ID token with its claims changed (another subject), signature kept.
	tamper := func(raw string) string {
		parts := strings.Split(raw, ".")
		payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
		var claims map[string]any
		json.Unmarshal(payload, &claims)
		claims["sub"] = "sub-dave"
		p, _ := json.Marshal(claims)
		parts[1] = base64.RawURLEncoding.EncodeToString(p)
		return strings.Join(parts, ".")
	}
	e.swap.swap.Store(&tamper)
	b, cb = stopped("rita", "rita-secret-pw")
	before := strings.Count(e.log.String(), "failed to verify signature")
	wantRefusal(t, "tampered ID token", b.do(http.MethodGet, cb.String(), nil, nil), http.StatusUnauthorized, "did not verify", cb.Query().Get("code"))
	if strings.Count(e.log.String(), "failed to verify signature") != before+1 {
		t.Fatalf("tampered ID token: refused for another reason:\n%s", tail(e.log.String(), 2000))
	}
	e.swap.swap.Store(nil)

	// The provider's refusal (RFC 6749 §4.1.2.1) with the right state: 401, no session.
	b = newBrowser(t, e.callback)
	b.stopAtCallback = true
	b.do(http.MethodGet, start, nil, nil)
	st := strings.Split(attemptCookie(b), ".")[1]
	wantRefusal(t, "provider refusal", b.do(http.MethodGet, e.callback+"?error=access_denied&state="+st, nil, nil), http.StatusUnauthorized, "did not log you in (access_denied)")

	// A local user holds the name the provider gives: the provider's account does not become
	// that user (users are found by issuer and subject, never by name).
	if _, err := cliIn("", "--server", e.srv.URL, "--token", e.srv.AdminToken, "users", "add", "dave", "--role", "admin", "--no-password"); err != nil {
		t.Fatal(err)
	}
	wantRefusal(t, "a provider account named as a local user", newBrowser(t, e.callback).login(start, "dave", "dave-secret-pw"), http.StatusConflict, "belongs to another account")

	// And after all that, the real flow still works.
	if a := newBrowser(t, e.callback).login(start, "rita", "rita-secret-pw"); a.status != http.StatusOK {
		t.Fatalf("login after the attacks: %d %s", a.status, a.body)
	}
}

// idTokenFrom logs user in at the provider issuer as client "web" with nonce and returns the ID
// token it issues: what an attacker holding an account at an untrusted provider can get.
func idTokenFrom(t *testing.T, issuer, redirect, nonce, user, pw string) string {
	t.Helper()
	b := newBrowser(t, redirect)
	b.stopAtCallback = true
	q := url.Values{"client_id": {"web"}, "redirect_uri": {redirect}, "response_type": {"code"}, "scope": {"openid email"}, "state": {"attacker-state-0123456789"}, "nonce": {nonce}}
	b.login(issuer+"auth?"+q.Encode(), user, pw)
	cb, err := url.Parse(b.lastCallback)
	if err != nil || cb.Query().Get("code") == "" {
		t.Fatalf("no code from the second provider: %q", b.lastCallback)
	}
	form := url.Values{"grant_type": {"authorization_code"}, "code": {cb.Query().Get("code")}, "redirect_uri": {redirect}}
	req, _ := http.NewRequest(http.MethodPost, issuer+"oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("web", "secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		IDToken string `json:"id_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.IDToken == "" {
		t.Fatalf("second provider's token answer: %d %v", resp.StatusCode, err)
	}
	return out.IDToken
}

// TestSSOCLILogin: `upkeep login --sso` prints the server's login URL; a person opens it in a
// browser on the same machine and logs in at the provider; the token comes back sealed to the
// command's key on its loopback port, is kept like a password login's, and later commands use
// it. What reaches the loopback port unsealed, or sealed to another key, is refused.
func TestSSOCLILogin(t *testing.T) {
	e := newSSOEnv(t)
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("UPKEEP_TOKEN", "")
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		cmd := newRoot()
		cmd.SetArgs([]string{"--server", e.srv.URL, "login", "--sso", "--sso-wait", "1m"})
		cmd.SetOut(out)
		cmd.SetErr(out)
		done <- cmd.ExecuteContext(context.Background())
	}()
	loginURL := regexp.MustCompile(`http://\S+/api/v1/oidc/login\?\S+`)
	var start string
	for deadline := time.Now().Add(10 * time.Second); start == ""; {
		start = loginURL.FindString(out.String())
		if time.Now().After(deadline) {
			t.Fatalf("no login URL printed:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	u, _ := url.Parse(start)
	port := u.Query().Get("cli_port")

	// Someone else's answer at the loopback port: refused, the command keeps waiting.
	_, otherKey := sso.NewCLIKey()
	sealed, _ := sso.CLI{Port: 50000, Key: otherKey}.Seal([]byte(`{"token":"upk_admin_forged"}`))
	for _, q := range []string{"sealed=" + sealed, "sealed=garbage", ""} {
		resp, err := http.Get("http://127.0.0.1:" + port + "/upkeep-login?" + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("loopback with %.20q: %d", q, resp.StatusCode)
		}
	}

	b := newBrowser(t, e.callback)
	a := b.login(start, "dave", "dave-secret-pw")
	if a.status != http.StatusOK || !strings.Contains(a.body, "Logged in to Upkeep as dave") || a.final.Host != "127.0.0.1:"+port {
		t.Fatalf("the browser's last page: %d at %s: %s", a.status, a.final, a.body)
	}
	if strings.Contains(a.final.String(), "upk_admin_") {
		t.Fatal("the token crossed the browser in clear")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("login --sso: %v\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("login --sso did not end:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "logged in to "+e.srv.URL+" as dave (role deployer, limited to groups lab)") {
		t.Fatalf("login --sso said:\n%s", out.String())
	}
	// The browser got no session: the token went to the command line only.
	if _, st := b.session(e.srv.URL); st != http.StatusUnauthorized {
		t.Fatalf("the browser has a session: %d", st)
	}
	me := []string{"--server", e.srv.URL}
	cli(t, append(me, "release", "list")...)
	if _, err := cliErr(append(me, "users", "list")...); err == nil || !strings.Contains(err.Error(), "role deployer does not grant users:read") {
		t.Fatalf("a forbidden command: %v", err)
	}
	if out := cli(t, append(me, "logout")...); !strings.Contains(out, "revoked") {
		t.Fatalf("logout: %s", out)
	}
	// A bad cli_key or port on the login URL: 400 before any redirect.
	wantRefusal(t, "bad cli_port", newBrowser(t, e.callback).do(http.MethodGet, e.srv.URL+"/api/v1/oidc/login?cli_port=80&cli_key="+otherKey, nil, nil), http.StatusBadRequest, "cli_port")
}
