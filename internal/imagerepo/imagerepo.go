// Package imagerepo is the server side of the TUF image repository: it bootstraps it, accepts
// targets metadata signed offline (a release's publication, a re-signature, a root rotation),
// signs snapshot and timestamp with the online keys, and serves its files. Devices trust the
// image repository for what an image is (its length, hashes and custom fields); the director
// (internal/director) says which one a device installs.
package imagerepo

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/event"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
)

// Repository names in the metadata store.
const (
	RepoImage    = "image"
	RepoDirector = "director" // holds only the director root; per-device views live apart
)

// Meta is one stored version of a metadata role.
type Meta struct {
	Repo    string
	Role    string
	Version int64
	Body    []byte
	Expires time.Time
}

// MetadataStore persists every version of signed metadata: the image repository's roles and the
// director root. Implementations are safe for concurrent use.
type MetadataStore interface {
	// PutMetadata stores a version. Returns apperr.Conflict if repo/role/version exists.
	PutMetadata(ctx context.Context, m *Meta) error
	// LatestMetadata returns the highest version, or apperr.NotFound.
	LatestMetadata(ctx context.Context, repo, role string) (*Meta, error)
	// FindMetadata returns one version, or apperr.NotFound.
	FindMetadata(ctx context.Context, repo, role string, version int64) (*Meta, error)
	// LatestVersions returns the highest stored version of every role of repo.
	LatestVersions(ctx context.Context, repo string) (map[string]int64, error)
}

// Store is what the image repository keeps: its metadata, and the releases its targets publish.
// Implementations are safe for concurrent use.
type Store interface {
	MetadataStore
	// PublishTargets stores image targets metadata m and the release it adds in one
	// transaction: both or neither. Returns apperr.Conflict if the targets version or the
	// release exists.
	PublishTargets(ctx context.Context, m *Meta, rel *release.Release) error
	// FindRelease returns a release, or apperr.NotFound.
	FindRelease(ctx context.Context, product, version string) (*release.Release, error)
}

// Keys are the online keys of the image repository.
type Keys struct {
	Snapshot, Timestamp *tuf.Key
}

// Service signs and serves the image repository. It is safe for concurrent use.
type Service struct {
	Store     Store
	Blobs     release.BlobStore
	Keys      Keys
	Lifetimes tuf.Lifetimes
	// Events, if set, is told when offline-signed metadata expires within ExpiryWarning
	// (event.MetadataExpiring), once a day for each (one event key per day on every replica).
	Events event.Emitter
	Now    func() time.Time
	Logger *slog.Logger

	mu sync.Mutex // serialises snapshot/timestamp signing in this process

	// The timestamp is the same for every device: it is checked and read from the store at most
	// every timestampRecheck, and versioned metadata files, which never change, are kept.
	timestamp atomic.Pointer[cachedTimestamp]
	targets   atomic.Pointer[cachedTargets]
	// gen counts invalidations. Every cached copy carries the generation read before the store
	// was asked, and a copy of an older generation is never used: a read that began before this
	// process changed the repository cannot bring the old metadata back into the cache.
	gen    atomic.Uint64
	roles  sync.Map // delegated role name -> *cachedTargets
	cat    atomic.Pointer[cachedCatalogue]
	catMu  sync.Mutex // makes a catalogue's document once
	files  sync.Map   // "role/version" -> []byte
	nfiles atomic.Int64
}

type cachedTimestamp struct {
	body []byte
	at   time.Time
	gen  uint64
}

// timestampRecheck bounds how stale another replica's publication can look here.
const (
	timestampRecheck = 2 * time.Second
	maxCachedFiles   = 256
)

// invalidate drops the cached image timestamp after this process changed the image repository.
func (s *Service) invalidate() {
	s.gen.Add(1)
	s.timestamp.Store(nil)
	s.targets.Store(nil)
	s.roles.Clear()
}

// current reports whether a copy cached in generation gen at time at may still be used.
func (s *Service) current(gen uint64, at, now time.Time) bool {
	return gen == s.gen.Load() && recent(at, now)
}

// ForgetCache drops the cached image timestamp, for whoever changed the stored metadata behind
// the service's back (the attack tests, playing a compromised server).
func (s *Service) ForgetCache() { s.invalidate() }

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

