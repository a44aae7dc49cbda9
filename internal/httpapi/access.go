package httpapi

import (
	"cmp"
	"context"
	"crypto/subtle"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/audit"
	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/limit"
	"upkeep.dev/upkeep/wire"
)

// Login sessions and login throttling: defaults.
const (
	DefaultSessionTTL        = 12 * time.Hour
	DefaultSessionIdle       = 30 * time.Minute
	DefaultLoginsPerMinute   = 5  // per user name
	DefaultLoginsPerMinuteIP = 20 // per source address (IPv6: /64)
	maxLoginsInflight        = 8  // argon2id hashes at once (19 MiB each)
	sessionTouchEvery        = time.Minute
	sessionPrefix            = "upk_sess_"
)

// Route is a registered route: its ServeMux pattern and, for /api/v1 routes, the permission it
// requires (empty for the device, repository and public routes, which authenticate otherwise).
type Route struct {
	Pattern    string
	Permission auth.Permission
	Page       bool // a console page (router.page): refusals are pages, not JSON
}

// Registered lists every route the handler serves, in registration order; Handler must have
// been called. Tests walk it with every role.
func (s *Server) Registered() []Route { return slices.Clone(s.routes) }

// router registers routes on a ServeMux and keeps the list with their permissions.
type router struct {
	mux    *http.ServeMux
	s      *Server
	routes []Route
}

// Handle registers a route that does its own authentication (device, repository, public).
func (m *router) Handle(pattern string, h http.Handler) {
	m.routes = append(m.routes, Route{Pattern: pattern})
	m.mux.Handle(pattern, h)
}

// HandleFunc is Handle for a function.
func (m *router) HandleFunc(pattern string, h http.HandlerFunc) { m.Handle(pattern, h) }

// api registers a management route behind authentication (operator token or login session)
// and the permission perm.
func (m *router) api(pattern string, perm auth.Permission, h http.HandlerFunc) {
	m.routes = append(m.routes, Route{Pattern: pattern, Permission: perm})
	if m.s.noAuth { // the benchmark's baseline only
		m.mux.Handle(pattern, h)
		return
	}
	m.mux.Handle(pattern, m.s.authorize(pattern, perm, h))
}

// adminRoutePermissions declares the permission of each route of Server.AdminRoutes (the DDI
// management routes). Handler panics on a route missing here.
var adminRoutePermissions = map[string]auth.Permission{
	"POST /api/v1/ddi/devices":            auth.PermEnrollWrite,
	"GET /api/v1/ddi/devices/{id}/token":  auth.PermEnrollWrite,
	"POST /api/v1/ddi/devices/{id}/token": auth.PermEnrollWrite,
}

// principal is the authenticated operator of a request: a token or a login session.
type principal struct {
	Name    string // the actor recorded in logs and campaign timelines
	User    string // the user (of the session, or who created the token); may be empty for tokens
	Role    string
	Groups  []string
	Token   *auth.OperatorToken
	Session *auth.Session
}

func principalOf(r *http.Request) *principal {
	p, _ := r.Context().Value(keyPrincipal).(*principal)
	return p
}

// authorize authenticates the request and checks that its role grants perm; PermNone routes
// are served as they are. A login session's state-changing requests must carry its CSRF token.
// Refusals say what failed, never whether some other user or token exists. Calls of the routes
// the audit trail records (every state-changing one, login included) are recorded, refusals
// too, with the principal once it is known (Server.record).
func (s *Server) authorize(pattern string, perm auth.Permission, h http.HandlerFunc) http.Handler {
	var next http.Handler = h
	if perm != auth.PermNone {
		next = s.authorized(perm, h)
	}
	if s.Audit != nil && recorded(pattern) {
		next = s.record(pattern, next)
	}
	return next
}

func (s *Server) authorized(perm auth.Permission, h http.HandlerFunc) http.Handler {
	return s.authorizedWith(perm, h, s.fail)
}

