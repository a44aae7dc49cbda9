package httpapi_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/browsertest"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/release"
)

// browserLogin signs in through the console's login form in a real browser.
func browserLogin(t *testing.T, b *browsertest.Browser, srv *httptest.Server, user string) {
	t.Helper()
	b.Navigate(srv.URL + "/login")
	b.Fill("#user", user)
	b.Fill("#password", testPassword)
	b.ClickAndWait(`.login button[type="submit"]`, "h1")
	if got := b.Text("h1"); got != "Overview" {
		t.Fatalf("after signing in: %q", got)
	}
}

// TestBrowserPolicyLabel: in chromium, a release manager edits the product's support end in the
// policy editor, the page comes back with the new date, the history records it, and the label
// shown is a new one that carries the new date.
func TestBrowserPolicyLabel(t *testing.T) {
	_, srv, _ := catalogStack(t)
	b := browsertest.New(t)
	browserLogin(t, b, srv, "u-"+auth.RoleReleaseManager)
	b.Navigate(srv.URL + "/products/" + testProduct)
	b.Wait("#label")
	before, err := browsertest.Eval[string](b, `document.getElementById("label").getAttribute("src")`)
	if err != nil {
		t.Fatal(err)
	}
	b.Screenshot("product-before")
	b.Fill("#p-end", "2034-03-31")
	b.ClickAndWait("#save-policy", "#label")
	b.WaitText("#policy", "2034-03-31")
	b.WaitText("main", "Policy history")
	after, err := browsertest.Eval[string](b, `document.getElementById("label").getAttribute("src")`)
	if err != nil {
		t.Fatal(err)
	}
	if after == before {
		t.Errorf("label src unchanged: %s", after)
	}
	// The label the page shows has loaded, and it states the new end.
	loaded, err := browsertest.Eval[bool](b, `(async () => { const i = document.getElementById("label"); await i.decode(); return i.naturalWidth > 0; })()`)
	if err != nil || !loaded {
		t.Errorf("label image not loaded: %v", err)
	}
	svg, err := browsertest.Eval[string](b, `fetch(document.getElementById("label").src).then(r => r.text())`)
	if err != nil || !strings.Contains(svg, "2034") {
		t.Errorf("the label shown does not state the new end (%v)", err)
	}
	b.Screenshot("product-after")
	b.Axe(t)
}

// TestBrowserCatalogPages: every releases, vulnerabilities, products and administration page, in
// chromium: no console error, CSP violation or failed request, no serious or critical axe
// violation, and a screenshot of each, at 1280 px and on a phone.
func TestBrowserCatalogPages(t *testing.T) {
	s, srv, vulns := catalogStack(t)
	ctx := context.Background()
	name, targets := s.uploadAndSign(srv, "1.0.0", []byte("firmware 1.0.0"), s.targetsKey)
	if r := s.publish(srv, name, targets); r.status != 201 {
		t.Fatalf("publish: %d %s", r.status, r.body)
	}
	crypto := `{"bomFormat": "CycloneDX", "specVersion": "1.4", "version": 1, "components": [{"type": "library", "name": "golang.org/x/crypto", "version": "v0.16.0", "purl": "pkg:golang/golang.org/x/crypto@v0.16.0"}]}`
	if _, err := vulns.PutSBOM(ctx, testProduct, "1.0.0", []byte(crypto)); err != nil {
		t.Fatal(err)
	}
	fixed := &release.Release{Product: testProduct, Version: "1.1.0", SecurityVersion: 3, PublishedAt: time.Now(), HardwareIDs: []string{testHardware},
		Class: "security", Target: testProduct + "/1.1.0/fw", SHA256: "00", SHA512: "00", TargetsVersion: 1}
	if err := s.db.CreateRelease(ctx, fixed); err != nil {
		t.Fatal(err)
	}
	if _, err := vulns.PutSBOM(ctx, testProduct, "1.1.0", []byte(strings.ReplaceAll(crypto, "v0.16.0", "v0.31.0"))); err != nil {
		t.Fatal(err)
	}
	d := &fleet.Device{ID: "d1", PublicKey: []byte("d1"), Serial: "d1", Product: testProduct, HardwareID: testHardware,
		Status: fleet.StatusAccepted, InstalledTarget: name, InstalledVer: "1.0.0", InstalledSHA256: sha256hex([]byte("firmware 1.0.0")), EnrolledAt: time.Now()}
	if err := s.db.CreateDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	vulns.OnEnroll(ctx, d)
	importOSV(t, vulns, hostileScript)

	b := browsertest.New(t)
	browserLogin(t, b, srv, "u-"+auth.RoleAdmin)
	pages := []struct{ path, heading string }{
		{"releases", "Releases"},
		{"releases/" + testProduct + "/1.0.0", testProduct + " 1.0.0"},
		{"vulnerabilities", "Vulnerabilities"},
		{"products", "Products"},
		{"products/" + testProduct, ""},
		{"admin/users", "Administration"},
		{"admin/tokens", "Administration"},
		{"admin/enroll-tokens", "Administration"},
		{"admin/webhooks", "Administration"},
		{"admin/audit", "Administration"},
	}
	for _, width := range []int64{1280, 390} {
		b.Resize(width, 900)
		size := map[int64]string{1280: "wide", 390: "phone"}[width]
		for _, p := range pages {
			t.Run(strings.ReplaceAll(p.path, "/", "_")+"-"+size, func(t *testing.T) {
				b.Navigate(srv.URL + "/" + p.path)
				b.Wait("main h1")
				if p.heading != "" && !strings.Contains(b.Text("main h1"), p.heading) {
					t.Errorf("heading %q, want %q", b.Text("main h1"), p.heading)
				}
				b.Screenshot(strings.ReplaceAll(p.path, "/", "_") + "-" + size)
				b.Axe(t)
			})
		}
	}
	// The fix link leads to the rollout form, prefilled.
	b.Resize(1280, 900)
	b.Navigate(srv.URL + "/vulnerabilities")
	if href, err := browsertest.Eval[string](b, `document.querySelector("#exposure a.button").getAttribute("href")`); err != nil || !strings.Contains(href, "rollouts/new?fixes=GO-2023-2402") {
		t.Errorf("fix link %q (%v)", href, err)
	}
}
