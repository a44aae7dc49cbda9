package rollout

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/installpolicy"
	"upkeep.dev/upkeep/internal/release"
)

// Bounds of a dynamic campaign's work per engine tick: it examines at most DynamicScan devices
// of its product (a page, in id order, from where the last tick stopped), so a tick costs the
// same whatever the fleet's size; after a whole pass it rests DynamicRest before the next one.
// A device that starts to match (enrolled, accepted, or its inventory changed) is therefore taken
// in within (fleet size / DynamicScan) ticks plus DynamicRest.
const (
	DynamicScan = 500
	DynamicRest = 5 * time.Second
)

// dynCursor is where a dynamic campaign's scan stands, in this process.
type dynCursor struct {
	offset int
	rest   time.Time // no new pass before
}

// checkSchedule checks a new campaign's schedule and dynamic settings.
func (e *Engine) checkSchedule(c *Campaign, s Spec) error {
	now := e.now()
	if err := installpolicy.ValidDays(s.Days); err != nil {
		return apperr.E(apperr.Invalid, "%v", err)
	}
	if s.Dynamic && (strings.TrimSpace(s.Target) == "" || len(s.Devices) > 0 || s.Fixes != "") {
		return apperr.E(apperr.Invalid, "a dynamic campaign needs a group or filter target, and no --device or --fixes: it takes in the devices that come to match it")
	}
	if !s.Until.IsZero() {
		if !s.Dynamic {
			return apperr.E(apperr.Invalid, "--until ends a dynamic campaign's intake: it goes with --dynamic")
		}
		if !s.Until.After(now) || !s.StartAt.IsZero() && !s.Until.After(s.StartAt) {
			return apperr.E(apperr.Invalid, "--until %s is not after the start", s.Until.Format(time.RFC3339))
		}
	}
	if !s.StartAt.IsZero() {
		if s.Start {
			return apperr.E(apperr.Invalid, "--start and --start-at exclude each other")
		}
		if !s.StartAt.After(now) {
			return apperr.E(apperr.Invalid, "--start-at %s is not in the future (now %s)", s.StartAt.Format(time.RFC3339), now.Format(time.RFC3339))
		}
	}
	return nil
}

// startScheduled starts the scheduled campaigns whose time has come. The caller holds e.mu.
func (e *Engine) startScheduled(ctx context.Context) error {
	cs, err := e.Store.FindCampaigns(ctx, StateScheduled)
	if err != nil {
		return err
	}
	now := e.now()
	var errs []error
	for _, c := range cs {
		if c.StartAt.After(now) {
			continue
		}
		if err := e.startOne(ctx, c.ID); err != nil {
			errs = append(errs, fmt.Errorf("start scheduled campaign %s: %w", c.ID, err))
		}
	}
	return errors.Join(errs...)
}

func (e *Engine) startOne(ctx context.Context, id string) error {
	unlock, err := e.Store.LockCampaign(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	c, err := e.Store.FindCampaign(ctx, id)
	if err != nil || c.State != StateScheduled {
		return err // an operator started or cancelled it meanwhile
	}
	_, err = e.act(ctx, id, "start", "engine")
	return err
}

// join takes into a running dynamic campaign's current wave the devices that match its target
// now and are not members yet: eligible for its release (accepted, product, hardware, not
// running it), not on or assigned a newer release, and not held by another unfinished campaign.
// It examines at most DynamicScan devices per call. The caller holds e.mu and the campaign's
// lock.
func (e *Engine) join(ctx context.Context, c *Campaign) error {
	now := e.now()
	if !c.Dynamic || c.State != StateRunning || c.Wave < 0 || !c.Until.IsZero() && !now.Before(c.Until) {
		return nil
	}
	if e.dyn == nil {
		e.dyn = map[string]*dynCursor{}
	}
	cur := e.dyn[c.ID]
	if cur == nil {
		cur = &dynCursor{}
		e.dyn[c.ID] = cur
	}
	if cur.offset == 0 && now.Before(cur.rest) {
		return nil
	}
	rels := map[string]*release.Release{}
	rel, err := e.release(ctx, rels, c.Target)
	if err != nil {
		return err
	}
	match, err := e.matcher(ctx, c.Selector)
	if err != nil {
		return err
	}
	page, err := e.Devices.FindDevices(ctx, fleet.DeviceFilter{Product: rel.Product, Status: fleet.StatusAccepted, Offset: cur.offset, Limit: DynamicScan})
	if err != nil {
		return err
	}
	if len(page) < DynamicScan {
		cur.offset, cur.rest = 0, now.Add(DynamicRest)
	} else {
		cur.offset += len(page)
	}
	ms, err := e.Store.FindMembers(ctx, c.ID)
	if err != nil {
		return err
	}
	member := make(map[string]bool, len(ms))
	for _, m := range ms {
		member[m.DeviceID] = true
	}
	var add []Member
	for _, d := range page {
		if member[d.ID] || !eligible(d, rel) || !match(d) || e.newerThan(ctx, rels, d, rel) != "" {
			continue
		}
		held, err := e.heldElsewhere(ctx, d.ID, c.ID)
		if err != nil {
			return err
		}
		if !held {
			add = append(add, Member{DeviceID: d.ID, Wave: c.Wave, Status: MemberPending, Since: now, Detail: "joined the dynamic campaign"})
		}
	}
	if len(add) == 0 {
		return nil
	}
	ids, err := e.Store.AddMembers(ctx, c.ID, add)
	if err != nil || len(ids) == 0 {
		return err
	}
	e.audit(ctx, "engine", "join", "campaign:"+c.ID, fmt.Sprintf("%d devices started to match %q and joined wave %d", len(ids), c.Selector, c.Wave+1))
	return nil
}

// heldElsewhere says whether another unfinished campaign holds the device.
func (e *Engine) heldElsewhere(ctx context.Context, deviceID, campaignID string) (bool, error) {
	ms, err := e.Store.FindMemberships(ctx, deviceID)
	if err != nil {
		return false, err
	}
	for _, m := range ms {
		if m.CampaignID != campaignID && m.State != StateCompleted && m.State != StateCancelled && active(m.Status) {
			return true, nil
		}
	}
	return false, nil
}

// matcher says which devices a campaign's selector takes: a filter's, or a group's (its filter,
// or its static members as they are now).
func (e *Engine) matcher(ctx context.Context, sel string) (func(*fleet.Device) bool, error) {
	sel = strings.TrimSpace(sel)
	if strings.Contains(strings.TrimPrefix(sel, "group:"), "=") {
		f, err := ParseFilter(sel)
		if err != nil {
			return nil, err
		}
		return f.Match, nil
	}
	g, err := e.Store.FindGroup(ctx, strings.TrimPrefix(sel, "group:"))
	if err != nil {
		return nil, err
	}
	if g.Filter != "" {
		f, err := ParseFilter(g.Filter)
		if err != nil {
			return nil, err
		}
		return f.Match, nil
	}
	ids, err := e.Store.GroupDevices(ctx, g.Name)
	if err != nil {
		return nil, err
	}
	in := make(map[string]bool, len(ids))
	for _, id := range ids {
		in[id] = true
	}
	return func(d *fleet.Device) bool { return in[d.ID] }, nil
}
