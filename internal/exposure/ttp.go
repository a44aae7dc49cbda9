package exposure

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"

	"upkeep.dev/upkeep/wire"

	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/label"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/vuln"
)

// Percentiles are the fleet-side time-to-patch figures B(p) reported.
var Percentiles = []int{50, 90, 99}

// FleetFigure, TimeToPatch and ProductTimeToPatch are the wire types of time-to-patch.
type (
	FleetFigure        = wire.FleetFigure
	TimeToPatch        = wire.TimeToPatch
	ProductTimeToPatch = wire.ProductTimeToPatch
)

// timeline is one device's installs, oldest first.
type timeline struct {
	dev     *fleet.Device
	entries []Install
}

// runningAt is the target the device ran at t ("" if unknown or not enrolled yet): the latest
// timeline point at or before t; before its first point, the first point's target if that is a
// report (a device changes image only by committing an update, which is recorded); a device
// with no point at all has run its installed target since enrolment.
func (tl *timeline) runningAt(t time.Time) string {
	if tl.dev.EnrolledAt.After(t) {
		return ""
	}
	i, _ := slices.BinarySearchFunc(tl.entries, t, func(e Install, t time.Time) int {
		if e.At.After(t) {
			return 1
		}
		return -1
	})
	switch {
	case i > 0:
		return tl.entries[i-1].Target
	case len(tl.entries) == 0:
		return tl.dev.InstalledTarget
	case !tl.entries[0].Commit:
		return tl.entries[0].Target
	}
	return ""
}

// TimeToPatch computes time-to-patch A and B(p) for every advisory that a release of product
// matches as affected (docs/VULNERABILITIES.md).
func (s *Service) TimeToPatch(ctx context.Context, product string) (*ProductTimeToPatch, error) {
	now := s.now()
	c, err := s.catalog(ctx, product)
	if err != nil {
		return nil, err
	}
	rels := c.byProduct[product]
	out := &ProductTimeToPatch{Product: product, At: now, Advisories: []TimeToPatch{}}
	// Advisories matched as affected, with the releases they affect.
	affected := map[string][]*release.Release{}
	advs := map[string]*StoredAdvisory{}
	for _, r := range rels {
		sb := c.sboms[r.Ref()]
		if sb == nil {
			continue
		}
		ms, err := s.releaseMatches(ctx, sb)
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			if m.Status != vuln.StatusAffected {
				continue
			}
			// Records that alias each other are one vulnerability, counted once.
			sa := s.vulnGroup(m.Advisory.ID)
			if sa == nil || slices.Contains(affected[sa.Advisory.ID], r) {
				continue
			}
			advs[sa.Advisory.ID] = sa
			affected[sa.Advisory.ID] = append(affected[sa.Advisory.ID], r)
		}
	}
	if len(affected) == 0 {
		return out, nil
	}
	tls, err := s.timelines(ctx, c, product)
	if err != nil {
		return nil, err
	}
	for _, id := range slices.Sorted(func(yield func(string) bool) {
		for k := range affected {
			if !yield(k) {
				return
			}
		}
	}) {
		sa, ars := advs[id], affected[id]
		f := s.facts(sa)
		t := TimeToPatch{Advisory: id, Aliases: sa.Advisory.Aliases, Severity: f.severity, Published: published(sa), PublishedFrom: "advisory"}
		// Time to patch counts from the advisory's publication, or from the day the
		// vulnerability entered the KEV catalog if that came first.
		if f.kev != nil {
			t.Exploited = true
			if f.kev.DateAdded.Before(t.Published) {
				t.Published, t.PublishedFrom = f.kev.DateAdded.UTC(), "kev"
			}
		}
		for _, r := range ars {
			t.Affected = append(t.Affected, r.Version)
		}
		// F: the first release after the earliest affected one that fixes it.
		var fix *release.Release
		fixing := map[string]bool{} // targets of F and later fixing releases
		for _, r := range rels {
			if release.Compare(r, ars[0]) <= 0 {
				continue
			}
			ok, err := s.fixes(ctx, c, r, sa.Advisory)
			if err != nil {
				return nil, err
			}
			if ok && fix == nil {
				fix = r
			}
			if ok && fix != nil {
				fixing[r.Target] = true
			}
		}
		if fix == nil {
			t.VendorOpen, t.VendorDays = true, days(now.Sub(t.Published))
			out.Advisories = append(out.Advisories, t)
			continue
		}
		tf := fix.PublishedAt.UTC()
		t.FixedIn, t.FixPublished, t.VendorDays = fix.Version, &tf, days(tf.Sub(t.Published))
		affTargets := map[string]bool{}
		for _, r := range ars {
			affTargets[r.Target] = true
		}
		t.ExposedAtFix, t.PatchedNow, t.Fleet = fleetFigures(tls, tf, affTargets, fixing)
		out.Advisories = append(out.Advisories, t)
	}
	slices.SortStableFunc(out.Advisories, func(a, b TimeToPatch) int {
		return cmp.Or(-cmp.Compare(b2i(a.Exploited), b2i(b.Exploited)), -cmp.Compare(severityRank(a.Severity), severityRank(b.Severity)), a.Published.Compare(b.Published), strings.Compare(a.Advisory, b.Advisory))
	})
	return out, nil
}

