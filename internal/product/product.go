// Package product owns a product's support policy: the policy itself and its validation, the
// merge of a partial update, the append-only history of changes, the end-of-support lifecycle
// (warnings, the notice signed into the director's metadata) and the re-signing of the product's
// devices' director views when the end date changes. The Service is the one place these rules
// live; HTTP handlers and the CLI only translate.
package product

import (
	"context"
	"time"
)

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

// Store persists products and their policy history. Implementations are safe for
// concurrent use.
type Store interface {
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
