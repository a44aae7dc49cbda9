package storetest

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/fleet"
)

// attributeFewSetter is a store whose PageDevices takes one of two ways for an attribute filter
// (sqlstore: the devices with the value read first when few have it, else the page's order
// scanned, each device probed); SetAttributeFew sets the bound between them and returns the
// previous one.
type attributeFewSetter interface{ SetAttributeFew(n int) int }

// searchWindowSetter is a store whose PageDevices looks for a search's page among the first
// devices of the page's order before it reads the search's index ranges (sqlstore);
// SetSearchWindow sets how many and returns the previous number (0: never).
type searchWindowSetter interface{ SetSearchWindow(n int) int }

// attributeWays runs check in each way the store's PageDevices may take for an attribute filter
// or a search: as it is, and (if it has others) with each other way forced.
func attributeWays(t *testing.T, s Store, check func(way string)) {
	t.Helper()
	check("default")
	if a, ok := s.(attributeFewSetter); ok {
		old := a.SetAttributeFew(0)
		check("scan")
		a.SetAttributeFew(old)
	}
	if w, ok := s.(searchWindowSetter); ok {
		old := w.SetSearchWindow(0)
		check("search ranges")
		w.SetSearchWindow(2) // a page of 3 is never found within 2 devices: the ranges after the window
		check("search window too small")
		w.SetSearchWindow(old)
	}
}

// attributeMatch returns the ids of the devices PageDevices finds with attrs, in id order,
// walking pages of two.
func attributeMatch(t *testing.T, s Store, attrs map[string]string) []string {
	t.Helper()
	p := fleet.DevicePage{Attributes: attrs, Limit: 2}
	got := []string{}
	for range 100 {
		page, err := s.PageDevices(ctx, p)
		if err != nil {
			t.Fatalf("PageDevices(%q): %v", attrs, err)
		}
		for _, d := range page {
			got = append(got, d.ID)
		}
		if len(page) < p.Limit {
			return got
		}
		c := fleet.CursorOf(page[len(page)-1], "")
		p.After = &c
	}
	t.Fatal("pages never end")
	return nil
}

type attributeCase struct {
	attrs map[string]string
	want  []string
}

func checkAttributeCases(t *testing.T, s Store, when string, cases []attributeCase) {
	t.Helper()
	attributeWays(t, s, func(way string) {
		for _, c := range cases {
			if got := attributeMatch(t, s, c.attrs); !slices.Equal(got, c.want) {
				t.Errorf("%s (%s): devices with %q: %v, want %v", when, way, c.attrs, got, c.want)
			}
		}
	})
}