// fleetFigures computes B(p): E is the devices that ran an affected target at tf; their later
// timeline points are swept in time order, counting how many run a fixing target.
func fleetFigures(tls []*timeline, tf time.Time, affected, fixing map[string]bool) (int, int, []FleetFigure) {
	type change struct {
		at     time.Time
		dev    int
		fixing bool
	}
	var changes []change
	exposed := 0
	for _, tl := range tls {
		if !affected[tl.runningAt(tf)] {
			continue
		}
		for _, e := range tl.entries {
			if e.At.After(tf) {
				changes = append(changes, change{e.At, exposed, fixing[e.Target]})
			}
		}
		exposed++
	}
	figs := make([]FleetFigure, len(Percentiles))
	for i, p := range Percentiles {
		figs[i].Percent = p
	}
	if exposed == 0 {
		return 0, 0, figs
	}
	slices.SortStableFunc(changes, func(a, b change) int { return a.at.Compare(b.at) })
	state := make([]bool, exposed)
	n := 0
	for _, ch := range changes {
		if state[ch.dev] != ch.fixing {
			state[ch.dev] = ch.fixing
			if ch.fixing {
				n++
			} else {
				n--
			}
		}
		for i, p := range Percentiles {
			if !figs[i].Reached && n*100 >= p*exposed {
				at := ch.at.UTC()
				d := days(at.Sub(tf))
				figs[i].Reached, figs[i].At, figs[i].Days = true, &at, &d
			}
		}
	}
	return exposed, n, figs
}

// timelines reads the accepted devices of product with their install timelines. A device whose
// reported image is not a signed target (name and SHA-256 of a release in c) has an unknown
// installed target: it counts as running nothing until its timeline says otherwise.
func (s *Service) timelines(ctx context.Context, c *catalog, product string) ([]*timeline, error) {
	devs, err := s.Devices.FindDevices(ctx, fleet.DeviceFilter{Product: product, Status: fleet.StatusAccepted})
	if err != nil {
		return nil, err
	}
	installs, err := s.Store.FindInstalls(ctx, product)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]*timeline, len(devs))
	out := make([]*timeline, 0, len(devs))
	for _, d := range devs {
		if d.Simulated {
			continue // time to patch is a public figure: simulated devices are left out
		}
		if !c.known(d.InstalledTarget, d.InstalledSHA256) {
			dd := *d
			dd.InstalledTarget = ""
			d = &dd
		}
		tl := &timeline{dev: d}
		byID[d.ID] = tl
		out = append(out, tl)
	}
	for _, in := range installs {
		if tl := byID[in.DeviceID]; tl != nil {
			tl.entries = append(tl.entries, in)
		}
	}
	for _, tl := range out {
		// Commit events first at equal times: the report of the new image follows its commit.
		slices.SortStableFunc(tl.entries, func(a, b Install) int {
			if c := a.At.Compare(b.At); c != 0 {
				return c
			}
			switch {
			case a.Commit && !b.Commit:
				return -1
			case b.Commit && !a.Commit:
				return 1
			}
			return 0
		})
	}
	return out, nil
}

// LabelTimeToPatch gives the transparency service (label evidence) each advisory matched to the
// product, with its severity, its fixed release and the moment 90% of the exposed fleet ran a fix.
func (s *Service) LabelTimeToPatch(ctx context.Context, product string) ([]label.TimeToPatch, error) {
	p, err := s.TimeToPatch(ctx, product)
	if err != nil {
		return nil, err
	}
	out := make([]label.TimeToPatch, 0, len(p.Advisories))
	for _, t := range p.Advisories {
		lt := label.TimeToPatch{Advisory: t.Advisory, Severity: t.Severity, Published: t.Published, Exploited: t.Exploited}
		if t.FixPublished != nil {
			lt.FixReleased = *t.FixPublished
		}
		for _, f := range t.Fleet {
			if f.Percent == 90 && f.Reached {
				lt.Fleet90At = f.At
			}
		}
		out = append(out, lt)
	}
	return out, nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
