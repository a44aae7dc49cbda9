package imagerepo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
)

// The image repository's targets are found through the delegations of the top-level targets
// (tuf.BinRole, tuf.ProductRole): everything on the server that reads an image target goes
// through Lookup or allTargets, never through the top-level targets alone. A product without a
// delegation keeps its targets in the top-level targets (a repository from before delegations).

// delegatedRole returns the latest stored version of a delegated role, parsed; the parsed copy
// is kept and the store asked again at most every timestampRecheck. Callers must not change it.
func (s *Service) delegatedRole(ctx context.Context, role string) (*metadata.Metadata[metadata.TargetsType], int64, error) {
	return s.delegatedRoleFrom(ctx, role, false)
}

// delegatedRoleFrom is delegatedRole; fresh asks the store even if the copy is recent.
func (s *Service) delegatedRoleFrom(ctx context.Context, role string, fresh bool) (*metadata.Metadata[metadata.TargetsType], int64, error) {
	now, gen := s.now(), s.gen.Load()
	if v, ok := s.roles.Load(role); ok && !fresh {
		if c := v.(*cachedTargets); s.current(c.gen, c.at, now) {
			return c.t, c.version, nil
		}
	}
	m, err := s.Store.LatestMetadata(ctx, RepoImage, role)
	if err != nil {
		return nil, 0, fmt.Errorf("load image role %s: %w", role, err)
	}
	if v, ok := s.roles.Load(role); ok {
		if c := v.(*cachedTargets); c.version == m.Version {
			s.roles.Store(role, &cachedTargets{t: c.t, version: c.version, at: now, gen: gen})
			return c.t, c.version, nil
		}
	}
	t, err := metadata.Targets().FromBytes(m.Body)
	if err != nil {
		return nil, 0, fmt.Errorf("parse stored image role %s: %w", role, err)
	}
	s.roles.Store(role, &cachedTargets{t: t, version: m.Version, at: now, gen: gen})
	return t, m.Version, nil
}

// loader reads delegated roles from the store for tuf.Resolve.
func (s *Service) loader(ctx context.Context) tuf.LoadRole {
	return func(role string) (*metadata.Metadata[metadata.TargetsType], error) {
		t, _, err := s.delegatedRole(ctx, role)
		return t, err
	}
}

// Lookup finds an image target through the delegations, in a device's search order (tuf.Find
// over the stored roles, each verified against its delegator when it was uploaded), and returns
// it with the role that lists it. Returns
// apperr.NotFound if no role lists it. The entry is shared: callers must not change it.
//
// A target missing from the copies kept here is looked for again in the store: it may have been
// published on another replica a moment ago, and an operator who deploys a release just
// published must not be told it does not exist.
func (s *Service) Lookup(ctx context.Context, name string) (*tuf.Resolution, error) {
	res, err := s.lookupFrom(ctx, name, false)
	if errors.Is(err, tuf.ErrTargetNotFound) {
		res, err = s.lookupFrom(ctx, name, true)
	}
	if errors.Is(err, tuf.ErrTargetNotFound) {
		return nil, apperr.E(apperr.NotFound, "target %s is not in the image repository", name)
	}
	return res, err
}

func (s *Service) lookupFrom(ctx context.Context, name string, fresh bool) (*tuf.Resolution, error) {
	top, err := s.imageTargetsFrom(ctx, fresh)
	if err != nil {
		return nil, err
	}
	load := s.loader(ctx)
	if fresh {
		load = func(role string) (*metadata.Metadata[metadata.TargetsType], error) {
			t, _, err := s.delegatedRoleFrom(ctx, role, true)
			return t, err
		}
	}
	return tuf.Find(top, name, load) // roles verified when stored
}

// tree is the delegation graph as stored: every reachable role with its latest metadata and
// version, and the delegator of each.
type tree struct {
	roles     map[string]*metadata.Metadata[metadata.TargetsType]
	versions  map[string]int64
	delegator map[string]string
}

