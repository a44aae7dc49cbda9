package cli

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/imagerepo"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/wire"
)

// Attacks on delegated targets (docs/ARCHITECTURE.md, "Trust model"): the fixture's product and
// a second one are each delegated to their own key; the attacker holds the server (it can store
// and serve any metadata and re-sign snapshot and timestamp) and, where said, a product key.

// delegateFixture delegates the fixture's product and "doorbell" to keys of their own and
// returns them.
func (f *attackFixture) delegateFixture() (thermostat, doorbell *tuf.Key) {
	f.t.Helper()
	keys := map[string]*tuf.Key{}
	for _, p := range []string{testProduct, "doorbell"} {
		k, err := tuf.GenerateKey()
		if err != nil {
			f.t.Fatal(err)
		}
		if _, err := f.cli.Delegate(f.ctx, client.DelegateOptions{Product: p, TargetsKey: f.targetsKey, TrustedRoot: f.imageRoot,
			Keys: []*tuf.Key{k}, Threshold: 1, Expires: 30 * 24 * time.Hour}); err != nil {
			f.t.Fatalf("delegate %s: %v", p, err)
		}
		keys[p] = k
	}
	return keys[testProduct], keys["doorbell"]
}

// role returns the stored latest version of a role, parsed.
func (f *attackFixture) role(role string) (*metadata.Metadata[metadata.TargetsType], *imagerepo.Meta) {
	f.t.Helper()
	m, err := f.srv.DB.LatestMetadata(f.ctx, imagerepo.RepoImage, role)
	if err != nil {
		f.t.Fatal(err)
	}
	md, err := tuf.ParseTargets(m.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return md, m
}

// plantRole plays the compromised server: it stores body as the next version of role, so that
// the server's snapshot names it and devices fetch it.
func (f *attackFixture) plantRole(role string, version int64, body []byte) {
	f.t.Helper()
	if err := f.srv.DB.PutMetadata(f.ctx, &imagerepo.Meta{Repo: imagerepo.RepoImage, Role: role, Version: version, Body: body, Expires: time.Now().Add(24 * time.Hour)}); err != nil {
		f.t.Fatal(err)
	}
	f.srv.Images.ForgetCache()
	if err := f.srv.Images.Refresh(f.ctx, true); err != nil {
		f.t.Fatal(err)
	}
}

// evilTarget is a target of the fixture's product, for an image no offline key of it signed.
func evilTarget(t *testing.T, version string) (string, *metadata.TargetFiles) {
	evil := image(version, 64<<10)
	s256, s512 := artifactDigests(evil)
	tf, err := uptane.NewTargetFile(int64(len(evil)), s256, s512, uptane.TargetCustom{
		Product: testProduct, HardwareIDs: []string{testHardware}, Version: version, SecurityVersion: 99, Class: uptane.ClassSecurity,
	})
	if err != nil {
		t.Fatal(err)
	}
	return tuf.TargetName(testProduct, version, "firmware-"+version+".img"), tf
}

// putDelegations uploads roles as a delegation ceremony would.
func (f *attackFixture) putDelegations(roles map[string][]byte) (int, []byte) {
	req := wire.DelegationRequest{Roles: map[string]json.RawMessage{}}
	for r, b := range roles {
		req.Roles[r] = b
	}
	return f.call(http.MethodPut, "/api/v1/image/delegations", f.srv.AdminToken, attackJSON(f.t, req))
}

// A product's key signs another product's target: the server refuses the role (its paths are
// the product's own), and a device whose server stored it anyway never looks there.
func TestAttackDelegationOtherProductKey(t *testing.T) {
	t.Parallel()
	f := newAttackFixture(t, nil)
	_, doorbellKey := f.delegateFixture()
	name, tf := evilTarget(t, "6.6.6")
	db, dbMeta := f.role(tuf.ProductRole("doorbell"))
	db.Signed.Targets[name] = tf
	db.Signed.Version++
	signed, err := tuf.SignTargets(db, doorbellKey)
	if err != nil {
		t.Fatal(err)
	}
	status, body := f.putDelegations(map[string][]byte{tuf.ProductRole("doorbell"): signed})
	requireAPIRefusal(t, "doorbell's role signing a thermostat target", status, body, apperr.Verification)
	// As a publication of the thermostat target, signed by the doorbell key.
	status, body = f.call(http.MethodPost, "/api/v1/releases", f.srv.AdminToken, attackJSON(t, wire.PublishRequest{Target: name, Targets: signed}))
	requireAPIRefusal(t, "publication of a thermostat target signed by the doorbell key", status, body, apperr.Verification)

	f.plantRole(tuf.ProductRole("doorbell"), dbMeta.Version+1, signed)
	f.signDirector(name, tf)
	err = f.dev.Agent.Cycle(f.ctx)
	f.requireRefused(err, uptane.ReasonMissingTarget, wire.StepVerify, f.r100)
}

// A product's role replayed at an older version: the server refuses the upload, and a device
// that trusted the newer one refuses the old one the compromised server serves as the latest.
func TestAttackDelegationReplayOlderRole(t *testing.T) {
	t.Parallel()
	f := newAttackFixture(t, nil)
	thermoKey, _ := f.delegateFixture()
	old, oldMeta := f.role(tuf.ProductRole(testProduct))
	r101, err := f.publishAs(testProduct, "1.0.1", 2, image("1.0.1", 64<<10), []*tuf.Key{thermoKey})
	if err != nil {
		t.Fatal(err)
	}
	f.update(r101) // the device now trusts the role's newer version
	_, cur := f.role(tuf.ProductRole(testProduct))
	// The old role re-uploaded as it was: refused.
	status, body := f.putDelegations(map[string][]byte{tuf.ProductRole(testProduct): oldMeta.Body})
	requireAPIRefusal(t, "older product role", status, body, apperr.Conflict)
	// The compromised server serves the old role's bytes as the next version.
	f.plantRole(tuf.ProductRole(testProduct), cur.Version+1, oldMeta.Body)
	f.signDirector(f.r100.Target, old.Signed.Targets[f.r100.Target])
	err = f.dev.Agent.Cycle(f.ctx)
	f.requireRefused(err, uptane.ReasonVersionRollback, wire.StepVerify, r101)
}

// A delegation loop: a product role that delegates back to its bin. The server refuses it; a
// device reading it from a compromised server ends its search there and refuses the target.
func TestAttackDelegationLoop(t *testing.T) {
	t.Parallel()
	f := newAttackFixture(t, nil)
	thermoKey, _ := f.delegateFixture()
	name, tf := evilTarget(t, "7.7.7")
	prod, m := f.role(tuf.ProductRole(testProduct))
	bin := tuf.BinRole(testProduct)
	if err := tuf.Delegate(prod, bin, []*metadata.Key{thermoKey.Public()}, 1, tuf.ProductPaths(testProduct)); err != nil {
		t.Fatal(err)
	}
	if err := tuf.Delegate(prod, tuf.ProductRole(testProduct), []*metadata.Key{thermoKey.Public()}, 1, tuf.ProductPaths(testProduct)); err != nil {
		t.Fatal(err)
	}
	prod.Signed.Version++
	signed, err := tuf.SignTargets(prod, thermoKey)
	if err != nil {
		t.Fatal(err)
	}
	status, body := f.putDelegations(map[string][]byte{tuf.ProductRole(testProduct): signed})
	requireAPIRefusal(t, "product role delegating back to its bin", status, body, apperr.Invalid)

	f.plantRole(tuf.ProductRole(testProduct), m.Version+1, signed)
	f.signDirector(name, tf)
	done := make(chan error, 1)
	go func() { done <- f.dev.Agent.Cycle(f.ctx) }()
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		t.Fatal("the device's search did not end")
	}
	f.requireRefused(err, uptane.ReasonMissingTarget, wire.StepVerify, f.r100)
}