// Bootstrap stores the initial image root and targets on first start. On later starts it checks
// that the online keys are trusted by the current root, and signs snapshot and timestamp if due.
func (s *Service) Bootstrap(ctx context.Context, root, targets []byte) error {
	for _, b := range []struct {
		role string
		data []byte
	}{{tuf.Root, root}, {tuf.Targets, targets}} {
		if _, err := s.Store.LatestMetadata(ctx, RepoImage, b.role); err == nil {
			continue
		} else if !apperr.Is(err, apperr.NotFound) {
			return err
		}
		if b.data == nil {
			return fmt.Errorf("bootstrap: no %s %s metadata: run `upkeep keys init` and pass --keys", RepoImage, b.role)
		}
		m := &Meta{Repo: RepoImage, Role: b.role, Version: 1, Body: b.data}
		switch b.role {
		case tuf.Root:
			r, err := tuf.ParseRoot(b.data)
			if err != nil {
				return fmt.Errorf("bootstrap %s: %w", RepoImage, err)
			}
			m.Version, m.Expires = r.Signed.Version, r.Signed.Expires
		case tuf.Targets:
			root, err := s.root(ctx)
			if err != nil {
				return err
			}
			t, err := uptane.VerifyImageTargets(root, b.data, s.now())
			if err != nil {
				return fmt.Errorf("bootstrap image targets: %w", err)
			}
			m.Version, m.Expires = t.Signed.Version, t.Signed.Expires
		}
		if err := s.Store.PutMetadata(ctx, m); err != nil && !apperr.Is(err, apperr.Conflict) {
			return err
		}
	}
	if err := s.checkKeys(ctx); err != nil {
		return err
	}
	return s.Refresh(ctx, false)
}

// checkKeys reports whether the current root trusts the online snapshot and timestamp keys.
func (s *Service) checkKeys(ctx context.Context) error {
	root, err := s.root(ctx)
	if err != nil {
		return err
	}
	for _, c := range []struct {
		role string
		key  *tuf.Key
	}{{tuf.Snapshot, s.Keys.Snapshot}, {tuf.Timestamp, s.Keys.Timestamp}} {
		if c.key == nil || !slices.Contains(root.Signed.Roles[c.role].KeyIDs, c.key.ID) {
			return fmt.Errorf("the configured online key is not trusted for %s in the current root", c.role)
		}
	}
	return nil
}

// root returns the current image root.
func (s *Service) root(ctx context.Context) (*metadata.Metadata[metadata.RootType], error) {
	return LatestRoot(ctx, s.Store, RepoImage)
}

// LatestRoot returns the latest root of repo in the store, parsed.
func LatestRoot(ctx context.Context, st MetadataStore, repo string) (*metadata.Metadata[metadata.RootType], error) {
	m, err := st.LatestMetadata(ctx, repo, tuf.Root)
	if err != nil {
		return nil, fmt.Errorf("load %s root: %w", repo, err)
	}
	r, err := metadata.Root().FromBytes(m.Body)
	if err != nil {
		return nil, fmt.Errorf("parse stored %s root: %w", repo, err)
	}
	return r, nil
}

// imageTargets returns the latest image targets metadata. Every assignment reads it, so the
// parsed copy is kept and the store asked again at most every timestampRecheck (a target
// published on another replica moments ago fails the assignment, which the engine retries).
// Callers must not change what it returns.
func (s *Service) imageTargets(ctx context.Context) (*metadata.Metadata[metadata.TargetsType], error) {
	return s.imageTargetsFrom(ctx, false)
}

// imageTargetsFrom is imageTargets; fresh asks the store even if the copy is recent (it is
// parsed again only if the store holds a newer version).
func (s *Service) imageTargetsFrom(ctx context.Context, fresh bool) (*metadata.Metadata[metadata.TargetsType], error) {
	now, gen := s.now(), s.gen.Load()
	if c := s.targets.Load(); c != nil && s.current(c.gen, c.at, now) && !fresh {
		return c.t, nil
	}
	m, err := s.Store.LatestMetadata(ctx, RepoImage, tuf.Targets)
	if err != nil {
		return nil, fmt.Errorf("load image targets: %w", err)
	}
	if c := s.targets.Load(); c != nil && c.version == m.Version {
		s.targets.Store(&cachedTargets{t: c.t, version: c.version, at: now, gen: gen})
		return c.t, nil
	}
	t, err := metadata.Targets().FromBytes(m.Body)
	if err != nil {
		return nil, fmt.Errorf("parse stored image targets: %w", err)
	}
	s.targets.Store(&cachedTargets{t: t, version: m.Version, at: now, gen: gen})
	return t, nil
}

