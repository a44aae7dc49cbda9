// Package repo runs Upkeep's two update repositories on the server: the image repository, whose
// targets are signed offline and uploaded, and the director, which signs for each device the one
// image it must install. The server only ever holds online keys (snapshot, timestamp, director).
package repo

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/trust"
)

// Repository names in the MetadataStore.
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

// MetadataStore persists signed metadata. Implementations are safe for concurrent use.
type MetadataStore interface {
	// PutMetadata stores a version. Returns apperr.Conflict if repo/role/version exists.
	PutMetadata(ctx context.Context, m *Meta) error
	// LatestMetadata returns the highest version, or apperr.NotFound.
	LatestMetadata(ctx context.Context, repo, role string) (*Meta, error)
	// FindMetadata returns one version, or apperr.NotFound.
	FindMetadata(ctx context.Context, repo, role string, version int64) (*Meta, error)
	// PutDirectorView stores version prev+1 of a device's director view if its latest stored
	// version is prev (0: none), and forgets versions too old to be in use. In the same
	// transaction it raises the device's director version to the view's and, when as is not
	// nil, records the assignment the view carries, so that a view and the assignment it names
	// are never apart. Returns apperr.Conflict if another writer got there first.
	PutDirectorView(ctx context.Context, deviceID string, prev int64, v *trust.DirectorView, as *Assignment) error
	// PutDirectorViews stores several devices' views in one transaction, each as
	// PutDirectorView would. A device whose latest version is no longer its Prev is skipped
	// and listed in stale; any error stores nothing.
	PutDirectorViews(ctx context.Context, puts []ViewPut) (stale []string, err error)
	// LatestDirectorVersions returns the latest view version of each device that has one.
	LatestDirectorVersions(ctx context.Context, ids []string) (map[string]int64, error)
	// FindDirectorView returns one version of a device's view (0: the latest), or
	// apperr.NotFound.
	FindDirectorView(ctx context.Context, deviceID string, version int64) (*trust.DirectorView, error)
}

// Keys are the online keys the server holds.
type Keys struct {
	Snapshot, Timestamp, Director *trust.Key
}

// Service signs and serves both repositories. It is safe for concurrent use.
type Service struct {
	Meta      MetadataStore
	Releases  release.Store
	Devices   fleet.Store
	Blobs     release.BlobStore
	Keys      Keys
	Lifetimes trust.Lifetimes
	Now       func() time.Time
	Logger    *slog.Logger
	// OnAssign, if set, is told each device's new director version (the check-in cache).
	OnAssign func(deviceID string, version int64)
	// Notice, if set, returns the lifecycle notice for a product's devices (nil: none).
	Notice func(ctx context.Context, product string) (*trust.Notice, error)

	mu sync.Mutex // serialises image snapshot/timestamp signing in this process

	// The image timestamp is the same for every device: it is checked and read from the store at
	// most every timestampRecheck, and versioned metadata files, which never change, are kept.
	timestamp atomic.Pointer[cachedTimestamp]
	targets   atomic.Pointer[cachedTargets]
	files     sync.Map // "repo/role/version" -> []byte
	nfiles    atomic.Int64
	views     viewCache
}

// viewCache keeps the director views most recently signed or read, by device and version. A
// device reads timestamp N, then snapshot N and targets N, within moments: the cache answers
// the last two without the store. A version of a view never changes once stored, so a cached
// one is never stale, whichever replica signed it; the latest version is always read from the
// store. It holds at most viewCacheSize views (a few MiB), forgetting the oldest first.
type viewCache struct {
	mu    sync.Mutex
	views map[viewKey]*trust.DirectorView
	order []viewKey // ring of the keys in insertion order
	next  int
}

type viewKey struct {
	device  string
	version int64
}

const viewCacheSize = 4096

func (c *viewCache) get(device string, version int64) *trust.DirectorView {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.views[viewKey{device, version}]
}

func (c *viewCache) put(device string, v *trust.DirectorView) {
	k := viewKey{device, v.Version}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.views == nil {
		c.views, c.order = map[viewKey]*trust.DirectorView{}, make([]viewKey, viewCacheSize)
	}
	if _, ok := c.views[k]; ok {
		return
	}
	delete(c.views, c.order[c.next])
	c.order[c.next] = k
	c.next = (c.next + 1) % viewCacheSize
	c.views[k] = v
}

