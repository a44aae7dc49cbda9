package rollout

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/event"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/installpolicy"
	"upkeep.dev/upkeep/internal/product"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/wire"
)

// Engine creates campaigns, applies operator actions and drives running campaigns with Plan.
type Engine struct {
	Store    Store
	Devices  fleet.Store
	Releases release.Store
	// Products, if set, holds each product's declared support policy: a campaign follows its
	// delivery (docs/ROLLOUTS.md). Nil: every product delivers automatically.
	Products product.Store
	// Gate, if set, applies the product's release gate (known exploited or severe
	// vulnerabilities without a VEX statement or waiver) before a campaign is created; its
	// error refuses the campaign.
	Gate func(ctx context.Context, rel *release.Release) error
	// Assign makes the director name rel for d with the install policy, and signs its view.
	Assign func(ctx context.Context, d *fleet.Device, rel *release.Release, p *installpolicy.Policy) error
	// AssignMany, if set, assigns a batch at once and returns the devices it could not assign;
	// else Assign is called for each device.
	AssignMany func(ctx context.Context, ds []*fleet.Device, rel *release.Release, p *installpolicy.Policy) map[string]error
	// Unassign makes the director name what d runs, so that it installs nothing new.
	Unassign func(ctx context.Context, d *fleet.Device) error
	// Exposed finds the devices exposed to an advisory and the release that fixes it, for
	// campaigns created with Spec.Fixes; nil when the server holds no vulnerability data.
	Exposed func(ctx context.Context, advisory, release string) (fixRelease string, deviceIDs []string, err error)
	// Events, if set, is told when a campaign starts, pauses, resumes, completes or is
	// cancelled (event.CampaignStarted, ...), after the change is stored.
	Events   event.Emitter
	Now      func() time.Time
	Logger   *slog.Logger
	ActLimit int // members a start or resume assigns before it answers; 0: ActAssignLimit

	mu   sync.Mutex            // one step at a time in this process: a tick and an operator's action
	dyn  map[string]*dynCursor // dynamic campaigns' scans, guarded by mu
	wake chan struct{}
	once sync.Once
}

// ActAssignLimit is how many members an operator's start or resume assigns before it answers;
// the engine's next tick (woken at once) assigns the rest, so that starting a campaign over a
// whole large fleet does not hold the operator's request for minutes.
const ActAssignLimit = 1000

// Woken delivers a value when an operator's action left work for the engine's next tick.
func (e *Engine) Woken() <-chan struct{} {
	e.once.Do(func() { e.wake = make(chan struct{}, 1) })
	return e.wake
}

func (e *Engine) nudge() {
	e.Woken() // makes the channel
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *Engine) now() time.Time {
	if e.Now != nil {
		return e.Now().UTC()
	}
	return time.Now().UTC()
}

func (e *Engine) log() *slog.Logger {
	if e.Logger != nil {
		return e.Logger
	}
	return slog.Default()
}

// Spec is what an operator asks for when creating a campaign.
type Spec struct {
	Release string `json:"release"` // product@version
	Target  string `json:"target"`  // group name, "group:NAME", or a filter
	// Devices are explicit device ids (--device, or the devices exposed to an advisory with
	// --fixes); with a Target as well, the campaign takes the devices in both.
	Devices []string `json:"devices,omitempty"`
	// DevicesFrom names where Devices came from, for the campaign's selector ("fixes:CVE-…").
	DevicesFrom      string  `json:"devices_from,omitempty"`
	Waves            string  `json:"waves,omitempty"`
	SuccessThreshold float64 `json:"success_threshold,omitempty"`
	// FailureThreshold: nil for DefaultFailure; 0 pauses on the first failure.
	FailureThreshold *float64      `json:"failure_threshold,omitempty"`
	HealthGate       time.Duration `json:"health_gate,omitempty"`
	SilentAfter      time.Duration `json:"silent_after,omitempty"`
	// AssignTimeout: an assigned member silent this long counts as timed out (0: the default,
	// DefaultAssignTimeout; negative: never).
	AssignTimeout time.Duration `json:"assign_timeout,omitempty"`
	// StaleAfter: devices not seen this long are left out (0: DefaultStaleAfter; negative:
	// none are).
	StaleAfter   time.Duration `json:"stale_after,omitempty"`
	Mode         string        `json:"mode,omitempty"` // forced | soft; default forced for security, soft for feature
	Window       string        `json:"window,omitempty"`
	IgnoreWindow bool          `json:"ignore_window,omitempty"`
	// Days restricts the window to weekdays (UTC), "mon,wed,sat"; empty: the group's, else
	// every day.
	Days string `json:"days,omitempty"`
	// Dynamic takes in devices that come to match Target after the campaign started, until
	// Until (zero: until cancelled).
	Dynamic bool      `json:"dynamic,omitempty"`
	Until   time.Time `json:"until,omitzero"`
	// StartAt schedules the start: the campaign waits in state scheduled until then.
	StartAt time.Time `json:"start_at,omitzero"`
	// Fixes, if set, is an advisory: the campaign takes the devices exposed to it and the
	// release that fixes it (Engine.Exposed); with Release set, that release.
	Fixes string `json:"fixes,omitempty"`
	// Start starts the campaign's first wave once it is created.
	Start bool `json:"-"`
}

// followDelivery holds a campaign to what its product's published policy promises owners: a
// product whose updates install with the owner's consent gets consent-required campaigns and
// refuses forced ones; a product declared to receive no updates gets none.
func (e *Engine) followDelivery(ctx context.Context, c *Campaign, mode string) error {
	if e.Products == nil {
		return nil
	}
	p, err := e.Products.FindProduct(ctx, c.Product)
	if apperr.Is(err, apperr.NotFound) {
		return nil // no policy declared: the default, automatic delivery
	}
	if err != nil {
		return err
	}
	pol, err := product.ParsePolicy(p.Policy)
	if err != nil {
		return err
	}
	switch pol.Delivery {
	case product.DeliveryNone:
		return apperr.E(apperr.Invalid, "product %s declares that it receives no updates (delivery none): change its policy with `upkeep product set` first", c.Product)
	case product.DeliveryConsent:
		if mode == "forced" {
			return apperr.E(apperr.Invalid, "product %s declares that updates install with the owner's consent: a forced campaign would break that promise", c.Product)
		}
		c.Consent = true
	}
	return nil
}

