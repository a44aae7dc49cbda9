package vuln

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// VEX is one exploitability statement: the status of a vulnerability in the
// package named by PURL.
type VEX struct {
	Vuln string // CVE or advisory id
	PURL string
	// Range, when set, limits the statement to the versions of PURL's
	// package inside this vers range (a CSAF product_version_range).
	Range string
	// Product, when set, limits the statement to the component as shipped
	// in this product (a purl, pkg:generic/<name>@<version> for a named
	// product): a CSAF relationship "x/crypto as part of thermostat 1.0".
	// It applies only to SBOMs whose subject is that product.
	Product       string
	Status        string // known_not_affected|known_affected|fixed|under_investigation
	Justification string
	Impact        string
	Source        string // document tracking id
}

// VEX statuses, as CSAF product_status names them.
const (
	VEXNotAffected        = "known_not_affected"
	VEXAffected           = "known_affected"
	VEXFixed              = "fixed"
	VEXUnderInvestigation = "under_investigation"
)

// Match statuses.
const (
	StatusAffected    = "affected"
	StatusNotAffected = "not_affected" // suppressed by VEX; Reason says why
	StatusUnmatched   = "unmatched"    // named, but no ordering to decide: never guessed
)

// Match is the verdict for one advisory against one component.
type Match struct {
	Advisory  *Advisory
	Component Component
	Status    string
	Reason    string
	Fixed     []string // fixed versions from the matching ranges, sorted, unique
}

// Index holds advisories and VEX statements keyed by (ecosystem, normalised
// package name), so that Match costs in proportion to the hits, not to the
// number of advisories. An Index is safe for concurrent use.
type Index struct {
	mu    sync.RWMutex
	byID  map[string]*Advisory
	byPkg map[pkgKey][]*entry
	vex   map[string][]vexEntry // upper-case vulnerability id → statements
}

type pkgKey struct{ eco, name string }

// entry is one affected package of one advisory, its ranges parsed once.
type entry struct {
	adv *Advisory
	aff *Affected
	pr  prepared
}

// NewIndex returns an empty Index.
func NewIndex() *Index {
	return &Index{byID: map[string]*Advisory{}, byPkg: map[pkgKey][]*entry{}, vex: map[string][]vexEntry{}}
}

// Len reports the number of advisories held, withdrawn ones included.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.byID)
}

// Add stores a, replacing an advisory with the same ID only if a.Modified is
// later, so re-importing a feed is idempotent and never rolls back. Withdrawn
// advisories are stored (to win against older copies) but never match.
func (ix *Index) Add(a *Advisory) {
	if a == nil || a.ID == "" {
		return
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if old, ok := ix.byID[a.ID]; ok {
		if !a.Modified.After(old.Modified) {
			return
		}
		ix.remove(old)
	}
	ix.byID[a.ID] = a
	if a.Withdrawn != nil {
		return
	}
	for i := range a.Affected {
		aff := &a.Affected[i]
		k := keyOf(aff.Ecosystem, aff.Name)
		ix.byPkg[k] = append(ix.byPkg[k], &entry{adv: a, aff: aff, pr: prepare(aff)})
	}
}

func (ix *Index) remove(old *Advisory) {
	for i := range old.Affected {
		k := keyOf(old.Affected[i].Ecosystem, old.Affected[i].Name)
		es := slices.DeleteFunc(ix.byPkg[k], func(e *entry) bool { return e.adv == old })
		if len(es) == 0 {
			delete(ix.byPkg, k)
		} else {
			ix.byPkg[k] = es
		}
	}
}

// AddVEX stores a VEX statement. Statements with an unparsable purl are kept
// but can only be matched by an identical purl string.
func (ix *Index) AddVEX(v VEX) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	k := strings.ToUpper(v.Vuln)
	ix.vex[k] = append(ix.vex[k], newVEXEntry(v))
}

// Match returns one Match for each (component, advisory) pair where the
// advisory names the component's package and the component's version is
// affected ("affected", or "not_affected" when a VEX statement suppresses it)
// or cannot be decided ("unmatched"). Results are ordered by component
// position, then advisory ID.
func (ix *Index) Match(components []Component) []Match {
	return ix.MatchIn(nil, components)
}

