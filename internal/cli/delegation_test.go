package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/delta"
	"upkeep.dev/upkeep/internal/sim"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/wire"
)

// publishAs publishes a release of product signed with the given keys (nil: the top-level
// targets key only, as before delegations).
func (e *env) publishAs(product, version string, secVer int64, content []byte, productKeys []*tuf.Key) (*wire.Release, error) {
	f := filepath.Join(e.t.TempDir(), "firmware-"+version+".img")
	if err := os.WriteFile(f, content, 0o644); err != nil {
		e.t.Fatal(err)
	}
	return e.cli.Publish(context.Background(), client.PublishOptions{
		File: f, TargetsKey: e.targetsKey, ProductKeys: productKeys, TrustedRoot: e.imageRoot, Expires: 30 * 24 * time.Hour,
		NoIndex: true,
		Custom:  uptane.TargetCustom{Product: product, HardwareIDs: []string{testHardware}, Version: version, SecurityVersion: secVer, Class: uptane.ClassSecurity},
	})
}

// productKeys reads a product's current key files from the env's key folder.
func (e *env) productKeys(product string) []*tuf.Key {
	e.t.Helper()
	ks, _, err := tuf.LoadProductKeys(e.keys, product)
	if err != nil {
		e.t.Fatal(err)
	}
	return ks
}

// updateTo deploys rel to d and runs one cycle, which must install it.
func (e *env) updateTo(d *sim.Device, rel *wire.Release) {
	e.t.Helper()
	e.deploy(rel, d.Agent.State().DeviceID)
	if err := d.Agent.Cycle(context.Background()); err != nil {
		e.t.Fatalf("cycle to %s: %v", rel.Version, err)
	}
	if st := d.Agent.State(); st.Installed.Version != rel.Version || st.Phase != "idle" {
		e.t.Fatalf("installed %+v phase %s, want %s (last error %q)", st.Installed, st.Phase, rel.Version, st.LastError)
	}
}

