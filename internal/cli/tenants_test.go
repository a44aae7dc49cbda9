package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/sim"
	"upkeep.dev/upkeep/internal/store/storetest"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/wire"
)

// tenantWorld is one tenant's objects, made through its own prefix.
type tenantWorld struct {
	*env
	name, base   string
	major        string
	dev          *sim.Device
	rel          *wire.Release
	campaign     string
	group, user  string
	enrollID     string
	ddiID        string // a DDI device (controller id) and its target token
	ddiToken     string
	adminTokenID string
}

// markers are the identifiers that only this tenant's objects have: a response to another
// tenant's credentials that contains one leaks.
func (w *tenantWorld) markers() []string {
	return []string{w.dev.Agent.State().DeviceID, w.rel.SHA256, w.rel.Target, w.campaign, w.group, w.user, w.enrollID, w.adminTokenID, w.ddiID, w.ddiToken}
}

// addTenant runs `upkeep tenants add NAME` against the default tenant and fills a tenant with a
// device (the real agent, enrolled at the tenant's prefix), a release, a group, a campaign, a
// product policy, an enrolment token and a user, each made through the tenant's prefix.
// Its releases are major.0.x, so that the two tenants' target names differ.
func addTenant(t *testing.T, def *env, name, major string) *tenantWorld {
	t.Helper()
	ctx := context.Background()
	keys := filepath.Join(def.dir, "keys-"+name)
	out := cli(t, "--server", def.srv.URL, "--token", def.srv.AdminToken, "tenants", "add", name, "--keys", keys)
	m := regexp.MustCompile(`its admin token \(shown once, keep it\): (\S+)`).FindStringSubmatch(out)
	if m == nil || !strings.Contains(out, def.srv.URL+"/t/"+name) {
		t.Fatalf("tenants add %s:\n%s", name, out)
	}
	w := &tenantWorld{major: major, name: name, base: def.srv.URL + "/t/" + name, group: "grp-" + name, user: "user-" + name}
	e := &env{t: t, dir: filepath.Join(def.dir, "world-"+name), keys: keys, srv: def.srv}
	e.cli = &client.Client{Base: w.base, Token: m[1]}
	var err error
	if e.targetsKey, err = tuf.LoadKey(filepath.Join(keys, tuf.FileTargetsKey)); err != nil {
		t.Fatal(err)
	}
	e.imageRoot, e.directorRoot = e.read(tuf.FileImageRoot), e.read(tuf.FileDirectorRoot)
	tok, err := e.cli.CreateEnrollToken(ctx, wire.EnrollTokenRequest{Name: "factory-" + name})
	if err != nil {
		t.Fatal(err)
	}
	e.enrollToken, w.enrollID = tok.Token, tok.ID
	w.env = e
	img := image(major+".0.0", 16<<10)
	w.rel = e.publish(major+".0.0", 1, img)
	w.dev, err = sim.NewDevice(ctx, filepath.Join(e.dir, "device"), sim.Options{
		Server: w.base, EnrollToken: e.enrollToken, ImageRoot: e.imageRoot, DirectorRoot: e.directorRoot,
		Identity: wire.Identity{Serial: "SN-" + name, Product: testProduct, HardwareID: testHardware},
		Factory:  img, FactoryTarget: w.rel.Target, FactoryVersion: w.rel.Version, FactorySecVer: w.rel.SecurityVersion, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatalf("device of tenant %s: %v", name, err)
	}
	id := w.dev.Agent.State().DeviceID
	if _, err := e.cli.PutGroup(ctx, wire.Group{Name: w.group}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cli.GroupDevices(ctx, w.group, wire.GroupDevices{Add: []string{id}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cli.SetPolicy(ctx, testProduct, map[string]any{"support_end": "2031-12-31"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cli.CreateUser(ctx, wire.UserRequest{Name: w.user, Role: "viewer", Password: "correct horse battery " + name}); err != nil {
		t.Fatal(err)
	}
	e.publish(major+".0.1", 2, image(major+".0.1", 16<<10))
	c, err := e.cli.CreateRollout(ctx, wire.CampaignSpec{Release: testProduct + "@" + major + ".0.1", Target: w.group})
	if err != nil {
		t.Fatal(err)
	}
	w.campaign = c.ID
	w.ddiID = "ddi-" + name
	dd, err := e.cli.CreateDDIDevice(ctx, wire.DDIDeviceRequest{ID: w.ddiID, Product: testProduct, HardwareID: testHardware})
	if err != nil {
		t.Fatal(err)
	}
	w.ddiToken = dd.TargetToken
	toks, err := e.cli.Tokens(ctx)
	if err != nil || len(toks) != 1 {
		t.Fatalf("tenant %s tokens: %v %+v", name, err, toks)
	}
	w.adminTokenID = toks[0].ID
	return w
}

// state is what the tenant's admin reads of its tenant: every list, the objects, the device's
// events. Token last-use times are left out (reading them is a use).
func (w *tenantWorld) state(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, p := range []string{"/api/v1/devices", "/api/v1/devices/" + w.dev.Agent.State().DeviceID, "/api/v1/devices/" + w.dev.Agent.State().DeviceID + "/events",
		"/api/v1/releases", "/api/v1/groups", "/api/v1/groups/" + w.group, "/api/v1/rollouts", "/api/v1/rollouts/" + w.campaign,
		"/api/v1/enroll-tokens", "/api/v1/users", "/api/v1/products", "/api/v1/products/" + testProduct + "/history", "/api/v1/image/targets",
		"/api/v1/trust/expiry", "/api/v1/waivers"} {
		st, body := request(t, http.MethodGet, w.base+p, w.cli.Token, nil)
		fmt.Fprintf(&b, "%s %d %s\n", p, st, body)
	}
	return b.String()
}

// request sends a request with an Authorization header ("Bearer T", "TargetToken T"; a bare
// token is a bearer token) and returns the status and body.
func request(t *testing.T, method, url, token string, body []byte) (int, string) {
	t.Helper()
	if token != "" && !strings.Contains(token, " ") {
		token = "Bearer " + token
	}
	hdr := map[string]string{}
	if token != "" {
		hdr["Authorization"] = token
	}
	return requestWith(t, method, url, hdr, body)
}

// requestWith sends a request with headers and returns the status and body.
func requestWith(t *testing.T, method, url string, hdr map[string]string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// fill puts w's object ids into a route pattern's wildcards.
func (w *tenantWorld) fill(pattern string) (method, path string) {
	method, path, _ = strings.Cut(pattern, " ")
	path = strings.TrimSuffix(path, "{$}")
	seg := strings.Split(path, "/")
	for i, s := range seg {
		if !strings.HasPrefix(s, "{") {
			continue
		}
		prev := ""
		if i > 0 {
			prev = seg[i-1]
		}
		switch name := strings.Trim(s, "{}."); {
		case name == "id" && prev == "devices" && strings.Contains(path, "/ddi/"), name == "controllerId":
			seg[i] = w.ddiID
		case name == "id" && prev == "devices":
			seg[i] = w.dev.Agent.State().DeviceID
		case name == "id" && prev == "rollouts":
			seg[i] = w.campaign
		case name == "id" && prev == "tokens":
			seg[i] = w.adminTokenID
		case name == "id" && prev == "enroll-tokens":
			seg[i] = w.enrollID
		case name == "name" && prev == "groups":
			seg[i] = w.group
		case name == "name" && prev == "users":
			seg[i] = w.user
		case name == "name" && prev == "products", name == "product":
			seg[i] = testProduct
		case name == "name" && prev == "targets":
			seg[i] = w.rel.Target
		case name == "version":
			seg[i] = w.rel.Version
		case name == "sha256":
			seg[i] = w.rel.SHA256
		case name == "file" && prev == "director":
			seg[i] = "1.root.json"
		case name == "file":
			seg[i] = "timestamp.json"
		case name == "action" && prev == "rollouts":
			seg[i] = "pause"
		case name == "action":
			seg[i] = "1"
		case name == "tenant":
			seg[i] = "DEFAULT"
		default:
			seg[i] = "x"
		}
	}
	return method, strings.Join(seg, "/")
}

// TestTenantsIsolation: two tenants, a and b, each with a device, a release, a group, a campaign,
// a product policy, an enrolment token, a user and a DDI device. For every registered route (of
// the tenants' stacks and the default's), a's admin token, a's device token, a's DDI target token,
// and on the enrolment and token routes a's enrolment token and a's device's signed requests,
// presented at b's prefix are refused (401/403/404) unless the route is public, and at a's prefix
// naming b's objects see nothing of b (an answer that names none of b's objects); b's state is
// the same afterwards; a's device cannot fetch b's director metadata or artifacts; the
// default tenant sees neither; the agent updates through a tenant's prefix.
func TestTenantsIsolation(t *testing.T) {
	def := newEnv(t)
	ctx := context.Background()
	a, b := addTenant(t, def, "a", "1"), addTenant(t, def, "b", "2")
	out := cli(t, "--server", def.srv.URL, "--token", def.srv.AdminToken, "tenants", "list")
	if !regexp.MustCompile(`(?m)^a +/t/a +\S+ \S+ +yes$`).MatchString(out) || !regexp.MustCompile(`(?m)^b +/t/b `).MatchString(out) {
		t.Fatalf("tenants list:\n%s", out)
	}
	// The default tenant is as before: none of the tenants' devices, releases or users.
	if devs, err := def.cli.Devices(ctx, ""); err != nil || len(devs) != 0 {
		t.Fatalf("default tenant devices: %v %+v", err, devs)
	}
	if rels, err := def.cli.Releases(ctx, ""); err != nil || len(rels) != 0 {
		t.Fatalf("default tenant releases: %v %+v", err, rels)
	}
	// A tenant's admin cannot manage tenants, nor reach the default tenant.
	if st, _ := request(t, http.MethodGet, a.base+"/api/v1/tenants", a.cli.Token, nil); st != http.StatusNotFound {
		t.Fatalf("GET /t/a/api/v1/tenants with a's admin token: %d, want 404", st)
	}
	if st, _ := request(t, http.MethodGet, def.srv.URL+"/api/v1/devices", a.cli.Token, nil); st != http.StatusUnauthorized {
		t.Fatalf("a's admin token at the default tenant: %d, want 401", st)
	}

	// a's user logs in at a's prefix, and its session cookie is a's prefix's only; at b's
	// prefix the same user and password are nobody.
	login := []byte(`{"user":"user-a","password":"correct horse battery a"}`)
	resp, err := http.Post(a.base+"/api/v1/login", "application/json", bytes.NewReader(login))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if c := resp.Cookies(); resp.StatusCode != http.StatusOK || len(c) != 1 || c[0].Path != "/t/a/" {
		t.Fatalf("login at /t/a: %d %+v, want a session cookie with path /t/a/", resp.StatusCode, c)
	}
	if st, _ := request(t, http.MethodPost, b.base+"/api/v1/login", "", login); st != http.StatusUnauthorized {
		t.Fatalf("a's user logs in at /t/b: %d", st)
	}

	// a's DDI device polls at a's prefix with its target token, and is nobody at b's.
	if st, got := request(t, http.MethodGet, a.base+"/DEFAULT/controller/v1/"+a.ddiID, "TargetToken "+a.ddiToken, nil); st != http.StatusOK {
		t.Fatalf("a's DDI device polls at /t/a: %d %s", st, got)
	}
	if st, _ := request(t, http.MethodGet, b.base+"/DEFAULT/controller/v1/"+a.ddiID, "TargetToken "+a.ddiToken, nil); st != http.StatusUnauthorized {
		t.Fatalf("a's DDI device polls at /t/b: %d, want 401", st)
	}

	before := b.state(t)
	aDevice := a.dev.Agent.State().Token
	creds := map[string]string{"admin": a.cli.Token, "device": aDevice, "DDI target": "TargetToken " + a.ddiToken}
	// Every route of a tenant's stack, and the default stack's own (the tenants routes).
	routes := def.srv.Tenant("b").Routes()
	if len(routes) < 50 {
		t.Fatalf("only %d routes", len(routes))
	}
	for _, rt := range def.srv.Routes() {
		if !slices.Contains(routes, rt) {
			routes = append(routes, rt)
		}
	}
	bMarkers := b.markers()
	leaks := func(reqPath, reqBody, got string) []string {
		var out []string
		for _, m := range bMarkers {
			if m != "" && strings.Contains(got, m) && !strings.Contains(reqPath, m) && !strings.Contains(reqBody, m) {
				out = append(out, m)
			}
		}
		return out
	}
	// A device of a's with its key at hand: its signed enrolment and token requests (which carry
	// no bearer token) are its credentials on those two routes.
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	aID := auth.DeviceID(pub)
	enrollBody := func() []byte {
		return signed(t, key, wire.EnrollPayload{PublicKey: hex.EncodeToString(pub), Time: time.Now().UTC(), Identity: wire.Identity{Serial: "SN-a-raw", Product: testProduct, HardwareID: testHardware}})
	}
	if st, got := requestWith(t, http.MethodPost, a.base+"/device/v1/enroll", map[string]string{wire.HeaderEnrollToken: a.enrollToken}, enrollBody()); st != http.StatusOK {
		t.Fatalf("enrol at /t/a: %d %s", st, got)
	}
	body := []byte(`{}`)
	for _, rt := range routes {
		method, path := b.fill(rt.Pattern)
		var reqBody []byte
		if method == http.MethodPost || method == http.MethodPut {
			reqBody = body
		}
		send := func(base, tok string) (int, string) {
			switch rt.Pattern {
			case "POST /device/v1/enroll": // a's enrolment token and a signed enrolment
				reqBody = enrollBody()
				return requestWith(t, method, base+path, map[string]string{wire.HeaderEnrollToken: a.enrollToken}, reqBody)
			case "POST /device/v1/token": // a's device's signed token request
				reqBody = signed(t, key, wire.TokenPayload{DeviceID: aID, Time: time.Now().UTC()})
				return requestWith(t, method, base+path, nil, reqBody)
			}
			return request(t, method, base+path, tok, reqBody)
		}
		// At b's prefix, with a's admin token and a's device token: refused, whatever the
		// route, unless it is public (the same for everyone, as it is without tenants).
		for who, tok := range creds {
			st, got := send(b.base, tok)
			public := rt.Permission == "none" || !strings.HasPrefix(path, "/api/") && !strings.HasPrefix(path, "/device/") && !strings.Contains(path, "/controller/")
			if public {
				if l := leaks(path, string(reqBody), got); len(l) > 0 && !strings.HasPrefix(path, "/repo/image/") {
					t.Errorf("%s at /t/b with a's %s token (public route): %d, names b's %v", rt.Pattern, who, st, l)
				}
				continue
			}
			if !slices.Contains([]int{401, 403, 404}, st) {
				t.Errorf("%s at /t/b with a's %s token: %d %.200s, want it refused", rt.Pattern, who, st, got)
			}
		}
		// At a's prefix naming b's objects: a's own store answers, which has none of them. a's
		// audit trail is the exception: it records what a's callers asked for, and this walk
		// has just asked a for b's ids; those records are a's own (b's trail is in b's store,
		// checked at b's prefix above), in the API and in the console's audit page alike.
		audited := strings.HasPrefix(path, "/api/v1/audit") || strings.HasPrefix(path, "/admin/audit")
		for who, tok := range creds {
			st, got := send(a.base, tok)
			if l := leaks(path, string(reqBody), got); len(l) > 0 && !audited {
				t.Errorf("%s at /t/a naming b's objects with a's %s token: %d, names b's %v: %.300s", rt.Pattern, who, st, l, got)
			}
			if st >= 200 && st < 300 && method == http.MethodGet && strings.Contains(rt.Pattern, "{") && !strings.HasPrefix(path, "/repo/") &&
				!strings.HasPrefix(path, "/p/") && !strings.HasPrefix(path, "/.well-known/") && !strings.HasPrefix(path, "/device/v1/director/") {
				// A GET of one of b's objects by id succeeds at a's prefix only as an empty answer.
				if strings.Contains(got, b.dev.Agent.State().DeviceID) || strings.Contains(got, b.campaign) {
					t.Errorf("%s at /t/a with a's %s token found b's object: %.300s", rt.Pattern, who, got)
				}
			}
		}
	}
	if after := b.state(t); after != before {
		t.Errorf("b's state changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// a's device cannot fetch b's director metadata or artifacts, at b's prefix nor at its own.
	for _, u := range []string{b.base + "/device/v1/director/timestamp.json", b.base + "/device/v1/director/1.root.json", b.base + "/device/v1/targets/" + b.rel.Target} {
		if st, _ := request(t, http.MethodGet, u, aDevice, nil); st != http.StatusUnauthorized {
			t.Errorf("a's device GET %s: %d, want 401", u, st)
		}
	}
	if st, _ := request(t, http.MethodGet, a.base+"/device/v1/targets/"+b.rel.Target, aDevice, nil); st != http.StatusForbidden && st != http.StatusNotFound {
		t.Errorf("a's device GET its own prefix's targets/%s (b's target): %d, want 403 or 404", b.rel.Target, st)
	}

	// Each tenant's agent updates through its prefix (the agent and devclient join paths onto
	// a base URL that has one), and b's device still works after the walk.
	for _, w := range []*tenantWorld{a, b} {
		r := w.publish(w.major+".0.2", 3, image(w.major+".0.2", 20<<10))
		w.deploy(r, w.dev.Agent.State().DeviceID)
		if err := w.dev.Agent.Cycle(ctx); err != nil {
			t.Fatalf("tenant %s device cycle: %v", w.name, err)
		}
		if got, _ := w.dev.ActiveImageSHA256(ctx); got != r.SHA256 || w.dev.Agent.State().Installed.Version != r.Version {
			t.Fatalf("tenant %s device did not install its x.0.2: %+v", w.name, w.dev.Agent.State())
		}
	}
}

// TestTenantsRestartAndNames: tenant names follow the DNS label rules, only the default's admin
// adds tenants, a name is taken once, and a restarted server serves its tenants again with the
// same admin tokens.
func TestTenantsRestartAndNames(t *testing.T) {
	def := newEnv(t)
	g := []string{"--server", def.srv.URL, "--token", def.srv.AdminToken}
	for _, bad := range []string{"Acme", "-a", "a-", "a_b", strings.Repeat("a", 64), "a.b"} {
		if _, err := cliErr(append(g, "tenants", "add", "--keys", filepath.Join(def.dir, "k-bad"), "--", bad)...); err == nil || !strings.Contains(err.Error(), "DNS label") {
			t.Errorf("tenants add %q: %v, want a DNS label error", bad, err)
		}
	}
	viewer := strings.TrimSpace(strings.SplitN(cli(t, append(g, "tokens", "create", "--name", "v", "--role", "viewer")...), "\n", 2)[0])
	if _, err := cliErr("--server", def.srv.URL, "--token", viewer, "tenants", "list"); err == nil || !strings.Contains(err.Error(), "tenants:read") {
		t.Errorf("a viewer lists tenants: %v", err)
	}
	w := addTenant(t, def, "acme-1", "1")
	if _, err := cliErr(append(g, "tenants", "add", "acme-1", "--keys", w.keys)...); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("tenants add twice: %v", err)
	}
	// Restart on the same folders: the tenant is served again, by the same token.
	cfg := def.srv.Config
	def.srv.Close()
	srv, err := server.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	devs, err := (&client.Client{Base: srv.URL + "/t/acme-1", Token: w.cli.Token}).Devices(context.Background(), "")
	if err != nil || len(devs) != 2 {
		t.Fatalf("tenant after a restart: %v %+v", err, devs)
	}
}

// TestTenantsReplicasPostgres: two replicas share a PostgreSQL database (and, as replicas must,
// the keys folder with the device-token key); a tenant added through one is served by the other
// within a poll of the tenants list, from its own schema and with keys the other replica
// unsealed from the database; a device enrolled through one replica checks in through the other.
func TestTenantsReplicasPostgres(t *testing.T) {
	dsn := storetest.PostgresDSN(t)
	name := fmt.Sprintf("pg-%d", time.Now().UnixNano()%1e9)
	t.Cleanup(func() {
		if c, err := pgx.Connect(context.Background(), storetest.PostgresServer(t)); err == nil {
			c.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+server.TenantSchema(name)+" CASCADE")
			c.Close(context.Background())
		}
	})
	one := newEnvWith(t, func(c *server.Config) { c.Database, c.TenantsEvery = dsn, 100*time.Millisecond })
	cfg := one.srv.Config
	cfg.DataDir, cfg.Addr = filepath.Join(one.dir, "data-two"), "127.0.0.1:0"
	two, err := server.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer two.Close()
	// A first attempt whose online keys the roots do not trust fails, and leaves no schema behind
	// (a root stored by it would refuse the next attempt's keys).
	badKeys := filepath.Join(one.dir, "keys-bad")
	if _, err := tuf.InitKeySet(badKeys, 1, 1, tuf.DefaultLifetimes(), time.Now()); err != nil {
		t.Fatal(err)
	}
	bad := wire.TenantRequest{Name: name, Keys: map[string][]byte{}}
	for _, f := range tenantOnlineFiles {
		bad.Keys[f], _ = os.ReadFile(filepath.Join(badKeys, f))
	}
	bad.Keys[tuf.FileSnapshotKey] = one.read(tuf.FileSnapshotKey)
	if _, err := one.cli.AddTenant(context.Background(), bad); err == nil {
		t.Fatal("a tenant whose root does not trust its snapshot key was added")
	}
	w := addTenant(t, one, name, "1")
	deadline := time.Now().Add(10 * time.Second)
	for two.Tenant(name) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the other replica does not serve the new tenant")
		}
		time.Sleep(50 * time.Millisecond)
	}
	other := &client.Client{Base: two.URL + "/t/" + name, Token: w.cli.Token}
	devs, err := other.Devices(context.Background(), "")
	if err != nil || len(devs) != 2 {
		t.Fatalf("tenant devices through the other replica: %v %+v", err, devs)
	}
	// The device's token (issued by replica one) is good on replica two: the same tenant key.
	st, body := request(t, http.MethodPost, two.URL+"/t/"+name+"/device/v1/checkin", w.dev.Agent.State().Token, []byte(`{}`))
	if st != http.StatusOK && st != http.StatusNotModified {
		t.Fatalf("check-in through the other replica: %d %s", st, body)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "tenants", name, "keys", tuf.FileSnapshotKey)); err != nil {
		t.Fatalf("the other replica's tenant keys: %v", err)
	}
}
