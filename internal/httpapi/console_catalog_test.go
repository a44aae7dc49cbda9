package httpapi_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/exposure"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/product"
	"upkeep.dev/upkeep/internal/release"
)

// catalogStack is a stack with products (testProduct has a policy), vulnerability data and a
// user per role, served on a real listener; setup, if any, runs before it is served.
func catalogStack(t *testing.T, setup ...func(*stack, *exposure.Service)) (*stack, *httptest.Server, *exposure.Service) {
	t.Helper()
	s := newStack(t)
	tr := s.withPublicPages(t, publicBase)
	s.api.Products = &product.Service{Store: s.db, Devices: s.db, Check: tr.CheckPolicy, Resign: s.director.Resign, Logger: quietLogger()}
	vulns := &exposure.Service{Store: s.db, Devices: s.db, Releases: s.db, Targets: s.images.CurrentTargets}
	if err := vulns.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	s.api.Exposure = vulns
	for _, role := range auth.Roles {
		s.addUser("u-"+role, role, testPassword)
	}
	for _, f := range setup {
		f(s, vulns)
	}
	return s, s.serve(), vulns
}

func signedIn(t *testing.T, s *stack, srv *httptest.Server, role string) (*browser, string) {
	t.Helper()
	b := newBrowser(t, srv, "/")
	return b, b.login("u-"+role, testPassword)
}

const (
	hostileScript = `<script>alert(1)</script>`
	hostileAttr   = `"><img src=x onerror=alert(1)>`
)

// TestConsoleProducts: the products page and a product's page show the policy, its label, the
// public page and the history; a release manager changes the policy through the editor (with
// the CSRF token; without it, refused), the history and the label follow; a viewer sees no
// editor and is refused a forced post; what an operator typed is escaped.
func TestConsoleProducts(t *testing.T) {
	s, srv, _ := catalogStack(t)
	rm, csrf := signedIn(t, s, srv, auth.RoleReleaseManager)
	wantPage(t, rm.get("products"), http.StatusOK, `href="/products/`+testProduct+`"`, "2031-12-31", `href="/p/`+testProduct+`"`)
	p := rm.get("products/" + testProduct)
	wantPage(t, p, http.StatusOK, "Support policy", `src="/p/`+testProduct+`/label.svg?v=`, "Change the policy", "Policy history", "support_end")
	labelBefore := call(t, srv, http.MethodGet, "/p/"+testProduct+"/label.svg", nil, nil).body

	form := url.Values{"support_end": {"2033-06-30"}, "delivery": {"automatic"}, "security_separate": {"on"},
		"product_name": {hostileScript + hostileAttr}, "vdp_url": {"https://example.com/vdp"}, "vdp_contact": {"security@example.com"}}
	// Without the CSRF token: refused, nothing changed.
	wantPage(t, rm.post("products/"+testProduct+"/policy", form), http.StatusForbidden, "CSRF")
	form.Set("csrf", csrf)
	r := rm.post("products/"+testProduct+"/policy", form)
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/products/"+testProduct+"?saved=1" {
		t.Fatalf("policy form: %d %s %s", r.status, r.header.Get("Location"), r.body)
	}
	p = rm.get("products/" + testProduct)
	wantEscaped(t, p, http.StatusOK, "2033-06-30", "&lt;script&gt;alert(1)&lt;/script&gt;", "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;", "&#34;2031-12-31&#34;", "&#34;2033-06-30&#34;")
	labelAfter := call(t, srv, http.MethodGet, "/p/"+testProduct+"/label.svg", nil, nil).body
	if string(labelBefore) == string(labelAfter) || !strings.Contains(string(labelAfter), "2033") {
		t.Errorf("the label did not change with the policy")
	}
	// A refused change (an earlier end) is shown on the page with the form as typed.
	form.Set("support_end", "2030-01-01")
	wantEscaped(t, rm.post("products/"+testProduct+"/policy", form), http.StatusBadRequest, "never shortened", `value="2030-01-01"`)

	viewer, vcsrf := signedIn(t, s, srv, auth.RoleViewer)
	p = viewer.get("products/" + testProduct)
	wantEscaped(t, p, http.StatusOK, "Support policy", "2033-06-30")
	if strings.Contains(p.body, "Change the policy") || strings.Contains(p.body, `/policy"`) {
		t.Errorf("a viewer sees the policy editor")
	}
	form.Set("csrf", vcsrf)
	form.Set("support_end", "2040-01-01")
	wantPage(t, viewer.post("products/"+testProduct+"/policy", form), http.StatusForbidden, "products:write")
	wantPage(t, viewer.get("products/nosuch"), http.StatusNotFound)
}