// MatchIn is Match for the components of an SBOM whose subject — the
// product they are shipped in — is named by subject (several names of one
// product: the SBOM's own subject, the release's product and version).
// Product-scoped VEX statements apply only when one of them is the
// statement's product; Match, with no subject, applies none of them.
func (ix *Index) MatchIn(subject []Component, components []Component) []Match {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var out []Match
	for _, c := range components {
		es := ix.byPkg[keyOf(c.Ecosystem, c.Name)]
		if len(es) == 0 {
			continue
		}
		start := len(out)
		ve := newVersionCache(c.Version)
		// Group the entries of one advisory: an advisory may list the same
		// package more than once (for example several affected blocks).
		byAdv := make(map[*Advisory]*verdict, len(es))
		var order []*Advisory
		for _, e := range es {
			if !sameRelease(e.aff.Ecosystem, c.Ecosystem) {
				continue
			}
			v := byAdv[e.adv]
			if v == nil {
				v = &verdict{}
				byAdv[e.adv] = v
				order = append(order, e.adv)
			}
			v.add(evaluate(e.aff, &e.pr, ve))
		}
		for _, a := range order {
			if m, ok := byAdv[a].match(a, c); ok {
				out = append(out, ix.applyVEX(m, subject))
			}
		}
		slices.SortFunc(out[start:], func(x, y Match) int { return strings.Compare(x.Advisory.ID, y.Advisory.ID) })
	}
	return out
}

func (ix *Index) applyVEX(m Match, subject []Component) Match {
	if m.Status != StatusAffected {
		return m
	}
	for _, id := range advisoryIDs(m.Advisory) {
		for _, v := range ix.vex[strings.ToUpper(id)] {
			if reason, ok := v.suppresses(m.Component, subject); ok {
				m.Status, m.Reason = StatusNotAffected, reason
				return m
			}
		}
	}
	return m
}

func advisoryIDs(a *Advisory) []string {
	return append([]string{a.ID}, a.Aliases...)
}

// NaiveMatch is the reference scan: every component against every affected
// package of every advisory, with no index and nothing parsed in advance.
// Withdrawn advisories are skipped, and of several advisories with one ID
// only the latest Modified counts, as in Index. It returns what Index.Match
// returns for the same input and serves as the test oracle and benchmark
// baseline.
func NaiveMatch(advs []*Advisory, vex []VEX, components []Component) []Match {
	return NaiveMatchIn(advs, vex, nil, components)
}

// NaiveMatchIn is NaiveMatch for an SBOM with a subject, as Index.MatchIn.
func NaiveMatchIn(advs []*Advisory, vex []VEX, subject []Component, components []Component) []Match {
	latest := map[string]*Advisory{}
	for _, a := range advs {
		if a == nil || a.ID == "" {
			continue
		}
		if old, ok := latest[a.ID]; !ok || a.Modified.After(old.Modified) {
			latest[a.ID] = a
		}
	}
	ves := make([]vexEntry, len(vex))
	for i, v := range vex {
		ves[i] = newVEXEntry(v)
	}
	live := make([]*Advisory, 0, len(latest))
	for _, a := range advs {
		if a != nil && latest[a.ID] == a && a.Withdrawn == nil {
			live = append(live, a)
		}
	}
	var out []Match
	for _, c := range components {
		start := len(out)
		ck := keyOf(c.Ecosystem, c.Name)
		for _, a := range live {
			var v verdict
			for i := range a.Affected {
				aff := &a.Affected[i]
				if baseEcosystem(aff.Ecosystem) != ck.eco || !sameRelease(aff.Ecosystem, c.Ecosystem) ||
					NormalizeName(aff.Ecosystem, aff.Name) != ck.name {
					continue
				}
				pr := prepare(aff)
				v.add(evaluate(aff, &pr, newVersionCache(c.Version)))
			}
			m, ok := v.match(a, c)
			if !ok {
				continue
			}
			if m.Status == StatusAffected {
			vexLoop:
				for _, id := range advisoryIDs(a) {
					for _, ve := range ves {
						if !strings.EqualFold(ve.v.Vuln, id) {
							continue
						}
						if reason, ok := ve.suppresses(c, subject); ok {
							m.Status, m.Reason = StatusNotAffected, reason
							break vexLoop
						}
					}
				}
			}
			out = append(out, m)
		}
		slices.SortStableFunc(out[start:], func(x, y Match) int { return strings.Compare(x.Advisory.ID, y.Advisory.ID) })
	}
	return out
}