// Create resolves the target to devices, splits them into waves and stores the campaign in
// state created. Devices that already run the release are left out; devices assigned a newer
// release are members superseded from the start; older campaigns holding a device are
// superseded for it.
func (e *Engine) Create(ctx context.Context, s Spec, actor string) (*Campaign, error) {
	if s.Fixes != "" {
		if e.Exposed == nil {
			return nil, apperr.E(apperr.Unavailable, "--fixes needs vulnerability data, which this server does not hold")
		}
		rel, ids, err := e.Exposed(ctx, s.Fixes, s.Release)
		if err != nil {
			return nil, err
		}
		if len(ids) == 0 {
			return nil, apperr.E(apperr.Invalid, "no device in the field is exposed to %s", s.Fixes)
		}
		// With a target too, resolve keeps the exposed devices of the target only.
		s.Release, s.Devices, s.DevicesFrom = rel, ids, "fixes:"+s.Fixes
	}
	for _, id := range s.Devices {
		if err := tuf.ValidIdent("device", id); err != nil {
			return nil, apperr.E(apperr.Invalid, "%v", err)
		}
	}
	c, err := e.create(ctx, s, actor)
	if err != nil || !s.Start {
		return c, err
	}
	return e.Act(ctx, c.ID, "start", actor)
}

func (e *Engine) create(ctx context.Context, s Spec, actor string) (*Campaign, error) {
	product, version, ok := strings.Cut(s.Release, "@")
	if !ok || product == "" || version == "" {
		return nil, apperr.E(apperr.Invalid, "release %q: want PRODUCT@VERSION", s.Release)
	}
	rel, err := e.Releases.FindRelease(ctx, product, version)
	if err != nil {
		return nil, err
	}
	if e.Gate != nil {
		if err := e.Gate(ctx, rel); err != nil {
			return nil, err
		}
	}
	c := &Campaign{ID: newID(), Release: rel.Ref(), Target: rel.Target, Product: rel.Product, Selector: selector(s), Class: rel.Class,
		WaveSpec: s.Waves, SuccessThreshold: cmp.Or(s.SuccessThreshold, DefaultSuccess), FailureThreshold: DefaultFailure,
		HealthGate: s.HealthGate, SilentAfter: cmp.Or(s.SilentAfter, DefaultSilentAfter), Window: s.Window, IgnoreWindow: s.IgnoreWindow,
		Days: installpolicy.CanonicalDays(s.Days), Dynamic: s.Dynamic, Until: s.Until.UTC(), StartAt: s.StartAt.UTC(),
		Actor: actor, State: StateCreated, Wave: -1, CreatedAt: e.now(), UpdatedAt: e.now()}
	if err := e.checkSchedule(c, s); err != nil {
		return nil, err
	}
	if s.FailureThreshold != nil {
		c.FailureThreshold = *s.FailureThreshold
	}
	c.AssignTimeout = max(cmp.Or(s.AssignTimeout, DefaultAssignTimeout), 0)
	if s.HealthGate == 0 {
		c.HealthGate = DefaultHealthGate
	} else if s.HealthGate < 0 {
		c.HealthGate = 0
	}
	if c.SuccessThreshold <= 0 || c.SuccessThreshold > 1 || c.FailureThreshold < 0 || c.FailureThreshold >= 1 {
		return nil, apperr.E(apperr.Invalid, "thresholds: success in (0, 1], failure in [0, 1)")
	}
	switch s.Mode {
	case "":
		c.Consent = rel.Class == "feature"
	case "soft":
		c.Consent = true
	case "forced":
	default:
		return nil, apperr.E(apperr.Invalid, "mode %q: forced or soft", s.Mode)
	}
	if err := e.followDelivery(ctx, c, s.Mode); err != nil {
		return nil, err
	}
	if s.Window != "" {
		if err := installpolicy.ValidWindow(s.Window); err != nil {
			return nil, apperr.E(apperr.Invalid, "maintenance window %q: %v", s.Window, err)
		}
	}
	devs, group, err := e.resolve(ctx, s, rel)
	if err != nil {
		return nil, err
	}
	if c.Window == "" && c.Days == "" && group != nil {
		c.Window, c.Days = group.Window, group.Days
	}
	if stale := cmp.Or(s.StaleAfter, DefaultStaleAfter); stale > 0 && len(devs) > 0 {
		n := len(devs)
		devs = slices.DeleteFunc(devs, func(d *fleet.Device) bool {
			seen := d.LastSeen
			if seen.IsZero() {
				seen = d.EnrolledAt // enrolled, not checked in yet
			}
			return c.CreatedAt.Sub(seen) > stale
		})
		if c.Stale = n - len(devs); len(devs) == 0 && !c.Dynamic {
			return nil, apperr.E(apperr.Invalid, "target %q: all %d devices it selects were last seen more than %s ago", c.Selector, n, stale)
		}
	}
	if len(devs) == 0 && !c.Dynamic {
		return nil, apperr.E(apperr.Invalid, "target %q selects no accepted %s device on hardware %s that does not already run %s",
			c.Selector, rel.Product, strings.Join(rel.HardwareIDs, "/"), rel.Version)
	}
	// A stable shuffle: the order depends on the campaign id, so waves are a random sample.
	key := func(id string) string { h := sha256.Sum256([]byte(c.ID + id)); return string(h[:]) }
	slices.SortFunc(devs, func(a, b *fleet.Device) int { return strings.Compare(key(a.ID), key(b.ID)) })
	if len(devs) == 0 {
		c.Waves = []int{0} // a dynamic campaign waiting for its first device: one wave
	} else if c.Waves, err = Sizes(s.Waves, len(devs)); err != nil {
		return nil, err
	}
	if !c.StartAt.IsZero() {
		c.State = StateScheduled
	}
	rels := map[string]*release.Release{rel.Target: rel}
	members := make([]Member, len(devs))
	var supersededBy = map[string][]string{}
	for i, d := range devs {
		m := Member{DeviceID: d.ID, Wave: WaveOf(c.Waves, i), Status: MemberPending, Since: c.CreatedAt}
		if why := e.newerThan(ctx, rels, d, rel); why != "" {
			m.Status, m.Detail = MemberSuperseded, why
		}
		if m.Status == MemberPending {
			ms, err := e.Store.FindMemberships(ctx, d.ID)
			if err != nil {
				return nil, err
			}
			for _, o := range ms {
				if o.State == StateCompleted || o.State == StateCancelled || !active(o.Status) {
					continue
				}
				other, err := e.release(ctx, rels, o.Target)
				if err != nil {
					continue
				}
				if Newer(other, rel) {
					m.Status, m.Detail = MemberSuperseded, "held by campaign "+o.CampaignID+" with the newer "+other.Ref()
					break
				}
				supersededBy[o.CampaignID] = append(supersededBy[o.CampaignID], d.ID)
			}
		}
		members[i] = m
	}
	if err := e.Store.CreateCampaign(ctx, c, members); err != nil {
		return nil, err
	}
	if c.State == StateScheduled {
		// Older campaigns go on until this one starts: their members are superseded as it
		// assigns them (their next step finds the newer release assigned).
		supersededBy = nil
	}
	for cid, ids := range supersededBy {
		if err := e.Store.SetMembers(ctx, cid, ids, activeStatuses, MemberSuperseded, "superseded by campaign "+c.ID+" ("+rel.Ref()+")", c.CreatedAt); err != nil {
			return nil, err
		}
		e.audit(ctx, "engine", "supersede", "campaign:"+cid, fmt.Sprintf("%d devices moved to campaign %s (%s)", len(ids), c.ID, rel.Ref()))
	}
	detail := fmt.Sprintf("%s to %q: %d devices in %d waves %v", rel.Ref(), c.Selector, len(members), len(c.Waves), c.Waves)
	if c.Dynamic {
		detail += "; dynamic"
		if !c.Until.IsZero() {
			detail += " until " + c.Until.Format(time.RFC3339)
		}
	}
	if c.State == StateScheduled {
		detail += "; scheduled to start at " + c.StartAt.Format(time.RFC3339)
	}
	if c.Stale > 0 {
		detail += fmt.Sprintf("; %d not seen for %s left out", c.Stale, cmp.Or(s.StaleAfter, DefaultStaleAfter))
	}
	e.audit(ctx, actor, "create", "campaign:"+c.ID, detail)
	return c, nil
}

