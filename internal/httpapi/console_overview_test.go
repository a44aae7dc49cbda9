package httpapi_test

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/product"
)

// TestConsoleOverview: the overview counts the fleet by status, state, product and version,
// counts the devices needing attention (failed, rolled back, stale, past end of support), lists
// running campaigns, escapes what devices reported, and shows each part only to the roles that
// may read it.
func TestConsoleOverview(t *testing.T) {
	s := newStack(t)
	s.withRollouts()
	s.api.Products = &product.Service{Store: s.db}
	s.handler = s.api.Handler()
	ctx := context.Background()
	s.seedDevices(6)
	old := time.Now().Add(-30 * 24 * time.Hour)
	for i, d := range []*fleet.Device{
		{ID: "f1", State: "failed", LastSeen: time.Now()},
		{ID: "f2", State: "rolling_back", LastSeen: time.Now()},
		{ID: "s1", State: "idle", LastSeen: old},
		{ID: "x1", State: "idle", LastSeen: time.Now(), Product: "old<b>prod</b>", InstalledVer: `9.9"><script>alert(1)</script>`},
		{ID: "p1", Status: fleet.StatusPending},
	} {
		d.PublicKey, d.HardwareID, d.EnrolledAt = []byte{byte(100 + i)}, "h1", time.Now()
		if d.Product == "" {
			d.Product, d.InstalledVer = "cam", "1.0"
		}
		if d.Status == "" {
			d.Status = fleet.StatusAccepted
		}
		if err := s.db.CreateDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.db.PutProduct(ctx, &product.Product{Name: "old<b>prod</b>", Policy: []byte(`{"support_end":"2020-01-31"}`), UpdatedAt: time.Now()}, time.Time{}, nil); err != nil {
		t.Fatal(err)
	}
	s.addUser("vic", auth.RoleViewer, testPassword)
	s.addUser("aud", auth.RoleAuditor, testPassword)
	srv := s.serve()
	b := newBrowser(t, srv, "/")
	b.login("vic", testPassword)
	p := b.get("")
	wantPage(t, p, http.StatusOK, "Devices: 11", "Needing attention", "old&lt;b&gt;prod&lt;/b&gt;", "9.9&#34;&gt;&lt;script&gt;", "No campaign is running")
	if strings.Contains(p.body, "<script>alert") || strings.Contains(p.body, "<b>prod") {
		t.Fatalf("unescaped device text:\n%s", p.body)
	}
	// The exposure part comes after the page, or in it on request.
	wantPage(t, p, http.StatusOK, `hx-get="/overview/exposure"`)
	if r := b.do(http.MethodGet, "overview/exposure", nil, map[string]string{"HX-Request": "true"}); r.status != http.StatusOK || !strings.Contains(r.body, "not configured") || strings.Contains(r.body, "<html") {
		t.Errorf("exposure part: %d %s", r.status, r.body)
	}
	wantPage(t, b.get("?exposure=1"), http.StatusOK, "Vulnerability tracking is not configured")
	attention := map[string]string{}
	for _, m := range regexp.MustCompile(`<th scope="row">(?:<a href="[^"]*">)?([^<]+)(?:</a>)?</th>\s*<td class="num">(\d+)</td>`).FindAllStringSubmatch(p.body, -1) {
		attention[m[1]] = m[2]
	}
	for label, want := range map[string]string{"accepted": "10", "pending": "1", "failed": "1", "rolling back or rolled back": "1", "not seen for 7 days": "1", "past end of support": "1", "reported an error": "2"} {
		if attention[label] != want {
			t.Errorf("%s: %q, want %s (all: %v)", label, attention[label], want, attention)
		}
	}
	// Every role reads the fleet; the navigation follows the role.
	a := newBrowser(t, srv, "/")
	a.login("aud", testPassword)
	wantPage(t, a.get(""), http.StatusOK, "Devices: 11", `href="/devices"`)
}
