package storetest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/fleet"
)

// testDevicePages: keyset pages in every order and direction cover each matching device exactly
// once, in order; filters by product, version, status, state, attributes (lists included,
// case-sensitive), ids and free-text search (a prefix of the id or serial); CountFleet groups
// and counts stale devices and those with an error.
func testDevicePages(t *testing.T, s Store) {
	regions := []string{"eu", "us", "EU", "eu\nus"}
	var all []*fleet.Device
	for i := range 37 {
		d := &fleet.Device{ID: fmt.Sprintf("d%02d", i), PublicKey: []byte{byte(i)}, Serial: fmt.Sprintf("SN-%d", (i*7)%11), Product: []string{"cam", "hub"}[i%2],
			HardwareID: "h", Attributes: map[string]string{"region": regions[i%4], "note": "50%_off"}, Status: fleet.StatusAccepted,
			InstalledVer: fmt.Sprintf("1.%d", i%3), State: []string{"idle", "failed", ""}[i%3], EnrolledAt: t0}
		if i%5 == 0 {
			d.LastSeen = t0.Add(time.Hour)
		}
		if i%7 == 0 {
			d.LastError = "flash failed"
		}
		if err := s.CreateDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
		all = append(all, d)
	}
	key := func(d *fleet.Device, sort string) string { return fleet.CursorOf(d, sort).Key }
	walk := func(p fleet.DevicePage) []string {
		t.Helper()
		var got []string
		for range 100 {
			page, err := s.PageDevices(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range page {
				got = append(got, d.ID)
			}
			if len(page) < p.Limit {
				return got
			}
			c := fleet.CursorOf(page[len(page)-1], p.Sort)
			p.After = &c
		}
		t.Fatal("pages never end")
		return nil
	}
	want := func(match func(*fleet.Device) bool, sort string, desc bool) []string {
		var ds []*fleet.Device
		for _, d := range all {
			if match(d) {
				ds = append(ds, d)
			}
		}
		slices.SortFunc(ds, func(a, b *fleet.Device) int {
			c := strings.Compare(key(a, sort), key(b, sort))
			if c == 0 {
				c = strings.Compare(a.ID, b.ID)
			}
			if desc {
				c = -c
			}
			return c
		})
		out := []string{}
		for _, d := range ds {
			out = append(out, d.ID)
		}
		return out
	}
	every := func(*fleet.Device) bool { return true }
	for _, sort := range fleet.Sorts {
		for _, desc := range []bool{false, true} {
			got := walk(fleet.DevicePage{Sort: sort, Desc: desc, Limit: 4})
			if w := want(every, sort, desc); !slices.Equal(got, w) {
				t.Errorf("sort %s desc %v:\n got %v\nwant %v", sort, desc, got, w)
			}
		}
	}
	attributeWays(t, s, func(way string) {
		for name, c := range map[string]struct {
			p     fleet.DevicePage
			match func(*fleet.Device) bool
		}{
			"product": {fleet.DevicePage{Product: "cam"}, func(d *fleet.Device) bool { return d.Product == "cam" }},
			"version": {fleet.DevicePage{Version: "1.2", Product: "hub"}, func(d *fleet.Device) bool { return d.InstalledVer == "1.2" && d.Product == "hub" }},
			"state":   {fleet.DevicePage{State: "failed"}, func(d *fleet.Device) bool { return d.State == "failed" }},
			"status":  {fleet.DevicePage{Status: fleet.StatusPending}, func(d *fleet.Device) bool { return false }},
			"attribute": {fleet.DevicePage{Attributes: map[string]string{"region": "eu"}}, func(d *fleet.Device) bool {
				return d.Attributes["region"] == "eu" || d.Attributes["region"] == "eu\nus"
			}},
			"list item":  {fleet.DevicePage{Attributes: map[string]string{"region": "us"}}, func(d *fleet.Device) bool { return strings.Contains(d.Attributes["region"], "us") }},
			"whole list": {fleet.DevicePage{Attributes: map[string]string{"region": "eu\nus"}}, func(d *fleet.Device) bool { return d.Attributes["region"] == "eu\nus" }},
			"two attrs":  {fleet.DevicePage{Attributes: map[string]string{"region": "EU", "note": "50%_off"}}, func(d *fleet.Device) bool { return d.Attributes["region"] == "EU" }},
			"no attr":    {fleet.DevicePage{Attributes: map[string]string{"missing": "x"}}, func(d *fleet.Device) bool { return false }},
			"wildcards":  {fleet.DevicePage{Attributes: map[string]string{"note": "50%"}}, func(d *fleet.Device) bool { return false }},
			"ids":        {fleet.DevicePage{IDs: []string{"d03", "d10", "nope"}}, func(d *fleet.Device) bool { return d.ID == "d03" || d.ID == "d10" }},
			"attr and ids": {fleet.DevicePage{IDs: []string{"d00", "d01", "d03", "d04"}, Attributes: map[string]string{"region": "eu"}}, func(d *fleet.Device) bool {
				return slices.Contains([]string{"d00", "d03", "d04"}, d.ID)
			}},
			"no ids":    {fleet.DevicePage{IDs: []string{}}, func(d *fleet.Device) bool { return false }},
			"search":    {fleet.DevicePage{Search: "sn-3"}, func(d *fleet.Device) bool { return d.Serial == "SN-3" }},
			"search 1":  {fleet.DevicePage{Search: " SN-1"}, func(d *fleet.Device) bool { return strings.HasPrefix(d.Serial, "SN-1") }}, // SN-1, SN-10
			"search id": {fleet.DevicePage{Search: "D1"}, func(d *fleet.Device) bool { return strings.HasPrefix(d.ID, "d1") }},
			"search in": {fleet.DevicePage{Search: "N-3"}, func(d *fleet.Device) bool { return false }}, // a prefix, not a substring
			"search %":  {fleet.DevicePage{Search: "%"}, func(d *fleet.Device) bool { return false }},   // no wildcards
			"search _":  {fleet.DevicePage{Search: "d_"}, func(d *fleet.Device) bool { return false }},
		} {
			for _, desc := range []bool{false, true} {
				p := c.p
				p.Limit, p.Sort, p.Desc = 3, fleet.SortSerial, desc
				if got, w := walk(p), want(c.match, fleet.SortSerial, desc); !slices.Equal(got, w) && !(len(got) == 0 && len(w) == 0) {
					t.Errorf("%s desc %v (%s):\n got %v\nwant %v", name, desc, way, got, w)
				}
			}
		}
	})
	for _, bad := range []fleet.DevicePage{{Limit: 0}, {Limit: fleet.MaxPage + 1}, {Limit: 1, Sort: "id; DROP TABLE devices"},
		{Limit: 1, Attributes: map[string]string{`a"b`: "x"}}, {Limit: 1, Attributes: map[string]string{"": "x"}},
		{Limit: 1, IDs: make([]string, fleet.MaxPageIDs+1)}} {
		_, err := s.PageDevices(ctx, bad)
		wantCode(t, err, apperr.Invalid)
	}

	counts, err := s.CountFleet(ctx, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	total, stale, errs, groups := 0, 0, 0, map[string]int{}
	for _, c := range counts {
		total += c.Devices
		stale += c.Stale
		errs += c.Errors
		groups[c.Product+"/"+c.Version+"/"+c.State] += c.Devices
		if c.Errors > c.Devices || c.Stale > c.Devices {
			t.Errorf("CountFleet: %+v", c)
		}
	}
	// cam/1.0/idle: i%6 == 0; seen since the cutoff: i%5 == 0 (8 devices); an error: i%7 == 0 (6)
	if total != 37 || stale != 37-8 || errs != 6 || groups["cam/1.0/idle"] != 7 {
		t.Errorf("CountFleet: total %d stale %d errors %d groups %v", total, stale, errs, groups)
	}
	// Stale by the time, not the day: seen on the cutoff's day before it (d01), the day
	// before (d02), after it (d03).
	if err := s.TouchDevices(ctx, map[string]time.Time{"d01": t0, "d02": t0.Add(-24 * time.Hour), "d03": t0.Add(2 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cutoff time.Time
		stale  int
	}{{t0.Add(time.Minute), 37 - 8 - 1}, {t0, 37 - 8 - 1 - 1}, {t0.Add(2 * time.Hour), 37}, {t0.Add(-48 * time.Hour), 37 - 8 - 3}} {
		counts, err := s.CountFleet(ctx, c.cutoff)
		if err != nil {
			t.Fatal(err)
		}
		stale := 0
		for _, k := range counts {
			stale += k.Stale
		}
		if stale != c.stale {
			t.Errorf("CountFleet(%v): %d stale, want %d", c.cutoff, stale, c.stale)
		}
	}
}
