package imagerepo_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	blobfs "upkeep.dev/upkeep/internal/blob/fs"
	"upkeep.dev/upkeep/internal/imagerepo"
	"upkeep.dev/upkeep/internal/store/postgres"
	"upkeep.dev/upkeep/internal/store/sqlite"
	"upkeep.dev/upkeep/internal/store/sqlstore"
	"upkeep.dev/upkeep/internal/store/storetest"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
)

// TestPublishAtomic: a failure between storing the new targets metadata and the release row
// (injected with a trigger that refuses the release insert) leaves neither: the image
// repository still serves the previous targets and no release is listed. Once the failure is
// gone, publishing the same signed targets again succeeds. On SQLite, and on PostgreSQL when
// UPKEEP_TEST_POSTGRES is set.
func TestPublishAtomic(t *testing.T) {
	ctx := context.Background()
	t.Run("sqlite", func(t *testing.T) {
		db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "upkeep.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		testPublishAtomic(t, db,
			[]string{`CREATE TRIGGER fail_release BEFORE INSERT ON releases BEGIN SELECT RAISE(ABORT, 'injected failure'); END`},
			[]string{`DROP TRIGGER fail_release`})
	})
	t.Run("postgres", func(t *testing.T) {
		db, err := postgres.Open(ctx, storetest.PostgresDSN(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		testPublishAtomic(t, db,
			[]string{
				`CREATE FUNCTION fail_release() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$`,
				`CREATE TRIGGER fail_release BEFORE INSERT ON releases FOR EACH ROW EXECUTE FUNCTION fail_release()`,
			},
			[]string{`DROP TRIGGER fail_release ON releases`})
	})
}

func testPublishAtomic(t *testing.T, db *sqlstore.DB, inject, heal []string) {
	ctx := context.Background()
	dir := t.TempDir()
	sk, targetsKey := newKeys(t, dir)
	blobs, err := blobfs.New(filepath.Join(dir, "artifacts"))
	if err != nil {
		t.Fatal(err)
	}
	s := &imagerepo.Service{Store: db, Blobs: blobs, Keys: imagerepo.Keys{Snapshot: sk.Snapshot, Timestamp: sk.Timestamp},
		Lifetimes: tuf.DefaultLifetimes(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := s.Bootstrap(ctx, sk.ImageRoot, sk.ImageTargets); err != nil {
		t.Fatal(err)
	}

	// A release engineer uploads the image and signs targets version 2 naming it.
	cur, err := s.CurrentTargets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	name, signed := signPublication(t, s, blobs, sk, targetsKey, "cam", "1.1.0")

	exec := func(stmts []string) {
		t.Helper()
		for _, q := range stmts {
			if _, err := db.SQL().ExecContext(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
	}
	exec(inject)
	if _, err := s.Publish(ctx, name, signed); err == nil {
		t.Fatal("publish succeeded although the release insert fails")
	}
	if _, err := db.FindMetadata(ctx, imagerepo.RepoImage, tuf.Targets, 2); !apperr.Is(err, apperr.NotFound) {
		t.Fatalf("targets version 2 after the failed publish: %v, want not found", err)
	}
	if got, err := s.CurrentTargets(ctx); err != nil || !bytes.Equal(got, cur) {
		t.Fatalf("current targets after the failed publish changed (err %v)", err)
	}
	if _, err := s.Metadata(ctx, "2.targets.json"); !apperr.Is(err, apperr.NotFound) {
		t.Fatalf("2.targets.json served after the failed publish: %v", err)
	}
	if _, err := db.FindRelease(ctx, "cam", "1.1.0"); !apperr.Is(err, apperr.NotFound) {
		t.Fatalf("release after the failed publish: %v, want not found", err)
	}

	exec(heal)
	rel, err := s.Publish(ctx, name, signed)
	if err != nil {
		t.Fatalf("retry after the failure: %v", err)
	}
	if rel.TargetsVersion != 2 || rel.Target != name {
		t.Fatalf("published %+v", rel)
	}
	if got, err := db.FindRelease(ctx, "cam", "1.1.0"); err != nil || got.TargetsVersion != 2 {
		t.Fatalf("release after the retry: %+v %v", got, err)
	}
	if got, err := s.Metadata(ctx, "2.targets.json"); err != nil || !bytes.Equal(got, signed) {
		t.Fatalf("2.targets.json after the retry: %v", err)
	}
}

// signPublication uploads an image of product at version and signs the next image targets
// naming it, as a release engineer does offline. It returns the target name and the signed
// targets.
func signPublication(t *testing.T, s *imagerepo.Service, blobs *blobfs.Store, sk *tuf.ServerKeys, targetsKey *tuf.Key, product, version string) (string, []byte) {
	t.Helper()
	ctx := context.Background()
	image := []byte("firmware " + product + " " + version)
	h256, h512 := sha256.Sum256(image), sha512.Sum512(image)
	if _, err := blobs.Put(ctx, bytes.NewReader(image), 1<<20, hex.EncodeToString(h256[:])); err != nil {
		t.Fatal(err)
	}
	name := tuf.TargetName(product, version, "fw.img")
	tf, err := uptane.NewTargetFile(int64(len(image)), hex.EncodeToString(h256[:]), hex.EncodeToString(h512[:]),
		uptane.TargetCustom{Product: product, HardwareIDs: []string{product + "-v1"}, Version: version, SecurityVersion: 1, Class: "security"})
	if err != nil {
		t.Fatal(err)
	}
	cur, err := s.CurrentTargets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	root, err := tuf.ParseRoot(sk.ImageRoot)
	if err != nil {
		t.Fatal(err)
	}
	tm, err := uptane.VerifyImageTargets(root, cur, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tm.Signed.Targets[name] = tf
	tm.Signed.Version++
	tm.Signed.Expires = time.Now().Add(30 * 24 * time.Hour).UTC().Truncate(time.Second)
	signed, err := tuf.SignTargets(tm, targetsKey)
	if err != nil {
		t.Fatal(err)
	}
	return name, signed
}

// newKeys makes a key set in dir/keys and returns the server's keys and the offline targets key.
func newKeys(t *testing.T, dir string) (*tuf.ServerKeys, *tuf.Key) {
	t.Helper()
	keys := filepath.Join(dir, "keys")
	if _, err := tuf.InitKeySet(keys, 1, 1, tuf.DefaultLifetimes(), time.Now()); err != nil {
		t.Fatal(err)
	}
	sk, err := tuf.LoadServerKeys(keys)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := tuf.LoadKey(filepath.Join(keys, tuf.FileTargetsKey))
	if err != nil {
		t.Fatal(err)
	}
	return sk, tk
}