// Members a device's report can still move on (a timed-out device that speaks again is back),
// and, with those not yet released, the members a campaign still holds.
var (
	inFlight       = []string{MemberAssigned, MemberWaiting, MemberTimedOut}
	activeStatuses = append([]string{MemberPending}, inFlight...)
)

func active(status string) bool { return slices.Contains(activeStatuses, status) }

// Newer reports whether a is a newer release than b (release.Compare: a higher security
// version, or the same and published later).
func Newer(a, b *release.Release) bool { return release.Compare(a, b) > 0 }

// newerThan says why d must not be given rel, if it runs or is assigned a newer release
// (release.Compare): a device never goes back to an older image. Empty if it may.
func (e *Engine) newerThan(ctx context.Context, rels map[string]*release.Release, d *fleet.Device, rel *release.Release) string {
	if d.InstalledTarget != "" && d.InstalledTarget != rel.Target {
		if cur, err := e.release(ctx, rels, d.InstalledTarget); err == nil && Newer(cur, rel) {
			return "already runs the newer " + cur.Ref()
		}
	}
	if d.Assigned != "" && d.Assigned != rel.Target {
		if cur, err := e.release(ctx, rels, d.Assigned); err == nil && Newer(cur, rel) {
			return "already assigned the newer " + cur.Ref()
		}
	}
	return ""
}

func (e *Engine) release(ctx context.Context, cache map[string]*release.Release, target string) (*release.Release, error) {
	if r, ok := cache[target]; ok {
		return r, nil
	}
	rs, err := e.Releases.FindReleases(ctx, release.Filter{Target: target})
	if err != nil {
		return nil, err
	}
	if len(rs) == 0 {
		return nil, apperr.E(apperr.NotFound, "no release for target %s", target)
	}
	cache[target] = rs[0]
	return rs[0], nil
}

// selector is what the campaign targets, as its status shows it: the target, the explicit
// devices' origin, or both ("fixes:CVE-1 in group:eu").
func selector(s Spec) string {
	target := strings.TrimSpace(s.Target)
	if len(s.Devices) == 0 {
		return target
	}
	from := s.DevicesFrom
	if from == "" {
		from = fmt.Sprintf("%d listed devices", len(s.Devices))
	}
	if target == "" {
		return from
	}
	return from + " in " + target
}

// resolve turns a campaign target into the accepted devices of the release's product and
// hardware that do not run it yet. Explicit devices with a target are narrowed to the target's.
func (e *Engine) resolve(ctx context.Context, s Spec, rel *release.Release) ([]*fleet.Device, *Group, error) {
	sel := strings.TrimSpace(s.Target)
	if sel == "" && len(s.Devices) == 0 {
		return nil, nil, apperr.E(apperr.Invalid, "a campaign needs a target: a group or a filter")
	}
	var devs []*fleet.Device
	var group *Group
	var err error
	if sel != "" {
		if devs, group, err = e.selectTarget(ctx, sel, rel); err != nil {
			return nil, nil, err
		}
	}
	if len(s.Devices) > 0 {
		listed, err := e.findDevices(ctx, s.Devices)
		if err != nil {
			return nil, nil, err
		}
		if sel != "" {
			in := make(map[string]bool, len(devs))
			for _, d := range devs {
				in[d.ID] = true
			}
			listed = slices.DeleteFunc(listed, func(d *fleet.Device) bool { return !in[d.ID] })
		}
		devs = listed
	}
	devs = slices.DeleteFunc(devs, func(d *fleet.Device) bool { return !eligible(d, rel) })
	return devs, group, nil
}

