package httpapi_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"html"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/label"
	"upkeep.dev/upkeep/internal/product"
	"upkeep.dev/upkeep/internal/transparency"
)

// publicBase is the public URL the pages and QR codes link under.
const publicBase = "https://labels.example.com"

// withPublicPages wires a transparency service over the stack's real SQLite store and gives
// testProduct a support policy.
func (s *stack) withPublicPages(t *testing.T, baseURL string) *transparency.Service {
	t.Helper()
	pol := product.Policy{SupportEnd: "2031-12-31", Delivery: product.DeliveryAutomatic, SecuritySeparate: true,
		Notification: []string{"app"}, VDPURL: "https://example.com/vdp", VDPContact: "security@example.com"}
	b, _ := json.Marshal(pol)
	now := time.Now().UTC().Truncate(time.Second)
	changes, err := product.ChangePolicy(testProduct, nil, pol, "admin", now)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.db.PutProduct(context.Background(), &product.Product{Name: testProduct, Policy: b, UpdatedAt: now}, time.Time{}, changes); err != nil {
		t.Fatal(err)
	}
	tr := &transparency.Service{Products: s.db, Releases: s.db, Devices: s.db, KeysDir: filepath.Join(s.root, "keys"),
		PublicURL: baseURL, Manufacturer: label.Manufacturer{Name: "Example Devices Ltd"}, Logger: quietLogger()}
	s.api.Transparency = tr
	return tr
}

// TestPublicRoutes checks every public file: served without a token, with its content type,
// caching headers and a working ETag; the declaration verifies with the served key.
func TestPublicRoutes(t *testing.T) {
	s := newStack(t)
	s.withPublicPages(t, publicBase)
	srv := s.serve()

	want := map[string]string{
		"":                  "text/html",
		"/conformance.html": "text/html",
		"/label.svg":        "image/svg+xml",
		"/label.png":        "image/png",
		"/declaration.json": "application/json",
		"/declaration.pub":  "application/x-pem-file",
		"/conformance.json": "application/json",
	}
	got := map[string][]byte{}
	var etag string
	for suffix, ctype := range want {
		path := "/p/" + testProduct + suffix
		r := call(t, srv, http.MethodGet, path, nil, nil) // no Authorization header
		if r.status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, r.status, r.body)
		}
		if ct, _, _ := mime.ParseMediaType(r.header.Get("Content-Type")); ct != ctype {
			t.Errorf("GET %s: Content-Type %q, want %s", path, r.header.Get("Content-Type"), ctype)
		}
		if cc := r.header.Get("Cache-Control"); !strings.Contains(cc, "max-age=300") {
			t.Errorf("GET %s: Cache-Control %q", path, cc)
		}
		if r.header.Get("ETag") == "" || r.header.Get("Last-Modified") == "" {
			t.Errorf("GET %s: no validators: ETag %q, Last-Modified %q", path, r.header.Get("ETag"), r.header.Get("Last-Modified"))
		}
		if etag == "" {
			etag = r.header.Get("ETag")
		} else if r.header.Get("ETag") != etag {
			t.Errorf("GET %s: ETag %s changed from %s with no change of the facts", path, r.header.Get("ETag"), etag)
		}
		got[suffix] = r.body
	}
	if c := call(t, srv, http.MethodGet, "/p/"+testProduct+"/label.svg", nil, map[string]string{"If-None-Match": etag}); c.status != http.StatusNotModified || len(c.body) != 0 {
		t.Errorf("conditional GET with the ETag: %d, %d bytes; want 304 and no body", c.status, len(c.body))
	}
	if h := call(t, srv, http.MethodHead, "/p/"+testProduct, nil, nil); h.status != http.StatusOK || len(h.body) != 0 {
		t.Errorf("HEAD: %d with %d bytes", h.status, len(h.body))
	}
	if csp := call(t, srv, http.MethodGet, "/p/"+testProduct, nil, nil).header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("page CSP %q", csp)
	}

	pub, err := label.ParsePublicKey(got["/declaration.pub"])
	if err != nil {
		t.Fatal(err)
	}
	d, err := label.Verify(got["/declaration.json"], pub)
	if err != nil {
		t.Fatalf("the served declaration does not verify with the served key: %v", err)
	}
	var env label.Envelope
	if err := json.Unmarshal(got["/declaration.json"], &env); err != nil {
		t.Fatal(err)
	}
	payload, _ := base64.StdEncoding.DecodeString(env.Payload)
	if err := label.Validate(payload); err != nil {
		t.Fatalf("served declaration: %v", err)
	}
	if d.Product.ID != testProduct || d.Support.EndDate != "2031-12-31" || d.Manufacturer.Name != "Example Devices Ltd" || d.Status != label.StatusSupported {
		t.Errorf("declaration %+v", d)
	}
	// The key is the product's own, kept where an operator can put their own instead.
	k, err := os.Stat(filepath.Join(s.root, "keys", transparency.KeyDir, testProduct+".key"))
	if err != nil || k.Mode().Perm() != 0o600 {
		t.Fatalf("declaration key file: %v, %v", k, err)
	}
	var rep label.Report
	if err := json.Unmarshal(got["/conformance.json"], &rep); err != nil || rep.Product != testProduct || len(rep.Verdicts) == 0 {
		t.Fatalf("conformance.json: %v %+v", err, rep)
	}
	if !bytes.Contains(got[""], []byte(publicBase+"/p/"+testProduct+"/declaration.pub")) || !bytes.Contains(got[""], []byte("id=\"conformance\"")) {
		t.Error("the page does not link the public key or hold the conformance section")
	}
	if rh := got["/conformance.html"]; !bytes.Contains(rh, []byte("conformance report")) || !bytes.Contains(rh, []byte(rep.Verdicts[0].Provision)) ||
		bytes.Contains(rh, []byte("Key facts")) {
		t.Error("conformance.html is not the conformance report alone")
	}
	id, _ := label.KeyID(ed25519.PublicKey(pub))
	if !strings.Contains(html.UnescapeString(string(got[""])), id) {
		t.Errorf("the page does not show the key id %s", id)
	}
}

