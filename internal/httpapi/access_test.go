package httpapi_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/httpapi"
	"upkeep.dev/upkeep/wire"
)

// ddiAdminRoutes stand for internal/ddi's management routes, which the server mounts.
func ddiAdminRoutes() map[string]http.HandlerFunc {
	ok := func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }
	return map[string]http.HandlerFunc{"POST /api/v1/ddi/devices": ok, "GET /api/v1/ddi/devices/{id}/token": ok}
}

// listTenants stands for internal/server's tenants registry (whose own tests add real tenants):
// no tenants, and adding one is refused.
type listTenants struct{}

func (listTenants) AddTenant(ctx context.Context, req wire.TenantRequest) (*wire.TenantCreated, error) {
	return nil, apperr.E(apperr.Invalid, "no tenants here")
}

func (listTenants) Tenants(ctx context.Context) ([]wire.Tenant, error) { return []wire.Tenant{}, nil }

// nonAPIRoutes are the routes outside /api/v1: each authenticates in its own way (device token,
// none for public files), and none is an operator's.
var nonAPIRoutes = regexp.MustCompile(`^GET /(healthz|readyz|metrics|repo/image/|p/|\.well-known/csaf/|device/v1/|static/)|^POST /device/v1/`)

// TestEveryRouteDeclaresPermission: every registered /api/v1 route names a known permission,
// and every other route is one of the device, repository and public routes.
func TestEveryRouteDeclaresPermission(t *testing.T) {
	s := newStack(t)
	api := &httpapi.Server{Fleet: s.fleet, Images: s.images, Director: s.director, Devices: s.db, Releases: s.db, Blobs: s.blobs, Admin: s.db, AdminRoutes: ddiAdminRoutes(), Tenants: listTenants{}}
	api.Handler()
	routes := api.Registered()
	if len(routes) < 50 {
		t.Fatalf("only %d routes registered", len(routes))
	}
	for _, rt := range routes {
		if strings.Contains(rt.Pattern, " /api/v1/") || rt.Page {
			if !auth.ValidPermission(rt.Permission) {
				t.Errorf("%s declares permission %q, not one of auth.Permissions", rt.Pattern, rt.Permission)
			}
			continue
		}
		if rt.Permission != "" || !nonAPIRoutes.MatchString(rt.Pattern) {
			t.Errorf("%s (permission %q): a route outside /api/v1 that is not a device, repository or public route", rt.Pattern, rt.Permission)
		}
	}
	// A management route without a declared permission does not start.
	defer func() {
		if recover() == nil {
			t.Error("Handler served an admin route without a permission")
		}
	}()
	(&httpapi.Server{Fleet: s.fleet, Images: s.images, Director: s.director, Devices: s.db, Releases: s.db, Blobs: s.blobs, Admin: s.db,
		AdminRoutes: map[string]http.HandlerFunc{"POST /api/v1/new-thing": nil}}).Handler()
}

