// Package release holds products' releases: the artifact, the signed image-repository entry and
// the facts about it, with the Store port that persists them.
package release

import (
	"cmp"
	"context"
	"io"
	"strings"
	"time"
)

// Release is a published release of a product.
type Release struct {
	Product         string
	Version         string
	HardwareIDs     []string
	SecurityVersion int64
	Class           string // security | feature
	Fixes           []string
	Target          string // image-repository target name
	Length          int64
	SHA256          string
	SHA512          string
	TargetsVersion  int64 // version of the image targets role (top-level, or the product's) that first listed it
	PublishedAt     time.Time
}

// Compare orders releases of one product, oldest first: by security version, then by
// publication, then by version string (only to make the order total).
func Compare(a, b *Release) int {
	return cmp.Or(cmp.Compare(a.SecurityVersion, b.SecurityVersion), a.PublishedAt.Compare(b.PublishedAt), strings.Compare(a.Version, b.Version))
}

// Matches reports whether a device that says it runs target, with this SHA-256 (hex), runs this
// release's signed image: the same target name and exactly the signed digest. What a device
// reports is only its claim; an image that matches no release is unknown and counts in no public
// figure (docs/TRANSPARENCY.md).
func (r *Release) Matches(target, sha256 string) bool {
	return r != nil && target != "" && r.Target == target && len(sha256) == len(r.SHA256) && strings.EqualFold(r.SHA256, sha256)
}

// Ref is "product@version".
func (r *Release) Ref() string { return r.Product + "@" + r.Version }

// Filter selects releases. Zero fields match everything.
type Filter struct {
	Product string
	Target  string
}

// Store persists releases. Implementations are safe for concurrent use.
type Store interface {
	// CreateRelease returns apperr.Conflict if product@version exists.
	CreateRelease(ctx context.Context, r *Release) error
	// FindRelease returns apperr.NotFound if it does not exist.
	FindRelease(ctx context.Context, product, version string) (*Release, error)
	// FindReleases lists releases, newest first.
	FindReleases(ctx context.Context, f Filter) ([]*Release, error)
	// CountRunning counts a product's devices in service by the target they run.
	CountRunning(ctx context.Context, product string) (map[string]int, error)
}

// Blob describes a stored artifact.
type Blob struct {
	SHA256 string
	SHA512 string
	Length int64
}

// BlobReader reads a stored artifact and supports seeking, for HTTP range requests.
type BlobReader interface {
	io.ReadSeekCloser
}

// BlobStore keeps artifacts by their SHA-256. Implementations are safe for concurrent use.
type BlobStore interface {
	// Put streams r into the store, at most maxLength bytes, and returns its digests. Returns
	// apperr.TooLarge past maxLength. If wantSHA256 is set and differs, the blob is discarded and
	// apperr.Verification returned. Nothing partial is ever visible.
	Put(ctx context.Context, r io.Reader, maxLength int64, wantSHA256 string) (*Blob, error)
	// Stat returns apperr.NotFound if the blob does not exist.
	Stat(ctx context.Context, sha256 string) (*Blob, error)
	// Open returns apperr.NotFound if the blob does not exist.
	Open(ctx context.Context, sha256 string) (BlobReader, *Blob, error)
}

// Presigner is implemented by blob stores that can hand devices a direct, time-limited URL, so
// that artifact bytes do not pass through the server.
type Presigner interface {
	PresignGet(ctx context.Context, sha256 string, ttl time.Duration) (string, error)
}
