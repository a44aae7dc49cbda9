package httpapi

import (
	"cmp"
	"crypto/subtle"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/console"
	"upkeep.dev/upkeep/internal/limit"
	"upkeep.dev/upkeep/wire"
)

// The operator console: server-rendered pages (internal/console renders them) at the stack's
// base path, "/" or a tenant's "/t/NAME/". Each page route declares a permission like an
// /api/v1 route (router.page) and is walked with every role by the access tests; the server
// enforces on every request what the navigation shows. An unauthenticated page request goes
// to the login page, a forbidden one gets a 403 page.

// consoleCSP is every console page's policy: nothing inline, nothing from elsewhere.
const consoleCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"

// Console limits.
const (
	maxPageForm = 64 << 10 // bytes of a console form
	// loginCookie holds the login form's double-submit token between the form and its post.
	loginCookie = "upkeep_login"
	// StaticMaxAge is how long browsers keep a static file named with its hash.
	StaticMaxAge = "public, max-age=31536000, immutable"
)

// navEntry is one section of the console's navigation, shown to the roles granted perm.
type navEntry struct {
	section, name, href string
	perm                auth.Permission
	anyOf               func() []auth.Permission // instead of perm: shown if the role has any of them
}

// consoleNav lists the console's sections in navigation order.
var consoleNav = []navEntry{
	{"overview", "Overview", "", auth.PermSelf, nil},
	{"devices", "Devices", "devices", auth.PermDevicesRead, nil},
	{"rollouts", "Rollouts", "rollouts", auth.PermRolloutsRead, nil},
	{"releases", "Releases", "releases", auth.PermReleasesRead, nil},
	{"vulnerabilities", "Vulnerabilities", "vulnerabilities", auth.PermVulnRead, nil},
	{"products", "Products", "products", auth.PermProductsRead, nil},
	{"admin", "Administration", "admin", "", adminPerms},
}

// page registers a console page: authentication by login session (or operator token) and the
// permission perm, like api, but refusals answered as pages. A state-changing page request
// carries the session's CSRF token in the csrf form field or the X-CSRF-Token header.
func (m *router) page(pattern string, perm auth.Permission, h http.HandlerFunc) {
	m.routes = append(m.routes, Route{Pattern: pattern, Permission: perm, Page: true})
	s := m.s
	var next http.Handler = h
	if perm != auth.PermNone {
		next = s.authorizedWith(perm, h, s.pageFail)
	}
	if s.Audit != nil && recorded(pattern) {
		next = s.record(pattern, next)
	}
	m.mux.Handle(pattern, s.pageRequest(next))
}

// pageRequest sets the console's security headers and, for a form post, bounds the body and
// takes the CSRF token from the form when the header does not carry it.
func (s *Server) pageRequest(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w.Header())
		w.Header().Set("Cache-Control", "no-store")
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, maxPageForm)
			if r.Header.Get(wire.HeaderCSRF) == "" {
				if v := r.PostFormValue("csrf"); v != "" {
					r.Header.Set(wire.HeaderCSRF, v)
				}
			}
		}
		h.ServeHTTP(w, r)
	})
}

func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", consoleCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
}

func (s *Server) consoleRoutes(mux *router) {
	ui, err := console.New()
	if err != nil {
		panic(err) // the embedded templates do not parse: a build defect
	}
	s.ui = ui
	mux.HandleFunc("GET /static/{file}", s.staticFile)
	mux.page("GET /{$}", auth.PermNone, s.home)
	mux.page("GET /overview/exposure", auth.PermVulnRead, s.overviewExposure)
	mux.page("GET /login", auth.PermNone, s.loginPage)
	mux.page("POST /login", auth.PermNone, s.loginForm)
	mux.page("POST /logout", auth.PermSelf, s.logoutForm)
	s.devicePages(mux)
	s.rolloutPages(mux)
	s.catalogPages(mux)
	s.adminPages(mux)
}

