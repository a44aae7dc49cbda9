package server

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/wire"
)

func TestValidTenantName(t *testing.T) {
	for name, ok := range map[string]bool{
		"a": true, "acme": true, "acme-1": true, "0": true, strings.Repeat("a", 63): true,
		"": false, "Acme": false, "-a": false, "a-": false, "a_b": false, "a.b": false, "a/b": false,
		strings.Repeat("a", 64): false, "é": false, "a b": false, "..": false,
	} {
		if err := ValidTenantName(name); (err == nil) != ok {
			t.Errorf("ValidTenantName(%q) = %v, want ok %v", name, err, ok)
		}
	}
}

// TestTenantSchema: every valid name has a schema PostgreSQL takes whole (63 bytes at most), and
// two names never share one, long names that differ only at their end included.
func TestTenantSchema(t *testing.T) {
	seen := map[string]string{}
	for _, name := range []string{"a", "a-b", "ab", strings.Repeat("a", 49), strings.Repeat("a", 50), strings.Repeat("a", 62) + "b", strings.Repeat("a", 62) + "c", strings.Repeat("a", 63)} {
		s := TenantSchema(name)
		if len(s) > 63 || strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
			t.Errorf("schema of %q: %q", name, s)
		}
		if other, ok := seen[s]; ok {
			t.Errorf("%q and %q share schema %s", name, other, s)
		}
		seen[s] = name
	}
}

// TestTenantKeysSealed: sealed keys open with the installation's key and the tenant's name only.
func TestTenantKeysSealed(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	files := map[string][]byte{"snapshot.key": []byte("secret")}
	sealed, err := sealTenantKeys(key, "acme", files)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("secret")) {
		t.Fatal("sealed keys hold the plain key")
	}
	got, err := unsealTenantKeys(key, "acme", sealed)
	if err != nil || string(got["snapshot.key"]) != "secret" {
		t.Fatalf("unseal: %v %q", err, got)
	}
	if _, err := unsealTenantKeys(bytes.Repeat([]byte{8}, 32), "acme", sealed); err == nil {
		t.Error("another installation's key opened the tenant's keys")
	}
	if _, err := unsealTenantKeys(key, "other", sealed); err == nil {
		t.Error("another tenant's name opened the tenant's keys")
	}
	if _, err := unsealTenantKeys(key, "acme", sealed[:5]); err == nil {
		t.Error("truncated sealed keys opened")
	}
}

// testFront is a front handler over a default handler and a tenant "acme", each answering with
// its name and the path it saw.
func testFront() http.Handler {
	ts := newTenants(&Server{})
	echo := func(who string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, who+" "+r.URL.Path) })
	}
	ts.put("acme", &Server{handler: echo("acme")})
	return ts.front(echo("default"))
}

func TestTenantFront(t *testing.T) {
	h := testFront()
	for path, want := range map[string]string{
		"/t/acme/device/v1/checkin": "acme /device/v1/checkin",
		"/t/acme/api/v1/devices":    "acme /api/v1/devices",
		"/t/acmex/api/v1/devices":   "default /t/acmex/api/v1/devices",
		"/t/other/healthz":          "default /t/other/healthz",
		"/device/v1/checkin":        "default /device/v1/checkin",
		"/t/":                       "default /t/",
		"/tacme/x":                  "default /tacme/x",
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://x"+path, nil))
		if got := rec.Body.String(); got != want {
			t.Errorf("%s: served %q, want %q", path, got, want)
		}
	}
}

// FuzzTenantFront: whatever the path, the front handler gives a request to the tenant only under
// its prefix, with the prefix stripped, and to the default handler otherwise, untouched.
func FuzzTenantFront(f *testing.F) {
	for _, s := range []string{"/t/acme/device/v1/checkin", "/t/acme", "/t/acme/", "/t//", "/t/acme%2fx/y", "/t/ACME/x", "/t/acme/../b", "/"} {
		f.Add(s)
	}
	h := testFront()
	f.Fuzz(func(t *testing.T, path string) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		req, err := http.NewRequest(http.MethodGet, "http://x", nil)
		if err != nil {
			t.Skip()
		}
		req.URL.Path = path
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		got := rec.Body.String()
		switch {
		case strings.HasPrefix(path, "/t/acme/") || path == "/t/acme":
			if rec.Code == http.StatusOK && got != "acme "+strings.TrimPrefix(path, "/t/acme") {
				t.Fatalf("%q: served %q", path, got)
			}
		default:
			if got != "default "+path {
				t.Fatalf("%q: served %q, want the default handler", path, got)
			}
		}
	})
}