// authorizedWith is authorized answering refusals with fail: the API's JSON errors, or the
// console's pages. A refusal for want of perm reaches fail with the principal in its context.
func (s *Server) authorizedWith(perm auth.Permission, h http.HandlerFunc, fail func(http.ResponseWriter, *http.Request, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.authenticate(r)
		if err != nil {
			fail(w, r, err)
			return
		}
		if p.Session != nil {
			audit.SetActor(r.Context(), audit.ActorUser, p.Name, p.Session.ID)
		} else {
			audit.SetActor(r.Context(), audit.ActorToken, p.Name, p.Token.ID)
			if p.User != "" {
				audit.AddDetail(r.Context(), "owner", p.User) // the person the token belongs to
			}
		}
		ctx := context.WithValue(context.WithValue(r.Context(), keyActor, p.Name), keyPrincipal, p)
		if !auth.Allows(p.Role, perm) {
			fail(w, r.WithContext(ctx), apperr.E(apperr.Forbidden, "forbidden: role %s does not grant %s", p.Role, perm))
			return
		}
		if p.Token != nil {
			s.markUsed(p.Token.ID)
		}
		h(w, r.WithContext(ctx))
	})
}

func (s *Server) authenticate(r *http.Request) (*principal, error) {
	if secret := bearer(r); secret != "" {
		tok, err := s.operator(r.Context(), secret)
		if err != nil {
			return nil, err
		}
		return &principal{Name: tok.Name, User: tok.User, Role: tok.Role, Groups: tok.Groups, Token: tok}, nil
	}
	c, err := r.Cookie(wire.SessionCookie)
	if r.Header.Get("Authorization") != "" || err != nil || c.Value == "" {
		return nil, apperr.E(apperr.Unauthorized, "operator token required (Authorization: Bearer ...), or a login session")
	}
	ss, u, err := s.session(r.Context(), c.Value)
	if err != nil {
		return nil, err
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		if subtle.ConstantTimeCompare([]byte(r.Header.Get(wire.HeaderCSRF)), []byte(ss.CSRF)) != 1 {
			return nil, apperr.E(apperr.Forbidden, "missing or wrong CSRF token: send the session's token (GET /api/v1/session) in %s", wire.HeaderCSRF)
		}
	}
	return &principal{Name: u.Name, User: u.Name, Role: u.Role, Groups: u.Groups, Session: ss}, nil
}

// cachedSession is a login session that verified, with its user, read at generation gen.
type cachedSession struct {
	ss   *auth.Session
	user *auth.User
	gen  int64
	read time.Time
}

func (s *Server) sessionLimits() (ttl, idle time.Duration) {
	ttl, idle = s.SessionTTL, s.SessionIdle
	if ttl <= 0 {
		ttl = DefaultSessionTTL
	}
	if idle <= 0 {
		idle = DefaultSessionIdle
	}
	return ttl, idle
}

var errSessionEnded = apperr.E(apperr.Unauthorized, "session expired or ended: log in again")

// session returns the live session of a cookie secret and its user. Like operator tokens,
// sessions are cached while the revocation generation is current (logout, disabling a user
// and changing their role move it). The idle time counts from the last use, written at most
// once a minute.
func (s *Server) session(ctx context.Context, secret string) (*auth.Session, *auth.User, error) {
	hash := auth.HashSecret(secret)
	now := s.now()
	_, idle := s.sessionLimits()
	gen := int64(0)
	if s.Generation != nil {
		gen = s.Generation()
	}
	live := func(ss *auth.Session, u *auth.User) bool {
		return ss.RevokedAt.IsZero() && now.Before(ss.ExpiresAt) && now.Sub(ss.LastSeen) < idle && u.DisabledAt.IsZero()
	}
	var c *cachedSession
	if v, ok := s.sessions.Load(string(hash)); ok {
		c = v.(*cachedSession)
		fresh := c.gen == gen
		if s.Generation == nil {
			fresh = now.Sub(c.read) < operatorCacheTTL
		}
		if !fresh || !live(c.ss, c.user) {
			s.sessions.Delete(string(hash))
			c = nil
		}
	}
	if c == nil {
		ss, err := s.Admin.FindSession(ctx, hash)
		if apperr.Is(err, apperr.NotFound) {
			return nil, nil, errSessionEnded
		}
		if err != nil {
			return nil, nil, err
		}
		u, err := s.Admin.FindUser(ctx, ss.User)
		if apperr.Is(err, apperr.NotFound) {
			return nil, nil, errSessionEnded
		}
		if err != nil {
			return nil, nil, err
		}
		if !live(ss, u) {
			return nil, nil, errSessionEnded
		}
		c = &cachedSession{ss: ss, user: u, gen: gen, read: now}
	}
	if now.Sub(c.ss.LastSeen) >= sessionTouchEvery {
		if err := s.Admin.TouchSession(ctx, c.ss.ID, now); err != nil {
			return nil, nil, err
		}
		ss := *c.ss
		ss.LastSeen = now
		c = &cachedSession{ss: &ss, user: c.user, gen: c.gen, read: c.read}
	}
	s.sessions.Store(string(hash), c)
	return c.ss, c.user, nil
}

