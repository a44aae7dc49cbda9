package httpapi

import (
	"cmp"
	"encoding/hex"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/audit"
	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/console"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/webhook"
	"upkeep.dev/upkeep/wire"
)

// The console's administration section: users, operator tokens, enrolment tokens, webhooks
// and the audit trail. Each tab and each action needs the permission of the /api/v1 route it
// mirrors; the audit trail records each action under the same action name as the API's.

// adminTab is one tab of the administration section.
type adminTab struct {
	tab, name string
	perm      auth.Permission
}

var adminTabs = []adminTab{
	{"users", "Users", auth.PermUsersRead},
	{"tokens", "API tokens", auth.PermTokensRead},
	{"enroll-tokens", "Enrolment tokens", auth.PermEnrollRead},
	{"webhooks", "Webhooks", auth.PermWebhooksRead},
	{"audit", "Audit trail", auth.PermAuditRead},
}

// adminPerms are the permissions of which any opens the administration section.
func adminPerms() []auth.Permission {
	out := make([]auth.Permission, len(adminTabs))
	for i, t := range adminTabs {
		out[i] = t.perm
	}
	return out
}

func (s *Server) adminPages(mux *router) {
	mux.page("GET /admin", auth.PermSelf, s.adminHome)
	mux.page("GET /admin/users", auth.PermUsersRead, s.adminUsers)
	mux.page("POST /admin/users", auth.PermUsersWrite, s.adminAddUser)
	mux.page("POST /admin/users/{name}/role", auth.PermUsersWrite, s.adminUserRole)
	mux.page("GET /admin/users/{name}/disable", auth.PermUsersWrite, s.confirmPage("Disable user", "admin/users"))
	mux.page("POST /admin/users/{name}/disable", auth.PermUsersWrite, s.adminDisableUser)
	mux.page("GET /admin/tokens", auth.PermTokensRead, s.adminTokens)
	mux.page("POST /admin/tokens", auth.PermTokensWrite, s.adminAddToken)
	mux.page("GET /admin/tokens/{id}/revoke", auth.PermTokensWrite, s.confirmPage("Revoke API token", "admin/tokens"))
	mux.page("POST /admin/tokens/{id}/revoke", auth.PermTokensWrite, s.adminRevokeToken)
	mux.page("GET /admin/enroll-tokens", auth.PermEnrollRead, s.adminEnroll)
	mux.page("POST /admin/enroll-tokens", auth.PermEnrollWrite, s.adminAddEnroll)
	mux.page("GET /admin/enroll-tokens/{id}/revoke", auth.PermEnrollWrite, s.confirmPage("Revoke enrolment token", "admin/enroll-tokens"))
	mux.page("POST /admin/enroll-tokens/{id}/revoke", auth.PermEnrollWrite, s.adminRevokeEnroll)
	mux.page("GET /admin/webhooks", auth.PermWebhooksRead, s.adminWebhooks)
	mux.page("POST /admin/webhooks", auth.PermWebhooksWrite, s.adminAddWebhook)
	mux.page("GET /admin/webhooks/{id}/delete", auth.PermWebhooksWrite, s.confirmPage("Delete webhook", "admin/webhooks"))
	mux.page("POST /admin/webhooks/{id}/delete", auth.PermWebhooksWrite, s.adminDeleteWebhook)
	mux.page("POST /admin/webhooks/{id}/test", auth.PermWebhooksWrite, s.adminTestWebhook)
	mux.page("GET /admin/audit", auth.PermAuditRead, s.adminAudit)
}

// adminHome lists the tabs the role may see (none for a role without any, which the
// navigation does not lead here).
func (s *Server) adminHome(w http.ResponseWriter, r *http.Request) {
	s.renderAdmin(w, r, http.StatusOK, "home", "Administration", nil, "")
}

// renderAdmin renders a tab of the administration section, with msg (an action's result) as
// the page's notice.
func (s *Server) renderAdmin(w http.ResponseWriter, r *http.Request, status int, tab, title string, data any, msg string) {
	v := console.AdminPage{Tab: tab, Data: data}
	for _, t := range adminTabs {
		if can(r, t.perm) {
			v.Tabs = append(v.Tabs, console.NavLink{Section: t.tab, Name: t.name, Href: "admin/" + t.tab})
		}
	}
	l := s.layout(r, title, "admin")
	l.Notice = msg
	s.render(w, r, status, "admin_"+strings.ReplaceAll(tab, "-", "_"), l, v)
}

