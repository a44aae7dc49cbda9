package exposure

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"

	"upkeep.dev/upkeep/wire"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/vuln"
)

// severityRank orders severities: critical > high > medium > low > unknown.
func severityRank(s string) int {
	return map[string]int{vuln.SeverityLow: 1, vuln.SeverityMedium: 2, vuln.SeverityHigh: 3, vuln.SeverityCritical: 4}[strings.ToLower(s)]
}

// ValidSeverity reports whether s names a severity ("" means any).
func ValidSeverity(s string) bool {
	switch strings.ToLower(s) {
	case "", vuln.SeverityCritical, vuln.SeverityHigh, vuln.SeverityMedium, vuln.SeverityLow, vuln.SeverityUnknown:
		return true
	}
	return false
}

// ExposureFilter selects exposure rows. Severity means at least that severity.
type ExposureFilter struct {
	Severity string
	Product  string
	All      bool // also VEX-suppressed (not_affected) and undecidable (unmatched) matches
	// KEV keeps the vulnerabilities in the CISA KEV catalog only.
	KEV bool
	// MinEPSS keeps the vulnerabilities whose EPSS score is at least this (0 to 1).
	MinEPSS float64
	// Sort orders the rows: "kev" (default: known exploited first, then severity, EPSS, days
	// exposed), "severity", "epss" or "days".
	Sort string
}

// Sort orders of the exposure report.
var Sorts = []string{"kev", "severity", "epss", "days"}

// Exposure and ExposureReport are the wire types of the exposure report.
type (
	Exposure       = wire.Exposure
	ExposureReport = wire.ExposureReport
)

// fieldRelease is a release that accepted devices run.
type fieldRelease struct {
	rel     *release.Release
	devices []string
	// firstInstall is the earliest time one of these devices started running rel (from the
	// install timeline; zero if no device's timeline says).
	firstInstall time.Time
}

// field groups the accepted devices of product ("" for all) by installed release.
func (s *Service) field(ctx context.Context, c *catalog, product string) ([]*fieldRelease, []string, error) {
	devs, err := s.Devices.FindDevices(ctx, fleet.DeviceFilter{Product: product, Status: fleet.StatusAccepted})
	if err != nil {
		return nil, nil, err
	}
	installs, err := s.Store.FindInstalls(ctx, product)
	if err != nil {
		return nil, nil, err
	}
	// The first time each device ran each target (a report, or the commit of an update to it),
	// and which devices have any timeline at all.
	type devTarget struct{ dev, target string }
	first := map[devTarget]time.Time{}
	hasTimeline := map[string]bool{}
	for _, in := range installs {
		k := devTarget{in.DeviceID, in.Target}
		if t, ok := first[k]; !ok || in.At.Before(t) {
			first[k] = in.At
		}
		hasTimeline[in.DeviceID] = true
	}
	byTarget := map[string]*fieldRelease{}
	unknown := map[string]bool{}
	for _, d := range devs {
		r := c.byTarget[d.InstalledTarget]
		if !r.Matches(d.InstalledTarget, d.InstalledSHA256) {
			continue // no release, or an image that is not the signed one: unknown
		}
		if c.sboms[r.Ref()] == nil {
			unknown[r.Ref()] = true
			continue
		}
		f := byTarget[r.Target]
		if f == nil {
			f = &fieldRelease{rel: r}
			byTarget[r.Target] = f
		}
		f.devices = append(f.devices, d.ID)
		// When this device started running R: its first point for R; a device with no
		// timeline at all has run its installed target since it enrolled. A device whose
		// timeline does not show when it reached R tells nothing.
		at, ok := first[devTarget{d.ID, r.Target}]
		if !ok && !hasTimeline[d.ID] {
			at, ok = d.EnrolledAt, true
		}
		if ok && (f.firstInstall.IsZero() || at.Before(f.firstInstall)) {
			f.firstInstall = at
		}
	}
	out := make([]*fieldRelease, 0, len(byTarget))
	for _, f := range byTarget {
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b *fieldRelease) int {
		return cmp.Or(strings.Compare(a.rel.Product, b.rel.Product), release.Compare(a.rel, b.rel))
	})
	return out, slices.Sorted(mapsKeys(unknown)), nil
}

