package sso

import (
	"fmt"
	"strconv"
	"strings"

	"upkeep.dev/upkeep/internal/auth"
)

// Rule maps one value of one claim to a role: a user whose claim Claim is Value (a string
// claim) or holds Value (an array claim, such as groups) gets Role, limited to Groups (role
// deployer only).
type Rule struct {
	Claim, Value, Role string
	Groups             []string
}

func (r Rule) String() string {
	s := r.Claim + ":" + r.Value + "=" + r.Role
	if len(r.Groups) > 0 {
		s += ":" + strings.Join(r.Groups, "+")
	}
	return s
}

// ParseRoleMap reads the rules of --oidc-role-map: comma-separated CLAIM:VALUE=ROLE entries,
// where ROLE may be deployer:GROUP+GROUP for a deployer limited to device groups. The claim name
// ends at the first ':', the role starts after the last '=', so a value may hold ':' and '='
// (not ','). Example: "groups:release=release-manager,groups:eu-ops=deployer:eu+eu-lab".
func ParseRoleMap(s string) ([]Rule, error) {
	var out []Rule
	for _, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		claim, rest, ok := strings.Cut(entry, ":")
		i := strings.LastIndex(rest, "=")
		if !ok || claim == "" || i <= 0 {
			return nil, fmt.Errorf("role map entry %q: want CLAIM:VALUE=ROLE", entry)
		}
		r := Rule{Claim: claim, Value: rest[:i], Role: rest[i+1:]}
		if role, groups, ok := strings.Cut(r.Role, ":"); ok {
			r.Role = role
			r.Groups = strings.Split(groups, "+")
		}
		if !auth.ValidRole(r.Role) {
			return nil, fmt.Errorf("role map entry %q: role %q is not one of %v", entry, r.Role, auth.Roles)
		}
		if err := auth.CheckScope(r.Role, r.Groups); err != nil {
			return nil, fmt.Errorf("role map entry %q: %w", entry, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// Match returns the first rule whose claim holds its value, in the order written. A string claim
// matches when it equals the value; an array claim when one of its elements does; numbers and
// booleans are compared in their JSON form. Only top-level claims are looked at.
func Match(rules []Rule, claims map[string]any) (Rule, bool) {
	for _, r := range rules {
		if holds(claims[r.Claim], r.Value) {
			return r, true
		}
	}
	return Rule{}, false
}

func holds(v any, want string) bool {
	switch v := v.(type) {
	case string:
		return v == want
	case bool:
		return strconv.FormatBool(v) == want
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64) == want
	case []any:
		for _, e := range v {
			if _, nested := e.([]any); !nested && holds(e, want) {
				return true
			}
		}
	}
	return false
}