// confirmPage asks before an action of the path's {name} or {id}: the form posts to the same
// path, where the action is done.
func (s *Server) confirmPage(question, back string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		what := cmp.Or(r.PathValue("name"), r.PathValue("id"))
		// Relative to the stack's base: under a tenant the path arrives without /t/NAME.
		action := strings.TrimPrefix(r.URL.Path, "/")
		s.render(w, r, http.StatusOK, "confirm", s.layout(r, question, "admin"), console.Confirm{
			Question: question + " " + what + "?", Action: action, Button: question, Cancel: back, Danger: true})
	}
}

// done goes back to a tab after an action, with a notice.
func (s *Server) done(w http.ResponseWriter, r *http.Request, tab, notice string) {
	http.Redirect(w, r, s.base()+"admin/"+tab+"?done="+url.QueryEscape(notice), http.StatusSeeOther)
}

// notice is the message a redirect after an action carries, shown as text (escaped).
func notice(r *http.Request) string {
	n := r.URL.Query().Get("done")
	if len(n) > 200 {
		n = n[:200]
	}
	return n
}

func (s *Server) adminUsers(w http.ResponseWriter, r *http.Request) {
	s.showUsers(w, r, http.StatusOK, notice(r))
}

func (s *Server) showUsers(w http.ResponseWriter, r *http.Request, status int, msg string) {
	us, err := s.Admin.FindUsers(r.Context())
	if err != nil {
		s.pageFail(w, r, err)
		return
	}
	v := console.UserAdmin{Roles: auth.Roles, CanWrite: can(r, auth.PermUsersWrite)}
	for _, u := range us {
		v.Users = append(v.Users, console.UserRow{Name: u.Name, Role: u.Role, Groups: auth.JoinGroups(u.Groups), Issuer: u.Issuer,
			HasPassword: u.PasswordHash != "", Disabled: !u.DisabledAt.IsZero(), CreatedAt: u.CreatedAt})
	}
	s.renderAdmin(w, r, status, "users", "Users", v, msg)
}

// formGroups reads a comma-separated group scope.
func formGroups(v string) []string {
	var out []string
	for _, g := range strings.Split(v, ",") {
		if g = strings.TrimSpace(g); g != "" {
			out = append(out, g)
		}
	}
	return out
}

// adminAddUser adds a user with the checks of POST /api/v1/users.
func (s *Server) adminAddUser(w http.ResponseWriter, r *http.Request) {
	name, role, password := r.PostFormValue("name"), r.PostFormValue("role"), r.PostFormValue("password")
	groups := formGroups(r.PostFormValue("groups"))
	fail := func(err error) { s.formError(w, r, err, "admin/users") }
	if !auth.ValidUserName(name) {
		fail(apperr.E(apperr.Invalid, "user name %.64q: 1-64 letters, digits, '.', '_', '@', '-'", name))
		return
	}
	if err := checkRole(role, groups); err != nil {
		fail(err)
		return
	}
	u := &auth.User{Name: name, Role: role, Groups: groups, CreatedAt: s.now()}
	if password != "" {
		if err := auth.CheckPassword(password); err != nil {
			fail(apperr.Wrap(apperr.Invalid, err, err.Error()))
			return
		}
		u.PasswordHash = auth.HashPassword(password)
	}
	if err := s.Admin.CreateUser(r.Context(), u); err != nil {
		fail(err)
		return
	}
	audit.SetTarget(r.Context(), u.Name)
	audit.AddDetail(r.Context(), "role", u.Role)
	s.logger().Info("user added", "user", u.Name, "role", u.Role, "actor", actorOf(r))
	s.done(w, r, "users", "User "+u.Name+" added.")
}

func (s *Server) adminUserRole(w http.ResponseWriter, r *http.Request) {
	name, role := r.PathValue("name"), r.PostFormValue("role")
	groups := formGroups(r.PostFormValue("groups"))
	if err := checkRole(role, groups); err != nil {
		s.formError(w, r, err, "admin/users")
		return
	}
	if err := s.Admin.UpdateUser(r.Context(), name, auth.UserUpdate{Role: &role, Groups: &groups}, s.now()); err != nil {
		s.formError(w, r, err, "admin/users")
		return
	}
	s.forgetCredentials()
	audit.AddDetail(r.Context(), "role", role)
	s.logger().Info("user role changed", "user", name, "actor", actorOf(r))
	s.done(w, r, "users", "User "+name+" is now "+role+".")
}