func mapsKeys(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// rowRank orders a row's verdicts: affected wins over undecidable over suppressed.
var rowRank = map[string]int{vuln.StatusAffected: 3, vuln.StatusUnmatched: 2, vuln.StatusNotAffected: 1}

// rows groups an SBOM's matches into one row per vulnerability (records that alias each other —
// GO-2023-2402, GHSA-45x7-px36-x8w8, a vendor's CSAF record of CVE-2023-48795 — are one row),
// each component with its own verdict, enriched with severity, KEV, EPSS and the VEX statements
// that speak of it. groups caches record id → group across calls.
func (s *Service) rows(ms []vuln.Match, subj []vuln.Component, product, version string, groups map[string]*StoredAdvisory) ([]*Exposure, map[string]*StoredAdvisory) {
	ix, _ := s.state()
	rows := map[string]*Exposure{}
	bygroup := map[string]*StoredAdvisory{}
	var order []string
	for _, m := range ms {
		g := groups[m.Advisory.ID]
		if g == nil {
			if g = s.vulnGroup(m.Advisory.ID); g == nil {
				continue // withdrawn meanwhile
			}
			groups[m.Advisory.ID] = g
		}
		a := g.Advisory
		row := rows[a.ID]
		if row == nil {
			f := s.facts(g)
			row = &Exposure{Advisory: a.ID, Aliases: a.Aliases, Severity: f.severity, SeveritySource: f.source, Summary: a.Summary,
				Product: product, Release: version, Components: []wire.ComponentFinding{}, KEV: f.kev, EPSS: f.epss}
			rows[a.ID] = row
			order = append(order, a.ID)
			bygroup[a.ID] = g
		}
		if !slices.ContainsFunc(row.Components, func(c wire.ComponentFinding) bool { return c.PURL == m.Component.PURL }) {
			row.Components = append(row.Components, wire.ComponentFinding{PURL: m.Component.PURL, Status: m.Status, Reason: m.Reason})
		}
		if rowRank[m.Status] > rowRank[row.Status] {
			row.Status, row.Reason = m.Status, m.Reason
		}
		for _, v := range ix.Statements(m, subj) {
			n := wire.VEXNote{Status: v.Status, Justification: v.Justification, Statement: v.Impact, Source: v.Source}
			if !slices.Contains(row.VEX, n) {
				row.VEX = append(row.VEX, n)
			}
		}
	}
	out := make([]*Exposure, len(order))
	for i, id := range order {
		out[i] = rows[id]
	}
	return out, bygroup
}

// undecided counts a row's components that could not be decided.
func undecided(e *Exposure) int {
	n := 0
	for _, c := range e.Components {
		if c.Status == vuln.StatusUnmatched {
			n++
		}
	}
	return n
}

// keep applies a filter's severity, KEV and EPSS conditions; noSeverity reports a row left out
// only because it has no severity.
func (f ExposureFilter) keep(e *Exposure) (ok, noSeverity bool) {
	if f.KEV && e.KEV == nil {
		return false, false
	}
	if f.MinEPSS > 0 && (e.EPSS == nil || e.EPSS.Score < f.MinEPSS) {
		return false, false
	}
	if severityRank(e.Severity) < severityRank(f.Severity) {
		return false, severityRank(e.Severity) == 0
	}
	return true, false
}

// Narrow applies f's severity, KEV and EPSS conditions and its order to the affected rows of a
// report made without them (for f.Product, or every product), so that one report serves several
// views: the rows and order Exposure gives with f, NoSeverity counted as it does; Undecided
// stays the unfiltered report's. rep is not changed.
func (f ExposureFilter) Narrow(rep *ExposureReport) *ExposureReport {
	out := *rep
	out.Exposed, out.NoSeverity = []Exposure{}, 0
	for i := range rep.Exposed {
		e := &rep.Exposed[i]
		if f.Product != "" && e.Product != f.Product {
			continue
		}
		ok, noSev := f.keep(e)
		if noSev {
			out.NoSeverity++
		}
		if ok {
			out.Exposed = append(out.Exposed, *e)
		}
	}
	sortRows(out.Exposed, f.Sort)
	return &out
}

func epssScore(e Exposure) float64 {
	if e.EPSS == nil {
		return -1
	}
	return e.EPSS.Score
}

func kevRank(e Exposure) int {
	if e.KEV != nil {
		return 1
	}
	return 0
}

// sortRows orders rows by the filter's Sort.
func sortRows(l []Exposure, by string) {
	slices.SortStableFunc(l, func(a, b Exposure) int {
		sev := -cmp.Compare(severityRank(a.Severity), severityRank(b.Severity))
		kev := -cmp.Compare(kevRank(a), kevRank(b))
		epss := -cmp.Compare(epssScore(a), epssScore(b))
		days := -cmp.Compare(a.DaysExposed, b.DaysExposed)
		var first int
		switch by {
		case "severity":
			first = cmp.Or(sev, kev, epss, days)
		case "epss":
			first = cmp.Or(epss, kev, sev, days)
		case "days":
			first = cmp.Or(days, kev, sev, epss)
		default:
			first = cmp.Or(kev, sev, epss, days)
		}
		return cmp.Or(first, strings.Compare(a.Advisory, b.Advisory), strings.Compare(a.Product, b.Product), strings.Compare(a.Release, b.Release))
	})
}

// Exposure lists, for each advisory affecting a release that accepted devices still run, the
// release, the number of devices, the days exposed and the lowest newer release that fixes it.
func (s *Service) Exposure(ctx context.Context, f ExposureFilter) (*ExposureReport, error) {
	if !ValidSeverity(f.Severity) {
		return nil, apperr.E(apperr.Invalid, "severity %q: want critical, high, medium, low or unknown", f.Severity)
	}
	if f.Sort != "" && !slices.Contains(Sorts, f.Sort) {
		return nil, apperr.E(apperr.Invalid, "sort %q: want %s", f.Sort, strings.Join(Sorts, ", "))
	}
	if f.MinEPSS < 0 || f.MinEPSS > 1 {
		return nil, apperr.E(apperr.Invalid, "EPSS threshold %v: want a probability from 0 to 1", f.MinEPSS)
	}
	now := s.now()
	c, err := s.catalog(ctx, f.Product)
	if err != nil {
		return nil, err
	}
	frs, noSBOM, err := s.field(ctx, c, f.Product)
	if err != nil {
		return nil, err
	}
	rep := &ExposureReport{At: now, Exposed: []Exposure{}, WithoutSBOM: noSBOM}
	groups := map[string]*StoredAdvisory{} // record id → its group
	for _, fr := range frs {
		sb := c.sboms[fr.rel.Ref()]
		ms, err := s.releaseMatches(ctx, sb)
		if err != nil {
			return nil, err
		}
		rows, bygroup := s.rows(ms, subject(sb), fr.rel.Product, fr.rel.Version, groups)
		for _, row := range rows {
			row.Devices = len(fr.devices)
			ok, noSev := f.keep(row)
			if noSev && row.Status == vuln.StatusAffected {
				rep.NoSeverity++
			}
			if !ok {
				continue
			}
			rep.Undecided += undecided(row)
			switch row.Status {
			case vuln.StatusAffected:
				sa := bygroup[row.Advisory]
				row.Since = later(published(sa), fr.firstInstall)
				row.DaysExposed = max(days(now.Sub(row.Since)), 0)
				fix, err := s.lowestFix(ctx, c, fr.rel, sa.Advisory)
				if err != nil {
					return nil, err
				}
				if fix != nil {
					row.FixedIn = fix.Version
				}
				rep.Exposed = append(rep.Exposed, *row)
			case vuln.StatusNotAffected:
				if f.All {
					rep.NotAffected = append(rep.NotAffected, *row)
				}
			case vuln.StatusUnmatched:
				if f.All {
					rep.Unmatched = append(rep.Unmatched, *row)
				}
			}
		}
	}
	for _, l := range [][]Exposure{rep.Exposed, rep.NotAffected, rep.Unmatched} {
		sortRows(l, f.Sort)
	}
	return rep, nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Exposed finds the accepted devices whose installed release is affected by the advisory (id
// or alias) and the release to fix them with: releaseRef (product@version) if given, which must
// fix it, else the lowest published release of the product that fixes it and is newer than
// every exposed release. It implements httpapi.Server.Exposed for campaigns created with
// --fixes. No exposed device gives ("", nil, nil).
func (s *Service) Exposed(ctx context.Context, advisory, releaseRef string) (string, []string, error) {
	sa, err := s.Advisory(advisory)
	if err != nil {
		return "", nil, err
	}
	a := sa.Advisory
	var fixRel *release.Release
	product := ""
	if releaseRef != "" {
		p, v, ok := strings.Cut(releaseRef, "@")
		if !ok || p == "" || v == "" {
			return "", nil, apperr.E(apperr.Invalid, "release %q: want PRODUCT@VERSION", releaseRef)
		}
		if fixRel, err = s.Releases.FindRelease(ctx, p, v); err != nil {
			return "", nil, err
		}
		product = p
	}
	c, err := s.catalog(ctx, product)
	if err != nil {
		return "", nil, err
	}
	if fixRel != nil {
		ok, err := s.fixes(ctx, c, fixRel, a)
		if err != nil {
			return "", nil, err
		}
		if !ok {
			return "", nil, apperr.E(apperr.Invalid, "%s does not fix %s: its SBOM still matches it (or it has no SBOM), and its signed custom does not list it in fixes", fixRel.Ref(), a.ID)
		}
	}
	frs, _, err := s.field(ctx, c, product)
	if err != nil {
		return "", nil, err
	}
	var ids []string
	var exposed []*fieldRelease
	products := map[string]bool{}
	for _, fr := range frs {
		st, _, _, err := s.verdict(ctx, c, fr.rel, a)
		if err != nil {
			return "", nil, err
		}
		if st != vuln.StatusAffected || (fixRel != nil && release.Compare(fr.rel, fixRel) >= 0) {
			continue
		}
		exposed = append(exposed, fr)
		products[fr.rel.Product] = true
		ids = append(ids, fr.devices...)
	}
	if len(ids) == 0 {
		return "", nil, nil
	}
	slices.Sort(ids)
	if fixRel != nil {
		return fixRel.Ref(), ids, nil
	}
	if len(products) > 1 {
		return "", nil, apperr.E(apperr.Invalid, "%s affects devices of several products (%s): name the release to roll out", a.ID, strings.Join(slices.Sorted(mapsKeys(products)), ", "))
	}
	newest := exposed[0].rel
	for _, fr := range exposed[1:] {
		if release.Compare(fr.rel, newest) > 0 {
			newest = fr.rel
		}
	}
	fix, err := s.lowestFix(ctx, c, newest, a)
	if err != nil {
		return "", nil, err
	}
	if fix == nil {
		return "", nil, apperr.E(apperr.Invalid, "no published release of %s newer than %s fixes %s: publish one with its SBOM (or --fixes %s)", newest.Product, newest.Version, a.ID, a.ID)
	}
	return fix.Ref(), ids, nil
}
