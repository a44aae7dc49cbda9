package tuf

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Delegations of the image repository (TUF 5.6.7, Uptane 5.3.3): the top-level targets role
// delegates to at most 16 bin roles, each holding the products whose name hashes to it; a bin
// delegates each of its products to the product's own role, signed by the product's keys with
// a threshold. Bins are signed with the top-level targets keys, so the top-level targets name
// one key set for all of them. Every delegation is terminating and lists exact paths
// ("P/*/*"), so a device looking up one product's target reads the top-level targets, one bin
// and one product role, whatever the number of products.
const (
	productRolePrefix = "p."
	binRolePrefix     = "bin."
	// MaxDelegationDepth bounds a lookup's walk: top-level targets, bin, product.
	MaxDelegationDepth = 3
	// MaxVisitedRoles bounds the roles one lookup may visit (go-tuf's default is 32).
	MaxVisitedRoles = 32
)

// ProductRole names the delegated targets role of a product ("p.P"). The prefix keeps product
// roles apart from the top-level roles and from bins whatever the product is called.
func ProductRole(product string) string { return productRolePrefix + product }

// BinRole names the bin that delegates to a product: "bin." and the first hex digit of the
// SHA-256 of the product name.
func BinRole(product string) string {
	h := sha256.Sum256([]byte(product))
	return binRolePrefix + hex.EncodeToString(h[:1])[:1]
}

// ProductPaths are the target paths a product's role is trusted for: its images and their
// delta targets, all named "P/VERSION/FILE".
func ProductPaths(product string) []string { return []string{product + "/*/*"} }

// ProductKeyFile names the i-th (1-based) offline key of a product's role, in the keys folder
// next to targets.key.
func ProductKeyFile(product string, i int) string {
	return fmt.Sprintf("targets.%s.%d.key", product, i)
}

// IsBinRole and IsProductRole tell the kind of a delegated role by its name.
func IsBinRole(role string) bool {
	return len(role) > len(binRolePrefix) && role[:len(binRolePrefix)] == binRolePrefix
}

// IsProductRole reports whether role names a product's role.
func IsProductRole(role string) bool {
	return len(role) > len(productRolePrefix) && role[:len(productRolePrefix)] == productRolePrefix
}

// ErrDelegation is the error for a delegation graph that breaks Upkeep's rules or TUF's.
var ErrDelegation = errors.New("invalid delegation")

// LoadRole returns the current metadata of a delegated role (never "targets"), or an error. It
// returns the metadata unverified: Resolve verifies it against the delegator of the search.
type LoadRole func(role string) (*metadata.Metadata[metadata.TargetsType], error)

// Resolution is where Resolve found a target.
type Resolution struct {
	Target *metadata.TargetFiles
	Role   string   // the role that lists it
	Path   []string // the roles walked from "targets" to Role, both included
}

// ErrTargetNotFound is returned by Resolve for a target no trusted role lists.
var ErrTargetNotFound = errors.New("target not found")

// Resolve finds the target name through the delegations of top (the top-level targets, already
// verified against root), in TUF's pre-order depth-first order (TUF 5.6.7.2): a role that lists
// the name answers; otherwise its delegations whose paths match are searched in order, and a
// terminating one ends the search of the others. Every delegated role is verified against the
// delegator of the current search (threshold of its keys, TUF 5.6.6 and 5.6.7.2.1), never a copy
// trusted through another path; it must not have expired at now (a zero now skips the check).
// A role is visited once (a delegation loop ends there), the walk stops after MaxVisitedRoles.
func Resolve(top *metadata.Metadata[metadata.TargetsType], name string, load LoadRole, now time.Time) (*Resolution, error) {
	return walk(top, name, load, func(delegator *metadata.Metadata[metadata.TargetsType], role string, md *metadata.Metadata[metadata.TargetsType]) error {
		return verifyDelegated(delegator, role, md, now)
	})
}

