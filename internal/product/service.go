package product

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/event"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
)

// DeviceFinder lists devices; fleet.Store implements it.
type DeviceFinder interface {
	FindDevices(ctx context.Context, f fleet.DeviceFilter) ([]*fleet.Device, error)
}

// Service applies the support-policy rules. Its fields are set once before use; the methods
// are safe for concurrent use.
type Service struct {
	Store   Store
	Devices DeviceFinder
	// Check, if set, refuses a policy whose public declaration could not be published
	// (transparency.Service.CheckPolicy): apperr.Invalid naming the field.
	Check func(ctx context.Context, p *Product) error
	// Resign re-signs one device's director view, so that it carries the current notice.
	Resign func(ctx context.Context, deviceID string) error
	// Go runs a background job that the server owns and waits for at shutdown (server.Server.Go).
	// Nil runs the job before SetPolicy returns.
	Go func(name string, fn func(ctx context.Context))
	// Events, if set, is told when a product's support ends within its warning period
	// (event.SupportEnding), once a day per product (every replica gives the same event key
	// that day, so each webhook gets it once).
	Events event.Emitter
	Now    func() time.Time
	Logger *slog.Logger
}

// LogProduct is the logging attribute key of a product name.
const LogProduct = "product"

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Service) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// SetPolicy changes product name's support policy by merging patch, a JSON object of policy
// fields, into the stored policy (MergePolicy; a new product starts from DefaultPolicy). The end
// date may be extended, never shortened, and every change is appended to the history by actor.
// A policy that Check refuses is not stored. When the end date changed, the product's accepted
// devices get re-signed director views in a background job, so that they learn the date at
// their next check-in. Returns apperr.Invalid for a bad name or policy, apperr.Conflict if
// another writer changed the product meanwhile.
func (s *Service) SetPolicy(ctx context.Context, name string, patch []byte, actor string) (*Product, error) {
	if err := tuf.ValidIdent("product", name); err != nil {
		return nil, apperr.E(apperr.Invalid, "%v", err)
	}
	now := s.now().UTC()
	cur, err := s.Store.FindProduct(ctx, name)
	if err != nil && !apperr.Is(err, apperr.NotFound) {
		return nil, err
	}
	var old *Policy
	var prev time.Time
	base := DefaultPolicy()
	p := &Product{Name: name}
	if cur != nil {
		if old, err = ParsePolicy(cur.Policy); err != nil {
			return nil, err
		}
		base, prev, p.DeclarationKey = *old, cur.UpdatedAt, cur.DeclarationKey
	}
	next, err := MergePolicy(base, patch)
	if err != nil {
		return nil, err
	}
	changes, err := ChangePolicy(name, old, next, actor, now)
	if err != nil {
		return nil, err
	}
	if p.Policy, err = json.Marshal(next); err != nil {
		return nil, fmt.Errorf("encode policy: %w", err)
	}
	p.UpdatedAt = now
	if s.Check != nil {
		if err := s.Check(ctx, p); err != nil {
			return nil, err
		}
	}
	if err := s.Store.PutProduct(ctx, p, prev, changes); err != nil {
		return nil, err
	}
	if old == nil || old.SupportEnd != next.SupportEnd {
		s.resignLater(name)
	}
	return p, nil
}

// Products lists the products by name.
func (s *Service) Products(ctx context.Context) ([]*Product, error) {
	return s.Store.FindProducts(ctx)
}

// History returns a product's policy changes, oldest first.
func (s *Service) History(ctx context.Context, name string) ([]PolicyChange, error) {
	return s.Store.FindPolicyHistory(ctx, name)
}

// Warning is what operators are told about p's support period at now: that it ends or ended on
// its end date, once inside the warning period; "" before that or for an unreadable policy.
func Warning(p *Product, now time.Time) string {
	pol, err := ParsePolicy(p.Policy)
	if err != nil || !pol.EndingSoon(now) {
		return ""
	}
	// Support lasts through the end date: it has ended only once today's UTC date is later.
	if now.UTC().Format(time.DateOnly) > pol.SupportEnd {
		return fmt.Sprintf("security-update support ended on %s", pol.SupportEnd)
	}
	return fmt.Sprintf("security-update support ends on %s", pol.SupportEnd)
}

