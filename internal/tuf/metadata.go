package tuf

import (
	"errors"
	"fmt"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Top-level role names.
const (
	Root      = metadata.ROOT
	Targets   = metadata.TARGETS
	Snapshot  = metadata.SNAPSHOT
	Timestamp = metadata.TIMESTAMP
)

// Lifetimes are how long each kind of metadata stays valid after signing.
type Lifetimes struct {
	Root      time.Duration
	Targets   time.Duration // offline image-repo targets
	Snapshot  time.Duration
	Timestamp time.Duration
	Director  time.Duration // director targets, snapshot and timestamp
}

// DefaultLifetimes returns the lifetimes used unless configured otherwise.
func DefaultLifetimes() Lifetimes {
	return Lifetimes{
		Root:      365 * 24 * time.Hour,
		Targets:   365 * 24 * time.Hour,
		Snapshot:  7 * 24 * time.Hour,
		Timestamp: 24 * time.Hour,
		Director:  7 * 24 * time.Hour,
	}
}

// NewRoot builds version 1 of a root, signed by every key in rootKeys. consistent selects
// consistent snapshots; Upkeep turns them on for both repositories.
func NewRoot(rootKeys []*Key, threshold int, targets, snapshot, timestamp *Key, expires time.Time, consistent bool) (*metadata.Metadata[metadata.RootType], error) {
	if threshold < 1 || threshold > len(rootKeys) {
		return nil, fmt.Errorf("root threshold %d with %d keys", threshold, len(rootKeys))
	}
	root := metadata.Root(expires.UTC().Truncate(time.Second))
	root.Signed.ConsistentSnapshot = consistent
	for _, k := range rootKeys {
		if err := root.Signed.AddKey(k.Public(), Root); err != nil {
			return nil, fmt.Errorf("add root key: %w", err)
		}
	}
	root.Signed.Roles[Root].Threshold = threshold
	for role, k := range map[string]*Key{Targets: targets, Snapshot: snapshot, Timestamp: timestamp} {
		if err := root.Signed.AddKey(k.Public(), role); err != nil {
			return nil, fmt.Errorf("add %s key: %w", role, err)
		}
	}
	for _, k := range rootKeys {
		if _, err := root.Sign(k.Signer()); err != nil {
			return nil, fmt.Errorf("sign root: %w", err)
		}
	}
	return root, nil
}

// ErrMalformed is the error for metadata that made the TUF library panic while parsing it.
var ErrMalformed = errors.New("malformed metadata")

// guard turns a panic inside go-tuf (or sigstore) into an error wrapping ErrMalformed. go-tuf v2.4.2 panics on some
// malformed metadata before checking signatures: a null target entry, a null role or key, an
// Ed25519 key of the wrong length (go-tuf PR 739, sigstore PR 2378; the fixed sigstore needs a
// newer Go than this project builds with). Every parse of untrusted metadata goes through it.
func guard(what string, err *error) {
	if v := recover(); v != nil {
		*err = fmt.Errorf("%w (%s): %v", ErrMalformed, what, v)
	}
}

// guarded runs f under guard; after a panic it returns the zero value and the error.
func guarded[T any](what string, f func() (T, error)) (v T, err error) {
	defer guard(what, &err)
	return f()
}

// Guard runs f, turning a panic in the TUF library into an error wrapping ErrMalformed. The
// agent wraps go-tuf's updater with it.
func Guard(what string, f func() error) (err error) {
	defer guard(what, &err)
	return f()
}

// ParseRoot parses root metadata and checks that it is signed by its own threshold of keys.
func ParseRoot(data []byte) (*metadata.Metadata[metadata.RootType], error) {
	return guarded("root", func() (*metadata.Metadata[metadata.RootType], error) { return parseRoot(data) })
}

func parseRoot(data []byte) (*metadata.Metadata[metadata.RootType], error) {
	root, err := metadata.Root().FromBytes(data)
	if err != nil {
		return nil, fmt.Errorf("parse root: %w", err)
	}
	if err := root.VerifyDelegate(Root, root); err != nil {
		return nil, fmt.Errorf("root is not signed by its own keys: %w", err)
	}
	return root, nil
}

// VerifyRootUpdate checks a new root against the trusted one (TUF client workflow 5.3.4-5.3.5):
// the version is one more, and a threshold of both the old and the new root keys signed it.
func VerifyRootUpdate(trusted *metadata.Metadata[metadata.RootType], data []byte) (*metadata.Metadata[metadata.RootType], error) {
	return guarded("root", func() (*metadata.Metadata[metadata.RootType], error) { return verifyRootUpdate(trusted, data) })
}

func verifyRootUpdate(trusted *metadata.Metadata[metadata.RootType], data []byte) (*metadata.Metadata[metadata.RootType], error) {
	next, err := metadata.Root().FromBytes(data)
	if err != nil {
		return nil, fmt.Errorf("parse root: %w", err)
	}
	if err := trusted.VerifyDelegate(Root, next); err != nil {
		return nil, fmt.Errorf("new root not signed by a threshold of the current root keys: %w", err)
	}
	if err := next.VerifyDelegate(Root, next); err != nil {
		return nil, fmt.Errorf("new root not signed by a threshold of its own keys: %w", err)
	}
	if next.Signed.Version != trusted.Signed.Version+1 {
		return nil, fmt.Errorf("new root: %w", &metadata.ErrBadVersionNumber{Msg: fmt.Sprintf("version %d, want %d", next.Signed.Version, trusted.Signed.Version+1)})
	}
	return next, nil
}

// VerifyTargets checks targets metadata against root (TUF client workflow 5.6): a threshold of
// the targets keys signed it (else the error wraps *metadata.ErrUnsignedMetadata), it has not
// expired at now (*metadata.ErrExpiredMetadata; a zero now skips the check) and every target
// name is valid (ErrBadName). It knows nothing of Upkeep's custom fields: image-repository
// targets are verified with uptane.VerifyImageTargets, which calls it.
func VerifyTargets(root *metadata.Metadata[metadata.RootType], data []byte, now time.Time) (*metadata.Metadata[metadata.TargetsType], error) {
	return guarded("targets", func() (*metadata.Metadata[metadata.TargetsType], error) { return verifyTargets(root, data, now) })
}

func verifyTargets(root *metadata.Metadata[metadata.RootType], data []byte, now time.Time) (*metadata.Metadata[metadata.TargetsType], error) {
	t, err := metadata.Targets().FromBytes(data)
	if err != nil {
		return nil, fmt.Errorf("parse targets: %w", err)
	}
	if err := root.VerifyDelegate(Targets, t); err != nil {
		return nil, fmt.Errorf("targets not signed by a threshold of the offline targets keys: %w", err)
	}
	if !now.IsZero() && t.Signed.IsExpired(now) {
		return nil, &metadata.ErrExpiredMetadata{Msg: fmt.Sprintf("targets version %d expired at %s", t.Signed.Version, t.Signed.Expires.Format(time.RFC3339))}
	}
	for name := range t.Signed.Targets {
		if err := ValidTargetName(name); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// SignTargets signs targets metadata with key and returns its JSON.
func SignTargets(t *metadata.Metadata[metadata.TargetsType], keys ...*Key) ([]byte, error) {
	t.ClearSignatures()
	for _, k := range keys {
		if _, err := t.Sign(k.Signer()); err != nil {
			return nil, fmt.Errorf("sign targets: %w", err)
		}
	}
	return t.ToBytes(false)
}

// SignRoot signs root metadata with keys and returns its JSON. A key given twice signs once (a
// root re-signed with its own keys is signed by them as old and as new keys).
func SignRoot(r *metadata.Metadata[metadata.RootType], keys ...*Key) ([]byte, error) {
	r.ClearSignatures()
	signed := map[string]bool{}
	for _, k := range keys {
		if signed[k.ID] {
			continue
		}
		signed[k.ID] = true
		if _, err := r.Sign(k.Signer()); err != nil {
			return nil, fmt.Errorf("sign root: %w", err)
		}
	}
	return r.ToBytes(false)
}

// SnapshotTimestamp is a freshly signed snapshot and timestamp pair.
type SnapshotTimestamp struct {
	Snapshot, Timestamp []byte
	Expires             time.Time // the earlier of the two
}

// SignSnapshotTimestamp signs snapshot version v naming targets version targetsVersion, and
// timestamp version v naming that snapshot.
func SignSnapshotTimestamp(snapKey, tsKey *Key, v, targetsVersion int64, snapExpires, tsExpires time.Time) (*SnapshotTimestamp, error) {
	return SignSnapshotTimestampRoles(snapKey, tsKey, v, map[string]int64{Targets: targetsVersion}, snapExpires, tsExpires)
}

// SignSnapshotTimestampRoles is SignSnapshotTimestamp for a repository with delegations: the
// snapshot names every targets role (top-level and delegated) at its version in roles (TUF
// 5.5: each role's version only, no lengths or hashes, which keeps it small).
func SignSnapshotTimestampRoles(snapKey, tsKey *Key, v int64, roles map[string]int64, snapExpires, tsExpires time.Time) (*SnapshotTimestamp, error) {
	snap := metadata.Snapshot(snapExpires.UTC().Truncate(time.Second))
	snap.Signed.Version = v
	delete(snap.Signed.Meta, "targets.json")
	for role, ver := range roles {
		snap.Signed.Meta[role+".json"] = metadata.MetaFile(ver)
	}
	if _, err := snap.Sign(snapKey.Signer()); err != nil {
		return nil, fmt.Errorf("sign snapshot: %w", err)
	}
	snapBytes, err := snap.ToBytes(false)
	if err != nil {
		return nil, fmt.Errorf("encode snapshot: %w", err)
	}
	ts := metadata.Timestamp(tsExpires.UTC().Truncate(time.Second))
	ts.Signed.Version = v
	ts.Signed.Meta["snapshot.json"] = metadata.MetaFile(v)
	if _, err := ts.Sign(tsKey.Signer()); err != nil {
		return nil, fmt.Errorf("sign timestamp: %w", err)
	}
	tsBytes, err := ts.ToBytes(false)
	if err != nil {
		return nil, fmt.Errorf("encode timestamp: %w", err)
	}
	exp := tsExpires
	if snapExpires.Before(exp) {
		exp = snapExpires
	}
	return &SnapshotTimestamp{Snapshot: snapBytes, Timestamp: tsBytes, Expires: exp}, nil
}