// A delegation without a threshold (0): a product role with no signature would satisfy it. The
// server refuses such a bin; a device refuses the role it delegates, even signed by nobody.
func TestAttackDelegationNoThreshold(t *testing.T) {
	t.Parallel()
	f := newAttackFixture(t, nil)
	f.delegateFixture()
	bin, binMeta := f.role(tuf.BinRole(testProduct))
	tuf.DelegatedRole(bin, tuf.ProductRole(testProduct)).Threshold = 0
	bin.Signed.Version++
	binSigned, err := tuf.SignTargets(bin, f.targetsKey) // an operator's mistake, or a stolen targets key
	if err != nil {
		t.Fatal(err)
	}
	name, tf := evilTarget(t, "8.8.8")
	prod, prodMeta := f.role(tuf.ProductRole(testProduct))
	prod.Signed.Targets[name] = tf
	prod.Signed.Version++
	prod.ClearSignatures()
	unsigned, err := prod.ToBytes(false)
	if err != nil {
		t.Fatal(err)
	}
	status, body := f.putDelegations(map[string][]byte{tuf.BinRole(testProduct): binSigned})
	requireAPIRefusal(t, "a delegation with threshold 0", status, body, apperr.Verification)

	f.plantRole(tuf.BinRole(testProduct), binMeta.Version+1, binSigned)
	f.plantRole(tuf.ProductRole(testProduct), prodMeta.Version+1, unsigned)
	f.signDirector(name, tf)
	err = f.dev.Agent.Cycle(f.ctx)
	f.requireRefused(err, uptane.ReasonMalformed, wire.StepVerify, f.r100)
}