// AllowDDI returns apperr.Forbidden if the product's policy forbids hawkBit DDI devices.
func (s *Service) AllowDDI(ctx context.Context, name string) error {
	p, err := s.Store.FindProduct(ctx, name)
	if apperr.Is(err, apperr.NotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	pol, err := ParsePolicy(p.Policy)
	if err != nil {
		return err
	}
	if pol.ForbidDDI {
		return apperr.E(apperr.Forbidden, "product %s does not allow DDI devices (its policy: forbid_ddi)", name)
	}
	return nil
}

// Notice is the end-of-support notice signed into the director metadata of the product's
// devices; nil for a product without a policy.
func (s *Service) Notice(ctx context.Context, name string) (*uptane.Notice, error) {
	p, err := s.Store.FindProduct(ctx, name)
	if apperr.Is(err, apperr.NotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	pol, err := ParsePolicy(p.Policy)
	if err != nil {
		return nil, err
	}
	return &uptane.Notice{Product: name, EndOfSupport: pol.SupportEnd}, nil
}

// SupportEndingEvent is the data of the product.support_ending event.
type SupportEndingEvent struct {
	Product    string `json:"product"`
	SupportEnd string `json:"support_end"` // YYYY-MM-DD, the last day of security updates
	Ended      bool   `json:"ended"`
}

// WarnEndOfSupport logs, once a day per product, that a product's security-update support ends
// within its warning period (or has ended). warned remembers when each product was last warned
// about; the caller keeps it between calls and does not share it.
func (s *Service) WarnEndOfSupport(ctx context.Context, warned map[string]time.Time) {
	ps, err := s.Store.FindProducts(ctx)
	if err != nil {
		s.logger().Error("end-of-support check", "err", err)
		return
	}
	now := s.now()
	for _, p := range ps {
		pol, err := ParsePolicy(p.Policy)
		if err != nil || !pol.EndingSoon(now) || now.Sub(warned[p.Name]) < 24*time.Hour {
			continue
		}
		warned[p.Name] = now
		s.logger().Warn("security-update support is ending", LogProduct, p.Name, "support_end", pol.SupportEnd)
		event.Emit(ctx, s.Events, event.Event{Key: p.Name + "/" + pol.SupportEnd + "/" + now.UTC().Format(time.DateOnly),
			Type: event.SupportEnding, Subject: "product/" + p.Name, Time: now,
			Data: SupportEndingEvent{Product: p.Name, SupportEnd: pol.SupportEnd, Ended: !now.Before(pol.End())}})
	}
}

// resignBatch is how many devices ResignDevices reads and signs at a time, and resignSigners how
// many it signs at once.
const (
	resignBatch   = 256
	resignSigners = 4
)

func (s *Service) resignLater(name string) {
	if s.Resign == nil || s.Devices == nil {
		return
	}
	job := func(ctx context.Context) {
		if _, err := s.ResignDevices(ctx, name); err != nil && ctx.Err() == nil {
			s.logger().Error("re-sign director views after a policy change", LogProduct, name, "err", err)
		}
	}
	if s.Go == nil {
		job(context.WithoutCancel(context.Background()))
		return
	}
	s.Go("resign-product", job)
}

// ResignDevices re-signs the director views of the product's accepted devices, a batch at a
// time, and returns how many failed; a failed device is logged and keeps its view until its next
// assignment. It stops early when ctx ends.
func (s *Service) ResignDevices(ctx context.Context, name string) (failed int, err error) {
	log := s.logger().With(LogProduct, name)
	devs, err := s.Devices.FindDevices(ctx, fleet.DeviceFilter{Product: name, Status: fleet.StatusAccepted})
	if err != nil {
		return 0, err
	}
	var mu sync.Mutex
	for batch := range slices.Chunk(devs, resignBatch) {
		if ctx.Err() != nil {
			return failed, ctx.Err()
		}
		var wg sync.WaitGroup
		sem := make(chan struct{}, resignSigners)
		for _, d := range batch {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				if err := s.Resign(ctx, d.ID); err != nil {
					mu.Lock()
					failed++
					mu.Unlock()
					log.Warn("re-sign director view after a policy change", "device", d.ID, "err", err)
				}
			}()
		}
		wg.Wait()
	}
	log.Info("re-signed director views after a policy change", "devices", len(devs), "failed", failed)
	return failed, nil
}