// TestAddTenant: a tenant's stack opens with the online keys of its own key set, under its own
// data folder, with its own admin token; the name is taken once; a request with an offline key,
// a missing file, or a bad name is refused and leaves nothing behind; the default's DDI gateway
// token is not the tenant's.
func TestAddTenant(t *testing.T) {
	s, req := openForTenant(t, func(c *Config) { c.DDI.GatewayToken = "gateway-of-the-default" })
	defer s.Close()
	cfg := s.Config
	tk := filepath.Join(filepath.Dir(cfg.KeysDir), "keys-acme")
	ctx := context.Background()
	bad := func(mod func(r *wire.TenantRequest), code apperr.Code) {
		t.Helper()
		r := wire.TenantRequest{Name: req.Name, Keys: map[string][]byte{}}
		for k, v := range req.Keys {
			r.Keys[k] = v
		}
		mod(&r)
		if _, err := s.tenants.AddTenant(ctx, r); !apperr.Is(err, code) {
			t.Errorf("AddTenant: %v, want %s", err, code)
		}
		if _, err := os.Stat(filepath.Join(cfg.DataDir, "tenants", r.Name)); err == nil {
			t.Errorf("a refused tenant left its folder")
		}
	}
	bad(func(r *wire.TenantRequest) { r.Name = "Acme" }, apperr.Invalid)
	bad(func(r *wire.TenantRequest) {
		r.Keys[tuf.FileTargetsKey], _ = os.ReadFile(filepath.Join(tk, tuf.FileTargetsKey))
	}, apperr.Invalid)
	bad(func(r *wire.TenantRequest) { delete(r.Keys, tuf.FileDirectorKey) }, apperr.Invalid)
	bad(func(r *wire.TenantRequest) { r.Keys[tuf.FileSnapshotKey] = []byte("not a key") }, apperr.Invalid)
	// The default's online keys with the tenant's roots: the stack does not open.
	bad(func(r *wire.TenantRequest) {
		r.Keys[tuf.FileSnapshotKey], _ = os.ReadFile(filepath.Join(cfg.KeysDir, tuf.FileSnapshotKey))
	}, apperr.Invalid)

	created, err := s.tenants.AddTenant(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if created.AdminToken == "" || created.Tenant.Path != "/t/acme" {
		t.Fatalf("created %+v", created)
	}
	if _, err := s.tenants.AddTenant(ctx, req); !apperr.Is(err, apperr.Conflict) {
		t.Errorf("second AddTenant: %v, want conflict", err)
	}
	ts := s.Tenant("acme")
	if ts == nil || ts.Config.DDI.GatewayToken != "" || ts.URL != s.URL+"/t/acme" {
		t.Fatalf("tenant stack %+v", ts)
	}
	if ts.DB == s.DB || ts.Config.DataDir != filepath.Join(cfg.DataDir, "tenants", "acme") {
		t.Fatalf("tenant data in %s", ts.Config.DataDir)
	}
	list, err := s.tenants.Tenants(ctx)
	if err != nil || len(list) != 1 || !list[0].Serving {
		t.Fatalf("tenants %v %+v", err, list)
	}
	// Close closes the tenants' stacks and waits for their jobs.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if ts.Jobs() != 0 {
		t.Errorf("%d jobs of the tenant still run after Close", ts.Jobs())
	}
}

// openForTenant opens a default stack in a temporary folder, and makes the request that adds
// tenant "acme" with a key set of its own (in the folder's keys-acme).
func openForTenant(tb testing.TB, configure func(*Config)) (*Server, wire.TenantRequest) {
	tb.Helper()
	dir := tb.TempDir()
	cfg := DefaultConfig()
	cfg.Addr, cfg.DataDir, cfg.KeysDir = "127.0.0.1:0", filepath.Join(dir, "data"), filepath.Join(dir, "keys")
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if configure != nil {
		configure(&cfg)
	}
	tk := filepath.Join(dir, "keys-acme")
	for _, d := range []string{cfg.KeysDir, tk} {
		if _, err := tuf.InitKeySet(d, 1, 1, tuf.DefaultLifetimes(), time.Now()); err != nil {
			tb.Fatal(err)
		}
	}
	s, err := Open(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	req := wire.TenantRequest{Name: "acme", Keys: map[string][]byte{}}
	for _, f := range tenantFiles {
		req.Keys[f], _ = os.ReadFile(filepath.Join(tk, f))
	}
	return s, req
}