func (s *Server) adminDisableUser(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := s.Admin.UpdateUser(r.Context(), name, auth.UserUpdate{Disable: true}, s.now()); err != nil {
		s.formError(w, r, err, "admin/users")
		return
	}
	s.forgetCredentials()
	s.logger().Info("user disabled", "user", name, "actor", actorOf(r))
	s.done(w, r, "users", "User "+name+" disabled.")
}

func (s *Server) adminTokens(w http.ResponseWriter, r *http.Request) {
	s.showTokens(w, r, nil)
}

func (s *Server) showTokens(w http.ResponseWriter, r *http.Request, created *console.Secret) {
	ts, err := s.Admin.FindOperatorTokens(r.Context())
	if err != nil {
		s.pageFail(w, r, err)
		return
	}
	now := s.now()
	v := console.TokenAdmin{Roles: auth.Roles, CanWrite: can(r, auth.PermTokensWrite), Created: created}
	for _, t := range ts {
		v.Tokens = append(v.Tokens, console.TokenRow{ID: t.ID, Name: t.Name, Role: t.Role, User: t.User, CreatedAt: t.CreatedAt,
			ExpiresAt: t.ExpiresAt, LastUsed: t.LastUsed, Revoked: !t.RevokedAt.IsZero(), Expired: !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt)})
	}
	s.renderAdmin(w, r, http.StatusOK, "tokens", "API tokens", v, notice(r))
}

// adminAddToken creates an operator token with the checks of POST /api/v1/tokens and shows
// its secret once, on the answer to the post (never in a URL).
func (s *Server) adminAddToken(w http.ResponseWriter, r *http.Request) {
	name, role := strings.TrimSpace(r.PostFormValue("name")), r.PostFormValue("role")
	groups := formGroups(r.PostFormValue("groups"))
	days, err := strconv.Atoi(cmp.Or(r.PostFormValue("days"), "0"))
	if err != nil || days < 0 || days > int(MaxOperatorTTL/(24*time.Hour)) {
		s.formError(w, r, apperr.E(apperr.Invalid, "the token must expire within %d days", int(MaxOperatorTTL.Hours()/24)), "admin/tokens")
		return
	}
	t, secret, err := s.newOperatorToken(r, wire.OperatorTokenRequest{Name: name, Role: role, Groups: groups, TTL: time.Duration(days) * 24 * time.Hour})
	if err != nil {
		s.formError(w, r, err, "admin/tokens")
		return
	}
	s.showTokens(w, r, &console.Secret{ID: t.ID, Value: secret, Note: "Copy it now: it is shown once. Use it as Authorization: Bearer."})
}

func (s *Server) adminRevokeToken(w http.ResponseWriter, r *http.Request) {
	if err := s.revokeOperatorTokenOf(r); err != nil {
		s.formError(w, r, err, "admin/tokens")
		return
	}
	s.done(w, r, "tokens", "Token "+r.PathValue("id")+" revoked.")
}

func (s *Server) adminEnroll(w http.ResponseWriter, r *http.Request) {
	s.showEnroll(w, r, nil)
}

func (s *Server) showEnroll(w http.ResponseWriter, r *http.Request, created *console.Secret) {
	ts, err := s.Devices.FindEnrollTokens(r.Context())
	if err != nil {
		s.pageFail(w, r, err)
		return
	}
	now := s.now()
	v := console.EnrollAdmin{CanWrite: can(r, auth.PermEnrollWrite), Created: created}
	for _, t := range ts {
		v.Tokens = append(v.Tokens, console.TokenRow{ID: t.ID, Name: t.Name, Product: t.Product, Uses: t.UsesLeft, CreatedAt: t.CreatedAt,
			ExpiresAt: t.ExpiresAt, Revoked: !t.RevokedAt.IsZero(), Expired: !now.Before(t.ExpiresAt)})
	}
	s.renderAdmin(w, r, http.StatusOK, "enroll-tokens", "Enrolment tokens", v, notice(r))
}

