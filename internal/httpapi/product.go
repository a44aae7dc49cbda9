package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/trust"
	"upkeep.dev/upkeep/wire"
)

func productToWire(p *release.Product, now time.Time) wire.Product {
	out := wire.Product{Name: p.Name, Policy: json.RawMessage(p.Policy), UpdatedAt: p.UpdatedAt}
	if pol, err := release.ParsePolicy(p.Policy); err == nil && pol.EndingSoon(now) {
		if now.After(pol.End()) {
			out.Warning = fmt.Sprintf("security-update support ended on %s", pol.SupportEnd)
		} else {
			out.Warning = fmt.Sprintf("security-update support ends on %s", pol.SupportEnd)
		}
	}
	return out
}

// setPolicy stores a product's support policy: the end date may be extended, never shortened,
// and every change is kept in the history. The product's devices get re-signed director views so
// that they learn the end-of-support date.
func (s *Server) setPolicy(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := trust.ValidIdent("product", name); err != nil {
		s.fail(w, r, apperr.E(apperr.Invalid, "%v", err))
		return
	}
	var next release.Policy
	if err := decode(w, r, wire.MaxAPIBody, &next); err != nil {
		s.fail(w, r, err)
		return
	}
	ctx := r.Context()
	now := time.Now().UTC()
	cur, err := s.Products.FindProduct(ctx, name)
	if err != nil && !apperr.Is(err, apperr.NotFound) {
		s.fail(w, r, err)
		return
	}
	var old *release.Policy
	var prev time.Time
	p := &release.Product{Name: name}
	if cur != nil {
		if old, err = release.ParsePolicy(cur.Policy); err != nil {
			s.fail(w, r, err)
			return
		}
		prev, p.DeclarationKey = cur.UpdatedAt, cur.DeclarationKey
	}
	actor, _ := ctx.Value(keyActor).(string)
	changes, err := release.ChangePolicy(name, old, next, actor, now)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p.Policy, _ = json.Marshal(next)
	p.UpdatedAt = now
	if err := s.Products.PutProduct(ctx, p, prev, changes); err != nil {
		s.fail(w, r, err)
		return
	}
	if old == nil || old.SupportEnd != next.SupportEnd {
		devs, err := s.Devices.FindDevices(ctx, fleet.DeviceFilter{Product: name, Status: fleet.StatusAccepted})
		if err != nil {
			s.fail(w, r, err)
			return
		}
		for _, d := range devs {
			if err := s.Repo.Resign(ctx, d.ID); err != nil {
				s.fail(w, r, err)
				return
			}
		}
	}
	writeJSON(w, http.StatusOK, productToWire(p, now))
}

func (s *Server) listProducts(w http.ResponseWriter, r *http.Request) {
	ps, err := s.Products.FindProducts(r.Context())
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
	h, err := s.Products.FindPolicyHistory(r.Context(), r.PathValue("name"))
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
