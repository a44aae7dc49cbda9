package imagerepo

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"maps"
	"slices"
	"strings"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/delta"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
)

// nextTargets checks image targets metadata signed offline as the successor of the stored
// ones: signed by a threshold of the current root's targets keys (expiry aside, see
// uptane.VerifyImageTargets), exactly one version newer, and keeping every existing target unchanged
// (rule says what else the caller allows, for the error). It returns the new and current
// targets.
func (s *Service) nextTargets(ctx context.Context, data []byte, rule string) (next, cur *metadata.Metadata[metadata.TargetsType], err error) {
	root, err := s.root(ctx)
	if err != nil {
		return nil, nil, err
	}
	next, err = uptane.VerifyImageTargets(root, data, s.now())
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

// nextFor checks the successor of the role responsible for the target name: the product's
// delegated role (nextRole) or, for a product without a delegation, the top-level targets
// (nextTargets). It returns the role, the new and the current metadata.
func (s *Service) nextFor(ctx context.Context, name string, data []byte, rule string) (role string, next, cur *metadata.Metadata[metadata.TargetsType], err error) {
	role, delegator, err := s.responsible(ctx, name, true) // the graph as stored, not this replica's copy
	if err != nil {
		return "", nil, nil, err
	}
	switch {
	case !tuf.IsProductRole(role) && role != tuf.Targets:
		err = apperr.E(apperr.Invalid, "target %s is delegated to %s, which is not a product's role", name, role)
	case role == tuf.Targets:
		next, cur, err = s.nextTargets(ctx, data, rule)
		if err == nil && !sameDelegations(next, cur) {
			err = apperr.E(apperr.Invalid, "a publication may not change the delegations: use `upkeep keys delegate`")
		}
	default:
		next, cur, err = s.nextRole(ctx, role, delegator, data, rule)
	}
	return role, next, cur, err
}

// putTargets stores top-level targets that nextTargets accepted.
func (s *Service) putTargets(ctx context.Context, next *metadata.Metadata[metadata.TargetsType], data []byte) error {
	return s.putRole(ctx, tuf.Targets, next, data)
}

// putRole stores a targets role that nextFor accepted.
func (s *Service) putRole(ctx context.Context, role string, next *metadata.Metadata[metadata.TargetsType], data []byte) error {
	err := s.Store.PutMetadata(ctx, roleMeta(role, next, data))
	if apperr.Is(err, apperr.Conflict) {
		return publishedConcurrently(next)
	}
	return err
}

func roleMeta(role string, t *metadata.Metadata[metadata.TargetsType], data []byte) *Meta {
	return &Meta{Repo: RepoImage, Role: role, Version: t.Signed.Version, Body: data, Expires: t.Signed.Expires}
}

// sameDelegations reports whether two versions of a targets role delegate alike.
func sameDelegations(a, b *metadata.Metadata[metadata.TargetsType]) bool {
	ja, err1 := json.Marshal(a.Signed.Delegations)
	jb, err2 := json.Marshal(b.Signed.Delegations)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

func publishedConcurrently(t *metadata.Metadata[metadata.TargetsType]) error {
	return apperr.E(apperr.Conflict, "targets version %d was published concurrently; sign again", t.Signed.Version)
}

// Publish accepts new image targets metadata that a release engineer signed offline. It must be
// signed by a threshold of the targets keys in the current root, be exactly one version newer
// than the current targets, keep every existing target unchanged, and add exactly the target
// name, whose artifact must already be uploaded with the same length and hashes.
func (s *Service) Publish(ctx context.Context, name string, data []byte) (*release.Release, error) {
	if err := tuf.ValidTargetName(name); err != nil {
		return nil, apperr.Wrap(apperr.Invalid, err, err.Error())
	}
	role, next, cur, err := s.nextFor(ctx, name, data, "targets may only be added")
	if err != nil {
		return nil, err
	}
	added := addedTargets(next, cur)
	// Besides the image, a publication may add delta targets (its chunk index, patches to it
	// from earlier images): each bound to the image, or to published images, and uploaded.
	var companions []string
	for _, n := range added {
		if n != name {
			companions = append(companions, n)
		}
	}
	if len(companions) == len(added) {
		return nil, apperr.E(apperr.Invalid, "targets metadata must add the target %s, it adds %v", name, added)
	}
	tf := next.Signed.Targets[name]
	for _, n := range companions {
		if err := s.checkDelta(ctx, n, next.Signed.Targets); err != nil {
			return nil, err
		}
	}
	c, _ := uptane.ParseTargetCustom(tf) // validated by VerifyTargets
	if want := tuf.TargetName(c.Product, c.Version, lastSegment(name)); want != name {
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
	if _, err := s.Store.FindRelease(ctx, c.Product, c.Version); err == nil {
		return nil, apperr.E(apperr.Conflict, "release %s already exists", rel.Ref())
	}
	// The targets and the release row are stored in one transaction: a release is never
	// listed that the image repository does not serve, nor a target served without its release.
	if err := s.Store.PublishTargets(ctx, roleMeta(role, next, data), rel); err != nil {
		if !apperr.Is(err, apperr.Conflict) {
			return nil, err
		}
		// Another publisher got there first, with this release or this targets version.
		if _, ferr := s.Store.FindRelease(ctx, c.Product, c.Version); ferr == nil {
			return nil, apperr.E(apperr.Conflict, "release %s already exists", rel.Ref())
		}
		return nil, publishedConcurrently(next)
	}
	if err := s.Refresh(ctx, true); err != nil {
		return nil, err
	}
	return rel, nil
}

// AddDeltas accepts new image targets metadata, signed offline like a publication, that adds
// only delta targets (patches, chunk indexes) bound to images already published and uploaded:
// deltas made after a release, for the images its devices run (`upkeep release deltas`). It
// returns the names added.
func (s *Service) AddDeltas(ctx context.Context, data []byte) ([]string, error) {
	// The role is the one responsible for the targets the upload names (the product's, or the
	// top-level targets); verification against its delegator refuses any other.
	unverified, err := tuf.ParseTargets(data)
	if err != nil {
		return nil, apperr.Wrap(apperr.Invalid, err, "targets metadata refused: "+err.Error())
	}
	names := slices.Sorted(maps.Keys(unverified.Signed.Targets))
	if len(names) == 0 {
		return nil, apperr.E(apperr.Invalid, "targets metadata adds no delta target")
	}
	role, next, cur, err := s.nextFor(ctx, names[0], data, "targets may only be added")
	if err != nil {
		return nil, err
	}
	added := addedTargets(next, cur)
	if len(added) == 0 {
		return nil, apperr.E(apperr.Invalid, "targets metadata adds no delta target")
	}
	for _, n := range added {
		if err := s.checkDelta(ctx, n, next.Signed.Targets); err != nil {
			return nil, err
		}
	}
	if err := s.putRole(ctx, role, next, data); err != nil {
		return nil, err
	}
	s.logger().Info("delta targets added", "targets", added, "role", role, "version", next.Signed.Version)
	if err := s.Refresh(ctx, true); err != nil {
		return nil, err
	}
	return added, nil
}

// addedTargets names, sorted, the targets next has that cur has not.
func addedTargets(next, cur *metadata.Metadata[metadata.TargetsType]) []string {
	added := slices.Sorted(maps.Keys(next.Signed.Targets))
	return slices.DeleteFunc(added, func(n string) bool { _, ok := cur.Signed.Targets[n]; return ok })
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
	cur, err := s.root(ctx)
	if err != nil {
		return err
	}
	next, err := tuf.VerifyRootUpdate(cur, data)
	if err != nil {
		return apperr.Wrap(apperr.Verification, err, "root refused: "+err.Error())
	}
	if err := s.Store.PutMetadata(ctx, &Meta{Repo: RepoImage, Role: tuf.Root, Version: next.Signed.Version, Body: data, Expires: next.Signed.Expires}); err != nil {
		return err
	}
	if err := s.checkKeys(ctx); err != nil {
		s.logger().Warn("after root rotation the server's online keys are not trusted", "err", err)
	}
	return s.Refresh(ctx, true)
}

// ResignTargets accepts the current image targets re-signed offline with a later expiry: the
// same targets, exactly one version newer. It is how targets metadata is renewed without a new
// release; the current version may already have expired.
func (s *Service) ResignTargets(ctx context.Context, data []byte) error {
	next, cur, err := s.nextTargets(ctx, data, "re-signing keeps every target")
	if err != nil {
		return err
	}
	if len(next.Signed.Targets) != len(cur.Signed.Targets) {
		return apperr.E(apperr.Invalid, "re-signed targets name %d targets, the current ones %d: re-signing may not add or remove targets", len(next.Signed.Targets), len(cur.Signed.Targets))
	}
	if !sameDelegations(next, cur) {
		return apperr.E(apperr.Invalid, "re-signed targets change the delegations: use `upkeep keys delegate`")
	}
	if err := s.putTargets(ctx, next, data); err != nil {
		return err
	}
	s.logger().Info("image targets re-signed", "version", next.Signed.Version, "expires", next.Signed.Expires)
	return s.Refresh(ctx, true)
}

// checkDelta checks a delta target added with a release: a binding (delta.Binding) whose images
// are targets of the same metadata with the bound lengths and hashes, and an uploaded blob.
func (s *Service) checkDelta(ctx context.Context, name string, targets map[string]*metadata.TargetFiles) error {
	if err := tuf.ValidTargetName(name); err != nil {
		return apperr.Wrap(apperr.Invalid, err, err.Error())
	}
	tf := targets[name]
	var raw []byte
	if tf.Custom != nil {
		raw = *tf.Custom
	}
	b, err := delta.ParseBinding(raw)
	if err != nil || b == nil {
		return apperr.E(apperr.Invalid, "target %s is not a delta: a publication adds one image, and every other target it adds must be a delta bound to images (%v)", name, err)
	}
	bound := func(img, sha string, length int64) error {
		it := targets[img]
		if it == nil || it.Length != length || hex.EncodeToString(it.Hashes["sha256"]) != sha {
			return apperr.E(apperr.Invalid, "delta %s is bound to %s (%d bytes, sha256 %s), which the targets do not sign so", name, img, length, sha)
		}
		return nil
	}
	if err := bound(b.Image, b.ImageSHA256, b.ImageLength); err != nil {
		return err
	}
	if b.Format == delta.FormatPatch {
		if err := bound(b.Source, b.SourceSHA256, b.SourceLength); err != nil {
			return err
		}
	}
	sha := hex.EncodeToString(tf.Hashes["sha256"])
	blob, err := s.Blobs.Stat(ctx, sha)
	if err != nil {
		if apperr.Is(err, apperr.NotFound) {
			return apperr.E(apperr.Invalid, "delta %s (sha256 %s) has not been uploaded", name, sha)
		}
		return err
	}
	// Delta targets are signed with SHA-256 only (uptane.NewDeltaTargetFile); one signed before
	// that carries SHA-512 too, which must then match.
	if want, ok := tf.Hashes["sha512"]; blob.Length != tf.Length || ok && blob.SHA512 != hex.EncodeToString(want) {
		return apperr.E(apperr.Verification, "uploaded delta differs from the signed target %s", name)
	}
	return nil
}

// Deltas lists the delta targets of the current image targets (never nil). Safe for
// concurrent use.
func (s *Service) Deltas(ctx context.Context) ([]delta.Target, error) {
	all, err := s.allTargets(ctx)
	if err != nil {
		return nil, err
	}
	out := []delta.Target{}
	for name, tf := range all {
		if tf.Custom == nil {
			continue
		}
		b, err := delta.ParseBinding(*tf.Custom)
		if err != nil || b == nil {
			continue
		}
		out = append(out, delta.Target{Name: name, Length: tf.Length, SHA256: hex.EncodeToString(tf.Hashes["sha256"]), Binding: *b})
	}
	slices.SortFunc(out, func(a, b delta.Target) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
