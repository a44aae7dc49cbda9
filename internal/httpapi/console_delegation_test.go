package httpapi_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/tuf"
)

// TestConsoleReleaseDelegated: once the product is delegated to its own role, a release's page
// still shows its signed target with its custom fields, found through the delegations.
func TestConsoleReleaseDelegated(t *testing.T) {
	s, srv, _ := catalogStack(t)
	name, targets := s.uploadAndSign(srv, "1.0.0", []byte("firmware 1.0.0"), s.targetsKey)
	if r := s.publish(srv, name, targets); r.status != http.StatusCreated {
		t.Fatalf("publish: %d %s", r.status, r.body)
	}
	ctx := t.Context()
	raw, err := s.images.CurrentTargets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	top, err := tuf.ParseTargets(raw)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := tuf.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second)
	bin, prod := metadata.Targets(exp), metadata.Targets(exp)
	prod.Signed.Targets[name] = top.Signed.Targets[name]
	delete(top.Signed.Targets, name)
	if err := tuf.Delegate(bin, tuf.ProductRole(testProduct), []*metadata.Key{pk.Public()}, 1, tuf.ProductPaths(testProduct)); err != nil {
		t.Fatal(err)
	}
	if err := tuf.Delegate(top, tuf.BinRole(testProduct), []*metadata.Key{s.targetsKey.Public()}, 1, tuf.ProductPaths(testProduct)); err != nil {
		t.Fatal(err)
	}
	top.Signed.Version++
	top.Signed.Expires = exp
	roles := map[string][]byte{}
	for role, r := range map[string]struct {
		md *metadata.Metadata[metadata.TargetsType]
		k  *tuf.Key
	}{tuf.Targets: {top, s.targetsKey}, tuf.BinRole(testProduct): {bin, s.targetsKey}, tuf.ProductRole(testProduct): {prod, pk}} {
		if roles[role], err = tuf.SignTargets(r.md, r.k); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.images.Delegate(ctx, roles); err != nil {
		t.Fatal(err)
	}
	admin, _ := signedIn(t, s, srv, auth.RoleAdmin)
	wantPage(t, admin.get("releases/"+testProduct+"/1.0.0"), http.StatusOK, name, "security_version", "hardware_ids")
}
