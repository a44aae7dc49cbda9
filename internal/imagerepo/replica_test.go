package imagerepo_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
	"upkeep.dev/upkeep/internal/apperr"
	blobfs "upkeep.dev/upkeep/internal/blob/fs"

	"upkeep.dev/upkeep/internal/imagerepo"
	"upkeep.dev/upkeep/internal/store/sqlite"
	"upkeep.dev/upkeep/internal/tuf"
)

// racingStore lets a test run something just before a metadata version is stored.
type racingStore struct {
	imagerepo.Store
	before func(m *imagerepo.Meta)
}

func (r *racingStore) PutMetadata(ctx context.Context, m *imagerepo.Meta) error {
	if r.before != nil {
		r.before(m)
	}
	return r.Store.PutMetadata(ctx, m)
}

// TestRefreshAnotherReplicaFirst: two replicas on one store both find the image timestamp
// due; the one that stores second does not fail the device's request with a conflict but serves
// what the first stored.
func TestRefreshAnotherReplicaFirst(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	start := time.Now()
	if _, err := tuf.InitKeySet(keys, 1, 1, tuf.DefaultLifetimes(), start); err != nil {
		t.Fatal(err)
	}
	sk, err := tuf.LoadServerKeys(keys)
	if err != nil {
		t.Fatal(err)
	}
	db, err := sqlite.Open(ctx, filepath.Join(dir, "upkeep.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	var offset atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	race := &racingStore{Store: db}
	newService := func(st imagerepo.Store) *imagerepo.Service {
		return &imagerepo.Service{Store: st, Keys: imagerepo.Keys{Snapshot: sk.Snapshot, Timestamp: sk.Timestamp},
			Lifetimes: tuf.DefaultLifetimes(), Now: now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	}
	a, b := newService(db), newService(race)
	if err := a.Bootstrap(ctx, sk.ImageRoot, sk.ImageTargets); err != nil {
		t.Fatal(err)
	}
	if err := b.Bootstrap(ctx, sk.ImageRoot, sk.ImageTargets); err != nil {
		t.Fatal(err)
	}

	// 20 hours on, the 24-hour timestamp is due on both. Replica a signs it while b is signing.
	offset.Store(int64(20 * time.Hour))
	raced := false
	race.before = func(m *imagerepo.Meta) {
		if !raced && m.Role == tuf.Snapshot {
			raced = true
			if err := a.Refresh(ctx, true); err != nil {
				t.Errorf("replica a: %v", err)
			}
		}
	}
	got, err := b.Metadata(ctx, "timestamp.json")
	if err != nil {
		t.Fatalf("replica b serving timestamp.json after a signed first: %v", err)
	}
	if !raced {
		t.Fatal("replica b did not sign: the race was not played")
	}
	stored, err := db.LatestMetadata(ctx, imagerepo.RepoImage, tuf.Timestamp)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, stored.Body) {
		t.Fatalf("replica b served timestamp %s, the store holds version %d", got, stored.Version)
	}
	if !stored.Expires.After(now().Add(12 * time.Hour)) {
		t.Fatalf("served timestamp expires %s: not the fresh one", stored.Expires)
	}
}

// staleReader lets a test run something after the latest image targets were read from the
// store and before the reader gets them: a read that began before a publication.
type staleReader struct {
	imagerepo.Store
	after func()
}

func (r *staleReader) LatestMetadata(ctx context.Context, repo, role string) (*imagerepo.Meta, error) {
	m, err := r.Store.LatestMetadata(ctx, repo, role)
	if f := r.after; f != nil && role == tuf.Targets {
		r.after = nil
		f()
	}
	return m, err
}

// TestPublishedTargetFoundAtOnce: a release is found the moment its publication returns, by
// the replica that published it even when a device's request read the targets just before the
// publication and finished just after, and by another replica whose copy of the targets is
// recent (an operator deploys a release right after publishing it, whichever replica answers).
func TestPublishedTargetFoundAtOnce(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	sk, targetsKey := newKeys(t, dir)
	db, err := sqlite.Open(ctx, filepath.Join(dir, "upkeep.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	blobs, err := blobfs.New(filepath.Join(dir, "artifacts"))
	if err != nil {
		t.Fatal(err)
	}
	stale := &staleReader{Store: db}
	newService := func(st imagerepo.Store) *imagerepo.Service {
		return &imagerepo.Service{Store: st, Blobs: blobs, Keys: imagerepo.Keys{Snapshot: sk.Snapshot, Timestamp: sk.Timestamp},
			Lifetimes: tuf.DefaultLifetimes(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	}
	a, b := newService(stale), newService(db)
	for _, s := range []*imagerepo.Service{a, b} {
		if err := s.Bootstrap(ctx, sk.ImageRoot, sk.ImageTargets); err != nil {
			t.Fatal(err)
		}
	}

	// A reader on replica a reads targets version 1; replica a publishes version 2 before the
	// reader keeps its copy.
	name, signed := signPublication(t, a, blobs, sk, targetsKey, "cam", "1.1.0")
	a.ForgetCache()
	stale.after = func() {
		if _, err := a.Publish(ctx, name, signed); err != nil {
			t.Errorf("publish during the read: %v", err)
		}
	}
	if _, err := a.Catalogue(ctx); err != nil {
		t.Fatal(err)
	}
	if stale.after != nil {
		t.Fatal("the publication did not run during the read")
	}
	cat, err := a.Catalogue(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(cat, []byte(name)) {
		t.Fatalf("replica a's catalogue after its publication does not list %s: the read that began before it was kept", name)
	}

	// Replica b has a recent copy of targets version 2; replica a publishes version 3.
	if _, err := b.TargetFile(ctx, name); err != nil {
		t.Fatal(err)
	}
	next, signed := signPublication(t, a, blobs, sk, targetsKey, "cam", "1.2.0")
	if _, err := a.Publish(ctx, next, signed); err != nil {
		t.Fatal(err)
	}
	if _, err := b.TargetFile(ctx, next); err != nil {
		t.Fatalf("replica b looking up %s just published on replica a: %v", next, err)
	}
	if _, err := b.TargetFile(ctx, "cam/9.9.9/fw.img"); !apperr.Is(err, apperr.NotFound) {
		t.Fatalf("a target nobody published: %v, want not found", err)
	}
}