// walkTree reads every role reachable from top (the top-level targets at version v), breadth
// first, each once. Upkeep's graph is a tree at most tuf.MaxDelegationDepth deep; uploads that
// break that are refused (checkTree).
func (s *Service) walkTree(ctx context.Context, top *metadata.Metadata[metadata.TargetsType], v int64, override map[string]*metadata.Metadata[metadata.TargetsType], fresh bool) (*tree, error) {
	tr := &tree{roles: map[string]*metadata.Metadata[metadata.TargetsType]{tuf.Targets: top}, versions: map[string]int64{tuf.Targets: v}, delegator: map[string]string{}}
	level := []string{tuf.Targets}
	for depth := 1; len(level) > 0; depth++ {
		var next []string
		for _, parent := range level {
			for _, role := range tuf.Roles(tr.roles[parent]) {
				if _, seen := tr.roles[role]; seen || role == tuf.Root || role == tuf.Snapshot || role == tuf.Timestamp {
					return nil, apperr.E(apperr.Invalid, "%v: role %s is delegated twice or is a top-level role", tuf.ErrDelegation, role)
				}
				if depth >= tuf.MaxDelegationDepth {
					return nil, apperr.E(apperr.Invalid, "%v: %s is deeper than %d levels", tuf.ErrDelegation, role, tuf.MaxDelegationDepth)
				}
				if md, ok := override[role]; ok {
					tr.roles[role], tr.versions[role] = md, md.Signed.Version
				} else {
					md, ver, err := s.delegatedRoleFrom(ctx, role, fresh)
					if err != nil {
						return nil, err
					}
					tr.roles[role], tr.versions[role] = md, ver
				}
				tr.delegator[role] = parent
				next = append(next, role)
			}
		}
		level = next
	}
	return tr, nil
}

// currentTree walks the delegation graph, from copies at most timestampRecheck old.
func (s *Service) currentTree(ctx context.Context) (*tree, error) { return s.treeFrom(ctx, false) }

// storedTree walks the delegation graph as the store holds it now.
func (s *Service) storedTree(ctx context.Context) (*tree, error) { return s.treeFrom(ctx, true) }

func (s *Service) treeFrom(ctx context.Context, fresh bool) (*tree, error) {
	top, err := s.imageTargetsFrom(ctx, fresh)
	if err != nil {
		return nil, err
	}
	return s.walkTree(ctx, top, top.Signed.Version, nil, fresh)
}

// targets lists every target a device can find, by name, with the role that lists it. A
// target listed by two roles is found where a device's search finds it.
func (tr *tree) targets() (map[string]*metadata.TargetFiles, map[string]string) {
	out, where := map[string]*metadata.TargetFiles{}, map[string]string{}
	var all []string
	for _, md := range tr.roles {
		for n := range md.Signed.Targets {
			all = append(all, n)
		}
	}
	load := func(role string) (*metadata.Metadata[metadata.TargetsType], error) {
		if md, ok := tr.roles[role]; ok {
			return md, nil
		}
		return nil, apperr.E(apperr.NotFound, "role %s", role)
	}
	for _, n := range all {
		if _, done := out[n]; done {
			continue
		}
		if res, err := tuf.Find(tr.roles[tuf.Targets], n, load); err == nil {
			out[n], where[n] = res.Target, res.Role
		}
	}
	return out, where
}

// cachedCatalogue is every target of one state of the tree (key: its roles' versions).
type cachedCatalogue struct {
	key  string
	all  map[string]*metadata.TargetFiles
	body []byte // Catalogue's document, made on first use
}

// catalogue returns every image target a device can find, computed once per state of the
// tree. Callers must not change it.
func (s *Service) catalogue(ctx context.Context) (*cachedCatalogue, error) {
	tr, err := s.currentTree(ctx)
	if err != nil {
		return nil, err
	}
	var key strings.Builder
	for _, role := range slices.Sorted(maps.Keys(tr.versions)) {
		fmt.Fprintf(&key, "%s=%d;", role, tr.versions[role])
	}
	if c := s.cat.Load(); c != nil && c.key == key.String() {
		return c, nil
	}
	all, _ := tr.targets()
	c := &cachedCatalogue{key: key.String(), all: all}
	s.cat.Store(c)
	return c, nil
}

// allTargets lists every image target a device can find. Callers must not change it.
func (s *Service) allTargets(ctx context.Context) (map[string]*metadata.TargetFiles, error) {
	c, err := s.catalogue(ctx)
	if err != nil {
		return nil, err
	}
	return c.all, nil
}

// Catalogue returns every image target a device can find, as one unsigned targets document:
// for readers of the targets' custom fields (exposure), which need not know the delegations.
// The same bytes are returned until the tree changes.
func (s *Service) Catalogue(ctx context.Context) ([]byte, error) {
	c, err := s.catalogue(ctx)
	if err != nil {
		return nil, err
	}
	s.catMu.Lock()
	defer s.catMu.Unlock()
	if c.body == nil {
		t := metadata.Targets(time.Time{})
		t.Signed.Targets = c.all
		if c.body, err = json.Marshal(t); err != nil {
			return nil, err
		}
	}
	return c.body, nil
}

