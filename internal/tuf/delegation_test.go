package tuf_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/tuf"
)

// graph is a delegation graph in memory: roles by name, and what Resolve's loader serves.
type graph map[string]*metadata.Metadata[metadata.TargetsType]

func (g graph) load(role string) (*metadata.Metadata[metadata.TargetsType], error) {
	if md, ok := g[role]; ok {
		return md, nil
	}
	return nil, fmt.Errorf("no role %s", role)
}

func newRole(version int64, targets ...string) *metadata.Metadata[metadata.TargetsType] {
	md := metadata.Targets(fixedExpires)
	md.Signed.Version = version
	for _, n := range targets {
		tf := metadata.TargetFile()
		tf.Length = int64(len(n))
		tf.Hashes = metadata.Hashes{"sha256": make([]byte, 32)}
		md.Signed.Targets[n] = tf
	}
	return md
}

func delegate(t *testing.T, from *metadata.Metadata[metadata.TargetsType], role string, threshold int, paths []string, keys ...*tuf.Key) {
	t.Helper()
	var pubs []*metadata.Key
	for _, k := range keys {
		pubs = append(pubs, k.Public())
	}
	if err := tuf.Delegate(from, role, pubs, max(threshold, 1), paths); err != nil {
		t.Fatal(err)
	}
	tuf.DelegatedRole(from, role).Threshold = threshold
}

func sign(t *testing.T, md *metadata.Metadata[metadata.TargetsType], keys ...*tuf.Key) {
	t.Helper()
	if _, err := tuf.SignTargets(md, keys...); err != nil {
		t.Fatal(err)
	}
}

// The three-level graph of the image repository: targets -> bin -> product.
func productGraph(t *testing.T) (graph, *tuf.Key, *tuf.Key) {
	targetsKey, productKey := genKey(t), genKey(t)
	top := newRole(1)
	bin, prod := newRole(1), newRole(1, "thermostat/1.0/img")
	p := "thermostat"
	delegate(t, top, tuf.BinRole(p), 1, tuf.ProductPaths(p), targetsKey)
	delegate(t, bin, tuf.ProductRole(p), 1, tuf.ProductPaths(p), productKey)
	sign(t, bin, targetsKey)
	sign(t, prod, productKey)
	return graph{tuf.Targets: top, tuf.BinRole(p): bin, tuf.ProductRole(p): prod}, targetsKey, productKey
}

