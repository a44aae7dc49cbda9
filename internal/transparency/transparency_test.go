package transparency_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/label"
	"upkeep.dev/upkeep/internal/product"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/store/sqlite"
	"upkeep.dev/upkeep/internal/transparency"
	"upkeep.dev/upkeep/internal/tuf"
)

const testProduct = "thermostat"

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time)     { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }
func (c *clock) Add(d time.Duration) { c.Set(c.Now().Add(d)) }
func day(s string) time.Time         { t, _ := time.Parse(time.DateOnly, s); return t.Add(12 * time.Hour) }
func quiet() *slog.Logger            { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
func policyJSON(p product.Policy) []byte { return must(json.Marshal(p)) }

type fixture struct {
	db    *sqlite.DB
	svc   *transparency.Service
	clock *clock
	keys  string
}

func newFixture(t *testing.T, end string) *fixture {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	db, err := sqlite.Open(ctx, filepath.Join(dir, "upkeep.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f := &fixture{db: db, clock: &clock{t: day("2026-03-01")}, keys: filepath.Join(dir, "keys")}
	pol := product.Policy{SupportEnd: end, Delivery: product.DeliveryAutomatic, SecuritySeparate: true, Notification: []string{"app"},
		VDPURL: "https://example.com/vdp", VDPContact: "security@example.com", RemediationDays: 30}
	changes, err := product.ChangePolicy(testProduct, nil, pol, "admin", f.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := db.PutProduct(ctx, &product.Product{Name: testProduct, Policy: policyJSON(pol), UpdatedAt: f.clock.Now()}, time.Time{}, changes); err != nil {
		t.Fatal(err)
	}
	f.svc = &transparency.Service{Products: db, Releases: db, Devices: db, KeysDir: f.keys, PublicURL: "https://labels.example.com/",
		Now: f.clock.Now, Logger: quiet()}
	return f
}

func (f *fixture) release(t *testing.T, version, class string, secVer int64, at time.Time) {
	t.Helper()
	r := &release.Release{Product: testProduct, Version: version, HardwareIDs: []string{"hw"}, SecurityVersion: secVer, Class: class,
		Target: tuf.TargetName(testProduct, version, "fw.img"), Length: 1, SHA256: strings.Repeat("a", 64), SHA512: strings.Repeat("b", 128), TargetsVersion: secVer + 1, PublishedAt: at}
	if err := f.db.CreateRelease(context.Background(), r); err != nil {
		t.Fatal(err)
	}
}

// device adds a device that reports the image of version as f.release signs it.
func (f *fixture) device(t *testing.T, id, version string, seen time.Time) {
	t.Helper()
	f.deviceImage(t, id, tuf.TargetName(testProduct, version, "fw.img"), version, strings.Repeat("a", 64), seen)
}

// deviceImage adds a device that reports running target with this SHA-256 and version.
func (f *fixture) deviceImage(t *testing.T, id, target, version, sha string, seen time.Time) {
	t.Helper()
	d := &fleet.Device{ID: id, PublicKey: make([]byte, 32), Serial: id, Product: testProduct, HardwareID: "hw", Status: fleet.StatusAccepted,
		InstalledTarget: target, InstalledVer: version, InstalledSHA256: sha, LastSeen: seen, EnrolledAt: seen}
	if err := f.db.CreateDevice(context.Background(), d); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) publication(t *testing.T) *transparency.Publication {
	t.Helper()
	p, err := f.svc.Publication(context.Background(), testProduct)
	if err != nil {
		t.Fatalf("Publication: %v", err)
	}
	return p
}

// TestTransparencyEvidence checks that every figure comes from the stores: releases, devices
// and the policy, with the fleet share as SupportedMethod defines it.
func TestTransparencyEvidence(t *testing.T) {
	f := newFixture(t, "2031-12-31")
	now := f.clock.Now()
	f.release(t, "1.0.0", "security", 1, now.AddDate(-2, 0, 0)) // older than 12 months
	f.release(t, "1.1.0", "feature", 1, now.AddDate(0, -6, 0))
	f.release(t, "1.1.1", "security", 2, now.AddDate(0, -1, 0))
	f.device(t, "d1", "1.1.1", now.Add(-time.Hour))
	f.device(t, "d2", "1.0.0", now.Add(-24*time.Hour))    // older than the newest security release
	f.device(t, "d5", "1.1.0", now.Add(-24*time.Hour))    // a feature release older than it
	f.device(t, "d3", "0.9-dev", now.Add(-time.Hour))     // not a published release
	f.device(t, "d4", "1.1.1", now.Add(-60*24*time.Hour)) // not seen for 60 days
	p := f.publication(t)
	e := p.Declaration.Evidence
	if e.LastSecurityUpdate.Version != "1.1.1" || e.LastSecurityUpdate.Date != now.AddDate(0, -1, 0).Format(time.DateOnly) {
		t.Errorf("last security update %+v", e.LastSecurityUpdate)
	}
	if *e.SecurityUpdates12m.Value != 1 {
		t.Errorf("security updates in 12 months %v, want 1", *e.SecurityUpdates12m.Value)
	}
	if *e.Devices.Value != 5 || *e.ActiveDevices.Value != 4 {
		t.Errorf("devices %v, active %v; want 5, 4", *e.Devices.Value, *e.ActiveDevices.Value)
	}
	if e.FleetOnSupported.Value == nil || *e.FleetOnSupported.Value != 25 {
		t.Errorf("fleet on a supported release %+v, want 25 (1 of 4 active runs a release not older than the newest security release)", e.FleetOnSupported)
	}
	if !strings.Contains(e.FleetOnSupported.Method, label.SupportedMethod) {
		t.Errorf("fleet share method %q does not state the definition", e.FleetOnSupported.Method)
	}
	if !strings.Contains(e.FleetOnSupported.Note, "1 of these devices report an unknown image") {
		t.Errorf("fleet share note %q does not show d3's unknown image", e.FleetOnSupported.Note)
	}
	if e.AdvisoryToFixDays.Value != nil || !strings.Contains(e.AdvisoryToFixDays.Note, "not connected") {
		t.Errorf("time to patch without the hook: %+v", e.AdvisoryToFixDays)
	}
	m := p.Declaration.Mechanisms[0]
	if !m.Crypto.VerifiedOnDevice || !m.Crypto.AntiRollback || !m.AtomicAB || !m.AutomaticRollback || m.Crypto.SigAlg != "ed25519" {
		t.Errorf("mechanism %+v", m)
	}
	if p.PageURL != "https://labels.example.com/p/thermostat" {
		t.Errorf("page URL %q", p.PageURL)
	}

	// The hook feeds the time-to-patch figures once the vulnerability package provides it.
	fix := now.AddDate(0, -1, 0)
	f.svc.TimeToPatch = func(_ context.Context, prod string) ([]label.TimeToPatch, error) {
		return []label.TimeToPatch{{Advisory: "CVE-2026-0001", Published: fix.AddDate(0, 0, -4), FixReleased: fix}}, nil
	}
	f.clock.Add(transparency.DefaultInterval)
	if v := f.publication(t).Declaration.Evidence.AdvisoryToFixDays.Value; v == nil || *v != 4 {
		t.Errorf("median days advisory to fix with the hook: %v, want 4", v)
	}
}

// TestTransparencyStableUntilFactsChange checks that an unchanged testProduct keeps its signed
// declaration and ETag as the clock moves, and gets a new one when a release lands.
func TestTransparencyStableUntilFactsChange(t *testing.T) {
	f := newFixture(t, "2031-12-31")
	f.release(t, "1.0.0", "security", 1, f.clock.Now().AddDate(0, -2, 0))
	a := f.publication(t)
	f.clock.Add(time.Hour)
	b := f.publication(t)
	if a.ETag != b.ETag || string(a.Envelope) != string(b.Envelope) {
		t.Error("the publication changed with nothing but the clock")
	}
	f.release(t, "1.0.1", "security", 2, f.clock.Now().Add(-time.Minute))
	f.clock.Add(transparency.DefaultInterval)
	c := f.publication(t)
	if c.ETag == b.ETag || c.Declaration.Evidence.LastSecurityUpdate.Version != "1.0.1" || !c.Declaration.LastUpdated.After(a.Declaration.LastUpdated) {
		t.Errorf("after a new release: ETag %s (was %s), last %+v", c.ETag, b.ETag, c.Declaration.Evidence.LastSecurityUpdate)
	}
}

// TestTransparencyEndOfSupport checks the status, the fleet share (no release is supported
// any more) and the words on the label and the page once the support end date has passed.
func TestTransparencyEndOfSupport(t *testing.T) {
	f := newFixture(t, "2026-03-01")
	f.release(t, "1.0.0", "security", 1, f.clock.Now().AddDate(0, -2, 0))
	f.device(t, "d1", "1.0.0", f.clock.Now())
	if p := f.publication(t); p.Declaration.Status != label.StatusSupported || *p.Declaration.Evidence.FleetOnSupported.Value != 100 {
		t.Fatalf("on the last day of support: %s, %v", p.Declaration.Status, *p.Declaration.Evidence.FleetOnSupported.Value)
	}
	f.clock.Add(24 * time.Hour)
	p := f.publication(t)
	if p.Declaration.Status != label.StatusEndOfSupport || p.Report.Status != label.StatusEndOfSupport {
		t.Errorf("status %s, report %s", p.Declaration.Status, p.Report.Status)
	}
	if v := p.Declaration.Evidence.FleetOnSupported.Value; v == nil || *v != 0 {
		t.Errorf("fleet on a supported release after the end: %v, want 0", v)
	}
	if !strings.Contains(string(p.LabelSVG), "No longer receives security updates") {
		t.Error("the label does not say it no longer receives security updates")
	}
	if !strings.Contains(string(p.Page), "no longer receives security updates") {
		t.Error("the page does not say it no longer receives security updates")
	}
}

// TestTransparencyDeclarationKey checks the per-testProduct key: generated once (0600) and reused,
// or the operator's own when they put it there first.
func TestTransparencyDeclarationKey(t *testing.T) {
	f := newFixture(t, "2031-12-31")
	a := f.publication(t)
	path := filepath.Join(f.keys, transparency.KeyDir, testProduct+".key")
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("generated key: %v %v", fi, err)
	}
	pub, err := label.ParsePublicKey(a.PublicKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := label.Verify(a.Envelope, pub); err != nil {
		t.Fatal(err)
	}
	k, err := tuf.LoadKey(path)
	if err != nil || !k.Private.Public().(ed25519.PublicKey).Equal(pub) {
		t.Fatalf("published key is not the file's: %v", err)
	}

	// The operator replaces it with a key of their choosing: the next publication uses it.
	own, err := tuf.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	if err := tuf.SaveKey(path, own); err != nil {
		t.Fatal(err)
	}
	f.clock.Add(transparency.DefaultInterval)
	b := f.publication(t)
	if _, err := label.Verify(b.Envelope, own.Private.Public().(ed25519.PublicKey)); err != nil {
		t.Fatalf("not signed with the operator's key: %v", err)
	}
	wantID, _ := label.KeyID(own.Private.Public().(ed25519.PublicKey))
	if b.KeyID != wantID || b.ETag == a.ETag {
		t.Errorf("key id %s, want %s; ETag must change with the key", b.KeyID, wantID)
	}
}

// TestTransparencyRefuses checks bad names, unknown products and a stored policy that would
// give a declaration outside the schema.
func TestTransparencyRefuses(t *testing.T) {
	f := newFixture(t, "2031-12-31")
	ctx := context.Background()
	for _, name := range []string{"..", "a/b", "", "x y", strings.Repeat("a", 65)} {
		if _, err := f.svc.Publication(ctx, name); !apperr.Is(err, apperr.Invalid) {
			t.Errorf("Publication(%q): %v, want invalid", name, err)
		}
	}
	if _, err := f.svc.Publication(ctx, "toaster"); !apperr.Is(err, apperr.NotFound) || !strings.Contains(apperr.Message(err), `"toaster"`) {
		t.Errorf("unknown testProduct: %v", err)
	}
	if _, err := os.Stat(filepath.Join(f.keys, transparency.KeyDir, "toaster.key")); err == nil {
		t.Error("a key was generated for an unknown product")
	}
	// A policy whose VDP address is not a URL (stored behind the API's back: the API refuses it)
	// would give a declaration outside the schema. With no good publication yet, that is an
	// internal error naming the schema.
	cur, _ := f.db.FindProduct(ctx, testProduct)
	bad := product.Policy{SupportEnd: "2031-12-31", Delivery: product.DeliveryAutomatic, VDPURL: "not a url"}
	if err := f.db.PutProduct(ctx, &product.Product{Name: testProduct, Policy: policyJSON(bad), UpdatedAt: f.clock.Now().Add(time.Second)}, cur.UpdatedAt, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Publication(ctx, testProduct); !apperr.Is(err, apperr.Internal) || !strings.Contains(apperr.Message(err), "schema") {
		t.Errorf("invalid declaration: %v, want an internal error naming the schema", err)
	}
}

// TestTransparencyKeepsLastGood checks that a publication that cannot be rebuilt (a stored
// policy the schema refuses) does not take the pages down: the last good one is served.
func TestTransparencyKeepsLastGood(t *testing.T) {
	f := newFixture(t, "2031-12-31")
	ctx := context.Background()
	good := f.publication(t)
	cur, _ := f.db.FindProduct(ctx, testProduct)
	bad := product.Policy{SupportEnd: "2032-12-31", Delivery: product.DeliveryAutomatic, VDPURL: "security.example.com"}
	if err := f.db.PutProduct(ctx, &product.Product{Name: testProduct, Policy: policyJSON(bad), UpdatedAt: f.clock.Now().Add(time.Second)}, cur.UpdatedAt, nil); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		p, err := f.svc.Publication(ctx, testProduct)
		if err != nil || p.ETag != good.ETag {
			t.Fatalf("after a bad stored policy: %v, ETag %v; want the last good publication", err, p)
		}
		f.clock.Add(transparency.DefaultInterval)
	}
}

// countingStore counts the reads the service makes beyond the testProduct row.
type countingStore struct {
	*sqlite.DB
	mu                      sync.Mutex
	history, releases, devs int
}

func (c *countingStore) FindPolicyHistory(ctx context.Context, name string) ([]product.PolicyChange, error) {
	c.mu.Lock()
	c.history++
	c.mu.Unlock()
	return c.DB.FindPolicyHistory(ctx, name)
}

func (c *countingStore) FindReleases(ctx context.Context, f release.Filter) ([]*release.Release, error) {
	c.mu.Lock()
	c.releases++
	c.mu.Unlock()
	return c.DB.FindReleases(ctx, f)
}

func (c *countingStore) FindDevices(ctx context.Context, f fleet.DeviceFilter) ([]*fleet.Device, error) {
	c.mu.Lock()
	c.devs++
	c.mu.Unlock()
	return c.DB.FindDevices(ctx, f)
}

func (c *countingStore) gathers() (int, int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.history, c.releases, c.devs
}

// TestTransparencyGathersOncePerInterval checks that public requests, sequential or concurrent,
// read the history, releases, devices and time to patch at most once per interval, and at once
// after the policy changed.
func TestTransparencyGathersOncePerInterval(t *testing.T) {
	f := newFixture(t, "2031-12-31")
	ctx := context.Background()
	cs := &countingStore{DB: f.db}
	ttp := 0
	f.svc.Products, f.svc.Releases, f.svc.Devices = cs, cs, cs
	f.svc.TimeToPatch = func(context.Context, string) ([]label.TimeToPatch, error) { ttp++; return nil, nil }
	want := func(n int, when string) {
		t.Helper()
		h, r, d := cs.gathers()
		if h != n || r != n || d != n || ttp != n {
			t.Fatalf("%s: history %d, releases %d, devices %d, time to patch %d reads; want %d each", when, h, r, d, ttp, n)
		}
	}
	for range 50 {
		f.publication(t)
		f.clock.Add(time.Second)
	}
	want(1, "50 sequential requests within the interval")
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() { defer wg.Done(); f.svc.Publication(ctx, testProduct) }()
	}
	wg.Wait()
	want(1, "20 concurrent requests within the interval")
	f.clock.Add(transparency.DefaultInterval)
	f.publication(t)
	f.publication(t)
	want(2, "after the interval")
	// A policy change is seen at once.
	cur, _ := f.db.FindProduct(ctx, testProduct)
	pol, _ := product.ParsePolicy(cur.Policy)
	pol.ProductName = "Acme Thermostat T2"
	if err := f.db.PutProduct(ctx, &product.Product{Name: testProduct, Policy: policyJSON(*pol), UpdatedAt: f.clock.Now()}, cur.UpdatedAt, nil); err != nil {
		t.Fatal(err)
	}
	if p := f.publication(t); p.Declaration.Product.Name != "Acme Thermostat T2" {
		t.Errorf("after a policy change: testProduct name %q", p.Declaration.Product.Name)
	}
	want(3, "after a policy change")
}

// TestTransparencyUnknownImage: a device's report is only its claim. A device that says it runs
// the newest security release, with that release's version and target name but another image
// (another SHA-256), or a target name that is no release, is on an unknown image: it counts
// neither toward the supported share nor with the version it states.
func TestTransparencyUnknownImage(t *testing.T) {
	f := newFixture(t, "2031-12-31")
	now := f.clock.Now()
	f.release(t, "1.1.1", "security", 2, now.AddDate(0, -1, 0))
	f.device(t, "d1", "1.1.1", now.Add(-time.Hour))
	f.deviceImage(t, "d2", tuf.TargetName(testProduct, "1.1.1", "fw.img"), "1.1.1", strings.Repeat("c", 64), now.Add(-time.Hour))
	f.deviceImage(t, "d3", tuf.TargetName(testProduct, "9.9.9", "fw.img"), "1.1.1", strings.Repeat("a", 64), now.Add(-time.Hour))
	f.deviceImage(t, "d4", "", "1.1.1", "", now.Add(-time.Hour))
	e := f.publication(t).Declaration.Evidence
	if e.FleetOnSupported.Value == nil || *e.FleetOnSupported.Value != 25 {
		t.Errorf("fleet on a supported release %+v, want 25 (only d1 runs the signed image)", e.FleetOnSupported)
	}
	if !strings.Contains(e.FleetOnSupported.Note, "3 of these devices report an unknown image") {
		t.Errorf("fleet share note %q, want the 3 unknown images named", e.FleetOnSupported.Note)
	}
}