// adminAddEnroll creates an enrolment token with the bounds of POST /api/v1/enroll-tokens.
func (s *Server) adminAddEnroll(w http.ResponseWriter, r *http.Request) {
	name := cmp.Or(strings.TrimSpace(r.PostFormValue("name")), "enrol")
	uses, _ := strconv.Atoi(cmp.Or(r.PostFormValue("uses"), "0"))
	hours, _ := strconv.Atoi(cmp.Or(r.PostFormValue("hours"), "0"))
	ttl := time.Duration(hours) * time.Hour
	switch {
	case uses < 0 || uses > fleet.MaxEnrollUses:
		s.formError(w, r, apperr.E(apperr.Invalid, "uses must be between 0 (the default, %d) and %d", fleet.DefaultEnrollUses, fleet.MaxEnrollUses), "admin/enroll-tokens")
		return
	case ttl < 0 || ttl > fleet.MaxEnrollTTL:
		s.formError(w, r, apperr.E(apperr.Invalid, "the token must expire within %s", fleet.MaxEnrollTTL), "admin/enroll-tokens")
		return
	}
	uses, ttl = cmp.Or(uses, fleet.DefaultEnrollUses), cmp.Or(ttl, fleet.DefaultEnrollTTL)
	secret, hash := auth.NewSecret(auth.EnrollPrefix)
	now := s.now()
	t := &fleet.EnrollToken{ID: hex.EncodeToString(hash[:8]), Name: name, Hash: hash, UsesLeft: uses, Product: strings.TrimSpace(r.PostFormValue("product")),
		CreatedAt: now, ExpiresAt: now.Add(ttl)}
	if err := s.Devices.CreateEnrollToken(r.Context(), t); err != nil {
		s.formError(w, r, err, "admin/enroll-tokens")
		return
	}
	audit.SetTarget(r.Context(), t.ID)
	audit.AddDetail(r.Context(), "product", t.Product)
	s.showEnroll(w, r, &console.Secret{ID: t.ID, Value: secret, Note: "Copy it now: it is shown once. Give it to the devices' enrolment (upkeep-agent enroll --token)."})
}

func (s *Server) adminRevokeEnroll(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.Devices.RevokeEnrollToken(r.Context(), id, s.now()); err != nil {
		s.formError(w, r, err, "admin/enroll-tokens")
		return
	}
	s.logger().Info("enrolment token revoked", "token", id, "actor", actorOf(r))
	s.done(w, r, "enroll-tokens", "Enrolment token "+id+" revoked.")
}

func (s *Server) adminWebhooks(w http.ResponseWriter, r *http.Request) {
	s.showWebhooks(w, r, nil)
}

func (s *Server) showWebhooks(w http.ResponseWriter, r *http.Request, created *console.Secret) {
	if s.Webhooks == nil {
		s.pageFail(w, r, apperr.E(apperr.Unavailable, "this server sends no webhooks"))
		return
	}
	hs, err := s.Webhooks.Webhooks(r.Context())
	if err != nil {
		s.pageFail(w, r, err)
		return
	}
	v := console.WebhookAdmin{CanWrite: can(r, auth.PermWebhooksWrite), Created: created}
	for _, h := range hs {
		ev := strings.Join(h.Events, ", ")
		v.Hooks = append(v.Hooks, console.WebhookRow{ID: h.ID, URL: h.URL, Events: cmp.Or(ev, "all"), CreatedAt: h.CreatedAt})
	}
	ds, err := s.Webhooks.Deliveries(r.Context(), webhook.DeliveryFilter{Limit: 20})
	if err != nil {
		s.pageFail(w, r, err)
		return
	}
	for _, d := range ds {
		v.Deliveries = append(v.Deliveries, console.DeliveryRow{Webhook: d.WebhookID, Event: d.EventID, Type: d.Type, State: d.State,
			Attempts: d.Attempts, At: d.CreatedAt, Status: d.LastStatus, Error: d.LastError})
	}
	s.renderAdmin(w, r, http.StatusOK, "webhooks", "Webhooks", v, notice(r))
}

// adminAddWebhook creates a webhook through the same service as POST /api/v1/webhooks, which
// validates its address; the signing secret is shown once.
func (s *Server) adminAddWebhook(w http.ResponseWriter, r *http.Request) {
	if s.Webhooks == nil {
		s.pageFail(w, r, apperr.E(apperr.Unavailable, "this server sends no webhooks"))
		return
	}
	spec := webhook.Spec{URL: strings.TrimSpace(r.PostFormValue("url")), Events: formGroups(r.PostFormValue("events")),
		Description: r.PostFormValue("description")}
	h, secret, err := s.Webhooks.Create(r.Context(), spec, actorOf(r))
	if err != nil {
		s.formError(w, r, err, "admin/webhooks")
		return
	}
	s.showWebhooks(w, r, &console.Secret{ID: h.ID, Value: secret, Note: "Copy the signing secret now: it is shown once."})
}