// staticFile serves the console's stylesheet and scripts. Pages name them with their hash
// (?v=HASH): such a URL is cached for good; any other is revalidated with the ETag.
func (s *Server) staticFile(w http.ResponseWriter, r *http.Request) {
	a, ok := s.ui.Asset(r.PathValue("file"))
	if !ok {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.Type)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("ETag", `"`+a.Hash+`"`)
	if r.URL.Query().Get("v") == a.Hash {
		h.Set("Cache-Control", StaticMaxAge)
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	http.ServeContent(w, r, "", time.Time{}, strings.NewReader(string(a.Body)))
}

// base is the path console links are relative to: the stack's cookie path, "/" or "/t/NAME/".
func (s *Server) base() string {
	b := s.cookiePath()
	if !strings.HasSuffix(b, "/") {
		b += "/"
	}
	return b
}

// layout is the frame of a page for the request's principal.
func (s *Server) layout(r *http.Request, title, section string) console.Layout {
	l := console.Layout{Base: s.base(), Title: title, Section: section, Now: s.now(), CSRFHeader: wire.HeaderCSRF}
	p := principalOf(r)
	if p == nil {
		return l
	}
	l.User, l.Role = p.Name, p.Role
	if p.Session != nil {
		l.CSRF = p.Session.CSRF
	}
	for _, e := range consoleNav {
		if e.anyOf != nil && slices.ContainsFunc(e.anyOf(), func(perm auth.Permission) bool { return auth.Allows(p.Role, perm) }) || auth.Allows(p.Role, e.perm) {
			l.Nav = append(l.Nav, console.NavLink{Section: e.section, Name: e.name, Href: e.href})
		}
	}
	return l
}

// can reports whether the request's principal is granted perm.
func can(r *http.Request, perm auth.Permission) bool {
	p := principalOf(r)
	return p != nil && auth.Allows(p.Role, perm)
}

// render writes a page with status.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, page string, l console.Layout, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	var buf strings.Builder
	if err := s.ui.Render(&buf, page, &console.View{Layout: l, Data: data}); err != nil {
		s.logger().Error("console page failed", LogPath, r.URL.Path, LogErr, err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(status)
	w.Write([]byte(buf.String())) //nolint:errcheck // the client went away
}

// fragment writes one template of a page alone, for htmx.
func (s *Server) fragment(w http.ResponseWriter, r *http.Request, page, name string, l console.Layout, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	var buf strings.Builder
	if err := s.ui.Fragment(&buf, page, name, &console.View{Layout: l, Data: data}); err != nil {
		s.logger().Error("console fragment failed", LogPath, r.URL.Path, LogErr, err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Write([]byte(buf.String())) //nolint:errcheck // the client went away
}

// pageFail answers a refused or failed page request: to the login page when there is no live
// session (htmx follows HX-Redirect), otherwise an error page with the message, which is safe
// to show (apperr.Message).
func (s *Server) pageFail(w http.ResponseWriter, r *http.Request, err error) {
	code := apperr.CodeOf(err)
	if code == apperr.Unauthorized {
		login := s.base() + "login"
		if r.Method == http.MethodGet && r.Header.Get("HX-Request") == "" {
			if next := strings.TrimPrefix(r.URL.RequestURI(), "/"); next != "" {
				login += "?next=" + url.QueryEscape(next)
			}
			http.Redirect(w, r, login, http.StatusSeeOther)
			return
		}
		w.Header().Set("HX-Redirect", login)
	}
	status := apperr.HTTPStatus(code)
	if code == apperr.Internal {
		s.logger().Error("request failed", LogPath, r.URL.Path, LogErr, err)
	}
	heading := http.StatusText(status)
	if code == apperr.Forbidden {
		heading = "Not allowed"
	}
	pr := console.Problem{Status: status, Heading: heading, Message: apperr.Message(err)}
	if code == apperr.Unauthorized {
		pr.Back = "login"
	}
	s.render(w, r, status, "problem", s.layout(r, heading, ""), pr)
}

// home is the overview when signed in, else the login page.
func (s *Server) home(w http.ResponseWriter, r *http.Request) {
	if _, err := s.authenticate(r); err != nil {
		s.showLogin(w, r, http.StatusOK, "", "", "")
		return
	}
	s.authorizedWith(auth.PermSelf, s.overview, s.pageFail).ServeHTTP(w, r)
}

// loginPage shows the login form, or goes home when the session is live.
func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if _, err := s.authenticate(r); err == nil {
		http.Redirect(w, r, s.base()+s.safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	s.showLogin(w, r, http.StatusOK, r.URL.Query().Get("next"), "", "")
}

// showLogin renders the login form with a new double-submit token in its cookie and field.
func (s *Server) showLogin(w http.ResponseWriter, r *http.Request, status int, next, user, msg string) {
	tok, _ := auth.NewSecret("")
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: tok, Path: s.base() + "login", HttpOnly: true, Secure: r.TLS != nil || s.SecureCookies,
		SameSite: http.SameSiteStrictMode, MaxAge: 3600})
	lg := console.Login{User: user, Error: msg, Token: tok, Next: s.safeNext(next), Public: "p/", Status: status}
	if s.SSO != nil {
		lg.SSO = "api/v1/oidc/login"
	}
	s.render(w, r, status, "login", s.layout(r, "Sign in", ""), lg)
}

// safeNext keeps a post-login destination only if it is a path below the base: never another
// site, never a scheme.
func (s *Server) safeNext(next string) string {
	if next == "" || len(next) > 1024 || strings.HasPrefix(next, "/") || strings.HasPrefix(next, `\`) || strings.ContainsAny(next, ":\r\n") {
		return ""
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || strings.HasPrefix(u.Path, "/") || strings.Contains(u.Path, "..") {
		return ""
	}
	return next
}

var errLoginCSRF = apperr.E(apperr.Forbidden, "the sign-in form was not sent from this site, or it expired: sign in again")

// sameOrigin reports whether a form post comes from this site, by Sec-Fetch-Site (browsers
// since 2020-2023) and Origin, when the browser sends them.
func sameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return false
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return false
		}
	}
	return true
}

// loginForm signs in from the login page: the same checks, throttling and session as the JSON
// login, behind a login-CSRF defence (same origin, and the double-submit token of the form's
// cookie and field), then on to where the operator was going.
func (s *Server) loginForm(w http.ResponseWriter, r *http.Request) {
	if ok, wait := s.loginIP.allow(clientKey(r), cmp.Or(s.LoginsPerMinuteIP, DefaultLoginsPerMinuteIP), s.now()); !ok {
		limit.RetryAfter(w, wait)
		s.showLogin(w, r, http.StatusTooManyRequests, r.PostFormValue("next"), "", "Too many sign-in attempts from this address: try again later.")
		return
	}
	next, user := r.PostFormValue("next"), r.PostFormValue("user")
	c, err := r.Cookie(loginCookie)
	field := r.PostFormValue("csrf")
	if !sameOrigin(r) || err != nil || c.Value == "" || subtle.ConstantTimeCompare([]byte(c.Value), []byte(field)) != 1 {
		s.showLogin(w, r, http.StatusForbidden, next, user, apperr.Message(errLoginCSRF))
		return
	}
	u, err := s.verifyLogin(w, r, user, r.PostFormValue("password"))
	if err != nil {
		status := apperr.HTTPStatus(apperr.CodeOf(err))
		if apperr.CodeOf(err) == apperr.Internal {
			s.logger().Error("login failed", LogPath, r.URL.Path, LogErr, err)
		}
		s.showLogin(w, r, status, next, user, apperr.Message(err))
		return
	}
	if _, err := s.newSession(w, r, u, "console"); err != nil {
		s.pageFail(w, r, err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: "", Path: s.base() + "login", HttpOnly: true, MaxAge: -1})
	http.Redirect(w, r, s.base()+s.safeNext(next), http.StatusSeeOther)
}

// logoutForm ends the session and goes to the login page.
func (s *Server) logoutForm(w http.ResponseWriter, r *http.Request) {
	p := principalOf(r)
	if p.Session != nil {
		if err := s.endSession(w, r, p.Session); err != nil {
			s.pageFail(w, r, err)
			return
		}
	}
	http.Redirect(w, r, s.base()+"login", http.StatusSeeOther)
}

// formError turns a refused action into a page that says why.
func (s *Server) formError(w http.ResponseWriter, r *http.Request, err error, back string) {
	var ae *apperr.Error
	if !errors.As(err, &ae) || ae.Code == apperr.Internal {
		s.pageFail(w, r, err)
		return
	}
	status := apperr.HTTPStatus(ae.Code)
	s.render(w, r, status, "problem", s.layout(r, "Not done", ""), console.Problem{Status: status, Heading: "Not done", Message: apperr.Message(err), Back: back})
}
