package httpapi

import (
	"cmp"
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/console"
	"upkeep.dev/upkeep/internal/exposure"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/product"
	"upkeep.dev/upkeep/internal/rollout"
)

// Overview bounds.
const (
	overviewCampaigns = 20                  // running or paused campaigns shown with their progress
	overviewTop       = 12                  // products and versions shown
	expiringWithin    = 60 * 24 * time.Hour // offline metadata and support periods shown this long before they end
)

// Device states the agent reports that need an operator's attention (internal/agent's phases).
const (
	deviceStateFailed      = "failed"
	deviceStateRollingBack = "rolling_back"
)

// overview is the landing page: the fleet by status, state, product and version; the devices
// needing attention; open exposures by severity; running campaigns; what expires soon. Each
// part shows only if the role may read it.
func (s *Server) overview(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	now := s.now()
	ov := console.Overview{StaleAfter: "7 days", CanDevices: can(r, auth.PermDevicesRead), CanRollouts: can(r, auth.PermRolloutsRead), CanVulns: can(r, auth.PermVulnRead)}
	var ends map[string]time.Time // product -> last day of support
	if can(r, auth.PermProductsRead) && s.Products != nil {
		ps, err := s.Products.Products(ctx)
		if err != nil {
			s.pageFail(w, r, err)
			return
		}
		ends = map[string]time.Time{}
		for _, p := range ps {
			pol, err := product.ParsePolicy(p.Policy)
			if err != nil || pol.SupportEnd == "" {
				continue
			}
			end := pol.End().Add(24*time.Hour - time.Nanosecond) // the whole last day
			ends[p.Name] = end
			if end.Sub(now) < expiringWithin {
				ov.Expiring = append(ov.Expiring, console.Expiry{What: "support of " + p.Name, At: end, Expired: end.Before(now), Soon: !end.Before(now)})
			}
		}
	}
	if ov.CanDevices {
		if err := s.fleetFigures(ctx, now, ends, &ov); err != nil {
			s.pageFail(w, r, err)
			return
		}
	}
	if ov.CanVulns {
		// The exposure report may take seconds when not reused: the page asks for it after
		// it loads (overviewExposure), unless the browser runs no script.
		if r.URL.Query().Get("exposure") != "" {
			s.exposureCounts(ctx, &ov)
		} else {
			ov.ExposureLazy = true
		}
	}
	if ov.CanRollouts && s.Rollouts != nil {
		rows, err := s.liveCampaigns(ctx)
		if err != nil {
			s.pageFail(w, r, err)
			return
		}
		ov.Campaigns = rows
	}
	if can(r, auth.PermTrustRead) && s.Images != nil {
		exp, err := s.Images.OfflineExpiries(ctx)
		if err != nil {
			s.pageFail(w, r, err)
			return
		}
		for _, e := range exp {
			if e.Expires.Sub(now) < expiringWithin {
				ov.Expiring = append(ov.Expiring, console.Expiry{What: e.Repo + " " + e.Role + " metadata (version " + strconv.FormatInt(e.Version, 10) + ")", At: e.Expires, Expired: e.Expires.Before(now), Soon: !e.Expires.Before(now)})
			}
		}
	}
	slices.SortFunc(ov.Expiring, func(a, b console.Expiry) int { return a.At.Compare(b.At) })
	s.render(w, r, http.StatusOK, "overview", s.layout(r, "Overview", "overview"), ov)
}

// FleetCountsEvery is how long the overview reuses its count of the fleet: one grouped scan of
// every device, which takes a few hundred milliseconds at 100,000 devices on SQLite.
const FleetCountsEvery = 30 * time.Second

// fleetCountCache holds the last count of the fleet.
type fleetCountCache struct {
	mu     sync.Mutex // held while counting: concurrent overviews wait for one count
	at     time.Time
	counts []fleet.FleetCount
}

// countFleet returns the fleet's counts, at most FleetCountsEvery old, and when they were made.
func (s *Server) countFleet(ctx context.Context, now time.Time) ([]fleet.FleetCount, time.Time, error) {
	c := &s.fleetCounts
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts != nil && now.Sub(c.at) < FleetCountsEvery && !now.Before(c.at) {
		return c.counts, c.at, nil
	}
	counts, err := s.Devices.CountFleet(ctx, now.Add(-rollout.DefaultStaleAfter))
	if err != nil {
		return nil, time.Time{}, err
	}
	c.counts, c.at = counts, now
	return counts, now, nil
}

