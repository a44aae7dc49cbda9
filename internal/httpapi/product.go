package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"upkeep.dev/upkeep/internal/product"
	"upkeep.dev/upkeep/wire"
)

func productToWire(p *product.Product, now time.Time) wire.Product {
	return wire.Product{Name: p.Name, Policy: json.RawMessage(p.Policy), UpdatedAt: p.UpdatedAt, Warning: product.Warning(p, now)}
}

// ProductService owns products' support policies; *product.Service implements it.
type ProductService interface {
	// SetPolicy merges patch into the product's policy; see product.Service.SetPolicy.
	SetPolicy(ctx context.Context, name string, patch []byte, actor string) (*product.Product, error)
	Products(ctx context.Context) ([]*product.Product, error)
	History(ctx context.Context, name string) ([]product.PolicyChange, error)
}

// setPolicy changes a product's support policy. The body is a JSON object of the policy fields
// to change (product.Service.SetPolicy).
func (s *Server) setPolicy(w http.ResponseWriter, r *http.Request) {
	var patch json.RawMessage
	if err := decode(w, r, wire.MaxAPIBody, &patch); err != nil {
		s.fail(w, r, err)
		return
	}
	actor, _ := r.Context().Value(keyActor).(string)
	p, err := s.Products.SetPolicy(r.Context(), r.PathValue("name"), patch, actor)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, productToWire(p, time.Now()))
}

func (s *Server) listProducts(w http.ResponseWriter, r *http.Request) {
	ps, err := s.Products.Products(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]wire.Product, len(ps))
	for i, p := range ps {
		out[i] = productToWire(p, time.Now())
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) policyHistory(w http.ResponseWriter, r *http.Request) {
	h, err := s.Products.History(r.Context(), r.PathValue("name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]wire.PolicyChange, len(h))
	for i, c := range h {
		out[i] = wire.PolicyChange{At: c.At, Actor: c.Actor, Field: c.Field, Old: c.Old, New: c.New}
	}
	writeJSON(w, http.StatusOK, out)
}
