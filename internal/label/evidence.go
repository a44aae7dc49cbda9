package label

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// ActiveWindow is how recently a device must have been seen to count in the fleet share: a
// device unplugged for good cannot be updated, and counting it forever would say nothing about
// the update mechanism. The number of all known devices is reported beside it.
const ActiveWindow = 30 * 24 * time.Hour

// SupportedMethod is what a supported release means in the fleet share: the callers of
// ComputeEvidence implement it in their supported function.
const SupportedMethod = "a supported release: a release of this product that the manufacturer published through the platform's signed image repository (the image the device reports matches the signed target's name and SHA-256) and that is not older (by publication time) than the newest security release, while the product is within its support period (on or before the support end date)"

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
	// DDIDevices counts the devices that speak hawkBit DDI; absent when there are none.
	DDIDevices *Figure `json:"ddi_devices,omitempty"`
	// Advisories lists every advisory matched to the product, fixed or not, so that the
	// remediation commitment can be judged advisory by advisory.
	Advisories []AdvisoryFact `json:"advisories,omitempty"`
	// WithinTarget is the share of the advisories the commitment covers (CommitmentCovers) that
	// were fixed within the declared days, or are open and younger than that; BuildDeclaration
	// sets it, since it depends on the commitment.
	WithinTarget *Figure `json:"high_critical_within_target,omitempty"`
}

// AdvisoryFact is one advisory matched to the product. FixReleased is nil while no fixed
// release exists, Fleet90At while the fix has not reached 90% of the fleet.
type AdvisoryFact struct {
	Advisory    string     `json:"advisory"`
	Severity    string     `json:"severity"`
	Published   time.Time  `json:"published"`
	FixReleased *time.Time `json:"fix_released,omitempty"`
	Fleet90At   *time.Time `json:"fleet_90pct_at,omitempty"`
}

// CommitmentCovers reports whether the remediation commitment (high and critical
// vulnerabilities) covers an advisory of severity sev. An advisory whose severity is unknown
// (Go vulndb records carry none) is covered: it cannot be shown not to be high.
func CommitmentCovers(sev string) bool {
	switch strings.ToLower(sev) {
	case "critical", "high", "unknown", "":
		return true
	}
	return false
}

// Days returns how long a took to fix at now, to 0.1 day: from its publication to its fixed
// release, or, while open, its age. open says which. Negative durations count as 0.
func (a AdvisoryFact) Days(now time.Time) (n float64, open bool) {
	if a.FixReleased == nil {
		return days(now.Sub(a.Published)), true
	}
	return days(a.FixReleased.Sub(a.Published)), false
}

// withinTarget is the WithinTarget figure of advisories at now for a commitment of target days.
func withinTarget(advisories []AdvisoryFact, target int, now time.Time) *Figure {
	f := &Figure{Unit: "percent", Method: fmt.Sprintf("share of the advisories of high, critical or unknown severity matched to this product that were fixed within the declared %d days of their publication, or are open and not older than that, at computed_at", target)}
	if target <= 0 {
		f.Method = "share of the high and critical advisories fixed within the declared remediation days"
		f.Note = "not available because no remediation commitment is declared"
		return f
	}
	ok := 0
	for _, a := range advisories {
		if !CommitmentCovers(a.Severity) {
			continue
		}
		f.Samples++
		if d, _ := a.Days(now); d <= float64(target) {
			ok++
		}
	}
	if f.Samples == 0 {
		f.Note = "not available because no advisory of high, critical or unknown severity is matched to this product"
		return f
	}
	f.Value = ptr(round1(100 * float64(ok) / float64(f.Samples)))
	return f
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
	open, notAt90 := 0, 0
	for _, t := range ttp {
		if t.Published.IsZero() {
			continue
		}
		a := AdvisoryFact{Advisory: t.Advisory, Severity: strings.ToLower(cmp.Or(t.Severity, "unknown")), Published: t.Published.UTC()}
		if t.FixReleased.IsZero() {
			open++
			e.Advisories = append(e.Advisories, a)
			continue
		}
		a.FixReleased = ptr(t.FixReleased.UTC())
		toFix = append(toFix, days(t.FixReleased.Sub(t.Published)))
		if t.Fleet90At != nil {
			a.Fleet90At = ptr(t.Fleet90At.UTC())
			toFleet = append(toFleet, days(t.Fleet90At.Sub(t.FixReleased)))
		} else {
			notAt90++
		}
		e.Advisories = append(e.Advisories, a)
	}
	slices.SortFunc(e.Advisories, func(a, b AdvisoryFact) int {
		return cmp.Or(a.Published.Compare(b.Published), strings.Compare(a.Advisory, b.Advisory))
	})
	e.AdvisoryToFixDays = median(toFix, "median over fixed advisories of the days from the advisory's publication to the fixed release's; a fix released before its advisory counts as 0",
		"not available because no advisory matched to this product has a fixed release")
	if open > 0 {
		e.AdvisoryToFixDays.Note = strings.TrimPrefix(e.AdvisoryToFixDays.Note+fmt.Sprintf("; %d advisories have no fixed release yet and are not in the median (see advisories)", open), "; ")
	}
	e.FixToFleet90Days = median(toFleet, "median over fixed advisories of the days from the fixed release to the moment 90% of the fleet ran it",
		"not available because no fixed release has reached 90% of the fleet")
	if notAt90 > 0 {
		e.FixToFleet90Days.Note = strings.TrimPrefix(e.FixToFleet90Days.Note+fmt.Sprintf("; %d fixed releases have not reached 90%% of the fleet yet and are not in the median", notAt90), "; ")
	}

	active, onSupported, unknown := 0, 0, 0
	for _, d := range dev {
		if now.Sub(d.LastSeen) > ActiveWindow {
			continue
		}
		active++
		if d.UnknownImage {
			unknown++
			continue
		}
		if supported != nil && d.InstalledVersion != "" && supported(d.InstalledVersion) {
			onSupported++
		}
	}
	e.Devices = Figure{Value: ptr(float64(len(dev))), Unit: "count", Samples: len(dev), Method: "devices of this product known to the platform"}
	e.ActiveDevices = Figure{Value: ptr(float64(active)), Unit: "count", Samples: active, Method: "devices seen in the 30 days up to computed_at"}
	ddi := 0
	for _, d := range dev {
		if d.DDI {
			ddi++
		}
	}
	if ddi > 0 {
		e.DDIDevices = &Figure{Value: ptr(float64(ddi)), Unit: "count", Samples: len(dev), Method: "devices of this product that speak hawkBit DDI (SWUpdate, RAUC, Zephyr clients): " + DDIMeaning}
	}
	e.FleetOnSupported = Figure{Unit: "percent", Samples: active,
		Method: "share of the devices seen in the 30 days up to computed_at that run " + SupportedMethod}
	switch {
	case active == 0:
		e.FleetOnSupported.Note = "not available because no device was seen in the last 30 days"
	case supported == nil:
		e.FleetOnSupported.Note = "not available because the platform gave no way to tell supported versions"
	default:
		e.FleetOnSupported.Value = ptr(round1(100 * float64(onSupported) / float64(active)))
		if unknown > 0 {
			e.FleetOnSupported.Note = fmt.Sprintf("%d of these devices report an unknown image (not a signed release of this product) and count as not on a supported release", unknown)
		}
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

// DDIMeaning says what a DDI device's updates are checked by, for the evidence, the page and the
// device list.
const DDIMeaning = "they verify only their update bundle's own signature, not the platform's Uptane metadata " +
	"(no rollback or freeze protection from the platform); the platform offers them only releases signed by the " +
	"offline targets key"