// TestPublicRoutesRefuse checks unknown products and files (404 with a clear message) and names
// that try to leave /p/ (400), for programs (JSON) and browsers (plain text).
func TestPublicRoutesRefuse(t *testing.T) {
	s := newStack(t)
	s.withPublicPages(t, publicBase)
	srv := s.serve()

	wantError(t, call(t, srv, http.MethodGet, "/p/toaster", nil, nil), http.StatusNotFound, apperr.NotFound, `no product named "toaster"`)
	wantError(t, call(t, srv, http.MethodGet, "/p/toaster/label.png", nil, nil), http.StatusNotFound, apperr.NotFound, `no product named "toaster"`)
	wantError(t, call(t, srv, http.MethodGet, "/p/"+testProduct+"/thermostat.key", nil, nil), http.StatusNotFound, apperr.NotFound, "no such file")
	r := call(t, srv, http.MethodGet, "/p/toaster", nil, map[string]string{"Accept": "text/html,application/xhtml+xml"})
	if ct, _, _ := mime.ParseMediaType(r.header.Get("Content-Type")); r.status != http.StatusNotFound || ct != "text/plain" || !strings.Contains(string(r.body), `no product named "toaster"`) {
		t.Errorf("browser asking for an unknown product: %d %q %q", r.status, r.header.Get("Content-Type"), r.body)
	}

	for _, path := range []string{
		"/p/%2e%2e", "/p/%2e%2e/label.svg", "/p/..%2f..%2fkeys%2fdeclaration%2fthermostat.key", "/p/..%2fkeys/declaration.pub",
		"/p/thermostat%2f..%2f..%2fpasswd/label.svg", "/p/thermo%5cstat/label.svg", "/p/thermostat%00/label.svg",
		"/p/%2fetc%2fpasswd", "/p/" + strings.Repeat("a", 65), "/p/th%C3%A9rmostat", "/p/thermo%20stat",
	} {
		r := call(t, srv, http.MethodGet, path, nil, nil)
		if r.status != http.StatusBadRequest {
			t.Errorf("GET %s: %d %s, want 400", path, r.status, r.body)
			continue
		}
		wantError(t, r, http.StatusBadRequest, apperr.Invalid, "invalid product")
	}
	// Unescaped dot segments are cleaned by the mux into a redirect that leads outside /p/:
	// nothing is served from the keys folder either way.
	for _, path := range []string{"/p/thermostat/../../keys/declaration/thermostat.key", "/p/../keys/snapshot.key"} {
		r := call(t, srv, http.MethodGet, path, nil, nil)
		if r.status == http.StatusOK || bytes.Contains(r.body, []byte("PRIVATE KEY")) {
			t.Errorf("GET %s: %d %q", path, r.status, r.body)
		}
	}
}

// TestPublicRoutesOff checks that a server without a transparency service serves no pages.
func TestPublicRoutesOff(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	wantError(t, call(t, srv, http.MethodGet, "/p/"+testProduct, nil, nil), http.StatusNotFound, apperr.NotFound, "no product pages")
}

// TestIndexListsProductPages checks that /p/ is a public page linking each product's public pages,
// with device-free, escaped content and the strict page policy.
func TestIndexListsProductPages(t *testing.T) {
	s := newStack(t)
	tr := s.withPublicPages(t, publicBase)
	s.api.Products = &product.Service{Store: s.db, Check: tr.CheckPolicy}
	srv := s.serve()
	r := call(t, srv, http.MethodGet, "/p/", nil, nil)
	if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /p/: %d %s", r.status, r.header.Get("Content-Type"))
	}
	if !strings.Contains(string(r.body), `href="/p/`+testProduct+`"`) {
		t.Errorf("index does not link %s's page:\n%s", testProduct, r.body)
	}
	if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP %q", csp)
	}
	if r := call(t, srv, http.MethodGet, "/nothing-here", nil, nil); r.status != http.StatusNotFound {
		t.Errorf("GET /nothing-here: %d, want 404", r.status)
	}
}