// TestDelegationLifecycle runs the whole life of a product delegation against a real server and
// a device enrolled before it, whose agent state holds a flat repository's metadata: the
// migration (`keys delegate` moves the published targets into the product's role), publishing
// with the product key, a key rotation, rotating back, a threshold of two, and the undo. The
// device follows each step without being provisioned again.
func TestDelegationLifecycle(t *testing.T) {
	e := newEnv(t)
	g := []string{"--server", e.srv.URL, "--token", e.srv.AdminToken}
	v1, v2 := image("1.0.0", 8<<10), image("1.0.1", 8<<10)
	r1 := e.publish("1.0.0", 1, v1)
	d := e.device("SN-1", v1, r1)
	e.updateTo(d, e.publish("1.0.1", 2, v2)) // today's agent state: a flat targets file
	imageMeta := filepath.Join(e.dir, "devices", "SN-1", "state", "image")
	trusted := func(role string) *metadata.Metadata[metadata.TargetsType] {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(imageMeta, role+".json"))
		if err != nil {
			t.Fatalf("the device's trusted %s: %v", role, err)
		}
		md, err := tuf.ParseTargets(b)
		if err != nil {
			t.Fatal(err)
		}
		return md
	}
	if top := trusted(tuf.Targets); len(top.Signed.Targets) != 2 || top.Signed.Delegations != nil {
		t.Fatalf("before the migration the device trusts %d top-level targets, delegations %v", len(top.Signed.Targets), tuf.Roles(top))
	}

	// Migration: the product's two targets move into its role; the bin is created.
	out := cli(t, append(g, "keys", "delegate", "--dir", e.keys, "--product", testProduct)...)
	if !strings.Contains(out, "delegated to 1 keys, threshold 1") {
		t.Fatalf("keys delegate: %s", out)
	}
	top, err := tuf.ParseTargets(mustCurrent(t, e.cli, tuf.Targets))
	if err != nil {
		t.Fatal(err)
	}
	if len(top.Signed.Targets) != 0 || tuf.DelegatedRole(top, tuf.BinRole(testProduct)) == nil {
		t.Fatalf("top-level targets after migration: %d targets, delegations %v", len(top.Signed.Targets), tuf.Roles(top))
	}
	prod, err := tuf.ParseTargets(mustCurrent(t, e.cli, tuf.ProductRole(testProduct)))
	if err != nil {
		t.Fatal(err)
	}
	if len(prod.Signed.Targets) != 2 {
		t.Fatalf("product role holds %d targets, want 2", len(prod.Signed.Targets))
	}

	// The targets key alone no longer publishes the product; its key does.
	if _, err := e.publishAs(testProduct, "1.0.2", 3, image("1.0.2", 8<<10), nil); err == nil || !strings.Contains(err.Error(), "offline keys are needed") {
		t.Fatalf("publish without the product key: %v", err)
	}
	k1 := e.productKeys(testProduct)
	r3, err := e.publishAs(testProduct, "1.0.2", 3, image("1.0.2", 8<<10), k1)
	if err != nil {
		t.Fatal(err)
	}
	e.updateTo(d, r3)
	// The same device, with the same trust root, now trusts the delegated roles.
	if top := trusted(tuf.Targets); len(top.Signed.Targets) != 0 || tuf.DelegatedRole(top, tuf.BinRole(testProduct)) == nil {
		t.Fatalf("after the migration the device trusts top-level targets with %d targets", len(top.Signed.Targets))
	}
	if prod := trusted(tuf.ProductRole(testProduct)); prod.Signed.Targets[r3.Target] == nil {
		t.Fatalf("the device's trusted product role lacks %s", r3.Target)
	}
	// The release CLI finds the product key next to the targets key.
	fw := filepath.Join(t.TempDir(), "fw-1.0.3.img")
	if err := os.WriteFile(fw, image("1.0.3", 8<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	cli(t, append(g, "release", "publish", fw, "--key", filepath.Join(e.keys, tuf.FileTargetsKey), "--product", testProduct,
		"--hardware", testHardware, "--version", "1.0.3", "--security-version", "4", "--no-index")...)

	// Rotation: the old key is refused, the new one publishes; rotating back restores the old.
	out = cli(t, append(g, "keys", "delegate", "--dir", e.keys, "--product", testProduct, "--rotate")...)
	retired := strings.TrimSuffix(strings.Fields(strings.SplitN(out, " moved to ", 2)[1])[0], "")
	if _, err := e.publishAs(testProduct, "1.0.4", 5, image("1.0.4", 8<<10), k1); !apperr.Is(err, apperr.Verification) {
		t.Fatalf("publish with the rotated-out key: %v, want a verification error", err)
	}
	k2 := e.productKeys(testProduct)
	if k2[0].ID == k1[0].ID {
		t.Fatal("rotation kept the key")
	}
	r5, err := e.publishAs(testProduct, "1.0.4", 5, image("1.0.4", 8<<10), k2)
	if err != nil {
		t.Fatal(err)
	}
	e.updateTo(d, r5)
	cli(t, append(g, "keys", "delegate", "--dir", e.keys, "--product", testProduct, "--use-key", filepath.Join(retired, tuf.ProductKeyFile(testProduct, 1)))...)
	if k := e.productKeys(testProduct); len(k) != 1 || k[0].ID != k1[0].ID {
		t.Fatalf("rotating back: keys %v", k)
	}
	// The delegated roles expire like the top-level targets; the same ceremony renews them.
	out = cli(t, append(g, "keys", "status")...)
	if !strings.Contains(out, tuf.ProductRole(testProduct)) || !strings.Contains(out, "keys delegate --product "+testProduct) {
		t.Fatalf("keys status does not list the product role and how to renew it:\n%s", out)
	}
	_, before := mustRole(t, e, tuf.ProductRole(testProduct))
	cli(t, append(g, "keys", "delegate", "--dir", e.keys, "--product", testProduct)...)
	if _, after := mustRole(t, e, tuf.ProductRole(testProduct)); after != before+1 {
		t.Fatalf("renewal: product role version %d, want %d", after, before+1)
	}

	// A threshold of two: one signature is not enough.
	cli(t, append(g, "keys", "delegate", "--dir", e.keys, "--product", testProduct, "--rotate", "--keys", "2", "--threshold", "2")...)
	k3 := e.productKeys(testProduct)
	if _, err := e.publishAs(testProduct, "1.0.5", 6, image("1.0.5", 8<<10), k3[:1]); !apperr.Is(err, apperr.Verification) {
		t.Fatalf("publish with one of two keys: %v, want a verification error", err)
	}
	r6, err := e.publishAs(testProduct, "1.0.5", 6, image("1.0.5", 8<<10), k3)
	if err != nil {
		t.Fatal(err)
	}
	e.updateTo(d, r6)

	// Undo: the targets go back into the top-level targets, which the targets key signs again.
	cli(t, append(g, "keys", "delegate", "--dir", e.keys, "--product", testProduct, "--undo")...)
	top, err = tuf.ParseTargets(mustCurrent(t, e.cli, tuf.Targets))
	if err != nil {
		t.Fatal(err)
	}
	if len(top.Signed.Targets) != 6 || top.Signed.Delegations != nil {
		t.Fatalf("top-level targets after undo: %d targets, delegations %v", len(top.Signed.Targets), tuf.Roles(top))
	}
	r7, err := e.publishAs(testProduct, "1.0.6", 7, image("1.0.6", 8<<10), nil)
	if err != nil {
		t.Fatal(err)
	}
	e.updateTo(d, r7)
	// And delegating again starts the role above every version it had.
	cli(t, append(g, "keys", "delegate", "--dir", e.keys, "--product", testProduct)...)
	r8, err := e.publishAs(testProduct, "1.0.7", 8, image("1.0.7", 8<<10), e.productKeys(testProduct))
	if err != nil {
		t.Fatal(err)
	}
	e.updateTo(d, r8)
}

func mustCurrent(t *testing.T, c *client.Client, role string) []byte {
	t.Helper()
	var raw []byte
	path := "/api/v1/image/targets"
	if role != tuf.Targets {
		path += "?role=" + role
	}
	if err := c.Do(context.Background(), "GET", path, nil, &raw); err != nil {
		t.Fatal(err)
	}
	return raw
}

func mustRole(t *testing.T, e *env, role string) ([]byte, int64) {
	t.Helper()
	raw := mustCurrent(t, e.cli, role)
	md, err := tuf.ParseTargets(raw)
	if err != nil {
		t.Fatal(err)
	}
	return raw, md.Signed.Version
}

// TestDelegatedDeltas: delta targets belong to the product's role. Chunk indexes and patches
// published with a release, and patches the server generates afterwards, which `release deltas
// --sign` checks and signs, are signed with the product's key; the director finds them through the delegations and devices use them.
func TestDelegatedDeltas(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	g := []string{"--server", e.srv.URL, "--token", e.srv.AdminToken}
	v1 := fsImage(21, 2<<20)
	r1 := e.publishDelta("1.0.0", 1, v1, nil) // before the delegation: moved with its index
	d1, d2 := e.device("SN-1", v1, r1), e.device("SN-2", v1, r1)
	cli(t, append(g, "keys", "delegate", "--dir", e.keys, "--product", testProduct)...)

	v2 := nextImage(v1)
	r2 := e.publishDelta("1.0.1", 2, v2, map[string][]byte{"1.0.0": v1})
	e.deltaTarget(delta.PatchName(r2.Target, "1.0.0"))
	e.updateTo(d1, r2)
	if evs := e.downloadEvents(d1.Agent.State().DeviceID); !strings.Contains(evs[len(evs)-1], "delta "+delta.FormatPatch+": downloaded") {
		t.Fatalf("download events %q: want the patch used", evs)
	}

	v3 := nextImage(v2)
	r3 := e.publishDelta("1.0.2", 3, v3, nil)
	// The server generates the patch from 1.0.0 by itself; the release engineer checks and signs it.
	ref := testProduct + "@1.0.2"
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if jobs, err := e.cli.DeltaJobs(ctx, testProduct, "1.0.2"); err != nil || len(jobs) > 0 {
			break
		} else if time.Now().After(deadline) {
			t.Fatal("no deltas planned")
		}
	}
	cli(t, append(g, "release", "deltas", ref, "--wait", "60s")...)
	out := cli(t, append(g, "release", "deltas", ref, "--sign", "--key", filepath.Join(e.keys, tuf.FileTargetsKey), "--top", "1")...)
	if !strings.Contains(out, "signed "+delta.PatchName(r3.Target, "1.0.0")) {
		t.Fatalf("release deltas: %s", out)
	}
	prod, err := tuf.ParseTargets(mustCurrent(t, e.cli, tuf.ProductRole(testProduct)))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{delta.IndexName(r1.Target), delta.PatchName(r2.Target, "1.0.0"), delta.PatchName(r3.Target, "1.0.0")} {
		if prod.Signed.Targets[n] == nil {
			t.Errorf("the product role lacks %s", n)
		}
	}
	e.updateTo(d2, r3)
	if evs := e.downloadEvents(d2.Agent.State().DeviceID); !strings.Contains(evs[len(evs)-1], "delta "+delta.FormatPatch+": downloaded") {
		t.Fatalf("download events %q: want the patch used", evs)
	}
	// Readers of the targets' custom fields see the delegated targets too.
	cat, err := e.srv.Images.Catalogue(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cat), r3.Target) {
		t.Fatal("the catalogue lacks the delegated release")
	}
}