// responsible walks from the top-level targets to the role that a device's search for name
// would end in: the deepest delegated role whose paths match (the first, delegations being
// terminating), or "targets" when no delegation matches. It returns the role and its delegator
// (nil for "targets").
func (s *Service) responsible(ctx context.Context, name string, fresh bool) (string, *metadata.Metadata[metadata.TargetsType], error) {
	top, err := s.imageTargetsFrom(ctx, fresh)
	if err != nil {
		return "", nil, err
	}
	role, md := tuf.Targets, top
	var delegator *metadata.Metadata[metadata.TargetsType]
	for range tuf.MaxDelegationDepth {
		if md.Signed.Delegations == nil {
			break
		}
		rs := md.Signed.Delegations.GetRolesForTarget(name)
		if len(rs) == 0 {
			break
		}
		child, _, err := s.delegatedRoleFrom(ctx, rs[0].Name, fresh)
		if err != nil {
			return "", nil, err
		}
		role, delegator, md = rs[0].Name, md, child
	}
	return role, delegator, nil
}

// nextRole checks a delegated role signed offline as the successor of the stored one: verified
// against its delegator in the current graph (threshold, paths, expiry, custom fields),
// exactly one version newer, not expired, keeping every existing target unchanged, and
// delegating nothing (product roles are leaves). It returns the new and the current role.
func (s *Service) nextRole(ctx context.Context, role string, delegator *metadata.Metadata[metadata.TargetsType], data []byte, rule string) (next, cur *metadata.Metadata[metadata.TargetsType], err error) {
	cur, curVersion, err := s.delegatedRoleFrom(ctx, role, true) // the store's, not this replica's copy
	if err != nil {
		return nil, nil, err
	}
	next, err = tuf.VerifyDelegatedTargets(delegator, role, data, s.now())
	if err == nil {
		err = uptane.CheckImageCustoms(next)
	}
	if err != nil {
		return nil, nil, apperr.Wrap(apperr.Verification, err, role+" metadata refused: "+err.Error()+
			" (the product is delegated to its own keys: `upkeep release publish` signs with them, keys/"+tuf.ProductKeyFile(strings.TrimPrefix(role, "p."), 1)+")")
	}
	if next.Signed.Version != curVersion+1 {
		return nil, nil, apperr.E(apperr.Conflict, "%s version %d, but the server has %d: fetch the current role and sign version %d", role, next.Signed.Version, curVersion, curVersion+1)
	}
	if next.Signed.Delegations != nil && len(next.Signed.Delegations.Roles)+boolInt(next.Signed.Delegations.SuccinctRoles != nil) > 0 {
		return nil, nil, apperr.E(apperr.Invalid, "%v: product role %s may not delegate", tuf.ErrDelegation, role)
	}
	for n, old := range cur.Signed.Targets {
		nt, ok := next.Signed.Targets[n]
		if !ok || !nt.Equal(*old) || !sameCustom(nt, old) {
			return nil, nil, apperr.E(apperr.Invalid, "published target %s was removed or changed; %s", n, rule)
		}
	}
	return next, cur, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// CurrentRole returns the latest version of a role of the image repository's targets ("targets"
// or a delegated role), for the release CLI to extend. Returns apperr.NotFound for an unknown
// role.
func (s *Service) CurrentRole(ctx context.Context, role string) ([]byte, error) {
	if role != tuf.Targets && !tuf.IsBinRole(role) && !tuf.IsProductRole(role) {
		return nil, apperr.E(apperr.NotFound, "no targets role %s", role)
	}
	m, err := s.Store.LatestMetadata(ctx, RepoImage, role)
	if err != nil {
		return nil, err
	}
	return m.Body, nil
}

// Delegate accepts the offline-signed metadata of a delegation ceremony (`upkeep keys
// delegate`): a new top-level targets and/or bin and product roles, by role name, each exactly
// one version newer than the stored one (a new role: any version above every version ever
// stored under its name). The resulting graph must be a tree of targets, bins and products, each
// role verified against its new delegator (threshold of at least one, paths; an uploaded role
// must not have expired), and must let devices find exactly the targets they found before,
// unchanged: a ceremony moves
// targets between roles (a product's first delegation, its undoing) but never publishes or
// removes one. Roles are stored leaves first, the top-level targets last.
func (s *Service) Delegate(ctx context.Context, uploads map[string][]byte) ([]string, error) {
	if len(uploads) == 0 {
		return nil, apperr.E(apperr.Invalid, "no metadata to accept")
	}
	root, err := s.root(ctx)
	if err != nil {
		return nil, err
	}
	cur, err := s.storedTree(ctx)
	if err != nil {
		return nil, err
	}
	parsed := map[string]*metadata.Metadata[metadata.TargetsType]{}
	top := cur.roles[tuf.Targets]
	topVersion := cur.versions[tuf.Targets]
	if data, ok := uploads[tuf.Targets]; ok {
		if top, err = uptane.VerifyImageTargets(root, data, s.now()); err != nil {
			return nil, apperr.Wrap(apperr.Verification, err, "targets metadata refused: "+err.Error())
		}
		if top.Signed.Version != topVersion+1 {
			return nil, apperr.E(apperr.Conflict, "targets version %d, but the server has %d", top.Signed.Version, topVersion)
		}
		topVersion = top.Signed.Version
	}
	for role, data := range uploads {
		if role == tuf.Targets {
			continue
		}
		if !tuf.IsBinRole(role) && !tuf.IsProductRole(role) {
			return nil, apperr.E(apperr.Invalid, "%v: %s is neither a bin nor a product role", tuf.ErrDelegation, role)
		}
		md, err := tuf.ParseTargets(data)
		if err != nil {
			return nil, apperr.Wrap(apperr.Invalid, err, "parse "+role+": "+err.Error())
		}
		last, err := s.Store.LatestMetadata(ctx, RepoImage, role)
		switch {
		case err == nil && md.Signed.Version <= last.Version:
			return nil, apperr.E(apperr.Conflict, "%s version %d, but the server has %d", role, md.Signed.Version, last.Version)
		case err == nil && cur.versions[role] != 0 && md.Signed.Version != last.Version+1:
			return nil, apperr.E(apperr.Conflict, "%s version %d, want %d", role, md.Signed.Version, last.Version+1)
		case err != nil && !apperr.Is(err, apperr.NotFound):
			return nil, err
		}
		parsed[role] = md
	}
	next, err := s.walkTree(ctx, top, topVersion, parsed, true)
	if err != nil {
		return nil, err
	}
	for role := range parsed {
		if _, ok := next.roles[role]; !ok {
			return nil, apperr.E(apperr.Invalid, "%v: uploaded role %s is not delegated", tuf.ErrDelegation, role)
		}
	}
	// Every role of the new graph verifies against its delegator: uploaded ones with their new
	// signatures, and kept ones, whose delegator may have changed keys.
	for role, parent := range next.delegator {
		md := next.roles[role]
		var at time.Time // a kept role is checked as stored; an uploaded one must not have expired
		if _, ok := parsed[role]; ok {
			at = s.now()
		}
		err := tuf.VerifyDelegatedMetadata(next.roles[parent], role, md, at)
		if err == nil {
			err = uptane.CheckImageCustoms(md)
		}
		if err != nil {
			return nil, apperr.Wrap(apperr.Verification, err, role+" refused: "+err.Error())
		}
		if tuf.IsBinRole(role) && len(md.Signed.Targets) > 0 {
			return nil, apperr.E(apperr.Invalid, "%v: bin %s lists targets; bins only delegate", tuf.ErrDelegation, role)
		}
		if tuf.IsProductRole(role) && md.Signed.Delegations != nil {
			return nil, apperr.E(apperr.Invalid, "%v: product role %s may not delegate", tuf.ErrDelegation, role)
		}
	}
	before, _ := cur.targets()
	after, _ := next.targets()
	for n, old := range before {
		nt, ok := after[n]
		if !ok || !nt.Equal(*old) || !sameCustom(nt, old) {
			return nil, apperr.E(apperr.Invalid, "target %s would no longer be found unchanged: a delegation moves targets, it never removes or changes one", n)
		}
	}
	if len(after) != len(before) {
		return nil, apperr.E(apperr.Invalid, "the delegation would publish %d new targets: publish releases with `upkeep release publish`", len(after)-len(before))
	}
	// Leaves first: until the top-level targets are stored, devices still walk the old graph.
	order := slices.Sorted(maps.Keys(parsed))
	sort.SliceStable(order, func(i, j int) bool { return tuf.IsProductRole(order[i]) && !tuf.IsProductRole(order[j]) })
	if _, ok := uploads[tuf.Targets]; ok {
		order = append(order, tuf.Targets)
	}
	for _, role := range order {
		md := top
		if role != tuf.Targets {
			md = parsed[role]
		}
		if err := s.Store.PutMetadata(ctx, &Meta{Repo: RepoImage, Role: role, Version: md.Signed.Version, Body: uploads[role], Expires: md.Signed.Expires}); err != nil {
			if apperr.Is(err, apperr.Conflict) {
				return nil, apperr.E(apperr.Conflict, "%s version %d was stored concurrently; sign again", role, md.Signed.Version)
			}
			return nil, err
		}
		s.roles.Delete(role)
	}
	s.invalidate()
	s.logger().Info("image delegations changed", "roles", order)
	if err := s.Refresh(ctx, true); err != nil {
		return nil, err
	}
	return order, nil
}
