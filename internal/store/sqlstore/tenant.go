package sqlstore

import (
	"context"
	"fmt"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
)

// Tenant is a row of the default store's tenants table: an organisation served under
// /t/{Name}/ by a server stack of its own (internal/server). SealedKeys are its online key
// files, sealed by the server; the store does not read them. Ready says the replica that added
// it opened its stack.
type Tenant struct {
	Name       string
	CreatedAt  time.Time
	SealedKeys []byte
	Ready      bool
}

// CreateTenant records a new tenant, not ready. Returns apperr.Conflict if the name is taken.
func (s *DB) CreateTenant(ctx context.Context, t *Tenant) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO tenants (name, created_at, sealed_keys, ready) VALUES ($1, $2, $3, FALSE)`, t.Name, t.CreatedAt.UTC(), t.SealedKeys)
	if s.dialect.IsUnique(err) {
		return apperr.E(apperr.Conflict, "tenant %s exists", t.Name)
	}
	if err != nil {
		return fmt.Errorf("create tenant %s: %w", t.Name, err)
	}
	return nil
}

// MarkTenantReady records that the tenant's stack opened: other replicas may open it.
func (s *DB) MarkTenantReady(ctx context.Context, name string) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE tenants SET ready = TRUE WHERE name = $1`, name); err != nil {
		return fmt.Errorf("tenant %s ready: %w", name, err)
	}
	return nil
}

// DeleteTenant removes a tenant's row (a tenant whose stack failed to open when it was added).
// Deleting an unknown tenant is not an error.
func (s *DB) DeleteTenant(ctx context.Context, name string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM tenants WHERE name = $1`, name); err != nil {
		return fmt.Errorf("delete tenant %s: %w", name, err)
	}
	return nil
}

// FindTenants lists the tenants by name.
func (s *DB) FindTenants(ctx context.Context) ([]*Tenant, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, created_at, sealed_keys, ready FROM tenants ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("find tenants: %w", err)
	}
	defer rows.Close()
	var out []*Tenant
	for rows.Next() {
		var t Tenant
		if err := rows.Scan(&t.Name, &t.CreatedAt, &t.SealedKeys, &t.Ready); err != nil {
			return nil, fmt.Errorf("find tenants: %w", err)
		}
		out = append(out, &t)
	}
	return out, rows.Err()
}
