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
	TargetsVersion  int64 // image targets version that first listed it
	PublishedAt     time.Time
}

// Compare orders releases of one product, oldest first: by security version, then by
// publication, then by version string (only to make the order total).
func Compare(a, b *Release) int {
	return cmp.Or(cmp.Compare(a.SecurityVersion, b.SecurityVersion), a.PublishedAt.Compare(b.PublishedAt), strings.Compare(a.Version, b.Version))
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

// Product is a product line with its support policy. The policy is kept as JSON: its shape is
// label.Policy, and this package does not need to look inside.
type Product struct {
	Name           string
	Policy         []byte // JSON of label.Policy
	DeclarationKey []byte // PEM private key that signs the product's update-capability declaration
	UpdatedAt      time.Time
}

// PolicyChange is one entry of a product's append-only policy history.
type PolicyChange struct {
	Product string
	At      time.Time
	Actor   string
	Field   string
	Old     string
	New     string
}

// ProductStore persists products and their policy history. Implementations are safe for
// concurrent use.
type ProductStore interface {
	// FindProduct returns apperr.NotFound if the product has no policy yet.
	FindProduct(ctx context.Context, name string) (*Product, error)
	// FindProducts lists products by name.
	FindProducts(ctx context.Context) ([]*Product, error)
	// PutProduct stores p and appends changes to the history, atomically. prev is the
	// UpdatedAt the caller read (zero for a new product); if the stored one differs, another
	// writer got there first and apperr.Conflict is returned.
	PutProduct(ctx context.Context, p *Product, prev time.Time, changes []PolicyChange) error
	// FindPolicyHistory returns a product's changes, oldest first.
	FindPolicyHistory(ctx context.Context, name string) ([]PolicyChange, error)
}

// Presigner is implemented by blob stores that can hand devices a direct, time-limited URL, so
// that artifact bytes do not pass through the server.
type Presigner interface {
	PresignGet(ctx context.Context, sha256 string, ttl time.Duration) (string, error)
}
