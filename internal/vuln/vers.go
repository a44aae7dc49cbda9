package vuln

// Version ranges in the vers syntax of the package-url project
// (purl-spec VERSION-RANGE-SPEC), which CSAF product_version_range branches
// use. No maintained Go implementation of vers exists (the Go module proxy
// has purl libraries but none that parse or evaluate vers), so the parser and
// the containment algorithm of the spec are written here, on top of this
// package's ecosystem orderings (parseVersion).

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

var errNotInterval = errors.New("not a single interval")

// versConstraint is one comparator and version of a vers range.
type versConstraint struct {
	op string // "=", "!=", "<", "<=", ">", ">="
	v  string
}

// parseVers splits a range into constraints. It accepts the vers URI
// ("vers:generic/>=1.0|<2.0", "vers:npm/1.2.3|1.2.4", "vers:generic/*") and
// the informal spellings vendors write in branch names ("<=1.14.0",
// ">=1.0 <2.0", ">= 1.0, < 2.0"). A bare version means "=". star reports
// the "*" range (every version).
func parseVers(expr string) (cons []versConstraint, star bool, err error) {
	s := strings.TrimSpace(expr)
	if rest, ok := strings.CutPrefix(s, "vers:"); ok {
		_, c, ok := strings.Cut(rest, "/")
		if !ok {
			return nil, false, fmt.Errorf("vers %q: no versioning scheme", expr)
		}
		s = c
	}
	if strings.TrimSpace(s) == "*" {
		return nil, true, nil
	}
	// Glue an operator to its version ("< 2.0" → "<2.0") before splitting.
	for _, op := range []string{">=", "<=", "!=", ">", "<", "="} {
		s = strings.ReplaceAll(s, op+" ", op)
	}
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == '|' || r == ',' || r == ' ' }) {
		c := versConstraint{op: "="}
		for _, op := range []string{">=", "<=", "!=", ">", "<", "="} {
			if rest, ok := strings.CutPrefix(f, op); ok {
				c.op, f = op, rest
				break
			}
		}
		if c.v = strings.TrimSpace(f); c.v == "" || c.v == "*" {
			return nil, false, fmt.Errorf("vers %q: constraint without a version", expr)
		}
		cons = append(cons, c)
	}
	if len(cons) == 0 {
		return nil, false, fmt.Errorf("vers %q: no constraint", expr)
	}
	return cons, false, nil
}

// sortVers orders constraints by version under the ecosystem's ordering and
// checks the spec's rule that range bounds alternate (no two lower or two
// upper bounds in a row, once = and != are set aside).
func sortVers(eco string, cons []versConstraint) ([]versConstraint, error) {
	type parsed struct {
		c versConstraint
		v version
	}
	ps := make([]parsed, len(cons))
	for i, c := range cons {
		v, err := parseVersion(eco, c.v)
		if err != nil {
			return nil, err
		}
		ps[i] = parsed{c, v}
	}
	var cerr error
	slices.SortStableFunc(ps, func(a, b parsed) int {
		c, err := a.v.compare(b.v)
		if err != nil && cerr == nil {
			cerr = err
		}
		return c
	})
	if cerr != nil {
		return nil, cerr
	}
	out := make([]versConstraint, len(ps))
	prev := ""
	for i, p := range ps {
		out[i] = p.c
		switch p.c.op {
		case ">", ">=", "<", "<=":
			dir := p.c.op[:1]
			if dir == prev {
				return nil, fmt.Errorf("vers: two %s bounds in a row", dir)
			}
			prev = dir
		}
	}
	return out, nil
}

// versContains reports whether version lies in the vers range expr under
// ecosystem eco's ordering (purl-spec VERSION-RANGE-SPEC, "Checking if a
// version is contained within a range").
func versContains(eco, expr, ver string) (bool, error) {
	cons, star, err := parseVers(expr)
	if err != nil || star {
		return star, err
	}
	cons, err = sortVers(eco, cons)
	if err != nil {
		return false, err
	}
	v, err := parseVersion(eco, ver)
	if err != nil {
		return false, err
	}
	cmpTo := func(c versConstraint) (int, error) {
		w, err := parseVersion(eco, c.v)
		if err != nil {
			return 0, err
		}
		return v.compare(w)
	}
	sat := func(c versConstraint) (bool, error) {
		x, err := cmpTo(c)
		if err != nil {
			return false, err
		}
		switch c.op {
		case "=":
			return x == 0, nil
		case "!=":
			return x != 0, nil
		case "<":
			return x < 0, nil
		case "<=":
			return x <= 0, nil
		case ">":
			return x > 0, nil
		}
		return x >= 0, nil // ">="
	}
	// Step 1: an equal constraint contains the version, an unequal one
	// excludes it; both are then set aside.
	var bounds []versConstraint
	for _, c := range cons {
		switch c.op {
		case "=", "!=":
			x, err := cmpTo(c)
			if err != nil {
				return false, err
			}
			if x == 0 {
				return c.op == "=", nil
			}
		default:
			bounds = append(bounds, c)
		}
	}
	if len(bounds) == 0 {
		// Only "=" left: not equal to any. Only "!=": every other version.
		return !slices.ContainsFunc(cons, func(c versConstraint) bool { return c.op == "=" }), nil
	}
	// Step 2: walk the bounds; a leading upper bound, a trailing lower bound
	// and each lower-upper pair are intervals.
	for i, c := range bounds {
		lower := c.op[0] == '>'
		if i == 0 && !lower {
			if ok, err := sat(c); err != nil || ok {
				return ok, err
			}
		}
		if i == len(bounds)-1 && lower {
			if ok, err := sat(c); err != nil || ok {
				return ok, err
			}
		}
		if lower && i+1 < len(bounds) {
			ok1, err := sat(c)
			if err != nil {
				return false, err
			}
			ok2, err := sat(bounds[i+1])
			if err != nil {
				return false, err
			}
			if ok1 && ok2 {
				return true, nil
			}
		}
	}
	return false, nil
}

// versAffected turns a vers range into what an OSV affected block can say:
// an ECOSYSTEM range of one or more intervals and the versions named by "="
// constraints. Bounds that OSV events cannot express (">" and "!=") make it
// fail, as does an unparsable range; the caller then keeps the range on the
// VEX statement only.
func versAffected(eco, expr string) (*Range, []string, error) {
	cons, star, err := parseVers(expr)
	if err != nil {
		return nil, nil, err
	}
	if star {
		return &Range{Type: "ECOSYSTEM", Events: []Event{{Introduced: "0"}}}, nil, nil
	}
	cons, err = sortVers(eco, cons)
	if err != nil {
		return nil, nil, err
	}
	var (
		events   []Event
		versions []string
		bounds   []versConstraint
	)
	for _, c := range cons {
		switch c.op {
		case "=":
			versions = append(versions, c.v)
		case ">", "!=":
			return nil, nil, errNotInterval
		default:
			bounds = append(bounds, c)
		}
	}
	for i, c := range bounds {
		switch c.op {
		case ">=":
			events = append(events, Event{Introduced: c.v})
		case "<", "<=":
			if i == 0 {
				events = append(events, Event{Introduced: "0"})
			}
			if c.op == "<" {
				events = append(events, Event{Fixed: c.v})
			} else {
				events = append(events, Event{LastAffected: c.v})
			}
		}
	}
	if len(events) == 0 {
		return nil, versions, nil
	}
	return &Range{Type: "ECOSYSTEM", Events: events}, versions, nil
}