// Find is Resolve over roles already verified when they were stored (the server's own copies):
// the same search, without checking signatures again.
func Find(top *metadata.Metadata[metadata.TargetsType], name string, load LoadRole) (*Resolution, error) {
	return walk(top, name, load, nil)
}

func walk(top *metadata.Metadata[metadata.TargetsType], name string, load LoadRole, verify func(delegator *metadata.Metadata[metadata.TargetsType], role string, md *metadata.Metadata[metadata.TargetsType]) error) (res *Resolution, err error) {
	defer guard("delegated targets", &err)
	type step struct {
		role     string
		delegate *metadata.Metadata[metadata.TargetsType] // the delegator, nil for top
		path     []string
	}
	stack := []step{{role: Targets, path: []string{Targets}}}
	visited := map[string]bool{}
	for len(stack) > 0 && len(visited) < MaxVisitedRoles {
		st := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if visited[st.role] {
			continue
		}
		md := top
		if st.delegate != nil {
			if md, err = load(st.role); err != nil {
				return nil, fmt.Errorf("load %s: %w", st.role, err)
			}
			if verify != nil {
				if err := verify(st.delegate, st.role, md); err != nil {
					return nil, err
				}
			}
		}
		if tf, ok := md.Signed.Targets[name]; ok {
			return &Resolution{Target: tf, Role: st.role, Path: st.path}, nil
		}
		visited[st.role] = true
		if md.Signed.Delegations == nil {
			continue
		}
		var children []step
		for _, r := range md.Signed.Delegations.GetRolesForTarget(name) {
			children = append(children, step{role: r.Name, delegate: md, path: append(slices.Clone(st.path), r.Name)})
			if r.Terminating {
				stack = nil
				break
			}
		}
		slices.Reverse(children)
		stack = append(stack, children...)
	}
	return nil, fmt.Errorf("%w: %s", ErrTargetNotFound, name)
}

// verifyDelegated checks a delegated role against its delegator: a threshold (at least one) of
// the delegated keys signed it, it is a targets role, and it has not expired at now.
func verifyDelegated(delegator *metadata.Metadata[metadata.TargetsType], role string, md *metadata.Metadata[metadata.TargetsType], now time.Time) error {
	dr := DelegatedRole(delegator, role)
	if dr == nil {
		return fmt.Errorf("%w: %s is not delegated", ErrDelegation, role)
	}
	if dr.Threshold < 1 {
		return fmt.Errorf("%w: %s has threshold %d", ErrDelegation, role, dr.Threshold)
	}
	if md.Signed.Type != metadata.TARGETS {
		return fmt.Errorf("%w: %s is a %s role", ErrDelegation, role, md.Signed.Type)
	}
	if err := delegator.VerifyDelegate(role, md); err != nil {
		return fmt.Errorf("%s not signed by a threshold of its delegated keys: %w", role, err)
	}
	if !now.IsZero() && md.Signed.IsExpired(now) {
		return &metadata.ErrExpiredMetadata{Msg: fmt.Sprintf("%s version %d expired at %s", role, md.Signed.Version, md.Signed.Expires.Format(time.RFC3339))}
	}
	return nil
}

// DelegatedRole returns delegator's delegation of role, or nil.
func DelegatedRole(delegator *metadata.Metadata[metadata.TargetsType], role string) *metadata.DelegatedRole {
	if delegator.Signed.Delegations == nil {
		return nil
	}
	for i, r := range delegator.Signed.Delegations.Roles {
		if r.Name == role {
			return &delegator.Signed.Delegations.Roles[i]
		}
	}
	return nil
}

