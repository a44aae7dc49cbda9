package imagerepo_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/apperr"
	blobfs "upkeep.dev/upkeep/internal/blob/fs"
	"upkeep.dev/upkeep/internal/imagerepo"
	"upkeep.dev/upkeep/internal/store/sqlite"
	"upkeep.dev/upkeep/internal/tuf"
)

// TestDelegateSnapshot: a ceremony's roles are stored, served as consistent-snapshot files and
// listed by the snapshot, version only; once the delegation is undone the roles stay listed at
// their last version (a device refuses a snapshot that drops one, TUF 5.5.5). Roles not
// delegated by the resulting tree, and versions that do not grow, are refused.
func TestDelegateSnapshot(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := sqlite.Open(ctx, filepath.Join(dir, "upkeep.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	sk, tk := newKeys(t, dir)
	pk, err := tuf.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	blobs, err := blobfs.New(filepath.Join(dir, "artifacts"))
	if err != nil {
		t.Fatal(err)
	}
	s := &imagerepo.Service{Store: db, Blobs: blobs, Keys: imagerepo.Keys{Snapshot: sk.Snapshot, Timestamp: sk.Timestamp},
		Lifetimes: tuf.DefaultLifetimes(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := s.Bootstrap(ctx, sk.ImageRoot, sk.ImageTargets); err != nil {
		t.Fatal(err)
	}
	const product = "thermostat"
	bin, prodRole := tuf.BinRole(product), tuf.ProductRole(product)
	exp := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second)
	sign := func(md *metadata.Metadata[metadata.TargetsType], k *tuf.Key) []byte {
		b, err := tuf.SignTargets(md, k)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	top := metadata.Targets(exp)
	top.Signed.Version = 2
	bm, pm := metadata.Targets(exp), metadata.Targets(exp)
	if err := tuf.Delegate(bm, prodRole, []*metadata.Key{pk.Public()}, 1, tuf.ProductPaths(product)); err != nil {
		t.Fatal(err)
	}
	if err := tuf.Delegate(top, bin, []*metadata.Key{tk.Public()}, 1, tuf.ProductPaths(product)); err != nil {
		t.Fatal(err)
	}

	// Without the top-level targets delegating the bin, the roles are refused.
	if _, err := s.Delegate(ctx, map[string][]byte{bin: sign(bm, tk), prodRole: sign(pm, pk)}); !apperr.Is(err, apperr.Invalid) {
		t.Fatalf("roles nobody delegates: %v, want invalid", err)
	}
	stored, err := s.Delegate(ctx, map[string][]byte{tuf.Targets: sign(top, tk), bin: sign(bm, tk), prodRole: sign(pm, pk)})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{prodRole, bin, tuf.Targets}; len(stored) != 3 || stored[0] != want[0] || stored[2] != want[2] {
		t.Fatalf("stored %v, want leaves first: %v", stored, want)
	}
	snapshot := func() map[string]int64 {
		t.Helper()
		tsb, err := s.Metadata(ctx, "timestamp.json")
		if err != nil {
			t.Fatal(err)
		}
		ts, err := metadata.Timestamp().FromBytes(tsb)
		if err != nil {
			t.Fatal(err)
		}
		sb, err := s.Metadata(ctx, itoa(ts.Signed.Meta["snapshot.json"].Version)+".snapshot.json")
		if err != nil {
			t.Fatal(err)
		}
		sn, err := metadata.Snapshot().FromBytes(sb)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int64{}
		for name, m := range sn.Signed.Meta {
			if m.Length != 0 || len(m.Hashes) != 0 {
				t.Errorf("snapshot entry %s carries a length or hashes", name)
			}
			out[name] = m.Version
		}
		return out
	}
	want := map[string]int64{"targets.json": 2, bin + ".json": 1, prodRole + ".json": 1}
	if got := snapshot(); len(got) != 3 || got["targets.json"] != 2 || got[bin+".json"] != 1 || got[prodRole+".json"] != 1 {
		t.Fatalf("snapshot %v, want %v", got, want)
	}
	if _, err := s.Metadata(ctx, "1."+prodRole+".json"); err != nil {
		t.Fatalf("serve the product role: %v", err)
	}

	// The same version again is refused.
	if _, err := s.Delegate(ctx, map[string][]byte{prodRole: sign(pm, pk)}); !apperr.Is(err, apperr.Conflict) {
		t.Fatalf("same product role version: %v, want conflict", err)
	}

	// Undo: the top-level targets drop the bin; the snapshot keeps listing both roles.
	tuf.Undelegate(top, bin)
	top.Signed.Version = 3
	if _, err := s.Delegate(ctx, map[string][]byte{tuf.Targets: sign(top, tk)}); err != nil {
		t.Fatal(err)
	}
	if got := snapshot(); got["targets.json"] != 3 || got[bin+".json"] != 1 || got[prodRole+".json"] != 1 {
		t.Fatalf("snapshot after the undo %v: want every role still listed", got)
	}
}

func itoa(v int64) string { return fmt.Sprint(v) }