// TestConsoleReleases: a published release is listed under its product and its page shows the
// signed target (length, hashes, custom fields), its SBOM components (escaped), the advisory
// matching them and who published it (to roles that read the audit trail), with the note that
// publishing stays with the CLI.
func TestConsoleReleases(t *testing.T) {
	s, srv, vulns := catalogStack(t)
	name, targets := s.uploadAndSign(srv, "1.0.0", []byte("firmware 1.0.0"), s.targetsKey)
	if r := s.publish(srv, name, targets); r.status != http.StatusCreated {
		t.Fatalf("publish: %d %s", r.status, r.body)
	}
	cdx := `{"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1, "components": [` +
		`{"type": "library", "name": "golang.org/x/crypto", "version": "v0.16.0", "purl": "pkg:golang/golang.org/x/crypto@v0.16.0"},` +
		`{"type": "library", "name": "<script>alert(1)</script>", "version": "1"}]}`
	if _, err := vulns.PutSBOM(t.Context(), testProduct, "1.0.0", []byte(cdx)); err != nil {
		t.Fatal(err)
	}
	importOSV(t, vulns, "")

	admin, _ := signedIn(t, s, srv, auth.RoleAdmin)
	wantPage(t, admin.get("releases"), http.StatusOK, `href="/releases/`+testProduct+`/1.0.0"`, "upkeep release publish")
	p := admin.get("releases/" + testProduct + "/1.0.0")
	wantEscaped(t, p, http.StatusOK, name, sha256hex([]byte("firmware 1.0.0")), "sha512", "security_version", "golang.org/x/crypto",
		"&lt;script&gt;alert(1)&lt;/script&gt;", "GO-2023-2402", " by admin", "upkeep release publish")
	viewer, _ := signedIn(t, s, srv, auth.RoleViewer)
	p = viewer.get("releases/" + testProduct + "/1.0.0")
	wantPage(t, p, http.StatusOK, "GO-2023-2402", "in the audit trail")
	if strings.Contains(p.body, " by admin") {
		t.Errorf("a viewer sees the publisher from the audit trail")
	}
	wantPage(t, viewer.get("releases/"+testProduct+"/9.9.9"), http.StatusNotFound)
}

// wantEscaped is wantPage for a page that shows hostile text: the text appears escaped (the
// words of an event handler may then stand in it as text), never as markup.
func wantEscaped(t *testing.T, p page, status int, contains ...string) {
	t.Helper()
	clean := p
	clean.body = strings.ReplaceAll(p.body, " onerror=alert(1)", "")
	wantPage(t, clean, status)
	for _, c := range contains {
		if !strings.Contains(p.body, c) {
			t.Errorf("page lacks %q:\n%s", c, p.body)
		}
	}
	for _, raw := range []string{hostileScript, "<img src=x", `"><img`} {
		if strings.Contains(p.body, raw) {
			t.Errorf("unescaped %q in the page", raw)
		}
	}
}

// importOSV imports GO-2023-2402 (golang.org/x/crypto before 0.17.0), its summary replaced when
// summary is not empty.
func importOSV(t *testing.T, vulns *exposure.Service, summary string) {
	t.Helper()
	doc, err := os.ReadFile("../vuln/testdata/osv/GO-2023-2402.json")
	if err != nil {
		t.Fatal(err)
	}
	if summary != "" {
		doc = []byte(strings.Replace(string(doc), `"summary": "Man-in-the-middle`, `"summary": "`+summary+` Man-in-the-middle`, 1))
	}
	res, err := vulns.Import(t.Context(), "GO-2023-2402.json", strings.NewReader(string(doc)))
	if err != nil || len(res.Errors) > 0 {
		t.Fatalf("import: %v %+v", err, res)
	}
}