// TargetFile returns the entry of the named target in the latest image targets, found through
// the delegations (Lookup), for the director to sign into a device's view (Uptane: the
// director's target must match the image repository's). Returns apperr.NotFound if the image
// repository has no such target. The entry is shared: callers must not change it.
func (s *Service) TargetFile(ctx context.Context, name string) (*metadata.TargetFiles, error) {
	res, err := s.Lookup(ctx, name)
	if err != nil {
		return nil, err
	}
	return res.Target, nil
}

// recent reports whether a copy cached at is younger than timestampRecheck (a clock that went
// back makes it old).
func recent(at, now time.Time) bool { return now.Sub(at) < timestampRecheck && !now.Before(at) }

type cachedTargets struct {
	t       *metadata.Metadata[metadata.TargetsType]
	version int64
	at      time.Time
	gen     uint64
}

// Refresh signs a new image snapshot and timestamp if the snapshot does not name the latest
// targets, or the timestamp has used half its lifetime, or force is set. Replicas sign on their
// own (a device's timestamp fetch can trigger it on any of them): when another replica stored
// the same version first, this one reads what it stored and signs again only if that is not
// good enough, so the loser serves the winner's metadata instead of failing the request.
func (s *Service) Refresh(ctx context.Context, force bool) error {
	for attempt := 1; ; attempt++ {
		err := s.refresh(ctx, force)
		if !apperr.Is(err, apperr.Conflict) {
			return err
		}
		s.invalidate()
		force = false // the other replica's snapshot names the targets it read: checked again
		if attempt == refreshAttempts {
			// Still racing: what is stored was signed by another replica and is as good.
			s.logger().Info("image metadata signed concurrently by another replica", "attempts", attempt)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt) * 5 * time.Millisecond):
		}
	}
}

// refreshAttempts bounds Refresh's retries after another replica signed first.
const refreshAttempts = 4

func (s *Service) refresh(ctx context.Context, force bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	roles, err := s.snapshotRoles(ctx)
	if err != nil {
		return err
	}
	var next int64 = 1
	if ts, err := s.Store.LatestMetadata(ctx, RepoImage, tuf.Timestamp); err == nil {
		next = ts.Version + 1
		snap, err := s.Store.LatestMetadata(ctx, RepoImage, tuf.Snapshot)
		if err != nil {
			return err
		}
		sm, err := metadata.Snapshot().FromBytes(snap.Body)
		if err != nil {
			return fmt.Errorf("parse stored snapshot: %w", err)
		}
		fresh := now.Add(s.Lifetimes.Timestamp/2).Before(ts.Expires) && now.Add(s.Lifetimes.Snapshot/2).Before(snap.Expires)
		if !force && fresh && sameRoles(sm, roles) && s.trusted(ctx, ts.Body, sm) {
			return nil
		}
	} else if !apperr.Is(err, apperr.NotFound) {
		return err
	}
	st, err := tuf.SignSnapshotTimestampRoles(s.Keys.Snapshot, s.Keys.Timestamp, next, roles, now.Add(s.Lifetimes.Snapshot), now.Add(s.Lifetimes.Timestamp))
	if err != nil {
		return err
	}
	// Snapshot first: a reader that sees the new timestamp must find its snapshot.
	if err := s.Store.PutMetadata(ctx, &Meta{Repo: RepoImage, Role: tuf.Snapshot, Version: next, Body: st.Snapshot, Expires: now.Add(s.Lifetimes.Snapshot)}); err != nil {
		return err
	}
	if err := s.Store.PutMetadata(ctx, &Meta{Repo: RepoImage, Role: tuf.Timestamp, Version: next, Body: st.Timestamp, Expires: now.Add(s.Lifetimes.Timestamp)}); err != nil {
		return err
	}
	s.invalidate()
	s.logger().Info("signed image snapshot and timestamp", "version", next, "targets_version", roles[tuf.Targets], "roles", len(roles))
	return nil
}

