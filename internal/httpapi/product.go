package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/transparency"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/wire"
)

func productToWire(p *release.Product, now time.Time) wire.Product {
	out := wire.Product{Name: p.Name, Policy: json.RawMessage(p.Policy), UpdatedAt: p.UpdatedAt}
	if pol, err := release.ParsePolicy(p.Policy); err == nil && pol.EndingSoon(now) {
		// Support lasts through the end date: it has ended only once today's UTC date is later.
		if now.UTC().Format(time.DateOnly) > pol.SupportEnd {
			out.Warning = fmt.Sprintf("security-update support ended on %s", pol.SupportEnd)
		} else {
			out.Warning = fmt.Sprintf("security-update support ends on %s", pol.SupportEnd)
		}
	}
	return out
}

// setPolicy changes a product's support policy. The body is a JSON object of policy fields: the
// fields present replace the stored ones, the others are kept (release.MergePolicy); a new
// product starts from release.DefaultPolicy. The end date may be extended, never shortened, and
// every change is kept in the history. A policy whose declaration would not match the published
// schema is refused before it is stored. Once stored, the product's devices get re-signed
// director views in the background so that they learn the end-of-support date.
func (s *Server) setPolicy(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := tuf.ValidIdent("product", name); err != nil {
		s.fail(w, r, apperr.E(apperr.Invalid, "%v", err))
		return
	}
	var patch json.RawMessage
	if err := decode(w, r, wire.MaxAPIBody, &patch); err != nil {
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
	base := release.DefaultPolicy()
	p := &release.Product{Name: name}
	if cur != nil {
		if old, err = release.ParsePolicy(cur.Policy); err != nil {
			s.fail(w, r, err)
			return
		}
		base, prev, p.DeclarationKey = *old, cur.UpdatedAt, cur.DeclarationKey
	}
	next, err := release.MergePolicy(base, patch)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	actor, _ := ctx.Value(keyActor).(string)
	changes, err := release.ChangePolicy(name, old, next, actor, now)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p.Policy, _ = json.Marshal(next)
	p.UpdatedAt = now
	if c, ok := s.Transparency.(PolicyChecker); ok {
		if err := c.CheckPolicy(ctx, p); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if err := s.Products.PutProduct(ctx, p, prev, changes); err != nil {
		s.fail(w, r, err)
		return
	}
	if old == nil || old.SupportEnd != next.SupportEnd {
		s.resignProduct(name)
	}
	writeJSON(w, http.StatusOK, productToWire(p, now))
}

// PolicyChecker is implemented by a Publisher that can tell, before a policy is stored, whether
// the product's declaration would match its schema; *transparency.Service implements it.
type PolicyChecker interface {
	// CheckPolicy returns apperr.Invalid, naming the field, if p's declaration could not be
	// published.
	CheckPolicy(ctx context.Context, p *release.Product) error
}

// resignBatch is how many devices resignProduct reads and signs at a time.
const resignBatch = 256

// resignProduct re-signs the director views of the product's accepted devices in the
// background, a batch of devices at a time, so that they learn a new end-of-support date at
// their next check-in. A failed device is logged and keeps its view until its next assignment.
func (s *Server) resignProduct(product string) {
	go func() {
		ctx := context.Background()
		log := s.logger().With(transparency.LogProduct, product)
		devs, err := s.Devices.FindDevices(ctx, fleet.DeviceFilter{Product: product, Status: fleet.StatusAccepted})
		if err != nil {
			log.Error("re-sign director views after a policy change", LogErr, err)
			return
		}
		failed := 0
		for batch := range slices.Chunk(devs, resignBatch) {
			var wg sync.WaitGroup
			sem := make(chan struct{}, resignSigners)
			var mu sync.Mutex
			for _, d := range batch {
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer func() { <-sem; wg.Done() }()
					if err := s.Repo.Resign(ctx, d.ID); err != nil {
						mu.Lock()
						failed++
						mu.Unlock()
						log.Warn("re-sign director view after a policy change", LogDevice, d.ID, LogErr, err)
					}
				}()
			}
			wg.Wait()
		}
		log.Info("re-signed director views after a policy change", "devices", len(devs), "failed", failed)
	}()
}

// resignSigners is how many devices resignProduct signs at once.
const resignSigners = 4

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
