package sqlstore

import (
	"context"
	"fmt"
	"slices"
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

// PageDevices implements fleet.Store. Every order has an index that matches it, (column, id)
// (migration 00024), so that a page is a range of it, whatever its position.
func (s *DB) PageDevices(ctx context.Context, p fleet.DevicePage) ([]*fleet.Device, error) {
	if err := p.Check(); err != nil {
		return nil, err
	}
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	var where []string
	for _, c := range []struct{ col, v string }{{"product", p.Product}, {"installed_ver", p.Version}, {"status", p.Status}, {"state", p.State}} {
		if c.v != "" {
			where = append(where, c.col+" = "+arg(c.v))
		}
	}
	keys := make([]string, 0, len(p.Attributes))
	for k := range p.Attributes {
		keys = append(keys, k)
	}
	slices.Sort(keys) // one statement text per set of keys
	for _, k := range keys {
		// The stored value, or one of its list values: containment of "\nVALUE\n" in
		// "\nSTORED\n", tested with REPLACE, which (unlike LIKE in SQLite) is case-sensitive in
		// both dialects.
		v := s.dialect.JSONText("attributes", arg(s.dialect.JSONKey(k)))
		sep := arg(inventory.ListSeparator)
		framed := "(" + sep + " || " + v + " || " + sep + ")"
		where = append(where, "("+v+" = "+arg(p.Attributes[k])+" OR REPLACE("+framed+", "+arg(inventory.ListSeparator+p.Attributes[k]+inventory.ListSeparator)+", '') <> "+framed+")")
	}
	if p.IDs != nil {
		if len(p.IDs) == 0 {
			return nil, nil
		}
		ph := make([]string, len(p.IDs))
		for i, id := range p.IDs {
			ph[i] = arg(id)
		}
		where = append(where, "id IN ("+strings.Join(ph, ",")+")")
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
		where = append(where, "("+strings.Join(or, " OR ")+")")
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
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	order := " ORDER BY id " + dir
	if col != "id" {
		order = " ORDER BY " + col + " " + dir + ", id " + dir // the (column, id) index's order
	}
	q := `SELECT ` + deviceCols + ` FROM devices` + cond + order + " LIMIT " + arg(p.Limit)
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
