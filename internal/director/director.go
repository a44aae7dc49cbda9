// Package director is the server side of the Uptane director: it assigns a release to devices
// and signs for each device its own view (targets, snapshot, timestamp with the online director
// key) naming the one image it must install, with the image repository's length and hashes. It
// keeps the shared director root, whose key is offline, and deploys releases in batches.
package director

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/delta"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/imagerepo"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
)

// Store keeps the director root (in the metadata store, under imagerepo.RepoDirector) and each
// device's views. Implementations are safe for concurrent use.
type Store interface {
	imagerepo.MetadataStore
	// PutDirectorView stores version prev+1 of a device's director view if its latest stored
	// version is prev (0: none), and forgets versions too old to be in use. In the same
	// transaction it raises the device's director version to the view's and, when as is not
	// nil, records the assignment the view carries, so that a view and the assignment it names
	// are never apart. Returns apperr.Conflict if another writer got there first.
	PutDirectorView(ctx context.Context, deviceID string, prev int64, v *uptane.DirectorView, as *Assignment) error
	// PutDirectorViews stores several devices' views in one transaction, each as
	// PutDirectorView would. A device whose latest version is no longer its Prev is skipped
	// and listed in stale; any error stores nothing.
	PutDirectorViews(ctx context.Context, puts []ViewPut) (stale []string, err error)
	// LatestDirectorVersions returns the latest view version of each device that has one.
	LatestDirectorVersions(ctx context.Context, ids []string) (map[string]int64, error)
	// FindDirectorView returns one version of a device's view (0: the latest), or
	// apperr.NotFound.
	FindDirectorView(ctx context.Context, deviceID string, version int64) (*uptane.DirectorView, error)
}

// Devices finds the devices the director signs for (fleet.Store has these).
type Devices interface {
	// FindDevice returns a device, or apperr.NotFound.
	FindDevice(ctx context.Context, id string) (*fleet.Device, error)
	// FindDevices returns the devices f selects.
	FindDevices(ctx context.Context, f fleet.DeviceFilter) ([]*fleet.Device, error)
}

// Releases finds the release a deployment names (release.Store has it).
type Releases interface {
	// FindRelease returns a release, or apperr.NotFound.
	FindRelease(ctx context.Context, product, version string) (*release.Release, error)
}

// Images is the image repository as the director needs it (imagerepo.Service has it).
type Images interface {
	// TargetFile returns the image repository's entry for a target, or apperr.NotFound. The
	// entry is shared: callers must not change it.
	TargetFile(ctx context.Context, name string) (*metadata.TargetFiles, error)
}

// Service signs and serves the director's views and assigns releases. It is safe for
// concurrent use.
type Service struct {
	Store     Store
	Images    Images
	Devices   Devices
	Releases  Releases
	Key       *tuf.Key // the online director key: targets, snapshot and timestamp of every view
	Lifetimes tuf.Lifetimes
	Now       func() time.Time
	Logger    *slog.Logger
	// OnAssign, if set, is told each device's new director version (the check-in cache).
	OnAssign func(deviceID string, version int64)
	// Notice, if set, returns the lifecycle notice for a product's devices (nil: none).
	Notice func(ctx context.Context, product string) (*uptane.Notice, error)
	// Deltas, if set, lists the delta targets of the image repository (imagerepo.Service.Deltas):
	// a device whose installed image one of them starts from is told of it (delta.Choose).
	Deltas func(ctx context.Context) ([]delta.Target, error)

	views  viewCache
	roots  sync.Map // version -> []byte of the director root, which never changes once stored
	nroots atomic.Int64
}

// maxCachedRoots bounds the director root versions kept in memory.
const maxCachedRoots = 64

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

func (s *Service) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// Bootstrap stores the initial director root on first start. On later starts it checks that
// the current director root trusts the online director key for targets, snapshot and timestamp.
func (s *Service) Bootstrap(ctx context.Context, root []byte) error {
	if _, err := s.Store.LatestMetadata(ctx, imagerepo.RepoDirector, tuf.Root); apperr.Is(err, apperr.NotFound) {
		if root == nil {
			return fmt.Errorf("bootstrap: no %s %s metadata: run `upkeep keys init` and pass --keys", imagerepo.RepoDirector, tuf.Root)
		}
		r, err := tuf.ParseRoot(root)
		if err != nil {
			return fmt.Errorf("bootstrap %s: %w", imagerepo.RepoDirector, err)
		}
		m := &imagerepo.Meta{Repo: imagerepo.RepoDirector, Role: tuf.Root, Version: r.Signed.Version, Body: root, Expires: r.Signed.Expires}
		if err := s.Store.PutMetadata(ctx, m); err != nil && !apperr.Is(err, apperr.Conflict) {
			return err
		}
	} else if err != nil {
		return err
	}
	dr, err := s.root(ctx)
	if err != nil {
		return err
	}
	for _, role := range []string{tuf.Targets, tuf.Snapshot, tuf.Timestamp} {
		if s.Key == nil || !slices.Contains(dr.Signed.Roles[role].KeyIDs, s.Key.ID) {
			return fmt.Errorf("the configured online key is not trusted for %s in the current root", role)
		}
	}
	return nil
}

func (s *Service) root(ctx context.Context) (*metadata.Metadata[metadata.RootType], error) {
	return imagerepo.LatestRoot(ctx, s.Store, imagerepo.RepoDirector)
}