// eligible says whether a device may be a member of a campaign of rel: accepted, of its
// product and hardware, not already running it.
func eligible(d *fleet.Device, rel *release.Release) bool {
	return d.Status == fleet.StatusAccepted && d.Product == rel.Product && slices.Contains(rel.HardwareIDs, d.HardwareID) && d.InstalledSHA256 != rel.SHA256
}

// selectTarget lists the devices of a group or a filter, and the group (nil for a filter).
func (e *Engine) selectTarget(ctx context.Context, sel string, rel *release.Release) ([]*fleet.Device, *Group, error) {
	var devs []*fleet.Device
	var g *Group
	var err error
	switch {
	case strings.Contains(strings.TrimPrefix(sel, "group:"), "="):
		f, ferr := ParseFilter(sel)
		if ferr != nil {
			return nil, nil, ferr
		}
		devs, err = e.Devices.FindDevices(ctx, fleet.DeviceFilter{Product: rel.Product})
		devs = slices.DeleteFunc(devs, func(d *fleet.Device) bool { return !f.Match(d) })
	default:
		if g, err = e.Store.FindGroup(ctx, strings.TrimPrefix(sel, "group:")); err != nil {
			return nil, nil, err
		}
		devs, err = e.GroupMembers(ctx, g)
	}
	return devs, g, err
}

// findDevices looks devices up by id, 500 at a time (a database takes only so many parameters).
func (e *Engine) findDevices(ctx context.Context, ids []string) ([]*fleet.Device, error) {
	var out []*fleet.Device
	for chunk := range slices.Chunk(ids, 500) {
		ds, err := e.Devices.FindDevices(ctx, fleet.DeviceFilter{IDs: chunk})
		if err != nil {
			return nil, err
		}
		out = append(out, ds...)
	}
	return out, nil
}

// GroupMembers lists a group's devices: its static members, or the devices its filter selects.
func (e *Engine) GroupMembers(ctx context.Context, g *Group) ([]*fleet.Device, error) {
	if g.Filter != "" {
		f, err := ParseFilter(g.Filter)
		if err != nil {
			return nil, err
		}
		devs, err := e.Devices.FindDevices(ctx, fleet.DeviceFilter{Product: f.Product()})
		if err != nil {
			return nil, err
		}
		return slices.DeleteFunc(devs, func(d *fleet.Device) bool { return !f.Match(d) }), nil
	}
	ids, err := e.Store.GroupDevices(ctx, g.Name)
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	return e.findDevices(ctx, ids)
}

func newID() string {
	var b [6]byte
	rand.Read(b[:]) //nolint:errcheck // crypto/rand does not fail
	return hex.EncodeToString(b[:])
}

func (e *Engine) audit(ctx context.Context, actor, action, subject, detail string) {
	if err := e.Store.AddAudit(ctx, AuditEntry{Time: e.now(), Actor: actor, Action: action, Subject: subject, Detail: detail}); err != nil {
		e.log().Error("audit", "err", err, "action", action, "subject", subject)
	}
}

