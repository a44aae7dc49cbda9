package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/wire"
)

// signingBase is the role a publication of a target extends, verified from the trusted root
// along the delegations: the product's role when the top-level targets delegate it (through
// its bin), else the top-level targets.
type signingBase struct {
	Role string
	T    *metadata.Metadata[metadata.TargetsType]
}

// baseFor fetches and verifies the role responsible for the target name. Every role on the way
// is checked against its delegator (threshold, paths, custom fields); expiry is not checked, as
// a new signature is what renews a role.
func (c *Client) baseFor(ctx context.Context, trusted []byte, name string) (*signingBase, error) {
	t, err := c.verifiedTargets(ctx, trusted)
	if err != nil {
		return nil, err
	}
	b := &signingBase{Role: tuf.Targets, T: t}
	for range tuf.MaxDelegationDepth {
		if b.T.Signed.Delegations == nil {
			break
		}
		rs := b.T.Signed.Delegations.GetRolesForTarget(name)
		if len(rs) == 0 {
			break
		}
		child, err := c.verifiedRole(ctx, b.T, rs[0].Name)
		if err != nil {
			return nil, err
		}
		b = &signingBase{Role: rs[0].Name, T: child}
	}
	return b, nil
}

// verifiedRole fetches the server's current version of a delegated role and verifies it
// against delegator.
func (c *Client) verifiedRole(ctx context.Context, delegator *metadata.Metadata[metadata.TargetsType], role string) (*metadata.Metadata[metadata.TargetsType], error) {
	raw, err := c.currentRole(ctx, role)
	if err != nil {
		return nil, err
	}
	md, err := tuf.VerifyDelegatedTargets(delegator, role, raw, time.Time{})
	if err == nil {
		err = uptane.CheckImageCustoms(md)
	}
	if err != nil {
		return nil, fmt.Errorf("the server's current %s does not verify against its delegator; refusing to sign on top of it: %w", role, err)
	}
	return md, nil
}