func (s *Server) adminDeleteWebhook(w http.ResponseWriter, r *http.Request) {
	if s.Webhooks == nil {
		s.pageFail(w, r, apperr.E(apperr.Unavailable, "this server sends no webhooks"))
		return
	}
	id := r.PathValue("id")
	if err := s.Webhooks.Delete(r.Context(), id, actorOf(r)); err != nil {
		s.formError(w, r, err, "admin/webhooks")
		return
	}
	s.done(w, r, "webhooks", "Webhook "+id+" deleted.")
}

func (s *Server) adminTestWebhook(w http.ResponseWriter, r *http.Request) {
	if s.Webhooks == nil {
		s.pageFail(w, r, apperr.E(apperr.Unavailable, "this server sends no webhooks"))
		return
	}
	id := r.PathValue("id")
	ev, err := s.Webhooks.Test(r.Context(), id, actorOf(r))
	if err != nil {
		s.formError(w, r, err, "admin/webhooks")
		return
	}
	s.done(w, r, "webhooks", "Test event "+ev+" queued for "+id+".")
}

// adminAudit shows the audit trail with the filters of GET /api/v1/audit, newest first, a
// page at a time (keyset on the sequence number), and links the API's export of the same
// filter.
func (s *Server) adminAudit(w http.ResponseWriter, r *http.Request) {
	if s.Audit == nil {
		s.pageFail(w, r, apperr.E(apperr.Unavailable, "no audit trail on this server"))
		return
	}
	q := r.URL.Query()
	v := console.AuditAdmin{Actor: q.Get("actor"), Action: q.Get("action"), Target: q.Get("target"), Outcome: q.Get("outcome"),
		Since: q.Get("since"), Until: q.Get("until")}
	// The form's dates (YYYY-MM-DD) become the API's RFC 3339 times.
	api := url.Values{}
	for k, val := range map[string]string{"actor": v.Actor, "action": v.Action, "target": v.Target, "outcome": v.Outcome} {
		if val != "" {
			api.Set(k, val)
		}
	}
	for k, val := range map[string]string{"since": v.Since, "until": v.Until} {
		if val == "" {
			continue
		}
		if d, err := time.Parse(time.DateOnly, val); err == nil {
			val = d.Format(time.RFC3339)
		}
		api.Set(k, val)
	}
	v.Export = "api/v1/audit/export?" + api.Encode()
	page := url.Values{}
	for k, vs := range api {
		page[k] = vs
	}
	if b := q.Get("before"); b != "" {
		page.Set("before", b)
	}
	const limit = 100
	page.Set("limit", strconv.Itoa(limit))
	f, err := ParseAuditFilter(page)
	if err != nil {
		v.Error = apperr.Message(err)
		s.renderAdmin(w, r, http.StatusBadRequest, "audit", "Audit trail", v, "")
		return
	}
	rs, err := s.Audit.FindRecords(r.Context(), f)
	if err != nil {
		s.pageFail(w, r, err)
		return
	}
	for _, rec := range rs {
		v.Records = append(v.Records, console.AuditRow{Seq: rec.Seq, Time: rec.Time, Actor: rec.Actor, ActorType: rec.ActorType,
			Action: rec.Action, Target: rec.Target, Detail: rec.Detail, IP: rec.IP, Outcome: rec.Outcome})
	}
	if len(rs) == limit && rs[len(rs)-1].Seq > 1 {
		next := url.Values{}
		for k, val := range map[string]string{"actor": v.Actor, "action": v.Action, "target": v.Target, "outcome": v.Outcome, "since": v.Since, "until": v.Until} {
			if val != "" {
				next.Set(k, val)
			}
		}
		next.Set("before", strconv.FormatInt(rs[len(rs)-1].Seq, 10))
		v.Older = "admin/audit?" + next.Encode()
	}
	s.renderAdmin(w, r, http.StatusOK, "audit", "Audit trail", v, "")
}