// fleetFigures fills the overview's device figures from the count of the fleet.
func (s *Server) fleetFigures(ctx context.Context, now time.Time, ends map[string]time.Time, ov *console.Overview) error {
	counts, at, err := s.countFleet(ctx, now)
	if err != nil {
		return err
	}
	ov.CountedAt = at
	status, state, prod, ver := map[string]int{}, map[string]int{}, map[string]int{}, map[string]int{}
	var failed, rolling, errs, stale, past int
	for _, c := range counts {
		ov.Devices += c.Devices
		status[c.Status] += c.Devices
		if c.Status != fleet.StatusAccepted {
			continue
		}
		state[cmp.Or(c.State, "unknown")] += c.Devices
		prod[c.Product] += c.Devices
		ver[c.Product+" "+cmp.Or(c.Version, "(none)")] += c.Devices
		switch c.State {
		case deviceStateFailed:
			failed += c.Devices
		case deviceStateRollingBack:
			rolling += c.Devices
		}
		errs += c.Errors
		stale += c.Stale
		if end, ok := ends[c.Product]; ok && end.Before(now) {
			past += c.Devices
		}
	}
	accepted := status[fleet.StatusAccepted]
	for _, st := range []string{fleet.StatusAccepted, fleet.StatusPending, fleet.StatusRejected, fleet.StatusDecommissioned} {
		ov.ByStatus = append(ov.ByStatus, console.Count{Label: st, N: status[st], Of: ov.Devices, Href: "devices?status=" + st})
	}
	ov.ByState = topCounts(state, accepted, 0, func(k string) string { return "devices?status=accepted&state=" + url.QueryEscape(k) })
	ov.ByProduct = topCounts(prod, accepted, overviewTop, func(k string) string { return "devices?product=" + url.QueryEscape(k) })
	ov.ByVersion = topCounts(ver, accepted, overviewTop, nil)
	ov.Attention = []console.Count{
		{Label: "failed", N: failed, Href: "devices?status=accepted&state=" + deviceStateFailed},
		{Label: "rolling back or rolled back", N: rolling, Href: "devices?status=accepted&state=" + deviceStateRollingBack},
		{Label: "reported an error", N: errs},
		{Label: "not seen for 7 days", N: stale},
		{Label: "past end of support", N: past},
	}
	return nil
}

// topCounts sorts counts by size (then name) and keeps the first n (0: all).
func topCounts(m map[string]int, of, n int, href func(string) string) []console.Count {
	out := make([]console.Count, 0, len(m))
	for k, v := range m {
		c := console.Count{Label: k, N: v, Of: of}
		if href != nil {
			c.Href = href(k)
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b console.Count) int {
		if a.N != b.N {
			return b.N - a.N
		}
		return cmp.Compare(a.Label, b.Label)
	})
	if n > 0 && len(out) > n {
		out = out[:n]
	}
	return out
}

// exposureCache holds the console's last exposure reports, by product ("" for all), and the
// reports being made: one at a time per product, whoever asks, and none waits for another
// product's.
type exposureCache struct {
	mu      sync.Mutex
	reports map[string]cachedExposure
	flights map[string]*exposureFlight
	gen     int64 // moved by exposuresChanged: a report begun before is not kept
	checks  map[string]cachedCheck
}

// cachedCheck is a release's check against the advisories (its SBOM's findings), made at gen.
type cachedCheck struct {
	at  time.Time
	gen int64
	chk *exposure.ReleaseCheck
}

type cachedExposure struct {
	at  time.Time
	rep *exposure.ExposureReport
}

// exposureFlight is a report being made; done is closed once rep or err is set.
type exposureFlight struct {
	gen  int64
	done chan struct{}
	rep  *exposure.ExposureReport
	err  error
}

// exposuresChanged forgets the console's reports after a change through this replica (an SBOM,
// an import, an analyst's triage, a waiver), so that the next page waits for a report that
// shows it; a change through another replica shows from its next report.
func (s *Server) exposuresChanged() {
	c := &s.exposures
	c.mu.Lock()
	c.reports, c.checks = nil, nil
	c.gen++
	c.mu.Unlock()
}

// releaseCheck is the check of a release's stored SBOM against the advisories, as
// Exposure.ReleaseCheck makes it (every finding matched anew: 150 ms and more at 10,000
// advisories), reused for FleetCountsEvery unless something changed through this replica.
func (s *Server) releaseCheck(ctx context.Context, product, version string) (*exposure.ReleaseCheck, error) {
	c := &s.exposures
	key := product + "@" + version
	c.mu.Lock()
	e, ok := c.checks[key]
	gen, now := c.gen, s.now()
	c.mu.Unlock()
	if ok && e.gen == gen && now.Sub(e.at) < FleetCountsEvery && !now.Before(e.at) {
		return e.chk, nil
	}
	chk, err := s.Exposure.ReleaseCheck(ctx, product, version)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.gen == gen {
		if c.checks == nil || len(c.checks) > 256 {
			c.checks = map[string]cachedCheck{}
		}
		c.checks[key] = cachedCheck{at: now, gen: gen, chk: chk}
	}
	c.mu.Unlock()
	return chk, nil
}