func (c *Client) currentRole(ctx context.Context, role string) ([]byte, error) {
	var raw []byte
	if err := c.Do(ctx, http.MethodGet, "/api/v1/image/targets?role="+url.QueryEscape(role), nil, &raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// nextStoredVersion is the version a role new to the graph starts at: one above any version
// the server ever stored under its name (versions only grow, TUF 5.6.5).
func (c *Client) nextStoredVersion(ctx context.Context, role string) (int64, error) {
	raw, err := c.currentRole(ctx, role)
	if apperr.Is(err, apperr.NotFound) {
		return 1, nil
	}
	if err != nil {
		return 0, err
	}
	md, err := tuf.ParseTargets(raw)
	if err != nil {
		return 0, err
	}
	return md.Signed.Version + 1, nil
}

// sign signs the base with the keys of its role: the targets key for the top-level targets,
// the product's keys for its role.
func (b *signingBase) sign(targetsKey *tuf.Key, productKeys []*tuf.Key) ([]byte, error) {
	if b.Role == tuf.Targets {
		if targetsKey == nil {
			return nil, fmt.Errorf("the top-level targets are to be signed: the offline targets key is needed")
		}
		return tuf.SignTargets(b.T, targetsKey)
	}
	if len(productKeys) == 0 {
		return nil, fmt.Errorf("the role %s is to be signed: its offline keys are needed (keys/%s)", b.Role, tuf.ProductKeyFile(b.Role[len("p."):], 1))
	}
	return tuf.SignTargets(b.T, productKeys...)
}

// DelegateOptions configure a delegation ceremony (`upkeep keys delegate`).
type DelegateOptions struct {
	Product     string
	TargetsKey  *tuf.Key // signs the top-level targets and the bins
	TrustedRoot []byte
	// Keys are the product's keys after the ceremony (a new product's, a rotation's new ones, or
	// the old ones when rotating back); all of them sign the product's role. Threshold is how
	// many devices require.
	Keys      []*tuf.Key
	Threshold int
	// Undo removes the product's delegation: its targets go back into the top-level targets.
	Undo    bool
	Expires time.Duration
}

// Delegate runs a delegation ceremony against the server's current image targets, verified from
// the trusted root: it delegates the product to its own role, signed by Keys with Threshold,
// through the product's bin (created if needed), moving the product's targets out of the
// top-level targets on first delegation; or it rotates the product's keys; or, with Undo, it
// moves the targets back and removes the delegation. It signs every changed role locally and
// uploads them together (PUT /api/v1/image/delegations). It returns the roles stored.
func (c *Client) Delegate(ctx context.Context, o DelegateOptions) ([]string, error) {
	if err := tuf.ValidIdent("product", o.Product); err != nil {
		return nil, err
	}
	if o.TargetsKey == nil {
		return nil, fmt.Errorf("the offline targets key is needed")
	}
	top, err := c.verifiedTargets(ctx, o.TrustedRoot)
	if err != nil {
		return nil, err
	}
	exp := time.Now().Add(o.Expires).UTC().Truncate(time.Second)
	binRole, prodRole := tuf.BinRole(o.Product), tuf.ProductRole(o.Product)
	var bin, prod *metadata.Metadata[metadata.TargetsType]
	if tuf.DelegatedRole(top, binRole) != nil {
		if bin, err = c.verifiedRole(ctx, top, binRole); err != nil {
			return nil, err
		}
		if tuf.DelegatedRole(bin, prodRole) != nil {
			if prod, err = c.verifiedRole(ctx, bin, prodRole); err != nil {
				return nil, err
			}
		}
	}
	out := map[string][]byte{}
	topChanged := false
	if o.Undo {
		if prod == nil {
			return nil, apperr.E(apperr.Invalid, "product %s is not delegated", o.Product)
		}
		for n, tf := range prod.Signed.Targets {
			top.Signed.Targets[n] = tf
		}
		tuf.Undelegate(bin, prodRole)
		if bin.Signed.Delegations == nil {
			tuf.Undelegate(top, binRole)
		} else {
			if err := tuf.Delegate(top, binRole, []*metadata.Key{o.TargetsKey.Public()}, 1, binPaths(bin)); err != nil {
				return nil, err
			}
			bin.Signed.Version++
			bin.Signed.Expires = exp
			if out[binRole], err = tuf.SignTargets(bin, o.TargetsKey); err != nil {
				return nil, err
			}
		}
		topChanged = true
	} else {
		if o.Threshold < 1 || o.Threshold > len(o.Keys) {
			return nil, fmt.Errorf("threshold %d with %d product keys", o.Threshold, len(o.Keys))
		}
		if bin == nil {
			bin = metadata.Targets(exp)
			if bin.Signed.Version, err = c.nextStoredVersion(ctx, binRole); err != nil {
				return nil, err
			}
		} else {
			bin.Signed.Version++
		}
		if prod == nil {
			prod = metadata.Targets(exp)
			if prod.Signed.Version, err = c.nextStoredVersion(ctx, prodRole); err != nil {
				return nil, err
			}
			// A first delegation moves the product's targets out of the top-level targets.
			for n, tf := range top.Signed.Targets {
				if slices.ContainsFunc(tuf.ProductPaths(o.Product), func(p string) bool { return pathMatch(p, n) }) {
					prod.Signed.Targets[n] = tf
					delete(top.Signed.Targets, n)
					topChanged = true
				}
			}
		} else {
			prod.Signed.Version++
		}
		prod.Signed.Expires, bin.Signed.Expires = exp, exp
		pubs := make([]*metadata.Key, len(o.Keys))
		for i, k := range o.Keys {
			pubs[i] = k.Public()
		}
		if err := tuf.Delegate(bin, prodRole, pubs, o.Threshold, tuf.ProductPaths(o.Product)); err != nil {
			return nil, err
		}
		if d := tuf.DelegatedRole(top, binRole); d == nil || !slices.Equal(d.Paths, binPaths(bin)) {
			if err := tuf.Delegate(top, binRole, []*metadata.Key{o.TargetsKey.Public()}, 1, binPaths(bin)); err != nil {
				return nil, err
			}
			topChanged = true
		}
		if out[prodRole], err = tuf.SignTargets(prod, o.Keys...); err != nil {
			return nil, err
		}
		if out[binRole], err = tuf.SignTargets(bin, o.TargetsKey); err != nil {
			return nil, err
		}
	}
	if topChanged {
		top.Signed.Version++
		top.Signed.Expires = exp
		if out[tuf.Targets], err = tuf.SignTargets(top, o.TargetsKey); err != nil {
			return nil, err
		}
	}
	req := wire.DelegationRequest{Roles: map[string]json.RawMessage{}}
	for r, b := range out {
		req.Roles[r] = b
	}
	var resp wire.DelegationResponse
	if err := c.Do(ctx, http.MethodPut, "/api/v1/image/delegations", req, &resp); err != nil {
		return nil, err
	}
	return resp.Stored, nil
}

// binPaths are the paths a bin is delegated: those of the products it delegates, in order.
func binPaths(bin *metadata.Metadata[metadata.TargetsType]) []string {
	var out []string
	if bin.Signed.Delegations == nil {
		return nil
	}
	for _, r := range bin.Signed.Delegations.Roles {
		out = append(out, r.Paths...)
	}
	return out
}

// pathMatch reports whether a delegation path pattern matches a target name, as TUF does.
func pathMatch(pattern, name string) bool {
	r := metadata.DelegatedRole{Paths: []string{pattern}}
	ok, _ := r.IsDelegatedPath(name)
	return ok
}