// Act applies an operator action: start, pause, resume or cancel. Starting releases the first
// wave at once; pausing stops new assignments at once (devices already assigned finish or roll
// back); cancelling also withdraws the assignment from members that have not installed yet.
//
// Each action lands whole or not at all, so that a failed one can be retried: the new state, the
// members' statuses and the audit entry are written in one transaction (Store.ApplyChange).
// Cancel first withdraws every assignment (idempotent: a device the director no longer names
// the campaign's image for is left alone), and only then marks the campaign cancelled; if a
// withdrawal fails, the campaign keeps its state and a retry withdraws the rest. Start and
// resume land with the state change; the assignments they then make are the engine's own work
// (a failure there is logged and the next tick, woken at once, assigns from the stored state).
//
// Start, resume and cancel run under the campaign's lock (Store.LockCampaign), like every step
// of the engine on any replica, so that no member is assigned twice; pause takes no lock, so that
// it applies at once: a step under way re-reads the state between batches and stops.
func (e *Engine) Act(ctx context.Context, id, action, actor string) (*Campaign, error) {
	if action == "pause" {
		return e.act(ctx, id, action, actor)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	unlock, err := e.Store.LockCampaign(ctx, id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return e.act(ctx, id, action, actor)
}

func (e *Engine) act(ctx context.Context, id, action, actor string) (*Campaign, error) {
	c, err := e.Store.FindCampaign(ctx, id)
	if err != nil {
		return nil, err
	}
	to, err := Transition(c.State, action)
	if err != nil {
		return nil, err
	}
	from := c.State
	next := *c
	next.State, next.UpdatedAt = to, e.now()
	ch := Change{Campaign: &next, From: from,
		Audit: []AuditEntry{{Time: next.UpdatedAt, Actor: actor, Action: action, Subject: "campaign:" + c.ID, Detail: fmt.Sprintf("%s → %s", from, to)}}}
	switch action {
	case "start":
		next.Wave = 0
	case "resume":
		// The operator looked at the failures so far and chose to go on: only failures after
		// this point count against the threshold, else the campaign would pause again at once.
		ms, err := e.Store.FindMembers(ctx, c.ID)
		if err != nil {
			return nil, err
		}
		next.PauseReason, next.Baseline = "", Baseline(c, ms)
	case "cancel":
		ids, err := e.withdraw(ctx, c)
		if err != nil {
			return nil, fmt.Errorf("cancel campaign %s: %w (nothing changed; retry the cancel)", c.ID, err)
		}
		ch.Members = []MemberSet{{IDs: ids, From: activeStatuses, Status: MemberCancelled, Detail: "campaign cancelled"}}
	}
	if err := e.Store.ApplyChange(ctx, ch); err != nil {
		return nil, err
	}
	e.emit(ctx, actionEvents[action], &next, actor, "")
	if action == "start" || action == "resume" {
		more, err := e.step(ctx, &next, cmp.Or(e.ActLimit, ActAssignLimit))
		if err != nil {
			// The campaign runs: the next tick assigns what this step could not.
			e.log().Error("campaign step after "+action, "campaign", c.ID, "err", err)
			more = true
		}
		if more {
			e.nudge()
		}
	}
	return e.Store.FindCampaign(ctx, id)
}

// withdraw makes the director stop naming the campaign's image for every member that has not
// finished, and returns the members the cancel marks cancelled. It changes no campaign state and
// may be run again: a device whose director no longer names the image is left alone.
func (e *Engine) withdraw(ctx context.Context, c *Campaign) ([]string, error) {
	ms, err := e.Store.FindMembers(ctx, c.ID)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, m := range ms {
		if !active(m.Status) {
			continue
		}
		ids = append(ids, m.DeviceID)
		if m.Assigned != c.Target || e.Unassign == nil {
			continue // pending, or its director already names something else
		}
		d, err := e.Devices.FindDevice(ctx, m.DeviceID)
		if err != nil {
			return nil, err
		}
		if d.Assigned != c.Target {
			continue
		}
		if err := e.Unassign(ctx, d); err != nil {
			return nil, fmt.Errorf("withdraw %s from device %s: %w", c.Release, d.ID, err)
		}
	}
	return ids, nil
}

// Tick drives every running campaign one step. The server calls it periodically, on one
// replica at a time; should two replicas tick at once (a lease that expired during a long tick),
// the campaign lock makes them step each campaign in turn, each from what the other left.
func (e *Engine) Tick(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var errs []error
	if err := e.startScheduled(ctx); err != nil {
		errs = append(errs, err)
	}
	cs, err := e.Store.FindCampaigns(ctx, StateRunning)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, c := range cs {
		if err := e.tickOne(ctx, c.ID); err != nil {
			errs = append(errs, fmt.Errorf("campaign %s: %w", c.ID, err))
		}
	}
	return errors.Join(errs...)
}

// tickOne steps one campaign under its lock, from its state as stored once the lock is held
// (another replica may have stepped it since it was listed).
func (e *Engine) tickOne(ctx context.Context, id string) error {
	unlock, err := e.Store.LockCampaign(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	c, err := e.Store.FindCampaign(ctx, id)
	if err != nil || c.State != StateRunning {
		return err
	}
	if err := e.join(ctx, c); err != nil {
		e.log().Error("dynamic campaign intake", "campaign", id, "err", err)
	}
	_, err = e.step(ctx, c, 0)
	return err
}

// step runs Plan for one campaign and applies its decision, until it has nothing more to do now
// or, with limit > 0, until it assigned limit members; more says that it stopped there. The
// caller holds e.mu and the campaign's lock.
func (e *Engine) step(ctx context.Context, c *Campaign, limit int) (more bool, err error) {
	for range MaxWaves + 1 {
		ms, err := e.Store.FindMembers(ctx, c.ID)
		if err != nil {
			return false, err
		}
		now := e.now()
		d := Plan(c, ms, now)
		// The members' verdicts land with the pause or the advance they lead to, in one
		// transaction: a step that fails leaves the stored state as it was, and the next tick
		// decides again from it.
		var sets []MemberSet
		if len(d.Reconciled) > 0 {
			sets = append(sets, MemberSet{IDs: d.Reconciled, From: inFlight, Status: MemberCommitted})
		}
		if len(d.Healthy) > 0 {
			sets = append(sets, MemberSet{IDs: d.Healthy, From: []string{MemberCommitted}, Status: MemberHealthy})
		}
		if len(d.TimedOut) > 0 {
			why := fmt.Sprintf("no word from the device within %s of its assignment", c.AssignTimeout)
			sets = append(sets, MemberSet{IDs: d.TimedOut, From: []string{MemberAssigned}, Status: MemberTimedOut, Detail: why})
		}
		for _, id := range slices.Sorted(maps.Keys(d.Unhealthy)) {
			sets = append(sets, MemberSet{IDs: []string{id}, From: []string{MemberCommitted}, Status: MemberFailed, Detail: d.Unhealthy[id]})
		}
		next := *c
		next.UpdatedAt = now
		ch := Change{Campaign: &next, From: StateRunning, Members: sets}
		switch {
		case d.Pause != "":
			next.State, next.PauseReason = StatePaused, d.Pause
			ch.Audit = []AuditEntry{{Time: now, Actor: "engine", Action: "pause", Subject: "campaign:" + c.ID, Detail: d.Pause}}
		case d.Advance:
			next.Wave++
			ch.Audit = []AuditEntry{{Time: now, Actor: "engine", Action: "advance", Subject: "campaign:" + c.ID,
				Detail: fmt.Sprintf("wave %d of %d released", next.Wave+1, len(c.Waves))}}
		case d.Complete && len(d.Assign) == 0:
			next.State = StateCompleted
			ch.Audit = []AuditEntry{completeEntry(c.ID, now)}
		}
		if len(sets) > 0 || ch.Audit != nil {
			if err := e.Store.ApplyChange(ctx, ch); err != nil {
				return false, err
			}
			*c = next
		}
		if d.Pause != "" {
			e.log().Warn("campaign paused itself", "campaign", c.ID, "release", c.Release, "reason", d.Pause)
			e.emit(ctx, event.CampaignPaused, c, "engine", d.Pause)
			return false, nil
		}
		if c.State == StateCompleted {
			e.emit(ctx, event.CampaignCompleted, c, "engine", "")
			return false, nil
		}
		if limit > 0 && len(d.Assign) > limit {
			// Pending members of a released wave go out at the next step (Plan releases them).
			return true, e.assign(ctx, c, d.Assign[:limit])
		}
		if err := e.assign(ctx, c, d.Assign); err != nil {
			return false, err
		}
		if limit > 0 {
			if limit -= len(d.Assign); limit <= 0 && d.Advance {
				return true, nil
			}
		}
		if d.Complete {
			// The last wave's stragglers were assigned above (a restart between two writes).
			next := *c
			next.State, next.UpdatedAt = StateCompleted, now
			if err := e.Store.ApplyChange(ctx, Change{Campaign: &next, From: StateRunning, Audit: []AuditEntry{completeEntry(c.ID, now)}}); err != nil {
				return false, err
			}
			*c = next
			e.emit(ctx, event.CampaignCompleted, c, "engine", "")
			return false, nil
		}
		if !d.Advance {
			return false, nil
		}
	}
	return false, nil
}

// actionEvents are the events of operators' actions.
var actionEvents = map[string]string{"start": event.CampaignStarted, "pause": event.CampaignPaused, "resume": event.CampaignResumed, "cancel": event.CampaignCancelled}

// CampaignEvent is the data of a campaign's events.
type CampaignEvent struct {
	Campaign string `json:"campaign"`
	Release  string `json:"release"`
	Product  string `json:"product"`
	Target   string `json:"target"` // what the operator targeted: a group or a filter
	State    string `json:"state"`
	Wave     int    `json:"wave"` // the released wave, from 1
	Waves    int    `json:"waves"`
	Members  int    `json:"members"`
	Actor    string `json:"actor"`            // the operator, or "engine"
	Reason   string `json:"reason,omitempty"` // why the engine paused it
}

// emit tells e.Events of a campaign's change of state, once it is stored.
func (e *Engine) emit(ctx context.Context, typ string, c *Campaign, actor, reason string) {
	if e.Events == nil || typ == "" {
		return
	}
	members := 0
	if len(c.Waves) > 0 {
		members = c.Waves[len(c.Waves)-1]
	}
	event.Emit(ctx, e.Events, event.Event{Type: typ, Subject: "campaign/" + c.ID, Time: c.UpdatedAt,
		Data: CampaignEvent{Campaign: c.ID, Release: c.Release, Product: c.Product, Target: c.Selector, State: c.State,
			Wave: c.Wave + 1, Waves: len(c.Waves), Members: members, Actor: actor, Reason: reason}})
}

func completeEntry(id string, now time.Time) AuditEntry {
	return AuditEntry{Time: now, Actor: "engine", Action: "complete", Subject: "campaign:" + id, Detail: "every wave met its success threshold"}
}

// assignBatch assigns rel to devices with AssignMany, or one by one with Assign if it is not
// set, and returns the devices it could not assign.
func (e *Engine) assignBatch(ctx context.Context, ds []*fleet.Device, rel *release.Release, p *installpolicy.Policy) map[string]error {
	if e.AssignMany != nil {
		return e.AssignMany(ctx, ds, rel, p)
	}
	failed := map[string]error{}
	for _, d := range ds {
		if err := e.Assign(ctx, d, rel, p); err != nil {
			failed[d.ID] = err
		}
	}
	return failed
}

// assign hands members their assignment, checking between batches that the campaign still runs,
// so that a pause stops new assignments at once.
func (e *Engine) assign(ctx context.Context, c *Campaign, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	rel, err := e.release(ctx, map[string]*release.Release{}, c.Target)
	if err != nil {
		return err
	}
	rels := map[string]*release.Release{c.Target: rel}
	pol := &installpolicy.Policy{Campaign: c.ID, Consent: c.Consent, Window: c.Window, IgnoreWindow: c.IgnoreWindow, Days: c.Days}
	if c.Days != "" && !c.IgnoreWindow && !installpolicy.OnDay(c.Days, e.now()) {
		// An agent that predates Policy.Days would install in the window on any day: members
		// are assigned only on the campaign's days, and wait pending until the next one.
		return nil
	}
	for chunk := range slices.Chunk(ids, 200) {
		cur, err := e.Store.FindCampaign(ctx, c.ID)
		if err != nil {
			return err
		}
		if cur.State != StateRunning {
			return nil
		}
		devs, err := e.Devices.FindDevices(ctx, fleet.DeviceFilter{IDs: chunk})
		if err != nil {
			return err
		}
		var todo []*fleet.Device
		var failed []string
		superseded := map[string][]string{} // why -> members, one write per reason
		for _, d := range devs {
			if why := e.newerThan(ctx, rels, d, rel); why != "" {
				superseded[why] = append(superseded[why], d.ID)
				continue
			}
			todo = append(todo, d)
		}
		for why, ids := range superseded {
			if err := e.Store.SetMembers(ctx, c.ID, ids, []string{MemberPending, MemberAssigned}, MemberSuperseded, why+" meanwhile", e.now()); err != nil {
				return err
			}
		}
		// Members are marked assigned before the director signs, so that a device fast enough
		// to report its commit before this loop ends finds itself assigned. Only those whose
		// status this changed (still pending, or assigned without the director naming the image)
		// are signed for: a member a report or another campaign moved meanwhile is left alone.
		ids := make([]string, len(todo))
		for i, d := range todo {
			ids[i] = d.ID
		}
		moved, err := e.Store.MoveMembers(ctx, c.ID, ids, []string{MemberPending, MemberAssigned}, MemberAssigned, "", e.now())
		if err != nil {
			return err
		}
		ok := make(map[string]bool, len(moved))
		for _, id := range moved {
			ok[id] = true
		}
		todo = slices.DeleteFunc(todo, func(d *fleet.Device) bool { return !ok[d.ID] })
		for id, err := range e.assignBatch(ctx, todo, rel, pol) {
			e.log().Error("assign", "campaign", c.ID, "device", id, "err", err)
			failed = append(failed, id)
		}
		if err := e.Store.SetMembers(ctx, c.ID, failed, []string{MemberAssigned}, MemberPending, "", e.now()); err != nil {
			return err // pending again: the next tick retries them
		}
	}
	return nil
}

// OnReport moves a device's members along as its reports arrive: waiting for consent or a
// window, committed, or failed (a fatal failure or a rollback of the campaign's image).
func (e *Engine) OnReport(ctx context.Context, deviceID string, r wire.Report) error {
	if len(r.Events) == 0 {
		return nil
	}
	ms, err := e.Store.FindMemberships(ctx, deviceID)
	if err != nil {
		return err
	}
	now := e.now()
	for _, m := range ms {
		if m.State == StateCancelled {
			if err := e.keepCancelledCommit(ctx, deviceID, m, ms, r); err != nil {
				return err
			}
			continue // a completed campaign still follows its stragglers
		}
		if m.Status != MemberAssigned && m.Status != MemberWaiting && m.Status != MemberCommitted && m.Status != MemberTimedOut {
			continue
		}
		for _, ev := range r.Events {
			if ev.Target != m.Target {
				continue
			}
			if ev.Step == wire.StepDownload && ev.Status == wire.StatusOK && ev.ImageLength > 0 {
				// The device's word, bounded by what it could have fetched: for the campaign's
				// bytes-saved figure only.
				got := min(max(ev.Downloaded, 0), 2*ev.ImageLength) // a failed delta and then the whole image cost more than the image
				if err := e.Store.SetMemberDownload(ctx, m.CampaignID, deviceID, got, ev.ImageLength); err != nil {
					return err
				}
			}
			var to, detail string
			from := inFlight
			switch {
			case ev.Step == wire.StepCommit && ev.Status == wire.StatusOK:
				to = MemberCommitted
			case ev.Fatal:
				// The attempt ended: failed (a verification failure of the campaign's image at
				// step verify, which the agent never retries, a download or install failure), or
				// rolled back to the previous image. Events without a target are no campaign's.
				to, detail = MemberFailed, ev.Step+": "+ev.Message
				from = append(slices.Clip(from), MemberCommitted)
			case ev.Status == wire.StatusWaiting:
				to, detail = MemberWaiting, ev.Message
			case ev.Step == wire.StepInstall && ev.Status == wire.StatusStarted:
				to, from = MemberAssigned, []string{MemberWaiting, MemberTimedOut}
			default:
				continue
			}
			if err := e.Store.SetMembers(ctx, m.CampaignID, []string{deviceID}, from, to, detail, now); err != nil {
				return err
			}
		}
	}
	return nil
}

// keepCancelledCommit handles a device that was mid-install when its campaign was cancelled:
// cancelling pointed its director back at the image it ran then, but the install went on and
// committed the campaign's image. Left so, the device would next reinstall the older image; the
// director is pointed at what it now runs instead, unless another campaign holds the device.
func (e *Engine) keepCancelledCommit(ctx context.Context, deviceID string, m Membership, ms []Membership, r wire.Report) error {
	if m.Status != MemberCancelled || e.Unassign == nil {
		return nil
	}
	committed := false
	for _, ev := range r.Events {
		committed = committed || (ev.Target == m.Target && ev.Step == wire.StepCommit && ev.Status == wire.StatusOK)
	}
	if !committed {
		return nil
	}
	for _, o := range ms {
		if o.CampaignID != m.CampaignID && o.State != StateCancelled && active(o.Status) {
			return nil
		}
	}
	d, err := e.Devices.FindDevice(ctx, deviceID)
	if err != nil {
		return err
	}
	if d.InstalledTarget != m.Target || d.Assigned == d.InstalledTarget {
		return nil
	}
	return e.Unassign(ctx, d)
}

// Status is a campaign with its per-wave counts and timeline.
type Status struct {
	Campaign *Campaign
	Waves    []Counts
	Waiting  []Member // members waiting for consent or a window
	Failed   []Member
	// Healthy holds when each healthy member became healthy, for a chart of progress over time.
	Healthy  []time.Time
	Timeline []AuditEntry
	// Download sums what the members that downloaded the image fetched.
	Download DownloadTotals
}

// DownloadTotals is what a campaign's downloads cost: Devices members downloaded Bytes in all
// for images of ImageBytes in all; the difference is what deltas saved.
type DownloadTotals struct {
	Devices           int
	Bytes, ImageBytes int64
}

// Status reports a campaign.
func (e *Engine) Status(ctx context.Context, id string) (*Status, error) {
	c, err := e.Store.FindCampaign(ctx, id)
	if err != nil {
		return nil, err
	}
	ms, err := e.Store.FindMembers(ctx, id)
	if err != nil {
		return nil, err
	}
	st := &Status{Campaign: c, Waves: WaveCounts(c, ms)}
	for _, m := range ms {
		switch m.Status {
		case MemberWaiting:
			st.Waiting = append(st.Waiting, m)
		case MemberFailed:
			st.Failed = append(st.Failed, m)
		case MemberHealthy:
			st.Healthy = append(st.Healthy, m.Since)
		}
		if m.ImageLength > 0 {
			st.Download.Devices++
			st.Download.Bytes += m.Downloaded
			st.Download.ImageBytes += m.ImageLength
		}
	}
	st.Timeline, err = e.Store.FindAudit(ctx, "campaign:"+id, 1000)
	return st, err
}

// PutGroup validates and stores a group (its filter and maintenance window) and records who
// changed it. Returns apperr.Invalid for a bad name, filter or window.
func (e *Engine) PutGroup(ctx context.Context, in Group, actor string) (*Group, error) {
	name, filter, window := in.Name, in.Filter, in.Window
	if err := installpolicy.ValidDays(in.Days); err != nil {
		return nil, apperr.E(apperr.Invalid, "%v", err)
	}
	if err := tuf.ValidIdent("group", name); err != nil {
		return nil, apperr.E(apperr.Invalid, "%v", err)
	}
	if filter != "" {
		if _, err := ParseFilter(filter); err != nil {
			return nil, err
		}
	}
	if window != "" {
		if err := installpolicy.ValidWindow(window); err != nil {
			return nil, apperr.E(apperr.Invalid, "maintenance window %q: %v", window, err)
		}
	}
	g := &Group{Name: name, Filter: filter, Window: window, Days: installpolicy.CanonicalDays(in.Days), CreatedAt: e.now().UTC()}
	if err := e.Store.PutGroup(ctx, g); err != nil {
		return nil, err
	}
	e.Store.AddAudit(ctx, AuditEntry{Time: g.CreatedAt, Actor: actor, Action: "put", Subject: "group:" + name, //nolint:errcheck // logged by the store
		Detail: "filter " + filter + " window " + window + " days " + g.Days})
	return g, nil
}

// Campaigns lists campaigns, newest first, in any of states (all when none).
func (e *Engine) Campaigns(ctx context.Context, states ...string) ([]*Campaign, error) {
	return e.Store.FindCampaigns(ctx, states...)
}

// PageCampaigns returns a page of campaigns, newest first, and how many campaigns p's states
// hold in all.
func (e *Engine) PageCampaigns(ctx context.Context, p CampaignPage) ([]*Campaign, int, error) {
	cs, err := e.Store.PageCampaigns(ctx, p)
	if err != nil {
		return nil, 0, err
	}
	n, err := e.Store.CountCampaigns(ctx, p.States...)
	if err != nil {
		return nil, 0, err
	}
	return cs, n, nil
}

// Progress counts the members of campaigns per wave and status (as Status's Waves), by
// campaign id, in one query.
func (e *Engine) Progress(ctx context.Context, cs []*Campaign) (map[string][]Counts, error) {
	out := make(map[string][]Counts, len(cs))
	if len(cs) == 0 {
		return out, nil
	}
	ids := make([]string, len(cs))
	for i, c := range cs {
		ids[i] = c.ID
		waves := make([]Counts, len(c.Waves))
		for w := range waves {
			waves[w] = Counts{}
		}
		out[c.ID] = waves
	}
	counts, err := e.Store.CountMembers(ctx, ids)
	if err != nil {
		return nil, err
	}
	for _, k := range counts {
		if w := out[k.Campaign]; k.Wave >= 0 && k.Wave < len(w) {
			w[k.Wave][k.Status] += k.N
		}
	}
	return out, nil
}

// Groups lists the groups by name.
func (e *Engine) Groups(ctx context.Context) ([]*Group, error) { return e.Store.FindGroups(ctx) }

// Group returns apperr.Invalid for a bad name and apperr.NotFound for an unknown group.
func (e *Engine) Group(ctx context.Context, name string) (*Group, error) {
	if err := tuf.ValidIdent("group", name); err != nil {
		return nil, apperr.E(apperr.Invalid, "%v", err)
	}
	return e.Store.FindGroup(ctx, name)
}

// DeleteGroup deletes a group and records who did.
func (e *Engine) DeleteGroup(ctx context.Context, name, actor string) error {
	if err := e.Store.DeleteGroup(ctx, name); err != nil {
		return err
	}
	e.Store.AddAudit(ctx, AuditEntry{Time: e.now().UTC(), Actor: actor, Action: "delete", Subject: "group:" + name}) //nolint:errcheck // logged by the store
	return nil
}

// ChangeGroupDevices adds and removes devices of a static group. Returns apperr.Invalid for a
// group defined by a filter or a bad device id, apperr.NotFound when a device to add is not
// enrolled.
func (e *Engine) ChangeGroupDevices(ctx context.Context, g *Group, add, remove []string) error {
	if g.Filter != "" {
		return apperr.E(apperr.Invalid, "group %s is defined by a filter; its members follow the inventory", g.Name)
	}
	for _, id := range append(append([]string{}, add...), remove...) {
		if err := tuf.ValidIdent("device", id); err != nil {
			return apperr.E(apperr.Invalid, "%v", err)
		}
	}
	if len(add) > 0 {
		found, err := e.Devices.FindDevices(ctx, fleet.DeviceFilter{IDs: add})
		if err != nil {
			return err
		}
		if len(found) != len(add) {
			return apperr.E(apperr.NotFound, "%d of the %d devices to add are not enrolled", len(add)-len(found), len(add))
		}
		if err := e.Store.AddGroupDevices(ctx, g.Name, add); err != nil {
			return err
		}
	}
	if len(remove) > 0 {
		return e.Store.RemoveGroupDevices(ctx, g.Name, remove)
	}
	return nil
}

// Preview is what a campaign would take in if it were created now.
type Preview struct {
	Devices int // members: accepted devices of the release's product and hardware that do not run it yet, seen lately
	Stale   int // devices the target selects that are left out for not having checked in lately
}

// Preview resolves a campaign's release and target as Create does, without creating anything:
// the operator's live count while filling in a campaign. Returns the errors Create returns for
// a bad release or target.
func (e *Engine) Preview(ctx context.Context, s Spec) (*Preview, error) {
	product, version, ok := strings.Cut(s.Release, "@")
	if !ok || product == "" || version == "" {
		return nil, apperr.E(apperr.Invalid, "release %q: want PRODUCT@VERSION", s.Release)
	}
	rel, err := e.Releases.FindRelease(ctx, product, version)
	if err != nil {
		return nil, err
	}
	devs, _, err := e.resolve(ctx, s, rel)
	if err != nil {
		return nil, err
	}
	p := &Preview{Devices: len(devs)}
	if stale := cmp.Or(s.StaleAfter, DefaultStaleAfter); stale > 0 {
		now := e.now()
		for _, d := range devs {
			seen := d.LastSeen
			if seen.IsZero() {
				seen = d.EnrolledAt
			}
			if now.Sub(seen) > stale {
				p.Stale++
			}
		}
		p.Devices -= p.Stale
	}
	return p, nil
}