// forgetCredentials drops every cached token and session (after a change on this replica;
// other replicas drop theirs when they read the new generation).
func (s *Server) forgetCredentials() {
	s.admins.Clear()
	s.sessions.Clear()
}

func (s *Server) sessionRoutes(mux *router) {
	mux.api("POST /api/v1/login", auth.PermNone, s.login)
	s.oidcRoutes(mux)
	s.personalTokenRoutes(mux)
	mux.api("POST /api/v1/logout", auth.PermSelf, s.logout)
	mux.api("GET /api/v1/session", auth.PermSelf, s.whoami)
}

var errBadLogin = apperr.E(apperr.Unauthorized, "wrong user name or password")

// login checks a user's password and starts a session: an HttpOnly, SameSite=Strict cookie
// (Secure over TLS) and, in the answer, the CSRF token. Attempts are throttled per user name
// and per source address before the password is hashed; an unknown, disabled or password-less
// user costs the same hash and gets the same answer as a wrong password.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if ok, wait := s.loginIP.allow(clientKey(r), cmp.Or(s.LoginsPerMinuteIP, DefaultLoginsPerMinuteIP), s.now()); !ok {
		s.busyFor(w, r, wait, "too many login attempts from this address: try again later")
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		// A cross-site form cannot send JSON without a preflight: no login CSRF.
		s.fail(w, r, apperr.E(apperr.Invalid, "login wants Content-Type: application/json"))
		return
	}
	var req wire.LoginRequest
	if err := decode(w, r, 4<<10, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	u, err := s.verifyLogin(w, r, req.User, req.Password)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ss, err := s.newSession(w, r, u, "password")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sessionToWire(&principal{Name: u.Name, User: u.Name, Role: u.Role, Groups: u.Groups, Session: ss}))
}

// verifyLogin checks a user's password for a login (the JSON one or the console's form, whose
// callers have already throttled the source address): attempts are throttled per user name
// before the password is hashed, and an unknown, disabled or password-less user costs the same
// hash and gets the same error as a wrong password. A throttled attempt gets apperr.Busy with
// Retry-After set on w.
func (s *Server) verifyLogin(w http.ResponseWriter, r *http.Request, user, password string) (*auth.User, error) {
	audit.SetActor(r.Context(), audit.ActorUser, user, "")
	if ok, wait := s.loginUser.allow(strings.ToLower(user), cmp.Or(s.LoginsPerMinute, DefaultLoginsPerMinute), s.now()); !ok {
		limit.RetryAfter(w, wait)
		return nil, apperr.E(apperr.Busy, "too many login attempts for this user name: try again later")
	}
	if s.loginsInflight.Add(1) > maxLoginsInflight {
		s.loginsInflight.Add(-1)
		return nil, apperr.E(apperr.Busy, "too many logins at once: try again later")
	}
	u, err := s.Admin.FindUser(r.Context(), user)
	if err != nil && !apperr.Is(err, apperr.NotFound) {
		s.loginsInflight.Add(-1)
		return nil, err
	}
	hash := ""
	if u != nil && u.DisabledAt.IsZero() {
		hash = u.PasswordHash
	}
	err = auth.VerifyPassword(hash, password)
	s.loginsInflight.Add(-1)
	if err != nil {
		s.logger().Info("login refused", "user", user, "ip", clientKey(r))
		return nil, errBadLogin
	}
	return u, nil
}

