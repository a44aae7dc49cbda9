package sqlstore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

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

// likeEscape escapes LIKE's wildcards in s, for ESCAPE '\'.
func likeEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// PageDevices implements fleet.Store. Ordered by id (the primary key), a page reads its rows
// from the index; other orders read every matching row and keep the top ones.
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
	if q := strings.TrimSpace(p.Search); q != "" {
		pat := arg("%" + likeEscape(q) + "%")
		var or []string
		for _, col := range []string{"id", "serial", "hardware_id", "product", "installed_ver", "attributes"} {
			or = append(or, col+" "+s.dialect.ILike+" "+pat+` ESCAPE '\'`)
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
			k := arg(p.After.Key)
			where = append(where, "("+col+" "+cmp+" "+k+" OR ("+col+" = "+k+" AND id "+cmp+" "+arg(p.After.ID)+"))")
		}
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	var q string
	if col == "id" {
		q = `SELECT ` + deviceCols + ` FROM devices` + cond + " ORDER BY id " + dir + " LIMIT " + arg(p.Limit)
	} else {
		// Another order reads every matching row: the ids are sorted first, with their keys
		// only, and the page's rows read after (a sort of whole rows took twice as long).
		order := " ORDER BY " + col + " " + dir + ", id " + dir
		q = `SELECT ` + deviceCols + ` FROM devices WHERE id IN (SELECT id FROM devices` + cond + order + " LIMIT " + arg(p.Limit) + ")" + order
	}
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

// CountFleet implements fleet.Store: one scan of devices, grouped.
func (s *DB) CountFleet(ctx context.Context, staleBefore time.Time) ([]fleet.FleetCount, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT status, product, installed_ver, state, COUNT(*),
	SUM(CASE WHEN last_seen IS NULL OR last_seen < $1 THEN 1 ELSE 0 END),
	SUM(CASE WHEN last_error <> '' THEN 1 ELSE 0 END)
FROM devices GROUP BY status, product, installed_ver, state`, staleBefore.UTC())
	if err != nil {
		return nil, fmt.Errorf("count fleet: %w", err)
	}
	defer rows.Close()
	var out []fleet.FleetCount
	for rows.Next() {
		var c fleet.FleetCount
		if err := rows.Scan(&c.Status, &c.Product, &c.Version, &c.State, &c.Devices, &c.Stale, &c.Errors); err != nil {
			return nil, fmt.Errorf("count fleet: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}