// TestConsoleVulnerabilities: the exposure table lists the advisory on the release devices run,
// with a fix-with-a-rollout link to the prefilled rollout form for roles that deploy and none
// for a viewer; advisory text is escaped; filters narrow it.
func TestConsoleVulnerabilities(t *testing.T) {
	s, srv, vulns := catalogStack(t, func(s *stack, vulns *exposure.Service) {
		s.withRollouts().Exposed = vulns.Exposed
	})
	ctx := context.Background()
	crypto := func(v string) []byte {
		return []byte(`{"bomFormat": "CycloneDX", "specVersion": "1.4", "version": 1, "components": [{"type": "library", "name": "golang.org/x/crypto", "version": "` + v + `", "purl": "pkg:golang/golang.org/x/crypto@` + v + `"}]}`)
	}
	for i, v := range []string{"1.0", "1.1"} {
		r := &release.Release{Product: testProduct, Version: v, SecurityVersion: int64(i + 1), PublishedAt: time.Now().Add(time.Duration(i-2) * time.Hour),
			HardwareIDs: []string{testHardware}, Class: "security", Target: testProduct + "/" + v + "/fw", SHA256: []string{"00", "11"}[i], SHA512: "00", TargetsVersion: 1}
		if err := s.db.CreateRelease(ctx, r); err != nil {
			t.Fatal(err)
		}
		if _, err := vulns.PutSBOM(ctx, testProduct, v, crypto([]string{"v0.16.0", "v0.31.0"}[i])); err != nil {
			t.Fatal(err)
		}
	}
	d := &fleet.Device{ID: "d1", PublicKey: []byte("d1"), Serial: "d1", Product: testProduct, HardwareID: testHardware,
		Status: fleet.StatusAccepted, InstalledTarget: testProduct + "/1.0/fw", InstalledVer: "1.0", InstalledSHA256: "00", EnrolledAt: time.Now()}
	if err := s.db.CreateDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	vulns.OnEnroll(ctx, d)
	importOSV(t, vulns, hostileScript)

	dep, _ := signedIn(t, s, srv, auth.RoleDeployer)
	p := dep.get("vulnerabilities")
	fix := `href="/rollouts/new?fixes=GO-2023-2402&amp;release=` + testProduct + `%401.1"`
	wantEscaped(t, p, http.StatusOK, "GO-2023-2402", testProduct+" 1.0", "Fix with a rollout", fix, "&lt;script&gt;alert(1)&lt;/script&gt;")
	// The link opens the rollout form prefilled; the campaign takes the exposed device.
	form := dep.get("rollouts/new?fixes=GO-2023-2402&release=" + testProduct + "%401.1")
	wantPage(t, form, http.StatusOK, `id="fixes"`, "GO-2023-2402", `name="fixes" value="GO-2023-2402"`)
	r := dep.post("rollouts/new", url.Values{"csrf": {form.csrf(t)}, "fixes": {"GO-2023-2402"}, "release": {testProduct + "@1.1"}})
	if r.status != http.StatusSeeOther || !strings.Contains(r.header.Get("Location"), "/rollouts/") {
		t.Fatalf("campaign from the fix link: %d %s", r.status, r.body)
	}
	wantPage(t, dep.get(strings.TrimPrefix(r.header.Get("Location"), "/")), http.StatusOK, "fixes:GO-2023-2402", testProduct+"@1.1")

	viewer, _ := signedIn(t, s, srv, auth.RoleViewer)
	p = viewer.get("vulnerabilities")
	wantPage(t, p, http.StatusOK, "GO-2023-2402")
	if strings.Contains(p.body, "Fix with a rollout") {
		t.Errorf("a viewer is offered a rollout")
	}
	wantPage(t, viewer.get("vulnerabilities?severity=critical&kev=1"), http.StatusOK, "matching these filters")
	wantPage(t, viewer.get("vulnerabilities?severity=<x>"), http.StatusOK, "GO-2023-2402") // an unknown severity is no filter
}