func keyOf(eco, name string) pkgKey {
	return pkgKey{baseEcosystem(eco), NormalizeName(eco, name)}
}

// sameRelease: an advisory for "Debian:12" applies to a component of
// "Debian:12" or of plain "Debian" (release unknown); one for plain "Debian"
// applies to every release.
func sameRelease(advEco, compEco string) bool {
	if !strings.Contains(advEco, ":") || !strings.Contains(compEco, ":") {
		return true
	}
	return advEco == compEco
}

// outcome of one affected block for one version.
type outcome struct {
	affected   bool
	undecided  string // why it could not be decided, if so
	fixed      []string
	hasDecider bool // some range or the versions list could decide
}

// verdict folds the outcomes of one advisory's blocks for one component.
type verdict struct {
	affected  bool
	undecided string
	fixed     []string
	any       bool
}

func (v *verdict) add(o outcome) {
	v.any = true
	v.fixed = append(v.fixed, o.fixed...)
	if o.affected {
		v.affected = true
	}
	if o.undecided != "" && v.undecided == "" {
		v.undecided = o.undecided
	}
}

func (v *verdict) match(a *Advisory, c Component) (Match, bool) {
	if !v.any {
		return Match{}, false
	}
	m := Match{Advisory: a, Component: c}
	switch {
	case v.affected:
		m.Status = StatusAffected
		m.Fixed = uniqueSorted(v.fixed)
	case v.undecided != "":
		m.Status, m.Reason = StatusUnmatched, v.undecided
		m.Fixed = uniqueSorted(v.fixed)
	default:
		return Match{}, false
	}
	return m, true
}