type cachedTimestamp struct {
	body []byte
	at   time.Time
}

// timestampRecheck bounds how stale another replica's publication can look here.
const (
	timestampRecheck = 2 * time.Second
	maxCachedFiles   = 256
)

// invalidate drops the cached image timestamp after this process changed the image repository.
func (s *Service) invalidate() { s.timestamp.Store(nil); s.targets.Store(nil) }

// ForgetCache drops the cached image timestamp, for whoever changed the stored metadata behind
// the service's back (the attack tests, playing a compromised server).
func (s *Service) ForgetCache() { s.invalidate() }

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

// Bootstrap stores the initial image root, director root and image targets on first start. On
// later starts it checks that the online keys match the trusted roots.
func (s *Service) Bootstrap(ctx context.Context, imageRoot, directorRoot, imageTargets []byte) error {
	for _, b := range []struct {
		repo, role string
		data       []byte
	}{{RepoImage, trust.Root, imageRoot}, {RepoDirector, trust.Root, directorRoot}, {RepoImage, trust.Targets, imageTargets}} {
		if _, err := s.Meta.LatestMetadata(ctx, b.repo, b.role); err == nil {
			continue
		} else if !apperr.Is(err, apperr.NotFound) {
			return err
		}
		if b.data == nil {
			return fmt.Errorf("bootstrap: no %s %s metadata: run `upkeep keys init` and pass --keys", b.repo, b.role)
		}
		m := &Meta{Repo: b.repo, Role: b.role, Version: 1, Body: b.data}
		switch b.role {
		case trust.Root:
			r, err := trust.ParseRoot(b.data)
			if err != nil {
				return fmt.Errorf("bootstrap %s: %w", b.repo, err)
			}
			m.Version, m.Expires = r.Signed.Version, r.Signed.Expires
		case trust.Targets:
			root, err := s.imageRoot(ctx)
			if err != nil {
				return err
			}
			t, err := trust.VerifyTargets(root, b.data, s.now())
			if err != nil {
				return fmt.Errorf("bootstrap image targets: %w", err)
			}
			m.Version, m.Expires = t.Signed.Version, t.Signed.Expires
		}
		if err := s.Meta.PutMetadata(ctx, m); err != nil && !apperr.Is(err, apperr.Conflict) {
			return err
		}
	}
	if err := s.checkKeys(ctx); err != nil {
		return err
	}
	return s.RefreshImage(ctx, false)
}

func (s *Service) checkKeys(ctx context.Context) error {
	ir, err := s.imageRoot(ctx)
	if err != nil {
		return err
	}
	dr, err := s.directorRoot(ctx)
	if err != nil {
		return err
	}
	for _, c := range []struct {
		root *metadata.Metadata[metadata.RootType]
		role string
		key  *trust.Key
	}{{ir, trust.Snapshot, s.Keys.Snapshot}, {ir, trust.Timestamp, s.Keys.Timestamp}, {dr, trust.Targets, s.Keys.Director}, {dr, trust.Snapshot, s.Keys.Director}, {dr, trust.Timestamp, s.Keys.Director}} {
		if c.key == nil || !slices.Contains(c.root.Signed.Roles[c.role].KeyIDs, c.key.ID) {
			return fmt.Errorf("the configured online key is not trusted for %s in the current root", c.role)
		}
	}
	return nil
}

func (s *Service) imageRoot(ctx context.Context) (*metadata.Metadata[metadata.RootType], error) {
	return s.latestRoot(ctx, RepoImage)
}

func (s *Service) directorRoot(ctx context.Context) (*metadata.Metadata[metadata.RootType], error) {
	return s.latestRoot(ctx, RepoDirector)
}

