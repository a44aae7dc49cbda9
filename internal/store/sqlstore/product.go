package sqlstore

import (
	"context"
	"fmt"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/product"
)

var _ product.Store = (*DB)(nil)

func scanProduct(row interface{ Scan(...any) error }) (*product.Product, error) {
	var p product.Product
	var policy string
	if err := row.Scan(&p.Name, &policy, &p.DeclarationKey, &p.UpdatedAt); err != nil {
		return nil, err
	}
	p.Policy = []byte(policy)
	return &p, nil
}

// FindProduct implements product.Store.
func (s *DB) FindProduct(ctx context.Context, name string) (*product.Product, error) {
	p, err := scanProduct(s.db.QueryRowContext(ctx, `SELECT name, policy, declaration_key, updated_at FROM products WHERE name = $1`, name))
	if err != nil {
		return nil, notFound(err, "product %s has no support policy yet", name)
	}
	return p, nil
}

// FindProducts implements product.Store.
func (s *DB) FindProducts(ctx context.Context) ([]*product.Product, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, policy, declaration_key, updated_at FROM products ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("find products: %w", err)
	}
	defer rows.Close()
	var out []*product.Product
	for rows.Next() {
		p, err := scanProduct(rows)
		if err != nil {
			return nil, fmt.Errorf("find products: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// PutProduct implements product.Store.
func (s *DB) PutProduct(ctx context.Context, p *product.Product, prev time.Time, changes []product.PolicyChange) error {
	return s.inTx(ctx, "put product "+p.Name, func(tx *Tx) error {
		var err error
		if prev.IsZero() {
			_, err = tx.ExecContext(ctx, `INSERT INTO products (name, policy, declaration_key, updated_at) VALUES ($1,$2,$3,$4)`, p.Name, string(p.Policy), p.DeclarationKey, p.UpdatedAt.UTC())
			if s.dialect.IsUnique(err) {
				return apperr.E(apperr.Conflict, "product %s was created concurrently", p.Name)
			}
		} else {
			var res interface{ RowsAffected() (int64, error) }
			res, err = tx.ExecContext(ctx, `UPDATE products SET policy = $1, declaration_key = $2, updated_at = $3 WHERE name = $4 AND updated_at = $5`,
				string(p.Policy), p.DeclarationKey, p.UpdatedAt.UTC(), p.Name, prev.UTC())
			if err == nil {
				if n, _ := res.RowsAffected(); n == 0 {
					return apperr.E(apperr.Conflict, "the policy of %s changed concurrently; read it again", p.Name)
				}
			}
		}
		if err != nil {
			return fmt.Errorf("put product %s: %w", p.Name, err)
		}
		for _, c := range changes {
			if _, err := tx.ExecContext(ctx, `INSERT INTO policy_history (product, at, actor, field, old, new) VALUES ($1,$2,$3,$4,$5,$6)`,
				p.Name, c.At.UTC(), c.Actor, c.Field, c.Old, c.New); err != nil {
				return fmt.Errorf("policy history %s: %w", p.Name, err)
			}
		}
		return nil
	})
}

// FindPolicyHistory implements product.Store.
func (s *DB) FindPolicyHistory(ctx context.Context, name string) ([]product.PolicyChange, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT product, at, actor, field, old, new FROM policy_history WHERE product = $1 ORDER BY id`, name)
	if err != nil {
		return nil, fmt.Errorf("policy history: %w", err)
	}
	defer rows.Close()
	var out []product.PolicyChange
	for rows.Next() {
		var c product.PolicyChange
		if err := rows.Scan(&c.Product, &c.At, &c.Actor, &c.Field, &c.Old, &c.New); err != nil {
			return nil, fmt.Errorf("policy history: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}