// VerifyDelegatedTargets checks an uploaded delegated role against its delegator (TUF 5.6.6,
// 5.6.7.2.1): a threshold of the delegated keys, expiry at now (zero skips it), valid target
// names, and every target inside the paths delegated to it (a product key cannot sign another
// product's target).
func VerifyDelegatedTargets(delegator *metadata.Metadata[metadata.TargetsType], role string, data []byte, now time.Time) (*metadata.Metadata[metadata.TargetsType], error) {
	md, err := ParseTargets(data)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", role, err)
	}
	if err := VerifyDelegatedMetadata(delegator, role, md, now); err != nil {
		return nil, err
	}
	return md, nil
}

// VerifyDelegatedMetadata is VerifyDelegatedTargets for metadata already parsed.
func VerifyDelegatedMetadata(delegator *metadata.Metadata[metadata.TargetsType], role string, md *metadata.Metadata[metadata.TargetsType], now time.Time) (err error) {
	defer guard("delegated targets", &err)
	if err := verifyDelegated(delegator, role, md, now); err != nil {
		return err
	}
	dr := DelegatedRole(delegator, role)
	for name := range md.Signed.Targets {
		if err := ValidTargetName(name); err != nil {
			return err
		}
		if ok, _ := dr.IsDelegatedPath(name); !ok {
			return fmt.Errorf("%w: %s signs %s, outside its delegated paths %v", ErrDelegation, role, name, dr.Paths)
		}
	}
	return nil
}

// ParseTargets parses targets metadata without verifying it.
func ParseTargets(data []byte) (*metadata.Metadata[metadata.TargetsType], error) {
	return guarded("targets", func() (*metadata.Metadata[metadata.TargetsType], error) { return metadata.Targets().FromBytes(data) })
}

// Delegate sets delegator's delegation of role to keys with threshold and paths (terminating),
// replacing any earlier one in place or appending it; keys no role uses any more are dropped.
func Delegate(delegator *metadata.Metadata[metadata.TargetsType], role string, keys []*metadata.Key, threshold int, paths []string) error {
	if threshold < 1 || threshold > len(keys) {
		return fmt.Errorf("%w: threshold %d with %d keys for %s", ErrDelegation, threshold, len(keys), role)
	}
	if delegator.Signed.Delegations == nil {
		delegator.Signed.Delegations = &metadata.Delegations{Keys: map[string]*metadata.Key{}}
	}
	d := delegator.Signed.Delegations
	dr := metadata.DelegatedRole{Name: role, Threshold: threshold, Terminating: true, Paths: slices.Clone(paths)}
	for _, k := range keys {
		id, err := k.ID()
		if err != nil {
			return err
		}
		d.Keys[id] = k
		dr.KeyIDs = append(dr.KeyIDs, id)
	}
	if cur := DelegatedRole(delegator, role); cur != nil {
		*cur = dr
	} else {
		d.Roles = append(d.Roles, dr)
	}
	pruneKeys(d)
	return nil
}

// Undelegate removes role from delegator's delegations; it reports whether it was there.
func Undelegate(delegator *metadata.Metadata[metadata.TargetsType], role string) bool {
	d := delegator.Signed.Delegations
	if d == nil {
		return false
	}
	n := len(d.Roles)
	d.Roles = slices.DeleteFunc(d.Roles, func(r metadata.DelegatedRole) bool { return r.Name == role })
	pruneKeys(d)
	if len(d.Roles) == 0 {
		delegator.Signed.Delegations = nil
	}
	return len(d.Roles) != n
}

func pruneKeys(d *metadata.Delegations) {
	used := map[string]bool{}
	for _, r := range d.Roles {
		for _, id := range r.KeyIDs {
			used[id] = true
		}
	}
	for id := range d.Keys {
		if !used[id] {
			delete(d.Keys, id)
		}
	}
}

// Roles lists the delegated roles of md in order.
func Roles(md *metadata.Metadata[metadata.TargetsType]) []string {
	if md.Signed.Delegations == nil {
		return nil
	}
	out := make([]string, 0, len(md.Signed.Delegations.Roles))
	for _, r := range md.Signed.Delegations.Roles {
		out = append(out, r.Name)
	}
	return out
}
