package httpapi_test

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"upkeep.dev/upkeep/internal/auth"
)

var secretShown = regexp.MustCompile(`<code id="secret">([^<]+)</code>`)

// TestConsoleAdmin: an admin adds a user, changes its role and disables it (after a
// confirmation), creates an API token (its secret shown once, and it works) and revokes it,
// creates and revokes an enrolment token, is refused a webhook to a plain http address, and
// finds each of these in the audit trail, filtered, with the export linked. An auditor reads the
// users and the trail without any form and is refused a forced change; a viewer sees no
// administration.
func TestConsoleAdmin(t *testing.T) {
	s, srv, _ := catalogStack(t)
	admin, csrf := signedIn(t, s, srv, auth.RoleAdmin)
	wantPage(t, admin.get("admin"), http.StatusOK, `href="/admin/users"`, `href="/admin/audit"`)
	wantPage(t, admin.get("admin/users"), http.StatusOK, "Add a user", "u-viewer")

	post := func(path string, form url.Values, status int) page {
		t.Helper()
		form.Set("csrf", csrf)
		p := admin.post(path, form)
		if p.status != status {
			t.Fatalf("POST %s: %d, want %d:\n%s", path, p.status, status, p.body)
		}
		return p
	}
	post("admin/users", url.Values{"name": {"carol"}, "role": {auth.RoleSupport}, "password": {testPassword}}, http.StatusSeeOther)
	wantPage(t, admin.get("admin/users?done=User+carol+added."), http.StatusOK, "User carol added.", "<td>carol</td><td>support</td>")
	post("admin/users/carol/role", url.Values{"role": {auth.RoleDeployer}, "groups": {"lab"}}, http.StatusSeeOther)
	wantPage(t, admin.get("admin/users"), http.StatusOK, "<td>carol</td><td>deployer</td><td>lab</td>")
	wantPage(t, admin.post("admin/users/carol/role", url.Values{"csrf": {csrf}, "role": {"emperor"}}), http.StatusBadRequest, "want one of")
	wantPage(t, admin.get("admin/users/carol/disable"), http.StatusOK, "Disable user carol?", `action="/admin/users/carol/disable"`)
	post("admin/users/carol/disable", url.Values{}, http.StatusSeeOther)
	wantPage(t, admin.get("admin/users"), http.StatusOK, "disabled")

	p := post("admin/tokens", url.Values{"name": {"ci"}, "role": {auth.RoleViewer}, "days": {"7"}}, http.StatusOK)
	m := secretShown.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no secret shown:\n%s", p.body)
	}
	if r := call(t, srv, http.MethodGet, "/api/v1/devices", nil, bearer(m[1])); r.status != http.StatusOK {
		t.Errorf("the new token: %d %s", r.status, r.body)
	}
	if strings.Contains(admin.get("admin/tokens").body, m[1]) {
		t.Errorf("the secret is shown again")
	}
	id := regexp.MustCompile(`Token <span class="mono">([0-9a-f]+)</span>`).FindStringSubmatch(p.body)[1]
	post("admin/tokens/"+id+"/revoke", url.Values{}, http.StatusSeeOther)
	if r := call(t, srv, http.MethodGet, "/api/v1/devices", nil, bearer(m[1])); r.status != http.StatusUnauthorized {
		t.Errorf("a revoked token: %d", r.status)
	}

	p = post("admin/enroll-tokens", url.Values{"name": {"line-3"}, "product": {testProduct}, "uses": {"5"}, "hours": {"2"}}, http.StatusOK)
	if !secretShown.MatchString(p.body) || !strings.Contains(p.body, "line-3") {
		t.Fatalf("enrolment token:\n%s", p.body)
	}
	eid := regexp.MustCompile(`Enrolment token <span class="mono">([0-9a-f]+)</span>`).FindStringSubmatch(p.body)[1]
	post("admin/enroll-tokens/"+eid+"/revoke", url.Values{}, http.StatusSeeOther)
	wantPage(t, admin.get("admin/enroll-tokens"), http.StatusOK, "revoked")

	wantPage(t, admin.post("admin/webhooks", url.Values{"csrf": {csrf}, "url": {"http://example.com/hook"}}), http.StatusBadRequest, "https")
	wantPage(t, admin.get("admin/webhooks"), http.StatusOK, "No webhook.", "Add a webhook")

	audit := admin.get("admin/audit?action=user")
	wantPage(t, audit, http.StatusOK, "user.add", "user.role", "user.disable", "carol", `href="/api/v1/audit/export?action=user"`)
	if strings.Contains(audit.body, "token.create") {
		t.Errorf("the action filter kept other actions")
	}
	wantPage(t, admin.get("admin/audit?action=Bad!"), http.StatusBadRequest, "action")
	if r := admin.get("api/v1/audit/export?action=user"); r.status != http.StatusOK || !strings.Contains(r.body, "user.add") {
		t.Errorf("export with the session: %d %s", r.status, r.body)
	}

	auditor, acsrf := signedIn(t, s, srv, auth.RoleAuditor)
	p = auditor.get("admin/users")
	wantPage(t, p, http.StatusOK, "carol")
	if strings.Contains(p.body, "Add a user") || strings.Contains(p.body, "Set role") {
		t.Errorf("an auditor sees user forms")
	}
	wantPage(t, auditor.get("admin/audit"), http.StatusOK, "user.add")
	wantPage(t, auditor.post("admin/users", url.Values{"csrf": {acsrf}, "name": {"mallory"}, "role": {auth.RoleAdmin}}), http.StatusForbidden, "users:write")
	wantPage(t, auditor.get("admin/webhooks"), http.StatusForbidden)

	viewer, _ := signedIn(t, s, srv, auth.RoleViewer)
	home := viewer.get("")
	if strings.Contains(home.body, `href="/admin"`) {
		t.Errorf("a viewer's navigation offers the administration")
	}
	wantPage(t, viewer.get("admin"), http.StatusOK, "no part in the administration")
	wantPage(t, viewer.get("admin/audit"), http.StatusForbidden, "audit:read")
}