func sessionToWire(p *principal) wire.Session {
	out := wire.Session{User: p.User, Role: p.Role, Groups: p.Groups, Kind: "token"}
	for _, perm := range auth.RolePermissions[p.Role] {
		out.Permissions = append(out.Permissions, string(perm))
	}
	if p.Session != nil {
		out.Kind, out.CSRFToken, out.ExpiresAt = "session", p.Session.CSRF, p.Session.ExpiresAt
	}
	if p.Token != nil {
		out.TokenID, out.ExpiresAt = p.Token.ID, p.Token.ExpiresAt
	}
	return out
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, sessionToWire(principalOf(r)))
}

// logout ends the caller's login session everywhere (the generation moves) and clears the cookie.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	p := principalOf(r)
	if p.Session == nil {
		s.fail(w, r, apperr.E(apperr.Invalid, "no login session to end: operator tokens are revoked with tokens revoke"))
		return
	}
	if err := s.endSession(w, r, p.Session); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// endSession revokes a login session everywhere (the generation moves) and clears its cookie.
func (s *Server) endSession(w http.ResponseWriter, r *http.Request, ss *auth.Session) error {
	if err := s.Admin.RevokeSession(r.Context(), ss.ID, s.now()); err != nil {
		return err
	}
	s.forgetCredentials()
	http.SetCookie(w, &http.Cookie{Name: wire.SessionCookie, Value: "", Path: s.cookiePath(), HttpOnly: true, Secure: r.TLS != nil || s.SecureCookies, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	return nil
}

func (s *Server) userRoutes(mux *router) {
	s.sessionRoutes(mux)
	mux.api("GET /api/v1/users", auth.PermUsersRead, s.listUsers)
	mux.api("POST /api/v1/users", auth.PermUsersWrite, s.createUser)
	mux.api("POST /api/v1/users/{name}/disable", auth.PermUsersWrite, s.disableUser)
	mux.api("PUT /api/v1/users/{name}/role", auth.PermUsersWrite, s.setUserRole)
	mux.api("PUT /api/v1/users/{name}/password", auth.PermUsersWrite, s.setUserPassword)
}

func userToWire(u *auth.User) wire.User {
	return wire.User{Name: u.Name, Role: u.Role, Groups: u.Groups, HasPassword: u.PasswordHash != "", CreatedAt: u.CreatedAt, DisabledAt: u.DisabledAt, Issuer: u.Issuer}
}

func checkRole(role string, groups []string) error {
	if !auth.ValidRole(role) {
		return apperr.E(apperr.Invalid, "role %.32q: want one of %v", role, auth.Roles)
	}
	if err := auth.CheckScope(role, groups); err != nil {
		return apperr.Wrap(apperr.Invalid, err, err.Error())
	}
	return nil
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request) {
	us, err := s.Admin.FindUsers(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]wire.User, len(us))
	for i, u := range us {
		out[i] = userToWire(u)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) createUser(w http.ResponseWriter, r *http.Request) {
	var req wire.UserRequest
	if err := decode(w, r, 16<<10, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if !auth.ValidUserName(req.Name) {
		s.fail(w, r, apperr.E(apperr.Invalid, "user name %.64q: 1-64 letters, digits, '.', '_', '@', '-'", req.Name))
		return
	}
	if err := checkRole(req.Role, req.Groups); err != nil {
		s.fail(w, r, err)
		return
	}
	u := &auth.User{Name: req.Name, Role: req.Role, Groups: req.Groups, CreatedAt: s.now()}
	if req.Password != "" {
		if err := auth.CheckPassword(req.Password); err != nil {
			s.fail(w, r, apperr.Wrap(apperr.Invalid, err, err.Error()))
			return
		}
		u.PasswordHash = auth.HashPassword(req.Password)
	}
	if err := s.Admin.CreateUser(r.Context(), u); err != nil {
		s.fail(w, r, err)
		return
	}
	audit.SetTarget(r.Context(), u.Name)
	audit.AddDetail(r.Context(), "role", u.Role)
	s.logger().Info("user added", "user", u.Name, "role", u.Role, "actor", actorOf(r))
	writeJSON(w, http.StatusCreated, userToWire(u))
}

func (s *Server) changeUser(w http.ResponseWriter, r *http.Request, what string, up auth.UserUpdate) {
	name := r.PathValue("name")
	if err := s.Admin.UpdateUser(r.Context(), name, up, s.now()); err != nil {
		s.fail(w, r, err)
		return
	}
	s.forgetCredentials()
	s.logger().Info("user "+what, "user", name, "actor", actorOf(r))
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) disableUser(w http.ResponseWriter, r *http.Request) {
	s.changeUser(w, r, "disabled", auth.UserUpdate{Disable: true})
}

func (s *Server) setUserRole(w http.ResponseWriter, r *http.Request) {
	var req wire.UserRoleRequest
	if err := decode(w, r, 16<<10, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := checkRole(req.Role, req.Groups); err != nil {
		s.fail(w, r, err)
		return
	}
	groups := req.Groups
	s.changeUser(w, r, "role changed", auth.UserUpdate{Role: &req.Role, Groups: &groups})
}

func (s *Server) setUserPassword(w http.ResponseWriter, r *http.Request) {
	var req wire.PasswordRequest
	if err := decode(w, r, 4<<10, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := auth.CheckPassword(req.Password); err != nil {
		s.fail(w, r, apperr.Wrap(apperr.Invalid, err, err.Error()))
		return
	}
	h := auth.HashPassword(req.Password)
	s.changeUser(w, r, "password set", auth.UserUpdate{PasswordHash: &h})
}

// errOutsideScope refuses a scoped deployer's request without naming the devices outside.
var errOutsideScope = apperr.E(apperr.Forbidden, "forbidden: the request may reach devices outside your group scope")

// scopeMembers returns the devices of the scope's groups (unknown groups have none).
func (s *Server) scopeMembers(ctx context.Context, groups []string) (map[string]bool, error) {
	in := map[string]bool{}
	if s.Rollouts == nil {
		return in, nil
	}
	for _, name := range groups {
		g, err := s.Rollouts.Group(ctx, name)
		if apperr.Is(err, apperr.NotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		devs, err := s.Rollouts.GroupMembers(ctx, g)
		if err != nil {
			return nil, err
		}
		for _, d := range devs {
			in[d.ID] = true
		}
	}
	return in, nil
}

// checkDevicesScope: every device must be a member of one of the scope's groups.
func (s *Server) checkDevicesScope(ctx context.Context, groups, ids []string) error {
	if len(ids) == 0 {
		return errOutsideScope
	}
	in, err := s.scopeMembers(ctx, groups)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if !in[id] {
			return errOutsideScope
		}
	}
	return nil
}

// checkDeployScope: a scoped deployment names its devices (never all), each in the scope.
func (s *Server) checkDeployScope(r *http.Request, req wire.DeployRequest) error {
	p := principalOf(r)
	if p == nil || len(p.Groups) == 0 {
		return nil
	}
	if req.All {
		return errOutsideScope
	}
	return s.checkDevicesScope(r.Context(), p.Groups, req.DeviceIDs)
}

// checkCampaignScope: a scoped campaign targets one of the scope's groups by name, or devices
// that are each in the scope; never a filter or an advisory's exposed devices.
func (s *Server) checkCampaignScope(r *http.Request, spec wire.CampaignSpec) error {
	p := principalOf(r)
	if p == nil || len(p.Groups) == 0 {
		return nil
	}
	if spec.Fixes != "" || (spec.Target == "" && len(spec.Devices) == 0) {
		return errOutsideScope
	}
	if spec.Target != "" && !slices.Contains(p.Groups, spec.Target) {
		return errOutsideScope
	}
	if len(spec.Devices) > 0 {
		return s.checkDevicesScope(r.Context(), p.Groups, spec.Devices)
	}
	return nil
}

// checkActionScope: a scoped deployer drives only campaigns that target one of its groups.
func (s *Server) checkActionScope(r *http.Request, id string) error {
	p := principalOf(r)
	if p == nil || len(p.Groups) == 0 {
		return nil
	}
	st, err := s.Rollouts.Status(r.Context(), id)
	if err != nil {
		return err
	}
	if !slices.Contains(p.Groups, st.Campaign.Target) {
		return errOutsideScope
	}
	return nil
}

// cookiePath is the session cookie's path: CookiePath, or "/".
func (s *Server) cookiePath() string { return cmp.Or(s.CookiePath, "/") }