func (s *Service) latestRoot(ctx context.Context, repo string) (*metadata.Metadata[metadata.RootType], error) {
	m, err := s.Meta.LatestMetadata(ctx, repo, trust.Root)
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
	now := s.now()
	if c := s.targets.Load(); c != nil && recent(c.at, now) {
		return c.t, nil
	}
	m, err := s.Meta.LatestMetadata(ctx, RepoImage, trust.Targets)
	if err != nil {
		return nil, fmt.Errorf("load image targets: %w", err)
	}
	if c := s.targets.Load(); c != nil && c.version == m.Version {
		s.targets.Store(&cachedTargets{t: c.t, version: c.version, at: now})
		return c.t, nil
	}
	t, err := metadata.Targets().FromBytes(m.Body)
	if err != nil {
		return nil, fmt.Errorf("parse stored image targets: %w", err)
	}
	s.targets.Store(&cachedTargets{t: t, version: m.Version, at: now})
	return t, nil
}

// recent reports whether a copy cached at is younger than timestampRecheck (a clock that went
// back makes it old).
func recent(at, now time.Time) bool { return now.Sub(at) < timestampRecheck && !now.Before(at) }

type cachedTargets struct {
	t       *metadata.Metadata[metadata.TargetsType]
	version int64
	at      time.Time
}

