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
