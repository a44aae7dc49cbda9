package rollout

import (
	"path"
	"strings"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/inventory"
)

// Filter selects devices by inventory: comma-separated terms KEY=VALUE or KEY!=VALUE, all of
// which must hold. Keys are product, hardware, version (installed), status, state, serial, id,
// or any attribute the device reported (region, or attr.region). Values may use * and ?. An
// attribute that is a list (a repeated key of the device's inventory) matches when any of its
// values does.
//
//	product=thermostat,hardware=tstat-v2,region=eu-*
type Filter struct {
	Terms []Term
}

// Term is one condition of a Filter.
type Term struct {
	Key, Value string
	Not        bool
}

// ParseFilter parses a filter expression.
func ParseFilter(s string) (Filter, error) {
	var f Filter
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		t := Term{}
		k, v, ok := strings.Cut(part, "!=")
		if ok {
			t.Not = true
		} else if k, v, ok = strings.Cut(part, "="); !ok {
			return Filter{}, apperr.E(apperr.Invalid, "filter term %q: want KEY=VALUE or KEY!=VALUE", part)
		}
		t.Key, t.Value = strings.TrimSpace(k), strings.TrimSpace(v)
		if t.Key == "" || len(t.Key) > 64 || len(t.Value) > 256 {
			return Filter{}, apperr.E(apperr.Invalid, "filter term %q: key empty or too long", part)
		}
		if _, err := path.Match(t.Value, ""); err != nil {
			return Filter{}, apperr.E(apperr.Invalid, "filter term %q: bad pattern", part)
		}
		f.Terms = append(f.Terms, t)
	}
	if len(f.Terms) == 0 {
		return Filter{}, apperr.E(apperr.Invalid, "empty filter")
	}
	return f, nil
}

// Match reports whether the device satisfies every term.
func (f Filter) Match(d *fleet.Device) bool {
	for _, t := range f.Terms {
		var v string
		switch t.Key {
		case "product":
			v = d.Product
		case "hardware", "hardware_id":
			v = d.HardwareID
		case "version":
			v = d.InstalledVer
		case "status":
			v = d.Status
		case "state":
			v = d.State
		case "serial":
			v = d.Serial
		case "id":
			v = d.ID
		default:
			// An inventory list (a repeated key) matches when one of its values does;
			// KEY!=VALUE holds when none does.
			stored := d.Attributes[strings.TrimPrefix(t.Key, "attr.")]
			ok := false
			for _, v := range inventory.Values(stored) {
				if m, _ := path.Match(t.Value, v); m {
					ok = true
					break
				}
			}
			if ok == t.Not {
				return false
			}
			continue
		}
		ok, _ := path.Match(t.Value, v)
		if ok == t.Not {
			return false
		}
	}
	return true
}

// Product returns the value of an exact product term, if the filter has one.
func (f Filter) Product() string {
	for _, t := range f.Terms {
		if t.Key == "product" && !t.Not && !strings.ContainsAny(t.Value, "*?[") {
			return t.Value
		}
	}
	return ""
}
