package label

import (
	"math"
	"slices"
	"time"
)

// ActiveWindow is how recently a device must have been seen to count in the fleet share: a
// device unplugged for good cannot be updated, and counting it forever would say nothing about
// the update mechanism. The number of all known devices is reported beside it.
const ActiveWindow = 30 * 24 * time.Hour

// SupportedMethod is what a supported release means in the fleet share: the callers of
// ComputeEvidence implement it in their supported function.
const SupportedMethod = "a supported release: a release of this product that the manufacturer published through the platform's signed image repository and that is not older (by publication time) than the newest security release, while the product is within its support period (on or before the support end date)"

// Figure is one computed number with the method that produced it. Value is nil when the data
// cannot give it, and Note then says why ("not available because ...").
type Figure struct {
	Value   *float64 `json:"value"`
	Unit    string   `json:"unit"`    // "days", "count" or "percent"
	Samples int      `json:"samples"` // how many data points the figure is computed from
	Method  string   `json:"method"`
	Note    string   `json:"note,omitempty"`
}

// DateFigure is one computed date with the method that produced it. Date is empty when the
// data cannot give it, and Note then says why.
type DateFigure struct {
	Date    string `json:"date,omitempty"` // YYYY-MM-DD
	Version string `json:"version,omitempty"`
	Method  string `json:"method"`
	Note    string `json:"note,omitempty"`
}

// Evidence is what the platform's records show about a product's security updates.
type Evidence struct {
	ComputedAt         time.Time  `json:"computed_at"`
	LastSecurityUpdate DateFigure `json:"last_security_update"`
	SecurityUpdates12m Figure     `json:"security_updates_last_12_months"`
	AdvisoryToFixDays  Figure     `json:"median_days_advisory_to_fix"`
	FixToFleet90Days   Figure     `json:"median_days_fix_to_90pct_fleet"`
	FleetOnSupported   Figure     `json:"fleet_on_supported_release"`
	Devices            Figure     `json:"devices"`
	ActiveDevices      Figure     `json:"active_devices"`
}

// ComputeEvidence computes the evidence at now from the product's releases, its devices and
// the advisories matched to it. supported reports whether a device running a version is on a
// supported release, as SupportedMethod defines it; it may be nil, and the fleet share is then
// not available. Releases
// published after now are ignored. Any input may be empty: the figures it would feed are then
// nil, with a note.
func ComputeEvidence(now time.Time, rel []ReleaseFact, dev []DeviceFact, ttp []TimeToPatch, supported func(version string) bool) Evidence {
	// A release published within the second of now counts: only ComputedAt is truncated.
	cutoff := now
	now = now.UTC().Truncate(time.Second)
	e := Evidence{ComputedAt: now}

	e.LastSecurityUpdate.Method = "the publication date of the newest release of class security"
	yearAgo := now.AddDate(-1, 0, 0)
	var newest *ReleaseFact
	count := 0
	for i, r := range rel {
		if r.Class != ClassSecurity || r.PublishedAt.After(cutoff) {
			continue
		}
		if newest == nil || r.PublishedAt.After(newest.PublishedAt) {
			newest = &rel[i]
		}
		if r.PublishedAt.After(yearAgo) {
			count++
		}
	}
	if newest != nil {
		e.LastSecurityUpdate.Date = newest.PublishedAt.UTC().Format(time.DateOnly)
		e.LastSecurityUpdate.Version = newest.Version
	} else {
		e.LastSecurityUpdate.Note = "not available because no security release has been published"
	}
	e.SecurityUpdates12m = Figure{Value: ptr(float64(count)), Unit: "count", Samples: count,
		Method: "security releases published in the 12 months up to computed_at"}

	var toFix, toFleet []float64
	for _, t := range ttp {
		if t.Published.IsZero() || t.FixReleased.IsZero() {
			continue
		}
		toFix = append(toFix, days(t.FixReleased.Sub(t.Published)))
		if t.Fleet90At != nil {
			toFleet = append(toFleet, days(t.Fleet90At.Sub(t.FixReleased)))
		}
	}
	e.AdvisoryToFixDays = median(toFix, "median over fixed advisories of the days from the advisory's publication to the fixed release's; a fix released before its advisory counts as 0",
		"not available because no advisory matched to this product has a fixed release")
	e.FixToFleet90Days = median(toFleet, "median over fixed advisories of the days from the fixed release to the moment 90% of the fleet ran it",
		"not available because no fixed release has reached 90% of the fleet")

	active, onSupported := 0, 0
	for _, d := range dev {
		if now.Sub(d.LastSeen) > ActiveWindow {
			continue
		}
		active++
		if supported != nil && supported(d.InstalledVersion) {
			onSupported++
		}
	}
	e.Devices = Figure{Value: ptr(float64(len(dev))), Unit: "count", Samples: len(dev), Method: "devices of this product known to the platform"}
	e.ActiveDevices = Figure{Value: ptr(float64(active)), Unit: "count", Samples: active, Method: "devices seen in the 30 days up to computed_at"}
	e.FleetOnSupported = Figure{Unit: "percent", Samples: active,
		Method: "share of the devices seen in the 30 days up to computed_at that run " + SupportedMethod}
	switch {
	case active == 0:
		e.FleetOnSupported.Note = "not available because no device was seen in the last 30 days"
	case supported == nil:
		e.FleetOnSupported.Note = "not available because the platform gave no way to tell supported versions"
	default:
		e.FleetOnSupported.Value = ptr(round1(100 * float64(onSupported) / float64(active)))
	}
	return e
}

// median returns the median of xs as a Figure in days: the middle value, or the mean of the two
// middle values for an even count, to 0.1 day.
func median(xs []float64, method, unavailable string) Figure {
	f := Figure{Unit: "days", Samples: len(xs), Method: method + "; an even count takes the mean of the two middle values"}
	if len(xs) == 0 {
		f.Note = unavailable
		return f
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	f.Value = ptr(round1(m))
	return f
}

// days converts d to days to 0.1 day, negative durations counting as 0.
func days(d time.Duration) float64 { return round1(max(d.Hours(), 0) / 24) }

func round1(x float64) float64 { return math.Round(x*10) / 10 }

func ptr[T any](v T) *T { return &v }
