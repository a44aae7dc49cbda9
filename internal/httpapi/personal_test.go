package httpapi_test

import (
	"net/http"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/wire"
)

// TestPersonalTokens: a login session makes a token with its user's role and scope (12 h by
// default, at most 7 days); a token cannot make one; a user revokes their own tokens and no
// one else's (404 whether or not the id exists); a revoked token is refused.
func TestPersonalTokens(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	adm := bearer(s.admin)
	for _, u := range []wire.UserRequest{{Name: "dana", Role: auth.RoleDeployer, Groups: []string{"lab"}, Password: "correct horse battery"}, {Name: "erik", Role: auth.RoleViewer, Password: "another long password"}} {
		if r := call(t, srv, http.MethodPost, "/api/v1/users", mustJSON(t, u), adm); r.status != http.StatusCreated {
			t.Fatalf("add user %s: %d %s", u.Name, r.status, r.body)
		}
	}
	login := func(user, pw string) session {
		t.Helper()
		r := call(t, srv, http.MethodPost, "/api/v1/login", mustJSON(t, wire.LoginRequest{User: user, Password: pw}), map[string]string{"Content-Type": "application/json"})
		if r.status != http.StatusOK {
			t.Fatalf("login %s: %d %s", user, r.status, r.body)
		}
		ss := session{csrf: decodeJSON[wire.Session](t, r.body).CSRFToken}
		for _, c := range (&http.Response{Header: r.header}).Cookies() {
			if c.Name == wire.SessionCookie {
				ss.cookie = c.Value
			}
		}
		return ss
	}
	dana, erik := login("dana", "correct horse battery"), login("erik", "another long password")

	r := call(t, srv, http.MethodPost, "/api/v1/session/token", nil, dana.hdr(true))
	if r.status != http.StatusCreated {
		t.Fatalf("personal token: %d %s", r.status, r.body)
	}
	tok := decodeJSON[wire.OperatorToken](t, r.body)
	if tok.User != "dana" || tok.Role != auth.RoleDeployer || len(tok.Groups) != 1 || tok.Groups[0] != "lab" || tok.Token == "" || tok.Name != "login dana" {
		t.Fatalf("personal token %+v", tok)
	}
	if d := time.Until(tok.ExpiresAt); d < 11*time.Hour || d > 13*time.Hour {
		t.Fatalf("expires in %s, want 12 h", d)
	}
	wantError(t, call(t, srv, http.MethodPost, "/api/v1/session/token", mustJSON(t, wire.PersonalTokenRequest{TTL: 8 * 24 * time.Hour}), dana.hdr(true)), http.StatusBadRequest, apperr.Invalid, "ttl")
	wantError(t, call(t, srv, http.MethodPost, "/api/v1/session/token", nil, dana.hdr(false)), http.StatusForbidden, apperr.Forbidden, "CSRF")
	// A token cannot make tokens, its own user's included.
	wantError(t, call(t, srv, http.MethodPost, "/api/v1/session/token", nil, bearer(tok.Token)), http.StatusBadRequest, apperr.Invalid, "login session")
	if who := decodeJSON[wire.Session](t, call(t, srv, http.MethodGet, "/api/v1/session", nil, bearer(tok.Token)).body); who.User != "dana" || who.Kind != "token" {
		t.Fatalf("session of the personal token: %+v", who)
	}

	// Another user's token, or no such token: the same 404.
	wantError(t, call(t, srv, http.MethodPost, "/api/v1/session/tokens/"+tok.ID+"/revoke", nil, erik.hdr(true)), http.StatusNotFound, apperr.NotFound, "")
	wantError(t, call(t, srv, http.MethodPost, "/api/v1/session/tokens/ffffffffffffffff/revoke", nil, erik.hdr(true)), http.StatusNotFound, apperr.NotFound, "")
	// The token revokes itself.
	if r := call(t, srv, http.MethodPost, "/api/v1/session/tokens/"+tok.ID+"/revoke", nil, bearer(tok.Token)); r.status != http.StatusNoContent {
		t.Fatalf("revoke own token: %d %s", r.status, r.body)
	}
	wantError(t, call(t, srv, http.MethodGet, "/api/v1/session", nil, bearer(tok.Token)), http.StatusUnauthorized, apperr.Unauthorized, "was revoked")
	// A user's session revokes another of their tokens.
	tok2 := decodeJSON[wire.OperatorToken](t, call(t, srv, http.MethodPost, "/api/v1/session/token", nil, dana.hdr(true)).body)
	if r := call(t, srv, http.MethodPost, "/api/v1/session/tokens/"+tok2.ID+"/revoke", nil, dana.hdr(true)); r.status != http.StatusNoContent {
		t.Fatalf("revoke from the session: %d %s", r.status, r.body)
	}
	wantError(t, call(t, srv, http.MethodGet, "/api/v1/session", nil, bearer(tok2.Token)), http.StatusUnauthorized, apperr.Unauthorized, "was revoked")
}

// TestSSORoutesWithoutProvider: without a configured provider the single sign-on routes answer
// 404 and say how to configure one.
func TestSSORoutesWithoutProvider(t *testing.T) {
	srv := newStack(t).serve()
	for _, p := range []string{"/api/v1/oidc/login", "/api/v1/oidc/callback?code=x&state=y"} {
		wantError(t, call(t, srv, http.MethodGet, p, nil, nil), http.StatusNotFound, apperr.NotFound, "--oidc-issuer")
	}
}