func TestResolveThroughProductDelegation(t *testing.T) {
	g, _, _ := productGraph(t)
	res, err := tuf.Resolve(g[tuf.Targets], "thermostat/1.0/img", g.load, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{tuf.Targets, tuf.BinRole("thermostat"), tuf.ProductRole("thermostat")}; fmt.Sprint(res.Path) != fmt.Sprint(want) {
		t.Fatalf("path %v, want %v", res.Path, want)
	}
	if _, err := tuf.Resolve(g[tuf.Targets], "doorbell/1.0/img", g.load, testNow); !errors.Is(err, tuf.ErrTargetNotFound) {
		t.Fatalf("another product's target: %v", err)
	}
}

// A role must be signed by the threshold of the delegation being followed now, whatever copy of
// it was trusted through another path: here X is delegated by A (key a) and by B (key b), and
// signed by a only. Found through A; through B, refused.
func TestResolveVerifiesAgainstCurrentDelegator(t *testing.T) {
	tk, a, b := genKey(t), genKey(t), genKey(t)
	top, ra, rb, x := newRole(1), newRole(1), newRole(1), newRole(1, "a/1/img", "b/1/img")
	delegate(t, top, "A", 1, []string{"a/*/*"}, tk)
	delegate(t, top, "B", 1, []string{"b/*/*"}, tk)
	delegate(t, ra, "X", 1, []string{"a/*/*"}, a)
	delegate(t, rb, "X", 1, []string{"b/*/*"}, b)
	sign(t, ra, tk)
	sign(t, rb, tk)
	sign(t, x, a)
	g := graph{tuf.Targets: top, "A": ra, "B": rb, "X": x}
	if _, err := tuf.Resolve(top, "a/1/img", g.load, testNow); err != nil {
		t.Fatalf("through A: %v", err)
	}
	var unsigned *metadata.ErrUnsignedMetadata
	if _, err := tuf.Resolve(top, "b/1/img", g.load, testNow); !errors.As(err, &unsigned) {
		t.Fatalf("through B: %v, want the threshold of B's delegation unmet", err)
	}
}

// A terminating delegation ends the search: a later delegation for the same paths is not
// consulted; a non-terminating one lets the search go on to it.
func TestResolveTerminating(t *testing.T) {
	for _, terminating := range []bool{true, false} {
		t.Run(fmt.Sprint("terminating=", terminating), func(t *testing.T) {
			tk := genKey(t)
			top, first, second := newRole(1), newRole(1), newRole(1, "p/1/img")
			delegate(t, top, "first", 1, []string{"p/*/*"}, tk)
			delegate(t, top, "second", 1, []string{"p/*/*"}, tk)
			top.Signed.Delegations.Roles[0].Terminating = terminating
			sign(t, first, tk)
			sign(t, second, tk)
			g := graph{tuf.Targets: top, "first": first, "second": second}
			_, err := tuf.Resolve(top, "p/1/img", g.load, testNow)
			if terminating && !errors.Is(err, tuf.ErrTargetNotFound) {
				t.Fatalf("past a terminating delegation: %v, want not found", err)
			}
			if !terminating && err != nil {
				t.Fatalf("past a non-terminating delegation: %v", err)
			}
		})
	}
}

// A delegation loop ends the search (each role is visited once).
func TestResolveLoop(t *testing.T) {
	g, targetsKey, productKey := productGraph(t)
	prod, bin := g[tuf.ProductRole("thermostat")], g[tuf.BinRole("thermostat")]
	delegate(t, prod, tuf.BinRole("thermostat"), 1, tuf.ProductPaths("thermostat"), targetsKey)
	sign(t, prod, productKey)
	sign(t, bin, targetsKey)
	if _, err := tuf.Resolve(g[tuf.Targets], "thermostat/2.0/img", g.load, testNow); !errors.Is(err, tuf.ErrTargetNotFound) {
		t.Fatalf("loop: %v, want not found", err)
	}
}

// A delegation with threshold 0 is refused, even for a role that carries a valid signature.
func TestResolveNoThreshold(t *testing.T) {
	g, targetsKey, _ := productGraph(t)
	bin := g[tuf.BinRole("thermostat")]
	tuf.DelegatedRole(bin, tuf.ProductRole("thermostat")).Threshold = 0
	sign(t, bin, targetsKey)
	g[tuf.ProductRole("thermostat")].ClearSignatures()
	if _, err := tuf.Resolve(g[tuf.Targets], "thermostat/1.0/img", g.load, testNow); !errors.Is(err, tuf.ErrDelegation) {
		t.Fatalf("threshold 0: %v, want a delegation error", err)
	}
}

// An uploaded product role may sign only its own product's paths, and expiry counts.
func TestVerifyDelegatedTargets(t *testing.T) {
	g, _, productKey := productGraph(t)
	bin := g[tuf.BinRole("thermostat")]
	prod := newRole(2, "thermostat/2.0/img", "doorbell/1.0/img")
	b, err := tuf.SignTargets(prod, productKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tuf.VerifyDelegatedTargets(bin, tuf.ProductRole("thermostat"), b, testNow); !errors.Is(err, tuf.ErrDelegation) {
		t.Fatalf("another product's target: %v", err)
	}
	delete(prod.Signed.Targets, "doorbell/1.0/img")
	if b, err = tuf.SignTargets(prod, productKey); err != nil {
		t.Fatal(err)
	}
	if _, err := tuf.VerifyDelegatedTargets(bin, tuf.ProductRole("thermostat"), b, testNow); err != nil {
		t.Fatal(err)
	}
	var expired *metadata.ErrExpiredMetadata
	if _, err := tuf.VerifyDelegatedTargets(bin, tuf.ProductRole("thermostat"), b, fixedExpires.AddDate(1, 0, 0)); !errors.As(err, &expired) {
		t.Fatalf("expired role: %v", err)
	}
}

// FuzzVerifyDelegatedTargets feeds uploaded product roles to the server's check against a fixed
// bin: it never panics, and whatever it accepts is signed by the delegated key and stays
// inside the product's paths.
func FuzzVerifyDelegatedTargets(f *testing.F) {
	productKey, targetsKey := seededKey(f, 21), seededKey(f, 22)
	bin := newRole(1)
	if err := tuf.Delegate(bin, tuf.ProductRole("thermostat"), []*metadata.Key{productKey.Public()}, 1, tuf.ProductPaths("thermostat")); err != nil {
		f.Fatal(err)
	}
	if _, err := tuf.SignTargets(bin, targetsKey); err != nil {
		f.Fatal(err)
	}
	good := newRole(2, "thermostat/1.0/img")
	b, err := tuf.SignTargets(good, productKey)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(bytes.Replace(b, []byte("thermostat/1.0/img"), []byte("doorbell/1.0/img"), 1))
	delegating := newRole(3, "thermostat/1.0/img")
	if err := tuf.Delegate(delegating, tuf.BinRole("thermostat"), []*metadata.Key{productKey.Public()}, 1, []string{"*"}); err != nil {
		f.Fatal(err)
	}
	if b, err = tuf.SignTargets(delegating, productKey); err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"signed":{"_type":"targets","targets":{"a":null}},"signatures":[]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		md, err := tuf.VerifyDelegatedTargets(bin, tuf.ProductRole("thermostat"), data, time.Time{})
		if err != nil {
			return
		}
		if err := bin.VerifyDelegate(tuf.ProductRole("thermostat"), md); err != nil {
			t.Fatalf("accepted a role its delegation does not verify: %v", err)
		}
		for name := range md.Signed.Targets {
			if !strings.HasPrefix(name, "thermostat/") {
				t.Fatalf("accepted target %s outside the product's paths", name)
			}
		}
	})
}