// snapshotRoles names the targets roles the snapshot lists (TUF 5.5), each at its latest
// stored version: the top-level targets and every bin and product role ever stored. A role
// stays listed after its delegation is removed, since a device refuses a snapshot that drops a
// role its trusted snapshot lists (TUF 5.5.5). One query, whatever the number of roles.
func (s *Service) snapshotRoles(ctx context.Context) (map[string]int64, error) {
	all, err := s.Store.LatestVersions(ctx, RepoImage)
	if err != nil {
		return nil, err
	}
	roles := map[string]int64{}
	for role, v := range all {
		if role == tuf.Targets || tuf.IsBinRole(role) || tuf.IsProductRole(role) {
			roles[role] = v
		}
	}
	if roles[tuf.Targets] == 0 {
		return nil, apperr.E(apperr.NotFound, "no image targets")
	}
	return roles, nil
}

// sameRoles reports whether snapshot sm names exactly the targets roles at the versions given.
func sameRoles(sm *metadata.Metadata[metadata.SnapshotType], roles map[string]int64) bool {
	if len(sm.Signed.Meta) != len(roles) {
		return false
	}
	for role, v := range roles {
		if m := sm.Signed.Meta[role+".json"]; m == nil || m.Version != v {
			return false
		}
	}
	return true
}

// trusted reports whether the stored timestamp and snapshot verify against the current root, so
// that after the online keys were rotated the server re-signs at once instead of serving
// metadata that devices can no longer verify.
func (s *Service) trusted(ctx context.Context, tsBody []byte, sm *metadata.Metadata[metadata.SnapshotType]) bool {
	root, err := s.root(ctx)
	if err != nil {
		return false
	}
	err = tuf.Guard("timestamp", func() error {
		tm, err := metadata.Timestamp().FromBytes(tsBody)
		if err != nil {
			return err
		}
		if err := root.VerifyDelegate(tuf.Timestamp, tm); err != nil {
			return err
		}
		return root.VerifyDelegate(tuf.Snapshot, sm)
	})
	return err == nil
}

func (s *Service) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// Metadata serves a file of the image repository: "N.root.json", "timestamp.json",
// "N.snapshot.json", "N.targets.json" or a delegated role's "N.ROLE.json". Returns apperr.NotFound for anything else.
func (s *Service) Metadata(ctx context.Context, file string) ([]byte, error) {
	if file == "timestamp.json" {
		now := s.now()
		if c := s.timestamp.Load(); c != nil && s.current(c.gen, c.at, now) {
			return c.body, nil
		}
		if err := s.Refresh(ctx, false); err != nil {
			return nil, err
		}
		gen := s.gen.Load()
		m, err := s.Store.LatestMetadata(ctx, RepoImage, tuf.Timestamp)
		if err != nil {
			return nil, err
		}
		s.timestamp.Store(&cachedTimestamp{body: m.Body, at: now, gen: gen})
		return m.Body, nil
	}
	role, v, ok := VersionedFile(file)
	if !ok || (role != tuf.Root && role != tuf.Snapshot && role != tuf.Targets && !tuf.IsBinRole(role) && !tuf.IsProductRole(role)) {
		return nil, apperr.E(apperr.NotFound, "no metadata file %s", file)
	}
	key := role + "/" + strconv.FormatInt(v, 10)
	if b, ok := s.files.Load(key); ok {
		return b.([]byte), nil
	}
	m, err := s.Store.FindMetadata(ctx, RepoImage, role, v)
	if err != nil {
		return nil, err
	}
	if s.nfiles.Add(1) <= maxCachedFiles {
		s.files.Store(key, m.Body)
	}
	return m.Body, nil
}

// VersionedFile parses the name of a consistent-snapshot file, "N.role.json" (TUF 5.3.3 names
// versioned files so): ok is false for any other name or a version below 1.
func VersionedFile(file string) (role string, version int64, ok bool) {
	ver, role, ok := strings.Cut(strings.TrimSuffix(file, ".json"), ".")
	if !ok || !strings.HasSuffix(file, ".json") {
		return "", 0, false
	}
	v, err := strconv.ParseInt(ver, 10, 64)
	if err != nil || v < 1 {
		return "", 0, false
	}
	return role, v, true
}

// CurrentTargets returns the latest image targets metadata, for the release CLI to extend.
func (s *Service) CurrentTargets(ctx context.Context) ([]byte, error) {
	m, err := s.Store.LatestMetadata(ctx, RepoImage, tuf.Targets)
	if err != nil {
		return nil, err
	}
	return m.Body, nil
}
