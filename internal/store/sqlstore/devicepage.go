package sqlstore

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/inventory"
)

// pageSortColumn maps fleet.DevicePage sorts to columns.
var pageSortColumn = map[string]string{
	"":                 "id",
	fleet.SortID:       "id",
	fleet.SortSerial:   "serial",
	fleet.SortProduct:  "product",
	fleet.SortVersion:  "installed_ver",
	fleet.SortState:    "state",
	fleet.SortHardware: "hardware_id",
}

// foldASCII folds the letters A to Z to lower case, as SQL's lower() does in SQLite and in
// PostgreSQL under the C collation; other characters are left as they are.
func foldASCII(s string) string {
	return strings.Map(func(r rune) rune {
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, s)
}

// prefixEnd is the least string greater than every string that begins with prefix, in byte
// order (UTF-8 byte order is code point order): prefix with its last character incremented
// (past the surrogates, which UTF-8 does not encode); false if there is none (every character
// the greatest).
func prefixEnd(prefix string) (string, bool) {
	rs := []rune(prefix)
	for i := len(rs) - 1; i >= 0; i-- {
		if rs[i] < utf8.MaxRune {
			rs[i]++
			if rs[i] == 0xD800 {
				rs[i] = 0xE000
			}
			return string(rs[:i+1]), true
		}
	}
	return "", false
}

// attributeFew is how many devices with one attribute value are few enough to be read first
// (DB.SetAttributeFew changes it): reading them and sorting them costs less than scanning the
// page's order, each device probed, until a page of them is found (about devices / matches *
// limit rows; at 100,000 devices, a page of 50 and 1,000 matches, 5,000 rows).
const attributeFew = 1000

// fewWithAttribute returns the devices whose attribute key has the value value (or one of its
// list values), if at most s.attributeFew do (not nil, possibly empty); nil if more do. A range
// of device_attributes' primary key.
func (s *DB) fewWithAttribute(ctx context.Context, key, value string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT device_id FROM device_attributes WHERE key = $1 AND value = $2 LIMIT $3`, key, value, s.attributeFew+1)
	if err != nil {
		return nil, fmt.Errorf("page devices: %w", err)
	}
	defer rows.Close()
	ids := []string{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("page devices: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("page devices: %w", err)
	}
	if len(ids) > s.attributeFew {
		return nil, nil
	}
	return ids, nil
}

// searchWindow is among how many devices of a page's order PageDevices looks for a search's
// page first, on SQLite (DB.SetSearchWindow changes it; New sets none for PostgreSQL). A search
// that many devices match (a prefix every id has) fills its page within a few rows of that
// order; read through the prefix ranges of the id and serial indexes instead, every match is
// read and sorted (100,000 devices: 37.9 ms p95 on a quiet machine, 85–116 ms under load; 2.6 ms
// with the window). A search few devices match costs the window's rows more (a key and a serial
// each; a serial prefix 2.1 ms without, 4.1 ms with) before the ranges are read.
const searchWindow = 2000

// searchWindowed reads the page's order under the conditions where (arguments args), at most
// s.searchWindow devices of it, and returns the ids of the first limit that match search, in
// that order, when those are the page's: limit of them were found, or the order ended within
// the window. nil when the window was read to its end short of a page: the caller then reads
// the search's index ranges. The limit is the statement's text, not an argument, so that the
// arguments are exactly the conditions'.
func (s *DB) searchWindowed(ctx context.Context, where []string, search, order string, limit int, args []any) ([]string, error) {
	if s.searchWindow <= 0 {
		return nil, nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, CASE WHEN `+search+` THEN 1 ELSE 0 END FROM devices`+whereSQL(where)+order+" LIMIT "+strconv.Itoa(s.searchWindow), args...)
	if err != nil {
		return nil, fmt.Errorf("page devices: %w", err)
	}
	defer rows.Close()
	found, read := []string{}, 0
	for rows.Next() && len(found) < limit {
		var id string
		var hit int
		if err := rows.Scan(&id, &hit); err != nil {
			return nil, fmt.Errorf("page devices: %w", err)
		}
		read++
		if hit == 1 {
			found = append(found, id)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("page devices: %w", err)
	}
	if len(found) == limit || read < s.searchWindow {
		return found, nil
	}
	return nil, nil
}

// PageDevices implements fleet.Store. Every order has an index that matches it, (column, id)
// (migration 00024), so that a page is a range of it, whatever its position. An attribute
// filter probes device_attributes (migration 00025) for each device of that range; when few
// devices have one of the filter's values, those are read first instead (fewWithAttribute), a
// list of ids as a group's.
func (s *DB) PageDevices(ctx context.Context, p fleet.DevicePage) ([]*fleet.Device, error) {
	if err := p.Check(); err != nil {
		return nil, err
	}
	if p.IDs != nil && len(p.IDs) == 0 {
		return nil, nil
	}
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	var where []string
	for _, c := range []struct{ col, v string }{{"product", p.Product}, {"installed_ver", p.Version}, {"status", p.Status}, {"state", p.State}} {
		if c.v != "" {
			where = append(where, c.col+" = "+arg(c.v))
		}
	}
	keys := slices.Sorted(maps.Keys(p.Attributes)) // one statement text per set of keys
	// Which devices have a value few devices have, read from device_attributes first: those
	// (at most s.attributeFew) become a list of ids the page is drawn from, like a group's,
	// instead of a scan of the page's order that would read most devices to find few. (Read
	// before the page, not in its snapshot: the page's own probe still decides, so a device
	// that lost the value meanwhile is not shown; one that gained it shows on the next read.)
	ids := p.IDs
	for _, k := range keys {
		if ids != nil && len(ids) <= s.attributeFew {
			break // few already: a group's
		}
		first, _, _ := strings.Cut(p.Attributes[k], inventory.ListSeparator)
		few, err := s.fewWithAttribute(ctx, k, first)
		if err != nil {
			return nil, err
		}
		if few == nil {
			continue // many: the page's order is scanned, each device probed
		}
		if ids != nil {
			in := make(map[string]bool, len(few))
			for _, id := range few {
				in[id] = true
			}
			few = slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return !in[id] })
		}
		ids = few
		break
	}
	for _, k := range keys {
		// The stored value, or one of its list values: a probe of device_attributes' primary
		// key (key, value, device_id), which holds each list value (migration 00025). A value
		// without a separator equals the stored one only if that is a list of one. OFFSET 0
		// keeps the probe a probe in PostgreSQL, which does not make a semi-join of such a
		// subquery: a semi-join's generic plan (a prepared statement's after five runs), made
		// for an average value, would collect every device of a value most devices have and
		// sort them.
		v := p.Attributes[k]
		first, _, list := strings.Cut(v, inventory.ListSeparator)
		where = append(where, "EXISTS (SELECT 1 FROM device_attributes a WHERE a.key = "+arg(k)+" AND a.value = "+arg(first)+" AND a.device_id = devices.id LIMIT 1 OFFSET 0)")
		if list {
			// Never a single list value (no value holds a separator, and the console's filter
			// splits at line breaks), but as before: the stored value, or a run of its list
			// values, "\nVALUE\n" in "\nSTORED\n" (REPLACE is case-sensitive in both
			// dialects, unlike LIKE in SQLite). Its first value is one of the device's.
			j := s.dialect.JSONText("attributes", arg(s.dialect.JSONKey(k)))
			sep := arg(inventory.ListSeparator)
			framed := "(" + sep + " || " + j + " || " + sep + ")"
			where = append(where, "("+j+" = "+arg(v)+" OR REPLACE("+framed+", "+arg(inventory.ListSeparator+v+inventory.ListSeparator)+", '') <> "+framed+")")
		}
	}
	if ids != nil {
		if len(ids) == 0 {
			return nil, nil
		}
		where = append(where, inIDs(ids, arg))
	}
	col := pageSortColumn[p.Sort]
	cmp, dir := ">", "ASC"
	if p.Desc {
		cmp, dir = "<", "DESC"
	}
	if p.After != nil {
		if col == "id" {
			where = append(where, "id "+cmp+" "+arg(p.After.ID))
		} else {
			// A row value: one bound of the (column, id) index's range.
			where = append(where, "("+col+", id) "+cmp+" ("+arg(p.After.Key)+", "+arg(p.After.ID)+")")
		}
	}
	order := " ORDER BY id " + dir
	if col != "id" {
		order = " ORDER BY " + col + " " + dir + ", id " + dir // the (column, id) index's order
	}
	if q := foldASCII(strings.TrimSpace(p.Search)); q != "" {
		// A prefix of the id or serial, letters A to Z folded: a range of the folded columns'
		// indexes (devices_id_fold, devices_serial_fold), bytewise in both dialects.
		lo, hi := arg(q), ""
		if next, ok := prefixEnd(q); ok {
			hi = arg(next)
		}
		var or []string
		for _, col := range []string{"id", "serial"} {
			f := s.dialect.Fold(col)
			term := f + " >= " + lo
			if hi != "" {
				term += " AND " + f + " < " + hi
			}
			or = append(or, "("+term+")")
		}
		search := "(" + strings.Join(or, " OR ") + ")"
		found, err := s.searchWindowed(ctx, where, search, order, p.Limit, args)
		if err != nil {
			return nil, err
		}
		where = append(where, search)
		if found != nil {
			if len(found) == 0 {
				return nil, nil
			}
			where = append(where, inIDs(found, arg))
		}
	}
	q := `SELECT ` + deviceCols + ` FROM devices` + whereSQL(where) + order + " LIMIT " + arg(p.Limit)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("page devices: %w", err)
	}
	defer rows.Close()
	var out []*fleet.Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, fmt.Errorf("page devices: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// CountFleet implements fleet.Store, in one snapshot (inSnapshot): the groups and their devices
// seen before the cutoff's day (or never) from one pass over the devices_fleet index, in its
// order (no table row read, no sort); those seen on the cutoff's day but before the cutoff
// through devices_seen_day; those with an error through the partial index devices_fleet_errors
// (migration 00024).
func (s *DB) CountFleet(ctx context.Context, staleBefore time.Time) ([]fleet.FleetCount, error) {
	day := seenDay(staleBefore)
	type group struct{ status, product, version, state string }
	var out []fleet.FleetCount
	at := map[group]int{}
	err := s.inSnapshot(ctx, "count fleet", func(q querier) error {
		rows, err := q.QueryContext(ctx, `SELECT status, product, installed_ver, state, COUNT(*),
	SUM(CASE WHEN seen_day IS NULL OR seen_day < $1 THEN 1 ELSE 0 END)
FROM devices GROUP BY status, product, installed_ver, state ORDER BY status, product, installed_ver, state`, day)
		if err != nil {
			return fmt.Errorf("count fleet: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var c fleet.FleetCount
			if err := rows.Scan(&c.Status, &c.Product, &c.Version, &c.State, &c.Devices, &c.Stale); err != nil {
				return fmt.Errorf("count fleet: %w", err)
			}
			at[group{c.Status, c.Product, c.Version, c.State}] = len(out)
			out = append(out, c)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("count fleet: %w", err)
		}
		rows.Close()
		for _, part := range []struct {
			what, q string
			args    []any
			add     func(c *fleet.FleetCount, n int)
		}{
			{"stale", `SELECT status, product, installed_ver, state, COUNT(*) FROM devices
WHERE seen_day = $1 AND last_seen < $2 GROUP BY status, product, installed_ver, state`, []any{day, staleBefore.UTC()},
				func(c *fleet.FleetCount, n int) { c.Stale += n }},
			{"errors", `SELECT status, product, installed_ver, state, COUNT(*) FROM devices
WHERE last_error <> '' GROUP BY status, product, installed_ver, state`, nil,
				func(c *fleet.FleetCount, n int) { c.Errors = n }},
		} {
			rows, err := q.QueryContext(ctx, part.q, part.args...)
			if err != nil {
				return fmt.Errorf("count fleet %s: %w", part.what, err)
			}
			for rows.Next() {
				var g group
				var n int
				if err := rows.Scan(&g.status, &g.product, &g.version, &g.state, &n); err != nil {
					rows.Close()
					return fmt.Errorf("count fleet %s: %w", part.what, err)
				}
				if i, ok := at[g]; ok {
					part.add(&out[i], n)
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return fmt.Errorf("count fleet %s: %w", part.what, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