// testDeviceAttributes: PageDevices finds devices by an attribute's value or one of its list
// values (exactly, case included) after every write of the attributes: enrolment, an update, a
// report; a value a device no longer has no longer finds it, nor does a deleted device's value
// find a new device of the same id.
func testDeviceAttributes(t *testing.T, s Store) {
	create := func(id, status string, simulated bool, attrs map[string]string) {
		t.Helper()
		d := &fleet.Device{ID: id, PublicKey: []byte(id), Serial: "SN-" + id, Product: "cam", HardwareID: "h", Attributes: attrs,
			Status: status, Simulated: simulated, EnrolledAt: t0}
		if err := s.CreateDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	create("a1", fleet.StatusAccepted, false, map[string]string{"region": "eu", "tags": "blue\ngreen", "empty": ""})
	create("a2", fleet.StatusAccepted, false, map[string]string{"region": "EU", "tags": "green"})
	create("a3", fleet.StatusAccepted, false, map[string]string{"region": "us", "tags": "green\nblue\nred"})
	create("p1", fleet.StatusPending, false, map[string]string{"region": "eu", "ring": "pending-only"})
	create("s1", fleet.StatusAccepted, true, map[string]string{"region": "eu", "ring": "sim-only"})
	create("n1", fleet.StatusAccepted, false, nil)
	a := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	checkAttributeCases(t, s, "enrolled", []attributeCase{
		{a("region", "eu"), []string{"a1", "p1", "s1"}},
		{a("region", "EU"), []string{"a2"}},
		{a("region", "e"), []string{}},
		{a("tags", "green"), []string{"a1", "a2", "a3"}},
		{a("tags", "blue"), []string{"a1", "a3"}},
		{a("tags", "red"), []string{"a3"}},
		{a("tags", "blue\ngreen"), []string{"a1"}},          // the whole list
		{a("tags", "green\nblue"), []string{"a3"}},          // a run of its values
		{a("tags", "blue\nred\n"), []string{}},              // not a run of a3's
		{a("tags", ""), []string{}},                         // no empty value
		{a("empty", ""), []string{"a1"}},                    // an empty value
		{a("region", "eu", "tags", "blue"), []string{"a1"}}, // both
		{a("region", "eu", "ring", "sim-only"), []string{"s1"}},
		{a("missing", "x"), []string{}},
	})

	// New attributes replace the old, by UpdateDevice or with a report.
	if err := s.UpdateDevice(ctx, "a1", fleet.DeviceUpdate{Attributes: &map[string]string{"region": "us", "tags": "red"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordReport(ctx, "a2", fleet.DeviceUpdate{Attributes: &map[string]string{"tags": "blue\nblue"}},
		[]fleet.Event{{DeviceID: "a2", Time: t0, Step: "check", Status: "ok"}}); err != nil {
		t.Fatal(err)
	}
	var none map[string]string
	if err := s.UpdateDevice(ctx, "a3", fleet.DeviceUpdate{Attributes: &none}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, s.UpdateDevice(ctx, "nope", fleet.DeviceUpdate{Attributes: &map[string]string{"region": "eu"}}), apperr.NotFound)
	checkAttributeCases(t, s, "updated", []attributeCase{
		{a("region", "eu"), []string{"p1", "s1"}},
		{a("region", "EU"), []string{}},
		{a("region", "us"), []string{"a1"}},
		{a("tags", "green"), []string{}},
		{a("tags", "blue"), []string{"a2"}},
		{a("tags", "blue\nblue"), []string{"a2"}},
		{a("tags", "red"), []string{"a1"}},
		{a("empty", ""), []string{}},
	})
	if d, err := s.FindDevice(ctx, "a3"); err != nil || len(d.Attributes) != 0 {
		t.Fatalf("a3 after its attributes were cleared: %+v %v", d, err)
	}

	// A deleted device's values go with it: a new device of the same id has only its own.
	if n, err := s.DeletePendingDevices(ctx, t0.Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("DeletePendingDevices: %d %v", n, err)
	}
	if ids, err := s.RemoveSimulatedDevices(ctx); err != nil || !slices.Equal(ids, []string{"s1"}) {
		t.Fatalf("RemoveSimulatedDevices: %v %v", ids, err)
	}
	checkAttributeCases(t, s, "deleted", []attributeCase{
		{a("region", "eu"), []string{}},
		{a("ring", "pending-only"), []string{}},
	})
	create("p1", fleet.StatusAccepted, false, map[string]string{"ring": "new"})
	create("s1", fleet.StatusAccepted, false, map[string]string{"ring": "new"})
	checkAttributeCases(t, s, "enrolled again", []attributeCase{
		{a("region", "eu"), []string{}},
		{a("ring", "pending-only"), []string{}},
		{a("ring", "sim-only"), []string{}},
		{a("ring", "new"), []string{"p1", "s1"}},
	})
}

// AttributesBefore25 are the attributes of the devices an upgrade test stores before migration
// 00025, by id: lists, empty values, characters encoding/json escapes, a key only an identity
// may have.
var AttributesBefore25 = map[string]map[string]string{
	"u1": {"region": "eu", "tags": "blue\ngreen", "note": "<a&b> \"q\"", "city": "zürich", "empty": ""},
	"u2": {"region": "EU", "tags": "green\n\nred", `we"ird key`: "x"},
	"u3": {},
}

// AttributesJSON is the attributes column of a device with attrs, as the store writes it.
func AttributesJSON(attrs map[string]string) string {
	b, err := json.Marshal(attrs)
	if err != nil {
		panic(fmt.Sprintf("attributes %q: %v", attrs, err))
	}
	return string(b)
}

// CheckAttributesUpgrade: after migration 00025, PageDevices finds the devices stored before it
// (AttributesBefore25, written straight into the devices table) by their attributes as if the
// store had written them, and their values are replaced with new attributes.
func CheckAttributesUpgrade(t *testing.T, s Store) {
	a := func(k, v string) map[string]string { return map[string]string{k: v} }
	checkAttributeCases(t, s, "migrated", []attributeCase{
		{a("region", "eu"), []string{"u1"}},
		{a("region", "EU"), []string{"u2"}},
		{a("tags", "green"), []string{"u1", "u2"}},
		{a("tags", "blue"), []string{"u1"}},
		{a("tags", "red"), []string{"u2"}},
		{a("tags", ""), []string{"u2"}}, // the empty value between two line breaks
		{a("tags", "blue\ngreen"), []string{"u1"}},
		{a("note", `<a&b> "q"`), []string{"u1"}},
		{a("city", "zürich"), []string{"u1"}},
		{a("city", "zurich"), []string{}},
		{a("empty", ""), []string{"u1"}},
	})
	if err := s.UpdateDevice(ctx, "u1", fleet.DeviceUpdate{Attributes: &map[string]string{"region": "us"}}); err != nil {
		t.Fatal(err)
	}
	checkAttributeCases(t, s, "migrated, then updated", []attributeCase{
		{a("region", "eu"), []string{}},
		{a("region", "us"), []string{"u1"}},
		{a("tags", "green"), []string{"u2"}},
	})
	// The rows the migration wrote go with their device.
	if err := s.UpdateDevice(ctx, "u2", fleet.DeviceUpdate{Status: ptr(fleet.StatusPending)}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.DeletePendingDevices(ctx, time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)); err != nil || n != 1 {
		t.Fatalf("DeletePendingDevices: %d %v", n, err)
	}
	d := &fleet.Device{ID: "u2", PublicKey: []byte("u2"), Serial: "s", Product: "p", HardwareID: "h", Status: fleet.StatusAccepted, EnrolledAt: t0}
	if err := s.CreateDevice(ctx, d); err != nil {
		t.Fatal(err)
	}
	if got := attributeMatch(t, s, a("tags", "green")); len(got) != 0 {
		t.Errorf("a deleted device's migrated values find %v", got)
	}
}

func ptr[T any](v T) *T { return &v }