// RefreshImage signs a new image snapshot and timestamp if the snapshot does not name the latest
// targets, or the timestamp has used half its lifetime, or force is set. Replicas sign on their
// own (a device's timestamp fetch can trigger it on any of them): when another replica stored
// the same version first, this one reads what it stored and signs again only if that is not
// good enough, so the loser serves the winner's metadata instead of failing the request.
func (s *Service) RefreshImage(ctx context.Context, force bool) error {
	for attempt := 1; ; attempt++ {
		err := s.refreshImage(ctx, force)
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

// refreshAttempts bounds RefreshImage's retries after another replica signed first.
const refreshAttempts = 4

func (s *Service) refreshImage(ctx context.Context, force bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	tm, err := s.Meta.LatestMetadata(ctx, RepoImage, trust.Targets)
	if err != nil {
		return err
	}
	var next int64 = 1
	if ts, err := s.Meta.LatestMetadata(ctx, RepoImage, trust.Timestamp); err == nil {
		next = ts.Version + 1
		snap, err := s.Meta.LatestMetadata(ctx, RepoImage, trust.Snapshot)
		if err != nil {
			return err
		}
		sm, err := metadata.Snapshot().FromBytes(snap.Body)
		if err != nil {
			return fmt.Errorf("parse stored snapshot: %w", err)
		}
		fresh := now.Add(s.Lifetimes.Timestamp/2).Before(ts.Expires) && now.Add(s.Lifetimes.Snapshot/2).Before(snap.Expires)
		if !force && fresh && sm.Signed.Meta["targets.json"].Version == tm.Version && s.trusted(ctx, ts.Body, sm) {
			return nil
		}
	} else if !apperr.Is(err, apperr.NotFound) {
		return err
	}
	st, err := trust.SignSnapshotTimestamp(s.Keys.Snapshot, s.Keys.Timestamp, next, tm.Version, now.Add(s.Lifetimes.Snapshot), now.Add(s.Lifetimes.Timestamp))
	if err != nil {
		return err
	}
	// Snapshot first: a reader that sees the new timestamp must find its snapshot.
	if err := s.Meta.PutMetadata(ctx, &Meta{Repo: RepoImage, Role: trust.Snapshot, Version: next, Body: st.Snapshot, Expires: now.Add(s.Lifetimes.Snapshot)}); err != nil {
		return err
	}
	if err := s.Meta.PutMetadata(ctx, &Meta{Repo: RepoImage, Role: trust.Timestamp, Version: next, Body: st.Timestamp, Expires: now.Add(s.Lifetimes.Timestamp)}); err != nil {
		return err
	}
	s.invalidate()
	s.logger().Info("signed image snapshot and timestamp", "version", next, "targets_version", tm.Version)
	return nil
}

// trusted reports whether the stored timestamp and snapshot verify against the current root, so
// that after the online keys were rotated the server re-signs at once instead of serving
// metadata that devices can no longer verify.
func (s *Service) trusted(ctx context.Context, tsBody []byte, sm *metadata.Metadata[metadata.SnapshotType]) bool {
	root, err := s.imageRoot(ctx)
	if err != nil {
		return false
	}
	err = trust.Guard("timestamp", func() error {
		tm, err := metadata.Timestamp().FromBytes(tsBody)
		if err != nil {
			return err
		}
		if err := root.VerifyDelegate(trust.Timestamp, tm); err != nil {
			return err
		}
		return root.VerifyDelegate(trust.Snapshot, sm)
	})
	return err == nil
}

func (s *Service) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// nextTargets checks image targets metadata signed offline as the successor of the stored
// ones: signed by a threshold of the current root's targets keys (expiry aside, see
// trust.VerifyTargets), exactly one version newer, and keeping every existing target unchanged
// (rule says what else the caller allows, for the error). It returns the new and current
// targets.
func (s *Service) nextTargets(ctx context.Context, data []byte, rule string) (next, cur *metadata.Metadata[metadata.TargetsType], err error) {
	root, err := s.imageRoot(ctx)
	if err != nil {
		return nil, nil, err
	}
	next, err = trust.VerifyTargets(root, data, s.now())
	if err != nil {
		return nil, nil, apperr.Wrap(apperr.Verification, err, "targets metadata refused: "+err.Error())
	}
	s.targets.Store(nil) // checked against the store, not this replica's copy
	cur, err = s.imageTargets(ctx)
	if err != nil {
		return nil, nil, err
	}
	if next.Signed.Version != cur.Signed.Version+1 {
		return nil, nil, apperr.E(apperr.Conflict, "targets version %d, but the server has %d: fetch the current targets and sign version %d", next.Signed.Version, cur.Signed.Version, cur.Signed.Version+1)
	}
	for n, old := range cur.Signed.Targets {
		nt, ok := next.Signed.Targets[n]
		if !ok || !nt.Equal(*old) || !sameCustom(nt, old) {
			return nil, nil, apperr.E(apperr.Invalid, "published target %s was removed or changed; %s", n, rule)
		}
	}
	return next, cur, nil
}

// putTargets stores targets that nextTargets accepted.
func (s *Service) putTargets(ctx context.Context, next *metadata.Metadata[metadata.TargetsType], data []byte) error {
	err := s.Meta.PutMetadata(ctx, &Meta{Repo: RepoImage, Role: trust.Targets, Version: next.Signed.Version, Body: data, Expires: next.Signed.Expires})
	if apperr.Is(err, apperr.Conflict) {
		return apperr.E(apperr.Conflict, "targets version %d was published concurrently; sign again", next.Signed.Version)
	}
	return err
}

// Publish accepts new image targets metadata that a release engineer signed offline. It must be
// signed by a threshold of the targets keys in the current root, be exactly one version newer
// than the current targets, keep every existing target unchanged, and add exactly the target
// name, whose artifact must already be uploaded with the same length and hashes.
func (s *Service) Publish(ctx context.Context, name string, data []byte) (*release.Release, error) {
	if err := trust.ValidTargetName(name); err != nil {
		return nil, apperr.Wrap(apperr.Invalid, err, err.Error())
	}
	next, cur, err := s.nextTargets(ctx, data, "targets may only be added")
	if err != nil {
		return nil, err
	}
	added := slices.Sorted(maps.Keys(next.Signed.Targets))
	added = slices.DeleteFunc(added, func(n string) bool { _, ok := cur.Signed.Targets[n]; return ok })
	if len(added) != 1 || added[0] != name {
		return nil, apperr.E(apperr.Invalid, "targets metadata must add exactly the target %s, it adds %v", name, added)
	}
	tf := next.Signed.Targets[name]
	c, _ := trust.ParseTargetCustom(tf) // validated by VerifyTargets
	if want := trust.TargetName(c.Product, c.Version, lastSegment(name)); want != name {
		return nil, apperr.E(apperr.Invalid, "target name %s must be %s (product/version/file)", name, want)
	}
	sha256hex, sha512hex := hex.EncodeToString(tf.Hashes["sha256"]), hex.EncodeToString(tf.Hashes["sha512"])
	if len(tf.Hashes["sha256"]) != 32 || len(tf.Hashes["sha512"]) != 64 {
		return nil, apperr.E(apperr.Invalid, "target %s needs sha256 and sha512 hashes", name)
	}
	blob, err := s.Blobs.Stat(ctx, sha256hex)
	if err != nil {
		if apperr.Is(err, apperr.NotFound) {
			return nil, apperr.E(apperr.Invalid, "artifact %s (sha256 %s) has not been uploaded", name, sha256hex)
		}
		return nil, err
	}
	if blob.Length != tf.Length || blob.SHA512 != sha512hex {
		return nil, apperr.E(apperr.Verification, "uploaded artifact differs from the signed target %s (length %d, signed %d)", name, blob.Length, tf.Length)
	}
	rel := &release.Release{
		Product: c.Product, Version: c.Version, HardwareIDs: c.HardwareIDs, SecurityVersion: c.SecurityVersion,
		Class: c.Class, Fixes: c.Fixes, Target: name, Length: tf.Length, SHA256: sha256hex, SHA512: sha512hex,
		TargetsVersion: next.Signed.Version, PublishedAt: s.now(),
	}
	if _, err := s.Releases.FindRelease(ctx, c.Product, c.Version); err == nil {
		return nil, apperr.E(apperr.Conflict, "release %s already exists", rel.Ref())
	}
	if err := s.putTargets(ctx, next, data); err != nil {
		return nil, err
	}
	if err := s.Releases.CreateRelease(ctx, rel); err != nil {
		return nil, err
	}
	if err := s.RefreshImage(ctx, true); err != nil {
		return nil, err
	}
	return rel, nil
}

func sameCustom(a, b *metadata.TargetFiles) bool {
	if a.Custom == nil || b.Custom == nil {
		return a.Custom == b.Custom
	}
	return bytes.Equal(*a.Custom, *b.Custom)
}

func lastSegment(name string) string { return name[strings.LastIndexByte(name, '/')+1:] }

// RotateRoot accepts a new image root signed by a threshold of the current and of the new root keys.
func (s *Service) RotateRoot(ctx context.Context, data []byte) error {
	cur, err := s.imageRoot(ctx)
	if err != nil {
		return err
	}
	next, err := trust.VerifyRootUpdate(cur, data)
	if err != nil {
		return apperr.Wrap(apperr.Verification, err, "root refused: "+err.Error())
	}
	if err := s.Meta.PutMetadata(ctx, &Meta{Repo: RepoImage, Role: trust.Root, Version: next.Signed.Version, Body: data, Expires: next.Signed.Expires}); err != nil {
		return err
	}
	if err := s.checkKeys(ctx); err != nil {
		s.logger().Warn("after root rotation the server's online keys are not trusted", "err", err)
	}
	return s.RefreshImage(ctx, true)
}

// ImageMetadata serves an image-repository file: "N.root.json", "timestamp.json",
// "N.snapshot.json" or "N.targets.json". Returns apperr.NotFound for anything else.
func (s *Service) ImageMetadata(ctx context.Context, file string) ([]byte, error) {
	return s.serveMeta(ctx, RepoImage, file, map[string]bool{trust.Root: true, trust.Snapshot: true, trust.Targets: true})
}

// DirectorRoot serves "N.root.json" of the director repository.
func (s *Service) DirectorRoot(ctx context.Context, file string) ([]byte, error) {
	return s.serveMeta(ctx, RepoDirector, file, map[string]bool{trust.Root: true})
}

func (s *Service) serveMeta(ctx context.Context, repo, file string, versioned map[string]bool) ([]byte, error) {
	if file == "timestamp.json" && repo == RepoImage {
		now := s.now()
		if c := s.timestamp.Load(); c != nil && recent(c.at, now) {
			return c.body, nil
		}
		if err := s.RefreshImage(ctx, false); err != nil {
			return nil, err
		}
		m, err := s.Meta.LatestMetadata(ctx, repo, trust.Timestamp)
		if err != nil {
			return nil, err
		}
		s.timestamp.Store(&cachedTimestamp{body: m.Body, at: now})
		return m.Body, nil
	}
	ver, role, ok := strings.Cut(strings.TrimSuffix(file, ".json"), ".")
	if !ok || !strings.HasSuffix(file, ".json") || !versioned[role] {
		return nil, apperr.E(apperr.NotFound, "no metadata file %s", file)
	}
	v, err := strconv.ParseInt(ver, 10, 64)
	if err != nil || v < 1 {
		return nil, apperr.E(apperr.NotFound, "no metadata file %s", file)
	}
	key := repo + "/" + role + "/" + ver
	if b, ok := s.files.Load(key); ok {
		return b.([]byte), nil
	}
	m, err := s.Meta.FindMetadata(ctx, repo, role, v)
	if err != nil {
		return nil, err
	}
	if s.nfiles.Add(1) <= maxCachedFiles {
		s.files.Store(key, m.Body)
	}
	return m.Body, nil
}

// Assign makes the director name rel's image for device d and signs the device's new view.
func (s *Service) Assign(ctx context.Context, d *fleet.Device, rel *release.Release) error {
	return s.AssignWith(ctx, d, rel, nil)
}

// AssignWith is Assign with an install policy (consent, maintenance window) that the device
// receives signed with the assignment.
func (s *Service) AssignWith(ctx context.Context, d *fleet.Device, rel *release.Release, p *trust.InstallPolicy) error {
	if err := assignable(d, rel); err != nil {
		return err
	}
	pol, err := encodePolicy(p)
	if err != nil {
		return err
	}
	return s.reassign(ctx, d.ID, rel.Target, pol)
}

// assignable refuses a device that is not accepted, or of another product, or whose hardware
// rel is not for. Devices check the product too (trust.Decide); refusing here gives the operator
// a clear answer instead of a device's verification failure.
func assignable(d *fleet.Device, rel *release.Release) error {
	if d.Status != fleet.StatusAccepted {
		return apperr.E(apperr.Invalid, "device %s is %s, not accepted", d.ID, d.Status)
	}
	if rel.Product != d.Product {
		return apperr.E(apperr.Invalid, "release %s is for product %s, device %s is a %s", rel.Ref(), rel.Product, d.ID, d.Product)
	}
	if !slices.Contains(rel.HardwareIDs, d.HardwareID) {
		return apperr.E(apperr.Invalid, "release %s is not for hardware %s of device %s", rel.Ref(), d.HardwareID, d.ID)
	}
	return nil
}

// encodePolicy is the stored form of an install policy ("" for none).
func encodePolicy(p *trust.InstallPolicy) (string, error) {
	if p == nil {
		return "", nil
	}
	b, err := json.Marshal(p)
	return string(b), err
}

// reassign signs the device's view for target; the store records the assignment in the same
// transaction as the view, so no assignment exists that no view carries.
func (s *Service) reassign(ctx context.Context, id, target, pol string) error {
	return s.resignAs(ctx, id, &Assignment{Target: target, Policy: pol})
}

// Assignment is the image a device's director view names and the install policy it carries.
type Assignment struct{ Target, Policy string }

// ViewPut is one device's next director view for MetadataStore.PutDirectorViews.
type ViewPut struct {
	DeviceID string
	Prev     int64
	View     *trust.DirectorView
	Assign   *Assignment
}

// assignSigners is how many views AssignMany signs at once.
const assignSigners = 4

// AssignMany is AssignWith for many devices: it signs their views a few at a time and stores
// them in one transaction, so that a wave of thousands costs a few write transactions rather
// than one per device. A device whose view changed meanwhile is assigned on its own. It
// returns the devices it could not assign, with the reason.
func (s *Service) AssignMany(ctx context.Context, ds []*fleet.Device, rel *release.Release, p *trust.InstallPolicy) map[string]error {
	failed := map[string]error{}
	pol, perr := encodePolicy(p)
	var todo []*fleet.Device
	for _, d := range ds {
		err := perr
		if err == nil {
			err = assignable(d, rel)
		}
		if err != nil {
			failed[d.ID] = err
			continue
		}
		todo = append(todo, d)
	}
	if len(todo) == 0 {
		return failed
	}
	one := func(ids []string) { // the careful path, device by device
		for _, id := range ids {
			if err := s.reassign(ctx, id, rel.Target, pol); err != nil {
				failed[id] = err
			}
		}
	}
	ids := make([]string, len(todo))
	for i, d := range todo {
		ids[i] = d.ID
	}
	it, err := s.imageTargets(ctx)
	if err != nil {
		one(ids)
		return failed
	}
	tf := it.Signed.Targets[rel.Target]
	if tf == nil {
		err := apperr.E(apperr.NotFound, "target %s is not in the image repository", rel.Target)
		for _, id := range ids {
			failed[id] = err
		}
		return failed
	}
	prev, err := s.Meta.LatestDirectorVersions(ctx, ids)
	if err != nil {
		one(ids)
		return failed
	}
	notices := map[string]*trust.Notice{}
	for _, d := range todo {
		if _, ok := notices[d.Product]; ok || s.Notice == nil {
			continue
		}
		n, err := s.Notice(ctx, d.Product)
		if err != nil {
			one(ids)
			return failed
		}
		notices[d.Product] = n
	}
	as := &Assignment{Target: rel.Target, Policy: pol}
	puts := make([]ViewPut, len(todo))
	errs := make([]error, len(todo))
	var wg sync.WaitGroup
	sem := make(chan struct{}, assignSigners)
	for i, d := range todo {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			v := prev[d.ID]
			view, err := trust.SignView(s.Keys.Director, trust.ViewSpec{Version: v + 1, Expires: s.now().Add(s.Lifetimes.Director),
				DeviceID: d.ID, HardwareID: d.HardwareID, Name: rel.Target, Target: tf, Notice: notices[d.Product], Install: p})
			puts[i], errs[i] = ViewPut{DeviceID: d.ID, Prev: v, View: view, Assign: as}, err
		}()
	}
	wg.Wait()
	var ok []ViewPut
	for i, put := range puts {
		if errs[i] != nil {
			failed[put.DeviceID] = errs[i]
			continue
		}
		ok = append(ok, put)
	}
	stale, err := s.Meta.PutDirectorViews(ctx, ok)
	if err != nil { // a race with another writer: nothing was stored
		one(ids)
		return failed
	}
	for _, put := range ok {
		if slices.Contains(stale, put.DeviceID) {
			continue
		}
		s.views.put(put.DeviceID, put.View)
		if s.OnAssign != nil {
			s.OnAssign(put.DeviceID, put.View.Version)
		}
	}
	one(stale)
	return failed
}

// Unassign makes the director name the image the device runs, so that it installs nothing new;
// a download in progress is abandoned at the device's next verification. A device that runs an
// image the image repository does not hold (a factory image never published) gets a view that
// names no image at all: withdrawn, it installs nothing (Uptane: no director target, no update).
func (s *Service) Unassign(ctx context.Context, d *fleet.Device) error {
	target := d.InstalledTarget
	if target != "" {
		it, err := s.imageTargets(ctx)
		if err != nil {
			return err
		}
		if it.Signed.Targets[target] == nil {
			target = ""
		}
	}
	return s.reassign(ctx, d.ID, target, "")
}

// resign signs a new director view for a device from its stored assignment. The device is read
// after the latest view, so when two signers race the loser retries with the newest assignment.
func (s *Service) resign(ctx context.Context, id string) error { return s.resignAs(ctx, id, nil) }

// resignAs is resign with the assignment given instead of the stored one (nil: the stored one).
func (s *Service) resignAs(ctx context.Context, id string, as *Assignment) error {
	for range 8 {
		var prev int64
		if v, err := s.Meta.FindDirectorView(ctx, id, 0); err == nil {
			prev = v.Version
		} else if !apperr.Is(err, apperr.NotFound) {
			return err
		}
		d, err := s.Devices.FindDevice(ctx, id)
		if err != nil {
			return err
		}
		var tf *metadata.TargetFiles
		target, policy := d.Assigned, d.AssignPolicy
		if as != nil {
			target, policy = as.Target, as.Policy
		}
		if target != "" {
			it, err := s.imageTargets(ctx)
			if err != nil {
				return err
			}
			if tf = it.Signed.Targets[target]; tf == nil {
				return apperr.E(apperr.NotFound, "target %s is not in the image repository", target)
			}
		}
		var pol *trust.InstallPolicy
		if policy != "" && target != "" {
			pol = &trust.InstallPolicy{}
			if err := json.Unmarshal([]byte(policy), pol); err != nil {
				return fmt.Errorf("device %s install policy: %w", id, err)
			}
		}
		err = s.put(ctx, d, prev, target, tf, pol, as)
		if apperr.Is(err, apperr.Conflict) {
			continue
		}
		return err
	}
	return apperr.E(apperr.Conflict, "director view of %s changed concurrently", id)
}

func (s *Service) put(ctx context.Context, d *fleet.Device, prev int64, target string, tf *metadata.TargetFiles, pol *trust.InstallPolicy, as *Assignment) error {
	var notice *trust.Notice
	if s.Notice != nil {
		var err error
		if notice, err = s.Notice(ctx, d.Product); err != nil {
			return err
		}
	}
	view, err := trust.SignView(s.Keys.Director, trust.ViewSpec{Version: prev + 1, Expires: s.now().Add(s.Lifetimes.Director),
		DeviceID: d.ID, HardwareID: d.HardwareID, Name: target, Target: tf, Notice: notice, Install: pol})
	if err != nil {
		return err
	}
	if err := s.Meta.PutDirectorView(ctx, d.ID, prev, view, as); err != nil {
		return err
	}
	s.views.put(d.ID, view)
	if s.OnAssign != nil {
		s.OnAssign(d.ID, view.Version)
	}
	return nil
}

// Resign signs a fresh director view for a device from its stored assignment, for instance
// after its product's lifecycle notice changed.
func (s *Service) Resign(ctx context.Context, id string) error { return s.resign(ctx, id) }

// SignDirector signs a new director view for d naming exactly target with the entry tf (nil:
// nothing), whatever the device's assignment says. Only the attack tests use it, to play a
// compromised server that holds the online director key.
func (s *Service) SignDirector(ctx context.Context, d *fleet.Device, target string, tf *metadata.TargetFiles) error {
	var prev int64
	if v, err := s.Meta.FindDirectorView(ctx, d.ID, 0); err == nil {
		prev = v.Version
	} else if !apperr.Is(err, apperr.NotFound) {
		return err
	}
	return s.put(ctx, d, prev, target, tf, nil, nil)
}

// DirectorMetadata serves a device's director file: "timestamp.json", "N.snapshot.json" or
// "N.targets.json" (the director root has consistent snapshots, so a view being re-signed never
// tears a refresh), or "N.root.json" of the shared director root. A view that has used half its
// lifetime is re-signed when its timestamp is fetched.
func (s *Service) DirectorMetadata(ctx context.Context, deviceID, file string) ([]byte, error) {
	if file == "timestamp.json" {
		v, err := s.Meta.FindDirectorView(ctx, deviceID, 0)
		if err != nil && !apperr.Is(err, apperr.NotFound) {
			return nil, err
		}
		if v == nil || !s.now().Add(s.Lifetimes.Director/2).Before(v.Expires) {
			if err := s.resign(ctx, deviceID); err != nil {
				return nil, err
			}
			if v, err = s.Meta.FindDirectorView(ctx, deviceID, 0); err != nil {
				return nil, err
			}
		}
		s.views.put(deviceID, v)
		return v.Timestamp, nil
	}
	ver, role, ok := strings.Cut(strings.TrimSuffix(file, ".json"), ".")
	if !ok || !strings.HasSuffix(file, ".json") {
		return nil, apperr.E(apperr.NotFound, "no metadata file %s", file)
	}
	if role == trust.Root {
		return s.DirectorRoot(ctx, file)
	}
	n, err := strconv.ParseInt(ver, 10, 64)
	if err != nil || n < 1 || (role != trust.Snapshot && role != trust.Targets) {
		return nil, apperr.E(apperr.NotFound, "no metadata file %s", file)
	}
	v := s.views.get(deviceID, n)
	if v == nil {
		if v, err = s.Meta.FindDirectorView(ctx, deviceID, n); err != nil {
			return nil, err
		}
		s.views.put(deviceID, v)
	}
	if role == trust.Snapshot {
		return v.Snapshot, nil
	}
	return v.Targets, nil
}

// CurrentTargets returns the latest image targets metadata, for the release CLI to extend.
func (s *Service) CurrentTargets(ctx context.Context) ([]byte, error) {
	m, err := s.Meta.LatestMetadata(ctx, RepoImage, trust.Targets)
	if err != nil {
		return nil, err
	}
	return m.Body, nil
}
