package label

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var testNow = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func day(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }

// supportedFrom says a version is supported when it is at least min, comparing the simple
// "1.N" versions these tests use.
func supportedFrom(min string) func(string) bool {
	return func(v string) bool { return len(v) > len(min) || (len(v) == len(min) && v >= min) }
}

func TestComputeEvidence(t *testing.T) {
	type summary struct {
		Last, LastVersion, LastNote string
		Count12m                    *float64
		ToFix, ToFleet, Share       *float64
		ToFixN, ToFleetN            int
		Devices, Active             *float64
		ToFixNote, ShareNote        string
	}
	fleet90 := func(t time.Time) *time.Time { return &t }
	tests := []struct {
		name      string
		rel       []ReleaseFact
		dev       []DeviceFact
		ttp       []TimeToPatch
		supported func(string) bool
		want      summary
	}{
		{
			name: "no data at all",
			want: summary{
				LastNote: "not available because no security release has been published", Count12m: ptr(0.0),
				Devices: ptr(0.0), Active: ptr(0.0),
				ToFixNote: "not available because no advisory matched to this product has a fixed release",
				ShareNote: "not available because no device was seen in the last 30 days",
			},
		},
		{
			name:      "one release, feature only",
			rel:       []ReleaseFact{{Version: "1.0", Class: ClassFeature, PublishedAt: day(2026, 1, 1)}},
			dev:       []DeviceFact{{InstalledVersion: "1.0", LastSeen: testNow.Add(-time.Hour)}},
			supported: supportedFrom("1.0"),
			want: summary{
				LastNote: "not available because no security release has been published", Count12m: ptr(0.0),
				Devices: ptr(1.0), Active: ptr(1.0), Share: ptr(100.0),
				ToFixNote: "not available because no advisory matched to this product has a fixed release",
			},
		},
		{
			name: "one security release",
			rel:  []ReleaseFact{{Version: "1.1", Class: ClassSecurity, PublishedAt: day(2026, 3, 12).Add(9 * time.Hour)}},
			want: summary{
				Last: "2026-03-12", LastVersion: "1.1", Count12m: ptr(1.0), Devices: ptr(0.0), Active: ptr(0.0),
				ToFixNote: "not available because no advisory matched to this product has a fixed release",
				ShareNote: "not available because no device was seen in the last 30 days",
			},
		},
		{
			name: "newest security release wins; old, future and feature releases do not count",
			rel: []ReleaseFact{
				{Version: "1.1", Class: ClassSecurity, PublishedAt: day(2025, 4, 30)}, // more than 12 months ago
				{Version: "1.2", Class: ClassSecurity, PublishedAt: day(2025, 9, 1)},
				{Version: "1.4", Class: ClassSecurity, PublishedAt: day(2026, 2, 1)},
				{Version: "1.3", Class: ClassFeature, PublishedAt: day(2026, 4, 1)},
				{Version: "1.5", Class: ClassSecurity, PublishedAt: day(2026, 6, 1)}, // not yet published
			},
			dev: []DeviceFact{
				{InstalledVersion: "1.4", LastSeen: testNow.Add(-24 * time.Hour)},
				{InstalledVersion: "1.2", LastSeen: testNow.Add(-48 * time.Hour)},
				{InstalledVersion: "1.4", LastSeen: testNow.Add(-24 * time.Hour)},
				{InstalledVersion: "1.1", LastSeen: testNow.AddDate(0, 0, -45)}, // not seen for 45 days
			},
			supported: supportedFrom("1.4"),
			want: summary{
				Last: "2026-02-01", LastVersion: "1.4", Count12m: ptr(2.0), Devices: ptr(4.0), Active: ptr(3.0), Share: ptr(66.7),
				ToFixNote: "not available because no advisory matched to this product has a fixed release",
			},
		},
		{
			name: "odd count median; unfixed advisory not in the median but noted; fix before advisory counts 0",
			ttp: []TimeToPatch{
				{Advisory: "A-1", Published: day(2026, 1, 1), FixReleased: day(2026, 1, 11), Fleet90At: fleet90(day(2026, 1, 14))},
				{Advisory: "A-2", Published: day(2026, 2, 1), FixReleased: day(2026, 2, 4)},
				{Advisory: "A-3", Published: day(2026, 3, 10), FixReleased: day(2026, 3, 8)},
				{Advisory: "A-4", Published: day(2026, 4, 1)},
			},
			want: summary{
				LastNote: "not available because no security release has been published", Count12m: ptr(0.0),
				ToFix: ptr(3.0), ToFixN: 3, ToFleet: ptr(3.0), ToFleetN: 1, Devices: ptr(0.0), Active: ptr(0.0),
				ToFixNote: "1 advisories have no fixed release yet and are not in the median (see advisories)",
				ShareNote: "not available because no device was seen in the last 30 days",
			},
		},
		{
			name: "even count median is the mean of the two middle values",
			ttp: []TimeToPatch{
				{Published: day(2026, 1, 1), FixReleased: day(2026, 1, 2), Fleet90At: fleet90(day(2026, 1, 3))},
				{Published: day(2026, 1, 1), FixReleased: day(2026, 1, 4), Fleet90At: fleet90(day(2026, 1, 6))},
				{Published: day(2026, 1, 1), FixReleased: day(2026, 1, 5)},
				{Published: day(2026, 1, 1), FixReleased: day(2026, 1, 31).Add(12 * time.Hour)},
			},
			want: summary{
				LastNote: "not available because no security release has been published", Count12m: ptr(0.0),
				ToFix: ptr(3.5), ToFixN: 4, ToFleet: ptr(1.5), ToFleetN: 2, Devices: ptr(0.0), Active: ptr(0.0),
				ShareNote: "not available because no device was seen in the last 30 days",
			},
		},
		{
			name: "devices but no way to tell supported versions",
			dev:  []DeviceFact{{InstalledVersion: "1.0", LastSeen: testNow}},
			want: summary{
				LastNote: "not available because no security release has been published", Count12m: ptr(0.0),
				Devices: ptr(1.0), Active: ptr(1.0),
				ToFixNote: "not available because no advisory matched to this product has a fixed release",
				ShareNote: "not available because the platform gave no way to tell supported versions",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := ComputeEvidence(testNow, tt.rel, tt.dev, tt.ttp, tt.supported)
			got := summary{
				Last: e.LastSecurityUpdate.Date, LastVersion: e.LastSecurityUpdate.Version, LastNote: e.LastSecurityUpdate.Note,
				Count12m: e.SecurityUpdates12m.Value, ToFix: e.AdvisoryToFixDays.Value, ToFleet: e.FixToFleet90Days.Value,
				Share: e.FleetOnSupported.Value, ToFixN: e.AdvisoryToFixDays.Samples, ToFleetN: e.FixToFleet90Days.Samples,
				Devices: e.Devices.Value, Active: e.ActiveDevices.Value, ToFixNote: e.AdvisoryToFixDays.Note, ShareNote: e.FleetOnSupported.Note,
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ComputeEvidence (-want +got):\n%s", diff)
			}
			if !e.ComputedAt.Equal(testNow) {
				t.Errorf("computed_at = %v, want %v", e.ComputedAt, testNow)
			}
			for name, m := range map[string]string{"last": e.LastSecurityUpdate.Method, "12m": e.SecurityUpdates12m.Method, "fix": e.AdvisoryToFixDays.Method,
				"fleet90": e.FixToFleet90Days.Method, "share": e.FleetOnSupported.Method, "devices": e.Devices.Method, "active": e.ActiveDevices.Method} {
				if m == "" {
					t.Errorf("figure %s has no method", name)
				}
			}
		})
	}
}