// exposureMakeLimit bounds how long one report may take to make.
const exposureMakeLimit = time.Minute

// exposureReport is the exposure report of a product ("" for all). The report reads every
// accepted device of the product, which at 100,000 devices and 10,000 advisories takes seconds,
// so a page is given the last report made (its time is shown) and, when that is older than
// FleetCountsEvery, a new one is made in the background for the next page: only the first page
// after a start waits for one. A report is made once at a time per product, apart from the
// request that asked (under exposureMakeLimit), so that a caller that goes away fails no one.
func (s *Server) exposureReport(ctx context.Context, product string) (*exposure.ExposureReport, error) {
	c := &s.exposures
	c.mu.Lock()
	now := s.now()
	e, ok := c.reports[product]
	fresh := ok && now.Sub(e.at) < FleetCountsEvery && !now.Before(e.at)
	f := c.flights[product]
	if (f == nil || f.gen != c.gen) && !fresh {
		f = &exposureFlight{gen: c.gen, done: make(chan struct{})}
		if c.flights == nil {
			c.flights = map[string]*exposureFlight{}
		}
		c.flights[product] = f
		go func() {
			mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), exposureMakeLimit)
			defer cancel()
			rep, err := s.Exposure.Exposure(mctx, exposure.ExposureFilter{Product: product})
			c.mu.Lock()
			if err == nil && f.gen == c.gen {
				if c.reports == nil || len(c.reports) > 256 {
					c.reports = map[string]cachedExposure{}
				}
				c.reports[product] = cachedExposure{at: now, rep: rep}
			} else if err != nil {
				s.logger().Warn("console exposure report", "product", product, LogErr, err)
			}
			if c.flights[product] == f {
				delete(c.flights, product)
			}
			c.mu.Unlock()
			f.rep, f.err = rep, err
			close(f.done)
		}()
	}
	c.mu.Unlock()
	if ok { // the last report, while a newer one is made
		return e.rep, nil
	}
	select {
	case <-f.done:
		return f.rep, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Severities in the order the overview lists them.
var severities = []string{"critical", "high", "medium", "low", "unknown"}

// overviewExposure is the overview's exposure part, fetched by the page.
func (s *Server) overviewExposure(w http.ResponseWriter, r *http.Request) {
	ov := console.Overview{CanVulns: true}
	s.exposureCounts(r.Context(), &ov)
	s.fragment(w, r, "overview", "exposure", s.layout(r, "", "overview"), ov)
}

// exposureCounts counts the open exposures (affected rows) by severity; a failure shows as a
// note, not as a failed page.
func (s *Server) exposureCounts(ctx context.Context, ov *console.Overview) {
	if s.Exposure == nil {
		ov.ExposureNote = "Vulnerability tracking is not configured on this server."
		return
	}
	rep, err := s.exposureReport(ctx, "")
	if err != nil {
		s.logger().Error("console exposure", LogErr, err)
		ov.ExposureNote = "The exposure report failed: see the server log."
		return
	}
	by := map[string]int{}
	for _, e := range rep.Exposed {
		by[cmp.Or(e.Severity, "unknown")]++
	}
	for _, sev := range severities {
		ov.Exposure = append(ov.Exposure, console.Count{Label: sev, N: by[sev], Of: len(rep.Exposed)})
	}
	ov.ExposureOK = true
}

// liveCampaigns lists the running and paused campaigns, newest first, with their progress.
func (s *Server) liveCampaigns(ctx context.Context) ([]console.CampaignRow, error) {
	cs, _, err := s.Rollouts.PageCampaigns(ctx, rollout.CampaignPage{States: []string{rollout.StateRunning, rollout.StatePaused}, Limit: overviewCampaigns})
	if err != nil {
		return nil, err
	}
	return s.campaignRows(ctx, cs)
}

// campaignRows is the list rows of campaigns, with their progress counted in one query.
func (s *Server) campaignRows(ctx context.Context, cs []*rollout.Campaign) ([]console.CampaignRow, error) {
	progress, err := s.Rollouts.Progress(ctx, cs)
	if err != nil {
		return nil, err
	}
	out := make([]console.CampaignRow, 0, len(cs))
	for _, c := range cs {
		out = append(out, campaignRow(c, progress[c.ID]))
	}
	return out, nil
}

// campaignRow is a campaign's line in a list; waves, if not nil, gives its progress.
func campaignRow(c *rollout.Campaign, waves []rollout.Counts) console.CampaignRow {
	row := console.CampaignRow{ID: c.ID, Release: c.Release, Selector: c.Selector, State: c.State, Class: c.Class, PauseReason: c.PauseReason,
		Wave: c.Wave + 1, Waves: len(c.Waves), CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt}
	for _, k := range waves {
		row.Members += k.Total()
		row.Done += k[rollout.MemberHealthy]
		row.Failed += k[rollout.MemberFailed]
	}
	return row
}
