package httpapi

import (
	"cmp"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/audit"
	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/sso"
	"upkeep.dev/upkeep/wire"
)

// SingleSignOn logs operators in through an OpenID Connect provider; *sso.Service implements it.
type SingleSignOn interface {
	// Begin returns the provider's authorization URL and the login attempt's cookie value;
	// cli, if not zero, is the command line (`upkeep login --sso`) the login ends at.
	Begin(ctx context.Context, cli sso.CLI) (redirect, cookie string, err error)
	// Finish completes a login and returns the user, created or updated, and the attempt's CLI
	// (sso.Service.Finish lists the errors).
	Finish(ctx context.Context, cb sso.Callback) (*auth.User, sso.CLI, error)
}

// oidcCookie holds a login attempt between the redirect to the provider and its callback. It
// is SameSite=Lax, not Strict: the callback is a top-level navigation coming from the
// provider's site, which a Strict cookie would not accompany. Its path is the two routes'.
const (
	oidcCookie     = "upkeep_oidc"
	oidcCookiePath = "/api/v1/oidc/"
)

func (s *Server) oidcRoutes(mux *router) {
	mux.api("GET /api/v1/oidc/login", auth.PermNone, s.oidcLogin)
	mux.api("GET /api/v1/oidc/callback", auth.PermNone, s.oidcCallback)
}

var errNoSSO = apperr.E(apperr.NotFound, "single sign-on is not configured on this server (serve --oidc-issuer)")

// oidcLogin sends the browser to the provider with a new attempt's state, nonce and PKCE
// challenge; the attempt itself goes into the oidcCookie.
func (s *Server) oidcLogin(w http.ResponseWriter, r *http.Request) {
	if s.SSO == nil {
		s.fail(w, r, errNoSSO)
		return
	}
	var cli sso.CLI
	if q := r.URL.Query(); q.Has("cli_port") || q.Has("cli_key") {
		port, err := strconv.Atoi(q.Get("cli_port"))
		cli = sso.CLI{Port: port, Key: q.Get("cli_key")}
		if err != nil {
			cli.Port = -1 // refused by Begin
		}
	}
	redirect, cookie, err := s.SSO.Begin(r.Context(), cli)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: oidcCookie, Value: cookie, Path: s.oidcCookiePath(), HttpOnly: true, Secure: r.TLS != nil || s.SecureCookies,
		SameSite: http.SameSiteLaxMode, MaxAge: int(sso.AttemptTTL / time.Second)})
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, redirect, http.StatusFound)
}

// oidcCallback finishes the attempt of the oidcCookie (which it clears, so an attempt is
// finished at most once by this browser) and starts the same session as a password login.
// Callbacks are throttled per source address like logins, since each makes the server call
// the provider.
func (s *Server) oidcCallback(w http.ResponseWriter, r *http.Request) {
	if s.SSO == nil {
		s.fail(w, r, errNoSSO)
		return
	}
	if ok, wait := s.loginIP.allow(clientKey(r), cmp.Or(s.LoginsPerMinuteIP, DefaultLoginsPerMinuteIP), s.now()); !ok {
		s.busyFor(w, r, wait, "too many login attempts from this address: try again later")
		return
	}
	cookie := ""
	if c, err := r.Cookie(oidcCookie); err == nil {
		cookie = c.Value
	}
	http.SetCookie(w, &http.Cookie{Name: oidcCookie, Value: "", Path: s.oidcCookiePath(), HttpOnly: true, Secure: r.TLS != nil || s.SecureCookies,
		SameSite: http.SameSiteLaxMode, MaxAge: -1})
	w.Header().Set("Cache-Control", "no-store")
	q := r.URL.Query()
	u, cli, err := s.SSO.Finish(r.Context(), sso.Callback{Cookie: cookie, State: q.Get("state"), Code: q.Get("code"), Error: q.Get("error")})
	if err != nil {
		s.logger().Info("sso login refused", "ip", clientKey(r), LogErr, err)
		s.fail(w, r, err)
		return
	}
	if cli.Port != 0 {
		s.handToCLI(w, r, u, cli)
		return
	}
	if strings.Contains(r.Header.Get("Accept"), "text/html") { // a browser: on to the console
		if _, err := s.newSession(w, r, u, "sso"); err != nil {
			s.fail(w, r, err)
			return
		}
		http.Redirect(w, r, s.cookiePath(), http.StatusSeeOther)
		return
	}
	s.startSession(w, r, u, "sso")
}

// handToCLI ends a login that `upkeep login --sso` started: no session, but a personal token
// sealed to the command line's key, which the browser takes to its loopback port.
func (s *Server) handToCLI(w http.ResponseWriter, r *http.Request, u *auth.User, cli sso.CLI) {
	name := "upkeep login --sso " + u.Name
	tok, err := s.newPersonalToken(r.Context(), u.Name, u.Role, u.Groups, name[:min(len(name), 64)], DefaultPersonalTTL)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	plain, _ := json.Marshal(tok)
	sealed, err := cli.Seal(plain)
	if err != nil {
		s.fail(w, r, apperr.Wrap(apperr.Invalid, err, "the command line's key does not seal"))
		return
	}
	audit.SetActor(r.Context(), audit.ActorUser, u.Name, "")
	audit.SetTarget(r.Context(), "token "+tok.ID)
	s.logger().Info("login", "user", u.Name, "token", tok.ID, "via", "sso-cli")
	http.Redirect(w, r, cli.RedirectURL(sealed), http.StatusFound)
}

// oidcCookiePath is where the login attempt's cookie goes: the OIDC routes, under a tenant's
// prefix when the stack is a tenant's.
func (s *Server) oidcCookiePath() string {
	return strings.TrimSuffix(s.cookiePath(), "/") + oidcCookiePath
}

// startSession starts a login session for u (newSession) and answers with the session and its
// CSRF token.
func (s *Server) startSession(w http.ResponseWriter, r *http.Request, u *auth.User, how string) {
	ss, err := s.newSession(w, r, u, how)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sessionToWire(&principal{Name: u.Name, User: u.Name, Role: u.Role, Groups: u.Groups, Session: ss}))
}

// newSession starts a login session for u: the session row and the HttpOnly, SameSite=Strict
// cookie (Secure over TLS or behind a proxy).
func (s *Server) newSession(w http.ResponseWriter, r *http.Request, u *auth.User, how string) (*auth.Session, error) {
	now := s.now()
	ttl, _ := s.sessionLimits()
	secret, h := auth.NewSecret(sessionPrefix)
	csrf, _ := auth.NewSecret("")
	ss := &auth.Session{ID: auth.TokenID(h), Hash: h, User: u.Name, CSRF: csrf, CreatedAt: now, ExpiresAt: now.Add(ttl), LastSeen: now}
	if err := s.Admin.CreateSession(r.Context(), ss); err != nil {
		return nil, err
	}
	http.SetCookie(w, &http.Cookie{Name: wire.SessionCookie, Value: secret, Path: s.cookiePath(), HttpOnly: true, Secure: r.TLS != nil || s.SecureCookies,
		SameSite: http.SameSiteStrictMode, Expires: ss.ExpiresAt, MaxAge: int(ttl.Seconds())})
	audit.SetActor(r.Context(), audit.ActorUser, u.Name, ss.ID)
	s.logger().Info("login", "user", u.Name, "session", ss.ID, "via", how)
	return ss, nil
}