// Root serves "N.root.json" of the shared director root. Returns apperr.NotFound for anything
// else.
func (s *Service) Root(ctx context.Context, file string) ([]byte, error) {
	role, v, ok := imagerepo.VersionedFile(file)
	if !ok || role != tuf.Root {
		return nil, apperr.E(apperr.NotFound, "no metadata file %s", file)
	}
	if b, ok := s.roots.Load(v); ok {
		return b.([]byte), nil
	}
	m, err := s.Store.FindMetadata(ctx, imagerepo.RepoDirector, tuf.Root, v)
	if err != nil {
		return nil, err
	}
	if s.nroots.Add(1) <= maxCachedRoots {
		s.roots.Store(v, m.Body)
	}
	return m.Body, nil
}

// Metadata serves a device's director file: "timestamp.json", "N.snapshot.json" or
// "N.targets.json" (the director root has consistent snapshots, so a view being re-signed never
// tears a refresh), or "N.root.json" of the shared director root. A view that has used half its
// lifetime is re-signed when its timestamp is fetched.
func (s *Service) Metadata(ctx context.Context, deviceID, file string) ([]byte, error) {
	if file == "timestamp.json" {
		v, err := s.Store.FindDirectorView(ctx, deviceID, 0)
		if err != nil && !apperr.Is(err, apperr.NotFound) {
			return nil, err
		}
		if v == nil || !s.now().Add(s.Lifetimes.Director/2).Before(v.Expires) {
			if err := s.resign(ctx, deviceID); err != nil {
				return nil, err
			}
			if v, err = s.Store.FindDirectorView(ctx, deviceID, 0); err != nil {
				return nil, err
			}
		}
		s.views.put(deviceID, v)
		return v.Timestamp, nil
	}
	role, n, ok := imagerepo.VersionedFile(file)
	if ok && role == tuf.Root {
		return s.Root(ctx, file)
	}
	if !ok || (role != tuf.Snapshot && role != tuf.Targets) {
		return nil, apperr.E(apperr.NotFound, "no metadata file %s", file)
	}
	v := s.views.get(deviceID, n)
	if v == nil {
		var err error
		if v, err = s.Store.FindDirectorView(ctx, deviceID, n); err != nil {
			return nil, err
		}
		s.views.put(deviceID, v)
	}
	if role == tuf.Snapshot {
		return v.Snapshot, nil
	}
	return v.Targets, nil
}

// RotateRoot accepts a new director root (a new expiry, or new director root keys) signed
// offline by a threshold of the current and of the new root keys, as imagerepo.RotateRoot does
// for the image root. The new root must keep trusting the server's online director key, or every
// device would refuse its next view. Devices follow the chain from the root they hold (TUF
// 5.3.4), so a root re-signed before the old one expires keeps them updating.
func (s *Service) RotateRoot(ctx context.Context, data []byte) error {
	cur, err := s.root(ctx)
	if err != nil {
		return err
	}
	next, err := tuf.VerifyRootUpdate(cur, data)
	if err != nil {
		return apperr.Wrap(apperr.Verification, err, "director root refused: "+err.Error())
	}
	if !next.Signed.ConsistentSnapshot {
		return apperr.E(apperr.Invalid, "director root refused: it must keep consistent snapshots")
	}
	for _, role := range []string{tuf.Targets, tuf.Snapshot, tuf.Timestamp} {
		r := next.Signed.Roles[role]
		if r == nil || s.Key == nil || !slices.Contains(r.KeyIDs, s.Key.ID) {
			return apperr.E(apperr.Invalid, "director root refused: it does not trust the server's director key for %s", role)
		}
	}
	if !next.Signed.Expires.After(s.now()) {
		return apperr.E(apperr.Invalid, "director root refused: it expired at %s", next.Signed.Expires.Format(time.RFC3339))
	}
	if err := s.Store.PutMetadata(ctx, &imagerepo.Meta{Repo: imagerepo.RepoDirector, Role: tuf.Root, Version: next.Signed.Version, Body: data, Expires: next.Signed.Expires}); err != nil {
		if apperr.Is(err, apperr.Conflict) {
			return apperr.E(apperr.Conflict, "director root version %d was stored concurrently; sign again", next.Signed.Version)
		}
		return err
	}
	s.logger().Info("director root updated", "version", next.Signed.Version, "expires", next.Signed.Expires)
	return nil
}

// deltaHint is the delta hint for a device that runs the image with SHA-256 installed and is
// assigned target, as signed in its view: nil when none applies or on any error (the device then
// downloads the full image, which is always correct).
func (s *Service) deltaHint(ctx context.Context, installed, target string, ds []delta.Target) json.RawMessage {
	h := s.chooseDelta(ctx, installed, target, ds)
	if h == nil {
		return nil
	}
	b, _ := json.Marshal(h)
	return b
}

// chooseDelta is delta.Choose over the image repository's delta targets (ds, or nil to list
// them).
func (s *Service) chooseDelta(ctx context.Context, installed, target string, ds []delta.Target) *delta.Hint {
	if target == "" {
		return nil
	}
	if ds == nil && s.Deltas != nil {
		var err error
		if ds, err = s.Deltas(ctx); err != nil {
			s.logger().Warn("delta targets", "err", err)
			return nil
		}
	}
	return delta.Choose(installed, target, ds)
}