// TestRoutePermissionsEveryRole walks every registered route with a token of every role: a
// role that lacks the route's permission gets 403 with a message that names only its role and
// the permission; a role that has it gets past authorization (any answer but 401 or 403).
func TestRoutePermissionsEveryRole(t *testing.T) {
	s := newStack(t)
	var ran atomic.Int64
	counted := map[string]http.HandlerFunc{}
	for p := range ddiAdminRoutes() {
		counted[p] = func(w http.ResponseWriter, r *http.Request) { ran.Add(1); w.WriteHeader(http.StatusNoContent) }
	}
	s.api.AdminRoutes = counted
	s.handler = s.api.Handler()
	srv := s.serve()
	ctx := context.Background()
	tokens := map[string]string{}
	for _, role := range auth.Roles {
		secret, hash := auth.NewSecret(auth.AdminPrefix)
		if err := s.db.CreateOperatorToken(ctx, &auth.OperatorToken{ID: auth.TokenID(hash), Name: "t-" + role, Role: role, Hash: hash, CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
		tokens[role] = secret
	}
	param := regexp.MustCompile(`\{[^}]*\}`)
	// Denied first (nothing may change), then allowed, admin last.
	for _, wantAllowed := range []bool{false, true} {
		for _, rt := range s.api.Registered() {
			if rt.Permission == "" || rt.Permission == auth.PermNone {
				continue
			}
			method, path, _ := strings.Cut(rt.Pattern, " ")
			path = strings.ReplaceAll(param.ReplaceAllString(path, "x"), "x$", "")
			for i := len(auth.Roles) - 1; i >= 0; i-- {
				role := auth.Roles[i]
				allowed := auth.Allows(role, rt.Permission)
				if allowed != wantAllowed {
					continue
				}
				before := ran.Load()
				r := call(t, srv, method, path, []byte(`{}`), bearer(tokens[role]))
				if !allowed {
					want := "forbidden: role " + role + " does not grant " + string(rt.Permission)
					if rt.Page { // a console page: a 403 page saying the same
						if r.status != http.StatusForbidden || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") || !strings.Contains(string(r.body), want) {
							t.Errorf("%s as %s: %d %s %s, want a 403 page saying %q", rt.Pattern, role, r.status, r.header.Get("Content-Type"), r.body, want)
						}
					} else if e := wantError(t, r, http.StatusForbidden, apperr.Forbidden, ""); e.Message != want {
						t.Errorf("%s as %s: message %q, want %q", rt.Pattern, role, e.Message, want)
					}
					if ran.Load() != before {
						t.Errorf("%s as %s: the handler ran", rt.Pattern, role)
					}
					continue
				}
				if r.status == http.StatusUnauthorized || r.status == http.StatusForbidden {
					t.Errorf("%s as %s (granted %s): %d %s", rt.Pattern, role, rt.Permission, r.status, r.body)
				}
			}
		}
	}
}

// TestRolePermissionMap pins the written permission map (docs/OPERATORS.md).
func TestRolePermissionMap(t *testing.T) {
	for _, c := range []struct {
		role string
		p    auth.Permission
		want bool
	}{
		{auth.RoleAdmin, auth.PermUsersWrite, true},
		{auth.RoleReleaseManager, auth.PermPublish, true},
		{auth.RoleReleaseManager, auth.PermResign, true},
		{auth.RoleReleaseManager, auth.PermRotate, false},
		{auth.RoleReleaseManager, auth.PermDeploy, false},
		{auth.RoleDeployer, auth.PermDeploy, true},
		{auth.RoleDeployer, auth.PermGroupsWrite, false},
		{auth.RoleSecurityAnalyst, auth.PermVulnWrite, true},
		{auth.RoleSecurityAnalyst, auth.PermPublish, false},
		{auth.RoleSupport, auth.PermDevicesAdmit, true},
		{auth.RoleSupport, auth.PermDevicesRemove, false},
		{auth.RoleViewer, auth.PermDevicesRead, true},
		{auth.RoleViewer, auth.PermTokensRead, false},
		{auth.RoleViewer, auth.PermAuditRead, false},
		{auth.RoleAuditor, auth.PermAuditRead, true},
		{auth.RoleAuditor, auth.PermTokensWrite, false},
		{"root", auth.PermDevicesRead, false},
	} {
		if got := auth.Allows(c.role, c.p); got != c.want {
			t.Errorf("Allows(%s, %s) = %v, want %v", c.role, c.p, got, c.want)
		}
	}
}

// session is a logged-in browser: its cookie and CSRF token.
type session struct {
	cookie, csrf string
}

func (ss session) hdr(csrf bool) map[string]string {
	h := map[string]string{"Cookie": wire.SessionCookie + "=" + ss.cookie}
	if csrf {
		h[wire.HeaderCSRF] = ss.csrf
	}
	return h
}

// TestLoginSessions: a local user logs in with an argon2id password and gets an HttpOnly,
// SameSite=Strict session cookie and a CSRF token; state-changing requests with the cookie need
// the token; wrong passwords and unknown users get the same 401; logout, idle timeout,
// disabling the user and changing their role end the session; roles apply to sessions too.
func TestLoginSessions(t *testing.T) {
	s := newStack(t)
	now := time.Now()
	var skew atomic.Int64
	s.api.Now = func() time.Time { return now.Add(time.Duration(skew.Load())) }
	srv := s.serve()
	adm := bearer(s.admin)
	jsonHdr := map[string]string{"Content-Type": "application/json"}
	addUser := func(name, role, pw string) {
		t.Helper()
		if r := call(t, srv, http.MethodPost, "/api/v1/users", mustJSON(t, wire.UserRequest{Name: name, Role: role, Password: pw}), adm); r.status != http.StatusCreated {
			t.Fatalf("add user %s: %d %s", name, r.status, r.body)
		}
	}
	wantError(t, call(t, srv, http.MethodPost, "/api/v1/users", mustJSON(t, wire.UserRequest{Name: "x", Role: "support", Password: "short"}), adm), http.StatusBadRequest, apperr.Invalid, "password")
	wantError(t, call(t, srv, http.MethodPost, "/api/v1/users", mustJSON(t, wire.UserRequest{Name: "x", Role: "support", Groups: []string{"lab"}}), adm), http.StatusBadRequest, apperr.Invalid, "group scope")
	addUser("alice", auth.RoleSupport, "correct horse battery")
	addUser("bob", auth.RoleAdmin, "another long password")
	wantError(t, call(t, srv, http.MethodPost, "/api/v1/users", mustJSON(t, wire.UserRequest{Name: "alice", Role: "viewer"}), adm), http.StatusConflict, apperr.Conflict, "")

	doLogin := func(user, pw string) (reply, session) {
		t.Helper()
		r := call(t, srv, http.MethodPost, "/api/v1/login", mustJSON(t, wire.LoginRequest{User: user, Password: pw}), jsonHdr)
		var ss session
		for _, c := range (&http.Response{Header: r.header}).Cookies() {
			if c.Name == wire.SessionCookie {
				ss.cookie = c.Value
				if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure || c.Path != "/" {
					t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/, not Secure over plain HTTP", c)
				}
			}
		}
		if r.status == http.StatusOK {
			ss.csrf = decodeJSON[wire.Session](t, r.body).CSRFToken
		}
		return r, ss
	}
	wrong, _ := doLogin("alice", "wrong password here")
	unknown, _ := doLogin("mallory", "wrong password here")
	nopw, _ := doLogin("admin", "") // the first admin user has no password
	for _, r := range []reply{wrong, unknown, nopw} {
		wantError(t, r, http.StatusUnauthorized, apperr.Unauthorized, "wrong user name or password")
		if string(r.body) != string(wrong.body) {
			t.Fatalf("login answers differ: %s vs %s", r.body, wrong.body)
		}
	}
	wantError(t, call(t, srv, http.MethodPost, "/api/v1/login", []byte("user=alice&password=x"), map[string]string{"Content-Type": "application/x-www-form-urlencoded"}), http.StatusBadRequest, apperr.Invalid, "application/json")

	r, alice := doLogin("alice", "correct horse battery")
	if r.status != http.StatusOK || alice.cookie == "" || alice.csrf == "" {
		t.Fatalf("login: %d %s", r.status, r.body)
	}
	who := decodeJSON[wire.Session](t, call(t, srv, http.MethodGet, "/api/v1/session", nil, alice.hdr(false)).body)
	if who.User != "alice" || who.Role != auth.RoleSupport || who.Kind != "session" || who.CSRFToken != alice.csrf {
		t.Fatalf("session %+v", who)
	}
	if r := call(t, srv, http.MethodGet, "/api/v1/devices", nil, alice.hdr(false)); r.status != http.StatusOK {
		t.Fatalf("support lists devices: %d %s", r.status, r.body)
	}
	// CSRF: a state-changing request with the cookie needs the session's token.
	wantError(t, call(t, srv, http.MethodPost, "/api/v1/devices/nosuch/accept", nil, alice.hdr(false)), http.StatusForbidden, apperr.Forbidden, "CSRF")
	wantError(t, call(t, srv, http.MethodPost, "/api/v1/devices/nosuch/accept", nil, map[string]string{"Cookie": wire.SessionCookie + "=" + alice.cookie, wire.HeaderCSRF: "guess"}), http.StatusForbidden, apperr.Forbidden, "CSRF")
	if r := call(t, srv, http.MethodPost, "/api/v1/devices/nosuch/accept", nil, alice.hdr(true)); r.status != http.StatusNotFound {
		t.Fatalf("accept with CSRF token: %d %s, want 404 (no such device)", r.status, r.body)
	}
	// The role applies to sessions: support may not create tokens.
	wantError(t, call(t, srv, http.MethodPost, "/api/v1/tokens", mustJSON(t, wire.OperatorTokenRequest{Name: "x", Role: "admin"}), alice.hdr(true)), http.StatusForbidden, apperr.Forbidden, "role support does not grant tokens:write")

	// Idle timeout, then absolute expiry.
	skew.Store(int64(29 * time.Minute))
	if r := call(t, srv, http.MethodGet, "/api/v1/session", nil, alice.hdr(false)); r.status != http.StatusOK {
		t.Fatalf("29 minutes idle: %d %s", r.status, r.body)
	}
	skew.Store(int64(58 * time.Minute)) // 29 minutes after the last use
	if r := call(t, srv, http.MethodGet, "/api/v1/session", nil, alice.hdr(false)); r.status != http.StatusOK {
		t.Fatalf("used 29 minutes ago: %d %s", r.status, r.body)
	}
	skew.Store(int64(90 * time.Minute))
	wantError(t, call(t, srv, http.MethodGet, "/api/v1/session", nil, alice.hdr(false)), http.StatusUnauthorized, apperr.Unauthorized, "session expired or ended: log in again")
	skew.Store(0)

	// Logout ends the session; the cookie is cleared.
	_, bob := doLogin("bob", "another long password")
	wantError(t, call(t, srv, http.MethodPost, "/api/v1/logout", nil, bob.hdr(false)), http.StatusForbidden, apperr.Forbidden, "CSRF")
	if r := call(t, srv, http.MethodPost, "/api/v1/logout", nil, bob.hdr(true)); r.status != http.StatusNoContent {
		t.Fatalf("logout: %d %s", r.status, r.body)
	}
	wantError(t, call(t, srv, http.MethodGet, "/api/v1/session", nil, bob.hdr(false)), http.StatusUnauthorized, apperr.Unauthorized, "log in again")

	// Changing the role, or disabling the user, ends their sessions and revokes their tokens.
	_, bob = doLogin("bob", "another long password")
	tr := call(t, srv, http.MethodPost, "/api/v1/tokens", mustJSON(t, wire.OperatorTokenRequest{Name: "bob-ci", Role: auth.RoleViewer}), bob.hdr(true))
	if tr.status != http.StatusCreated {
		t.Fatalf("bob creates a token: %d %s", tr.status, tr.body)
	}
	bobTok := decodeJSON[wire.OperatorToken](t, tr.body)
	if bobTok.User != "bob" {
		t.Fatalf("token %+v: want it owned by bob", bobTok)
	}
	if r := call(t, srv, http.MethodPut, "/api/v1/users/bob/role", mustJSON(t, wire.UserRoleRequest{Role: auth.RoleViewer}), adm); r.status != http.StatusNoContent {
		t.Fatalf("role: %d %s", r.status, r.body)
	}
	wantError(t, call(t, srv, http.MethodGet, "/api/v1/session", nil, bob.hdr(false)), http.StatusUnauthorized, apperr.Unauthorized, "log in again")
	wantError(t, call(t, srv, http.MethodGet, "/api/v1/devices", nil, bearer(bobTok.Token)), http.StatusUnauthorized, apperr.Unauthorized, "revoked")
	_, alice = doLogin("alice", "correct horse battery")
	if r := call(t, srv, http.MethodPost, "/api/v1/users/alice/disable", nil, adm); r.status != http.StatusNoContent {
		t.Fatalf("disable: %d %s", r.status, r.body)
	}
	wantError(t, call(t, srv, http.MethodGet, "/api/v1/session", nil, alice.hdr(false)), http.StatusUnauthorized, apperr.Unauthorized, "log in again")
	if r, _ := doLogin("alice", "correct horse battery"); string(r.body) != string(wrong.body) {
		t.Fatalf("a disabled user's login: %d %s", r.status, r.body)
	}
	// The last enabled admin cannot be disabled or demoted.
	wantError(t, call(t, srv, http.MethodPost, "/api/v1/users/admin/disable", nil, adm), http.StatusConflict, apperr.Conflict, "last enabled admin")
	users := decodeJSON[[]wire.User](t, call(t, srv, http.MethodGet, "/api/v1/users", nil, adm).body)
	if len(users) != 3 || users[0].Name != "admin" && users[0].Name != "alice" {
		t.Fatalf("users %+v", users)
	}
}

// TestLoginThrottled: login attempts are limited per user name and per source address, with
// 429 and Retry-After, before any password is checked.
func TestLoginThrottled(t *testing.T) {
	s := newStack(t)
	now := time.Now()
	s.api.Now = func() time.Time { return now } // no allowance comes back while the test runs
	srv := s.serve()
	jsonHdr := map[string]string{"Content-Type": "application/json"}
	try := func(user string) reply {
		return call(t, srv, http.MethodPost, "/api/v1/login", mustJSON(t, wire.LoginRequest{User: user, Password: "wrong password here"}), jsonHdr)
	}
	for range httpapi.DefaultLoginsPerMinute {
		wantError(t, try("alice"), http.StatusUnauthorized, apperr.Unauthorized, "wrong user name or password")
	}
	r := wantErrorReply(t, try("Alice"), http.StatusTooManyRequests, "this user name")
	if r.header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	for i := range httpapi.DefaultLoginsPerMinuteIP - httpapi.DefaultLoginsPerMinute - 1 {
		wantError(t, try("user"+string(rune('a'+i))), http.StatusUnauthorized, apperr.Unauthorized, "wrong user name or password")
	}
	wantErrorReply(t, try("carol"), http.StatusTooManyRequests, "this address")
}

func wantErrorReply(t *testing.T, r reply, status int, msg string) reply {
	t.Helper()
	wantError(t, r, status, apperr.Busy, msg)
	return r
}

// TestSessionCookieSecureOverTLS: over TLS the session cookie is Secure.
func TestSessionCookieSecureOverTLS(t *testing.T) {
	s := newStack(t)
	srv := httptest.NewTLSServer(s.handler)
	defer srv.Close()
	if r := call(t, srv, http.MethodPost, "/api/v1/users", mustJSON(t, wire.UserRequest{Name: "alice", Role: auth.RoleViewer, Password: "correct horse battery"}), bearer(s.admin)); r.status != http.StatusCreated {
		t.Fatalf("add user: %d %s", r.status, r.body)
	}
	r := call(t, srv, http.MethodPost, "/api/v1/login", mustJSON(t, wire.LoginRequest{User: "alice", Password: "correct horse battery"}), map[string]string{"Content-Type": "application/json"})
	cs := (&http.Response{Header: r.header}).Cookies()
	if r.status != http.StatusOK || len(cs) != 1 || !cs[0].Secure || !cs[0].HttpOnly || cs[0].SameSite != http.SameSiteStrictMode {
		t.Fatalf("login over TLS: %d %s, cookies %+v", r.status, r.body, cs)
	}
}