func uniqueSorted(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

// prepared is an affected block's ranges with their event versions parsed.
type prepared struct {
	ranges []preparedRange
}

type preparedRange struct {
	typ       string
	unordered bool   // GIT or unknown type: commits have no order here
	order     string // ordering used: "SEMVER" or the ecosystem
	err       error  // ordering unavailable or an event version unparsable
	events    []preparedEvent
	limits    []version
	fixed     []string
}

type preparedEvent struct {
	kind byte // 'i' introduced, 'f' fixed, 'l' last_affected
	zero bool // introduced "0"
	v    version
}

func prepare(aff *Affected) prepared {
	var p prepared
	for _, r := range aff.Ranges {
		pr := preparedRange{typ: r.Type}
		for _, e := range r.Events {
			if e.Fixed != "" {
				pr.fixed = append(pr.fixed, e.Fixed)
			}
		}
		switch r.Type {
		case "SEMVER":
			pr.order = "SEMVER"
		case "ECOSYSTEM":
			pr.order = aff.Ecosystem
		default: // GIT and anything unknown: commits have no order here.
			pr.unordered = true
			p.ranges = append(p.ranges, pr)
			continue
		}
		for _, e := range r.Events {
			if err := pr.addEvent(e); err != nil {
				pr.err = err
				break
			}
		}
		if pr.err == nil {
			pr.err = sortEvents(pr.events)
		}
		p.ranges = append(p.ranges, pr)
	}
	return p
}

func (pr *preparedRange) addEvent(e Event) error {
	var (
		s    string
		kind byte
	)
	switch {
	case e.Introduced != "":
		s, kind = e.Introduced, 'i'
	case e.Fixed != "":
		s, kind = e.Fixed, 'f'
	case e.LastAffected != "":
		s, kind = e.LastAffected, 'l'
	case e.Limit != "":
		if e.Limit == "*" {
			return nil
		}
		v, err := parseVersion(pr.order, e.Limit)
		if err != nil {
			return err
		}
		pr.limits = append(pr.limits, v)
		return nil
	default:
		return nil
	}
	if kind == 'i' && s == "0" {
		pr.events = append(pr.events, preparedEvent{kind: kind, zero: true})
		return nil
	}
	v, err := parseVersion(pr.order, s)
	if err != nil {
		return err
	}
	pr.events = append(pr.events, preparedEvent{kind: kind, v: v})
	return nil
}

// sortEvents orders events by version, introduced "0" first (OSV schema,
// "Evaluation": sorted(range.events)). Events on the same version keep the
// record's own order (a stable sort): a record written as a timeline —
// fixed 3.1.1, then introduced 3.1.1, fixed 3.1.3 — reopens at 3.1.1, as the
// record's generated versions list implies, and [x, x) written in that order
// stays empty.
func sortEvents(es []preparedEvent) error {
	var cerr error
	slices.SortStableFunc(es, func(a, b preparedEvent) int {
		switch {
		case a.zero && b.zero:
			return 0
		case a.zero:
			return -1
		case b.zero:
			return 1
		}
		c, err := a.v.compare(b.v)
		if err != nil && cerr == nil {
			cerr = err
		}
		return c
	})
	return cerr
}

// versionCache parses a component's version once per ordering.
type versionCache struct {
	raw    string
	parsed map[string]version
	errs   map[string]error
}

func newVersionCache(raw string) *versionCache {
	return &versionCache{raw: raw}
}

func (vc *versionCache) get(order string) (version, error) {
	if v, ok := vc.parsed[order]; ok {
		return v, nil
	}
	if err, ok := vc.errs[order]; ok {
		return nil, err
	}
	v, err := parseVersion(order, vc.raw)
	if err != nil {
		if vc.errs == nil {
			vc.errs = map[string]error{}
		}
		vc.errs[order] = err
		return nil, err
	}
	if vc.parsed == nil {
		vc.parsed = map[string]version{}
	}
	vc.parsed[order] = v
	return v, nil
}

var errNoVersion = errors.New("component has no version")

// evaluate applies the OSV evaluation algorithm (schema §"Evaluation",
// IsVulnerable) to one affected block.
func evaluate(aff *Affected, pr *prepared, vc *versionCache) outcome {
	var o outcome
	if vc.raw != "" && slices.Contains(aff.Versions, vc.raw) {
		o.affected = true
	}
	for _, r := range pr.ranges {
		o.fixed = append(o.fixed, r.fixed...)
		if o.affected {
			continue
		}
		if r.unordered {
			// A versions list enumerates what a GIT range covers.
			if o.undecided == "" && len(aff.Versions) == 0 {
				o.undecided = fmt.Sprintf("%s range: no version order", rangeTypeName(r.typ))
			}
			continue
		}
		if r.err != nil {
			o.undecided = fmt.Sprintf("%s range: %v", r.typ, r.err)
			continue
		}
		if vc.raw == "" {
			o.undecided = errNoVersion.Error()
			continue
		}
		v, err := vc.get(r.order)
		if err != nil {
			o.undecided = fmt.Sprintf("%s range: %v", r.typ, err)
			continue
		}
		in, err := inRange(v, &r)
		if err != nil {
			o.undecided = fmt.Sprintf("%s range: %v", r.typ, err)
			continue
		}
		if in {
			o.affected = true
		}
	}
	if o.affected {
		o.undecided = ""
	}
	return o
}

func rangeTypeName(t string) string {
	if t == "" {
		return "untyped"
	}
	return t
}

func inRange(v version, r *preparedRange) (bool, error) {
	if len(r.limits) > 0 {
		before := false
		for _, l := range r.limits {
			c, err := v.compare(l)
			if err != nil {
				return false, err
			}
			if c < 0 {
				before = true
				break
			}
		}
		if !before {
			return false, nil
		}
	}
	vulnerable := false
	for _, e := range r.events {
		if e.zero {
			vulnerable = true
			continue
		}
		c, err := v.compare(e.v)
		if err != nil {
			return false, err
		}
		switch e.kind {
		case 'i':
			if c >= 0 {
				vulnerable = true
			}
		case 'f':
			if c >= 0 {
				vulnerable = false
			}
		case 'l':
			if c > 0 {
				vulnerable = false
			}
		}
	}
	return vulnerable, nil
}

// vexEntry is a VEX statement with its purls parsed once.
type vexEntry struct {
	v       VEX
	ok      bool // purl parsed
	key     pkgKey
	version string
	product *Component // parsed Product; nil if none or unparsable
}

func newVEXEntry(v VEX) vexEntry {
	e := vexEntry{v: v}
	c, err := ComponentFromPURL(v.PURL)
	if err == nil {
		e.ok = true
		e.key = keyOf(c.Ecosystem, c.Name)
		e.version = c.Version
	}
	if v.Product != "" {
		if p, err := ComponentFromPURL(v.Product); err == nil {
			e.product = &p
		}
	}
	return e
}

// inScope reports whether a statement applies to an SBOM with this subject:
// always for a statement with no product; otherwise one of the subject's
// names must be the product's package and, if the product has a version,
// have that version.
func (e vexEntry) inScope(subject []Component) bool {
	if e.v.Product == "" {
		return true
	}
	for _, s := range subject {
		if e.product == nil {
			if s.PURL == e.v.Product {
				return true
			}
			continue
		}
		if keyOf(s.Ecosystem, s.Name) != keyOf(e.product.Ecosystem, e.product.Name) {
			continue
		}
		if e.product.Version == "" || e.product.Version == s.Version {
			return true
		}
		if cv, err := Compare(s.Ecosystem, e.product.Version, s.Version); err == nil && cv == 0 {
			return true
		}
	}
	return false
}

// suppresses reports whether the statement marks c not affected, and why.
// The purl must name the same package (type, namespace and name; qualifiers
// and subpath are ignored); a purl with a version must also have the
// component's version, and a statement with a Range must contain it; a
// statement with a Product applies only in that product (inScope).
func (e vexEntry) suppresses(c Component, subject []Component) (string, bool) {
	if e.v.Status != VEXNotAffected && e.v.Status != VEXFixed {
		return "", false
	}
	if !e.covers(c, subject) {
		return "", false
	}
	return e.reason(), true
}

// covers reports whether the statement speaks of component c in an SBOM with this subject,
// whatever its status.
func (e vexEntry) covers(c Component, subject []Component) bool {
	if !e.inScope(subject) {
		return false
	}
	if e.v.PURL == "" && e.v.Product != "" {
		// A statement about the product as a whole (an analyst's "not affected in
		// thermostat 1.2.0"): every component of it.
		return true
	}
	if !e.ok {
		if e.v.PURL != c.PURL {
			return false
		}
	} else {
		if e.key != keyOf(c.Ecosystem, c.Name) {
			return false
		}
		if e.version != "" && e.version != c.Version {
			cv, err := Compare(c.Ecosystem, e.version, c.Version)
			if err != nil || cv != 0 {
				return false
			}
		}
	}
	if e.v.Range != "" {
		// A statement on a version range speaks only of the versions in it;
		// a version it cannot place is not suppressed.
		if in, err := versContains(c.Ecosystem, e.v.Range, c.Version); err != nil || !in {
			return false
		}
	}
	return true
}

// Statements returns the VEX statements, of any status, that speak of m's advisory (by id or
// alias) and component in an SBOM with this subject: known_affected and under_investigation
// statements annotate a finding they do not suppress.
func (ix *Index) Statements(m Match, subject []Component) []VEX {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var out []VEX
	for _, id := range advisoryIDs(m.Advisory) {
		for _, v := range ix.vex[strings.ToUpper(id)] {
			if v.covers(m.Component, subject) && !slices.Contains(out, v.v) {
				out = append(out, v.v)
			}
		}
	}
	return out
}

func (e vexEntry) reason() string {
	var b strings.Builder
	b.WriteString("VEX")
	if e.v.Source != "" {
		b.WriteString(" " + e.v.Source)
	}
	b.WriteString(": " + e.v.Vuln + " " + e.v.Status)
	if e.v.Product != "" {
		b.WriteString(" in " + e.v.Product)
	}
	if e.v.Justification != "" {
		b.WriteString(" (" + e.v.Justification + ")")
	}
	if e.v.Impact != "" {
		b.WriteString(": " + e.v.Impact)
	}
	return b.String()
}
