package exposure

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/event"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/product"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/internal/vuln"
	"upkeep.dev/upkeep/wire"
)

// MaxImportBytes bounds one upload to the advisory import (an osv.dev all.zip of a large
// ecosystem is tens of MiB).
const MaxImportBytes = 256 << 20

// importBatch is how many advisories are stored per transaction.
const importBatch = 1000

// Service holds the vulnerability index and answers exposure and time-to-patch questions from
// the stores. The index lives in memory: Load fills it from the store at start, and every import
// updates it, so a new SBOM, advisory or VEX statement changes the next answer. Servers sharing
// a database see each other's imports through Refresh, which reloads the index when the store's
// generation moved. A Service is safe for concurrent use.
type Service struct {
	Store    Store
	Devices  fleet.Store
	Releases release.Store
	// Targets returns every image target devices can find (imagerepo.Service.Catalogue), which
	// the server verified when it was published: each release's signed custom is read from it.
	Targets func(ctx context.Context) ([]byte, error)
	Now     func() time.Time
	Logger  *slog.Logger
	// Events, if set, is told of new exposures (Import).
	Events event.Emitter
	// Products holds each product's policy, whose release gate (gate_kev, gate_severity)
	// CheckRelease, GatePublish and GateRelease apply; nil: no product has a gate.
	Products product.Store

	importMu sync.Mutex // serialises imports and index rebuilds

	mu      sync.Mutex
	index   *vuln.Index
	gen     uint64                     // bumped on every change of the index
	dbGen   int64                      // the store's VulnGeneration that the index reflects
	advs    map[string]*StoredAdvisory // upper-case id → newest copy
	aliases map[string][]string        // upper-case alias → ids
	comps   map[string][]vuln.Component
	matches map[string]cachedMatches // product@version → matches
	exploit *exploitData
	customs struct {
		sum [sha256.Size]byte
		m   map[string]uptane.TargetCustom
	}

	reported sync.Map // device id → the installed target last recorded
}

type cachedMatches struct {
	digest string
	gen    uint64
	ms     []vuln.Match
	// byAdvisory indexes ms: lower-case advisory id → positions, so that a verdict reads the
	// matches of its advisory only instead of all of them (the exposure report asks for one per
	// release and advisory: with thousands of advisories and a hundred releases, scanning every
	// match each time took seconds).
	byAdvisory map[string][]int
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

func (s *Service) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// Load (re)builds the in-memory index from the store.
func (s *Service) Load(ctx context.Context) error {
	s.importMu.Lock()
	defer s.importMu.Unlock()
	return s.load(ctx)
}

func (s *Service) load(ctx context.Context) error {
	// Read the generation first: a change made while loading leaves it behind, and the next
	// Refresh loads again.
	dbGen, err := s.Store.VulnGeneration(ctx)
	if err != nil {
		return fmt.Errorf("load advisories: %w", err)
	}
	ix := vuln.NewIndex()
	advs := map[string]*StoredAdvisory{}
	aliases := map[string][]string{}
	err = s.Store.FindAdvisories(ctx, func(a StoredAdvisory) error {
		ix.Add(a.Advisory)
		remember(advs, aliases, &a)
		return nil
	})
	if err != nil {
		return fmt.Errorf("load advisories: %w", err)
	}
	vs, err := s.Store.FindVEX(ctx)
	if err != nil {
		return fmt.Errorf("load VEX: %w", err)
	}
	for _, v := range vs {
		ix.AddVEX(v)
	}
	ts, err := s.Store.FindTriage(ctx, "")
	if err != nil {
		return fmt.Errorf("load VEX triage: %w", err)
	}
	for _, t := range ts {
		ix.AddVEX(triageVEX(t))
	}
	ex, err := loadExploitData(ctx, s.Store)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.exploit = ex
	s.index, s.advs, s.aliases = ix, advs, aliases
	s.gen++
	s.dbGen = dbGen
	s.mu.Unlock()
	return nil
}

// Refresh reloads the index if the store's generation is not the one the index reflects:
// another server sharing the database imported advisories or VEX statements. When nothing
// changed it costs one small query; callers run it every few seconds. It reports whether it
// reloaded.
func (s *Service) Refresh(ctx context.Context) (bool, error) {
	g, err := s.Store.VulnGeneration(ctx)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	current := s.index != nil && g == s.dbGen
	s.mu.Unlock()
	if current {
		return false, nil
	}
	s.importMu.Lock()
	defer s.importMu.Unlock()
	s.mu.Lock()
	current = s.index != nil && g == s.dbGen // an import or load here may have caught up
	s.mu.Unlock()
	if current {
		return false, nil
	}
	return true, s.load(ctx)
}

// ownChange records that this Service's own import moved the store's generation by one (the
// index already has the change): if the generation is now exactly one more than the index
// reflects, nobody else changed the store and no reload is needed. Otherwise the next Refresh
// reloads. Called with importMu held, after a Put that changed something.
func (s *Service) ownChange(ctx context.Context) {
	g, err := s.Store.VulnGeneration(ctx)
	if err != nil {
		return
	}
	s.mu.Lock()
	if g == s.dbGen+1 {
		s.dbGen = g
	}
	s.mu.Unlock()
}

// remember keeps a's newest copy by id and its aliases.
func remember(advs map[string]*StoredAdvisory, aliases map[string][]string, a *StoredAdvisory) {
	id := strings.ToUpper(a.Advisory.ID)
	if old, ok := advs[id]; ok {
		if !a.Advisory.Modified.After(old.Advisory.Modified) {
			return
		}
		if a.FirstSeen.IsZero() || old.FirstSeen.Before(a.FirstSeen) {
			a.FirstSeen = old.FirstSeen
		}
	}
	advs[id] = a
	for _, al := range a.Advisory.Aliases {
		k := strings.ToUpper(al)
		if !slices.Contains(aliases[k], a.Advisory.ID) {
			aliases[k] = append(aliases[k], a.Advisory.ID)
		}
	}
}

func (s *Service) state() (*vuln.Index, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.index == nil {
		s.index, s.advs, s.aliases = vuln.NewIndex(), map[string]*StoredAdvisory{}, map[string][]string{}
	}
	return s.index, s.gen
}

// Advisory finds what is known of a vulnerability by id or alias (case-insensitive): every
// record not withdrawn whose ID is id or that lists id as an alias, merged into one. Several
// records speak of one vulnerability when several sources (OSV databases, vendors' CSAF
// documents) describe it, and a lookup must not depend on which one was imported last. The
// merged advisory has the exact-id record's ID if there is one (else id as a record spells it),
// every other id and alias of the records as Aliases, the highest severity, the earliest
// publication and first import, and all the records' affected packages. Returns
// apperr.NotFound if none is known.
func (s *Service) Advisory(id string) (*StoredAdvisory, error) {
	s.state()
	s.mu.Lock()
	defer s.mu.Unlock()
	k := strings.ToUpper(id)
	var members []*StoredAdvisory
	if a, ok := s.advs[k]; ok && a.Advisory.Withdrawn == nil {
		members = append(members, a)
	}
	for _, other := range slices.Sorted(slices.Values(s.aliases[k])) {
		if a, ok := s.advs[strings.ToUpper(other)]; ok && a.Advisory.Withdrawn == nil && !slices.Contains(members, a) {
			members = append(members, a)
		}
	}
	if len(members) == 0 {
		return nil, apperr.E(apperr.NotFound, "advisory %s is not known to this server: import it with `upkeep advisories import`", id)
	}
	if len(members) == 1 {
		return members[0], nil
	}
	return mergeAdvisories(id, members), nil
}

// vulnGroup is every record that speaks of the same vulnerability as the record id: the records
// linked to it by ids and aliases, transitively (GO-2023-2402 lists CVE-2023-48795, which
// GHSA-45x7-px36-x8w8 lists too), withdrawn ones left out, merged as Advisory does. Its ID is
// that of the record with the highest severity (then the smallest id), so that one
// vulnerability gives one row wherever it is found. Nil if id is not a live record.
func (s *Service) vulnGroup(id string) *StoredAdvisory {
	s.state()
	s.mu.Lock()
	defer s.mu.Unlock()
	start, ok := s.advs[strings.ToUpper(id)]
	if !ok || start.Advisory.Withdrawn != nil {
		return nil
	}
	var members []*StoredAdvisory
	seenRec := map[*StoredAdvisory]bool{}
	seenName := map[string]bool{}
	queue := []*StoredAdvisory{start}
	seenRec[start] = true
	for len(queue) > 0 && len(members) < maxGroup {
		a := queue[0]
		queue = queue[1:]
		members = append(members, a)
		for _, n := range append([]string{a.Advisory.ID}, a.Advisory.Aliases...) {
			k := strings.ToUpper(n)
			if seenName[k] {
				continue
			}
			seenName[k] = true
			linked := slices.Clone(s.aliases[k])
			linked = append(linked, k)
			for _, other := range linked {
				if b, ok := s.advs[strings.ToUpper(other)]; ok && b.Advisory.Withdrawn == nil && !seenRec[b] {
					seenRec[b] = true
					queue = append(queue, b)
				}
			}
		}
	}
	if len(members) == 1 {
		return members[0]
	}
	slices.SortFunc(members, func(x, y *StoredAdvisory) int {
		if c := severityRank(y.Advisory.Severity) - severityRank(x.Advisory.Severity); c != 0 {
			return c
		}
		return strings.Compare(x.Advisory.ID, y.Advisory.ID)
	})
	return mergeAdvisories(members[0].Advisory.ID, members)
}

// maxGroup bounds a group of records about one vulnerability (a feed that aliases everything to
// everything must not make one row of the whole database).
const maxGroup = 64

// mergeAdvisories is the union of records about one vulnerability, looked up as id; members[0]
// is the exact-id record if there is one.
func mergeAdvisories(id string, members []*StoredAdvisory) *StoredAdvisory {
	first := members[0].Advisory
	m := *first
	m.Affected = nil
	if !strings.EqualFold(first.ID, id) {
		m.ID = id
		for _, al := range first.Aliases {
			if strings.EqualFold(al, id) {
				m.ID = al
			}
		}
	}
	out := &StoredAdvisory{Advisory: &m, FirstSeen: members[0].FirstSeen}
	if first.SeveritySource != "" {
		out.SeverityFrom = first.ID + " " + first.SeveritySource
	}
	seen := map[string]bool{strings.ToUpper(m.ID): true}
	var aliases []string
	for _, sa := range members {
		a := sa.Advisory
		for _, x := range append([]string{a.ID}, a.Aliases...) {
			if u := strings.ToUpper(x); !seen[u] {
				seen[u] = true
				aliases = append(aliases, x)
			}
		}
		if severityRank(a.Severity) > severityRank(m.Severity) {
			m.Severity = a.Severity
			out.SeverityFrom = a.ID + " " + a.SeveritySource
		}
		if !a.Published.IsZero() && (m.Published.IsZero() || a.Published.Before(m.Published)) {
			m.Published = a.Published
		}
		if a.Modified.After(m.Modified) {
			m.Modified = a.Modified
		}
		if !sa.FirstSeen.IsZero() && sa.FirstSeen.Before(out.FirstSeen) {
			out.FirstSeen = sa.FirstSeen
		}
		m.Affected = append(m.Affected, a.Affected...)
	}
	slices.Sort(aliases)
	m.Aliases = aliases
	return out
}

// names reports whether id is a's ID or one of its aliases (case-insensitive).
func names(a *vuln.Advisory, id string) bool {
	return strings.EqualFold(a.ID, id) || slices.ContainsFunc(a.Aliases, func(al string) bool { return strings.EqualFold(al, id) })
}

// published is the advisory's publication time, or when this server first imported it.
func published(a *StoredAdvisory) time.Time {
	if !a.Advisory.Published.IsZero() {
		return a.Advisory.Published.UTC()
	}
	return a.FirstSeen.UTC()
}

// ---- SBOMs ----

// PutSBOM parses raw (vuln.ParseSBOM) and stores it as the SBOM of product@version. If the
// release's signed target names an SBOM digest (sbom_sha256), only that SBOM is accepted:
// apperr.Verification otherwise.
func (s *Service) PutSBOM(ctx context.Context, product, version string, raw []byte) (*SBOM, error) {
	rel, err := s.Releases.FindRelease(ctx, product, version)
	if err != nil {
		return nil, err
	}
	sb, err := vuln.ParseSBOM(raw)
	if err != nil {
		return nil, apperr.Wrap(apperr.Invalid, err, "SBOM refused: "+err.Error()+" (want CycloneDX 1.2–1.6 or SPDX 2.2–2.3 JSON)")
	}
	c, err := s.custom(ctx, rel.Target)
	if err != nil {
		return nil, err
	}
	if c.SBOM != "" && !strings.EqualFold(c.SBOM, sb.Digest) {
		return nil, apperr.E(apperr.Verification, "the signed target of %s names SBOM sha256 %s, but this file has sha256 %s: it is not the SBOM of this release", rel.Ref(), c.SBOM, sb.Digest)
	}
	out := &SBOM{Product: product, Version: version, Format: sb.Format, Digest: sb.Digest, Signed: c.SBOM != "",
		Components: sb.Components, UploadedAt: s.now()}
	if sb.Subject != nil {
		out.Subject = sb.Subject.PURL
	}
	if err := s.Store.PutSBOM(ctx, out); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.comps == nil {
		s.comps = map[string][]vuln.Component{}
	}
	s.comps[out.Digest] = out.Components
	s.mu.Unlock()
	return out, nil
}

// custom returns the signed custom of an image target, from the current targets metadata.
func (s *Service) custom(ctx context.Context, target string) (uptane.TargetCustom, error) {
	if s.Targets == nil {
		return uptane.TargetCustom{}, nil
	}
	raw, err := s.Targets(ctx)
	if err != nil {
		return uptane.TargetCustom{}, fmt.Errorf("current targets: %w", err)
	}
	sum := sha256.Sum256(raw)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.customs.m == nil || s.customs.sum != sum {
		md, err := metadata.Targets().FromBytes(raw)
		if err != nil {
			return uptane.TargetCustom{}, fmt.Errorf("current targets: %w", err)
		}
		m := make(map[string]uptane.TargetCustom, len(md.Signed.Targets))
		for name, tf := range md.Signed.Targets {
			if c, err := uptane.ParseTargetCustom(tf); err == nil {
				m[name] = c
			}
		}
		s.customs.sum, s.customs.m = sum, m
	}
	return s.customs.m[target], nil
}

// components returns an SBOM's components, read once per digest.
func (s *Service) components(ctx context.Context, sb *SBOM) ([]vuln.Component, error) {
	s.mu.Lock()
	cs, ok := s.comps[sb.Digest]
	s.mu.Unlock()
	if ok {
		return cs, nil
	}
	full, err := s.Store.FindSBOM(ctx, sb.Product, sb.Version)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.comps == nil {
		s.comps = map[string][]vuln.Component{}
	}
	s.comps[full.Digest] = full.Components
	s.mu.Unlock()
	return full.Components, nil
}

// releaseMatches matches a release's SBOM against the current index; the result is cached per
// release by (SBOM digest, index generation).
func (s *Service) releaseMatches(ctx context.Context, sb *SBOM) ([]vuln.Match, error) {
	c, err := s.releaseIndex(ctx, sb)
	return c.ms, err
}

// releaseIndex is releaseMatches with the matches indexed by advisory.
func (s *Service) releaseIndex(ctx context.Context, sb *SBOM) (cachedMatches, error) {
	ix, gen := s.state()
	key := sb.Product + "@" + sb.Version
	s.mu.Lock()
	c, ok := s.matches[key]
	s.mu.Unlock()
	if ok && c.digest == sb.Digest && c.gen == gen {
		return c, nil
	}
	cs, err := s.components(ctx, sb)
	if err != nil {
		return cachedMatches{}, err
	}
	ms := ix.MatchIn(subject(sb), cs)
	c = cachedMatches{digest: sb.Digest, gen: gen, ms: ms, byAdvisory: map[string][]int{}}
	for i, m := range ms {
		k := strings.ToLower(m.Advisory.ID)
		c.byAdvisory[k] = append(c.byAdvisory[k], i)
	}
	s.mu.Lock()
	if s.matches == nil {
		s.matches = map[string]cachedMatches{}
	}
	s.matches[key] = c
	s.mu.Unlock()
	return c, nil
}

// subject names the product an SBOM's components are shipped in, for product-scoped VEX
// statements: the SBOM's own subject and the release's product at its version.
func subject(sb *SBOM) []vuln.Component {
	var out []vuln.Component
	if c, err := vuln.ComponentFromPURL(sb.Subject); err == nil {
		out = append(out, c)
	}
	if c, err := vuln.ComponentFromPURL(vuln.GenericPURL(sb.Product, sb.Version)); err == nil {
		out = append(out, c)
	}
	return out
}

// ---- import ----

// FileError and ImportResult are the wire types of an import.
type (
	FileError    = wire.FileError
	ImportResult = wire.ImportResult
)

// Import reads one uploaded file named name: an OSV zip (osv.dev all.zip), a CSAF 2.0 JSON
// document (a top-level "document" object: advisories and VEX statements) or an OSV JSON record.
// Advisories are stored by id and replace a stored copy only when newer; a malformed file (or
// zip entry) is reported by name in the result and nothing stored is lost. The error is for
// failures of the store or of reading the upload.
//
// With Events set, every advisory that the import makes affect a release devices run (a row of
// Exposure that was not there before) is told as an event.ExposureNew, at most
// maxExposureEvents per import.
func (s *Service) Import(ctx context.Context, name string, r io.Reader) (*ImportResult, error) {
	s.importMu.Lock()
	defer s.importMu.Unlock()
	before := s.exposedRows(ctx)
	res, err := s.importLocked(ctx, name, r)
	if err == nil && res != nil && res.Imported+res.Updated > 0 && before != nil {
		s.emitNewExposures(ctx, before)
	}
	return res, err
}

// maxExposureEvents bounds the exposure events of one import (an osv.dev zip may bring
// thousands of matches at once); past it, one log line says how many were left out.
const maxExposureEvents = 100

// ExposureEvent is the data of the exposure.new event.
type ExposureEvent struct {
	Advisory string   `json:"advisory"`
	Aliases  []string `json:"aliases,omitempty"`
	Severity string   `json:"severity"`
	Summary  string   `json:"summary,omitempty"`
	Product  string   `json:"product"`
	Release  string   `json:"release"`
	Devices  int      `json:"devices"`
	FixedIn  string   `json:"fixed_in,omitempty"`
	KEV      bool     `json:"kev,omitempty"`
}

// exposedRows returns the affected rows of Exposure by advisory, product and release, or nil
// when no webhook is subscribed to exposure.new (or the exposure cannot be read: then no event is given).
func (s *Service) exposedRows(ctx context.Context) map[string]Exposure {
	if !event.Listening(ctx, s.Events, event.ExposureNew) {
		return nil // no webhook wants them: the import costs what it did
	}
	rep, err := s.Exposure(ctx, ExposureFilter{})
	if err != nil {
		s.logger().Warn("exposure before an import: no exposure events for it", "err", err)
		return nil
	}
	out := make(map[string]Exposure, len(rep.Exposed))
	for _, e := range rep.Exposed {
		out[e.Advisory+"\x00"+e.Product+"\x00"+e.Release] = e
	}
	return out
}

func (s *Service) emitNewExposures(ctx context.Context, before map[string]Exposure) {
	after := s.exposedRows(ctx)
	left := 0
	n := 0
	for k, e := range after {
		if _, ok := before[k]; ok {
			continue
		}
		if n >= maxExposureEvents {
			left++
			continue
		}
		n++
		event.Emit(ctx, s.Events, event.Event{Type: event.ExposureNew, Subject: "release/" + e.Product + "@" + e.Release,
			Data: ExposureEvent{Advisory: e.Advisory, Aliases: e.Aliases, Severity: e.Severity, Summary: e.Summary, Product: e.Product,
				Release: e.Release, Devices: e.Devices, FixedIn: e.FixedIn, KEV: e.KEV != nil}})
	}
	if left > 0 {
		s.logger().Warn("new exposures past the events bound of one import: not sent", "sent", n, "left_out", left)
	}
}

func (s *Service) importLocked(ctx context.Context, name string, r io.Reader) (*ImportResult, error) {
	s.state()
	br := newPeekReader(r)
	head, err := br.peek(4)
	if err != nil {
		return nil, err
	}
	res := &ImportResult{}
	bad := func(err error) (*ImportResult, error) {
		res.Skipped++
		res.Errors = append(res.Errors, FileError{File: name, Error: err.Error()})
		return res, nil
	}
	if bytes.Equal(head, []byte("PK\x03\x04")) {
		return s.importZip(ctx, name, br, res)
	}
	var raw []byte
	if bytes.HasPrefix(head, []byte{0x1f, 0x8b}) {
		if raw, err = gunzip(br); err != nil {
			return bad(fmt.Errorf("gzip: %w", err))
		}
	} else {
		if raw, err = io.ReadAll(io.LimitReader(br, vuln.MaxFeedBytes+1)); err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		if len(raw) > vuln.MaxFeedBytes {
			return bad(fmt.Errorf("over the %d byte limit", vuln.MaxFeedBytes))
		}
	}
	// The CISA KEV catalog, an EPSS CSV or an NVD CVE 2.0 feed.
	if kind := feedKind(raw); kind != "" {
		if err := s.importFeed(ctx, kind, raw, res); err != nil {
			var se *storeError
			if errors.As(err, &se) {
				return nil, se.err
			}
			return bad(err)
		}
		return res, nil
	}
	if len(raw) > vuln.MaxCSAFBytes {
		return bad(fmt.Errorf("over the %d byte limit of a JSON document", vuln.MaxCSAFBytes))
	}
	var probe struct {
		Document json.RawMessage `json:"document"`
	}
	if json.Unmarshal(raw, &probe) == nil && len(probe.Document) > 0 && probe.Document[0] == '{' {
		advs, vexs, err := vuln.ParseCSAF(raw)
		if err != nil {
			return bad(err)
		}
		if err := s.storeAdvisories(ctx, advs, res); err != nil {
			return nil, err
		}
		if err := s.storeVEX(ctx, vexs, res); err != nil {
			return nil, err
		}
		return res, nil
	}
	a, err := vuln.ParseOSV(raw)
	if err != nil {
		return bad(err)
	}
	return res, s.storeAdvisories(ctx, []*vuln.Advisory{a}, res)
}

func (s *Service) importZip(ctx context.Context, name string, r io.Reader, res *ImportResult) (*ImportResult, error) {
	f, err := os.CreateTemp("", "upkeep-advisories-*.zip")
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", name, err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if _, err := io.Copy(f, r); err != nil {
		return nil, fmt.Errorf("import %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("import %s: %w", name, err)
	}
	var batch []*vuln.Advisory
	var storeErr error
	flush := func() error {
		err := s.storeAdvisories(ctx, batch, res)
		batch = batch[:0]
		if err != nil {
			storeErr = err
		}
		return err
	}
	err = vuln.ReadOSV(f.Name(), func(a *vuln.Advisory) error {
		if batch = append(batch, a); len(batch) >= importBatch {
			return flush()
		}
		return nil
	})
	if storeErr != nil {
		return nil, storeErr
	}
	if len(batch) > 0 {
		if err := flush(); err != nil {
			return nil, err
		}
	}
	if err != nil {
		var many interface{ Unwrap() []error }
		if errors.As(err, &many) {
			for _, e := range many.Unwrap() {
				msg := strings.ReplaceAll(e.Error(), f.Name(), name)
				file, detail, ok := strings.Cut(msg, ": ")
				if !ok {
					file, detail = name, msg
				}
				res.Errors = append(res.Errors, FileError{File: file, Error: detail})
			}
		} else {
			res.Errors = append(res.Errors, FileError{File: name, Error: strings.ReplaceAll(err.Error(), f.Name(), name)})
		}
		res.Skipped += countMalformed(err, len(res.Errors))
	}
	return res, nil
}

// countMalformed reads the count from ReadOSV's "N malformed files" message.
func countMalformed(err error, fallback int) int {
	var n int
	if _, scanErr := fmt.Sscanf(strings.TrimPrefix(err.Error(), "read OSV: "), "%d malformed files", &n); scanErr == nil {
		return n
	}
	return fallback
}

// storeAdvisories stores a batch and brings the index up to date.
func (s *Service) storeAdvisories(ctx context.Context, advs []*vuln.Advisory, res *ImportResult) error {
	if len(advs) == 0 {
		return nil
	}
	now := s.now()
	outs, err := s.Store.PutAdvisories(ctx, advs, now)
	if err != nil {
		return err
	}
	changed := false
	s.mu.Lock()
	for i, a := range advs {
		switch outs[i] {
		case Imported:
			res.Imported++
		case Updated:
			res.Updated++
		default:
			res.Unchanged++
			continue
		}
		changed = true
		s.index.Add(a)
		remember(s.advs, s.aliases, &StoredAdvisory{Advisory: a, FirstSeen: now})
	}
	if changed {
		s.gen++
	}
	s.mu.Unlock()
	if changed {
		s.ownChange(ctx)
	}
	return nil
}

// storeVEX stores statements; a changed statement rebuilds the index (a statement cannot be
// taken out of a vuln.Index), a new one is added to it.
func (s *Service) storeVEX(ctx context.Context, vs []vuln.VEX, res *ImportResult) error {
	if len(vs) == 0 {
		return nil
	}
	outs, err := s.Store.PutVEX(ctx, vs, s.now())
	if err != nil {
		return err
	}
	rebuild, changed := false, false
	s.mu.Lock()
	for i, v := range vs {
		switch outs[i] {
		case Imported:
			res.VEXImported++
			s.index.AddVEX(v)
			s.gen++
			changed = true
		case Updated:
			res.VEXUpdated++
			rebuild = true
		default:
			res.VEXUnchanged++
		}
	}
	s.mu.Unlock()
	if rebuild {
		return s.load(ctx)
	}
	if changed {
		s.ownChange(ctx)
	}
	return nil
}

// peekReader lets Import look at the first bytes of an upload.
type peekReader struct {
	r   io.Reader
	buf []byte
}

func newPeekReader(r io.Reader) *peekReader { return &peekReader{r: r} }

func (p *peekReader) peek(n int) ([]byte, error) {
	for len(p.buf) < n {
		b := make([]byte, n-len(p.buf))
		k, err := p.r.Read(b)
		p.buf = append(p.buf, b[:k]...)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	return p.buf, nil
}

func (p *peekReader) Read(b []byte) (int, error) {
	if len(p.buf) > 0 {
		n := copy(b, p.buf)
		p.buf = p.buf[n:]
		return n, nil
	}
	return p.r.Read(b)
}

// ---- reports ----

// OnReport records the first report of each installed target per device: with commit events,
// it gives the image a device ran before its first update (time-to-patch B). Bookkeeping
// failures are logged, never returned to the device.
func (s *Service) OnReport(ctx context.Context, id string, r wire.Report) error {
	t := r.Installed.Target
	if t == "" {
		return nil
	}
	if last, ok := s.reported.Load(id); ok && last.(string) == t {
		return nil
	}
	if known, err := s.signedImage(ctx, t, r.Installed.SHA256); err != nil || !known {
		if err != nil {
			s.logger().Warn("record installed target", "device", id, "err", err)
		}
		return nil // an unknown image is no point of the timeline
	}
	if err := s.Store.AddInstall(ctx, id, t, s.now()); err != nil {
		s.logger().Warn("record installed target", "device", id, "err", err)
		return nil
	}
	s.reported.Store(id, t)
	return nil
}

// ---- releases and fixes ----

// signedImage reports whether target with this SHA-256 is a published release's signed image.
// A device's report is only its claim: the install timeline, which time to patch and the public
// figures are computed from, records only images that are.
func (s *Service) signedImage(ctx context.Context, target, sha256 string) (bool, error) {
	rels, err := s.Releases.FindReleases(ctx, release.Filter{Target: target})
	if err != nil {
		return false, err
	}
	for _, r := range rels {
		if r.Matches(target, sha256) {
			return true, nil
		}
	}
	return false, nil
}

// catalog is one read of releases and SBOMs.
type catalog struct {
	byTarget  map[string]*release.Release
	byProduct map[string][]*release.Release // oldest first (newer)
	sboms     map[string]*SBOM              // product@version
	// indexes and keys memoise, for one request, each release's indexed matches (nil without
	// an SBOM) and each advisory's lower-case id and aliases: the exposure report asks whether
	// each newer release fixes each advisory in the field.
	indexes map[*release.Release]*cachedMatches
	keys    map[*vuln.Advisory][]string
}

// matchesOf returns the positions in a release's matches (releaseIndex) of the matches of
// advisory a or of one of its aliases, in order.
func matchesOf(idx map[string][]int, a *vuln.Advisory) []int {
	own := idx[strings.ToLower(a.ID)]
	if len(a.Aliases) == 0 {
		return own // read only
	}
	out := slices.Clone(own)
	for _, al := range a.Aliases {
		out = append(out, idx[strings.ToLower(al)]...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// statusRank orders a verdict's statuses: affected over unmatched over not_affected.
func statusRank(status string) int {
	switch status {
	case vuln.StatusAffected:
		return 3
	case vuln.StatusUnmatched:
		return 2
	case vuln.StatusNotAffected:
		return 1
	}
	return 0
}

// releaseIndexOf returns r's indexed matches, nil if it has no SBOM.
func (s *Service) releaseIndexOf(ctx context.Context, c *catalog, r *release.Release) (*cachedMatches, error) {
	if rm, ok := c.indexes[r]; ok {
		return rm, nil
	}
	var rm *cachedMatches
	if sb := c.sboms[r.Ref()]; sb != nil {
		m, err := s.releaseIndex(ctx, sb)
		if err != nil {
			return nil, err
		}
		rm = &m
	}
	if c.indexes == nil {
		c.indexes = map[*release.Release]*cachedMatches{}
	}
	c.indexes[r] = rm
	return rm, nil
}

// keysOf returns a's id and aliases in lower case, the keys of cachedMatches.byAdvisory.
func (c *catalog) keysOf(a *vuln.Advisory) []string {
	if k, ok := c.keys[a]; ok {
		return k
	}
	k := []string{strings.ToLower(a.ID)}
	for _, al := range a.Aliases {
		k = append(k, strings.ToLower(al))
	}
	if c.keys == nil {
		c.keys = map[*vuln.Advisory][]string{}
	}
	c.keys[a] = k
	return k
}

// known reports whether target with this SHA-256 is the signed image of a release in c.
func (c *catalog) known(target, sha256 string) bool {
	return c.byTarget[target].Matches(target, sha256)
}

func (s *Service) catalog(ctx context.Context, product string) (*catalog, error) {
	rels, err := s.Releases.FindReleases(ctx, release.Filter{Product: product})
	if err != nil {
		return nil, err
	}
	sbs, err := s.Store.FindSBOMs(ctx, product)
	if err != nil {
		return nil, err
	}
	c := &catalog{byTarget: map[string]*release.Release{}, byProduct: map[string][]*release.Release{}, sboms: map[string]*SBOM{}}
	for _, r := range rels {
		c.byTarget[r.Target] = r
		c.byProduct[r.Product] = append(c.byProduct[r.Product], r)
	}
	for _, l := range c.byProduct {
		slices.SortFunc(l, release.Compare)
	}
	for _, sb := range sbs {
		c.sboms[sb.Product+"@"+sb.Version] = sb
	}
	return c, nil
}

// verdict is the status of advisory a (a record, or the union of records that Advisory
// returns) for a release: affected, not_affected, unmatched, or ""
// (no SBOM, or the SBOM does not name an affected package), with the components and reason.
func (s *Service) verdict(ctx context.Context, c *catalog, r *release.Release, a *vuln.Advisory) (status string, comps []string, reason string, err error) {
	sb := c.sboms[r.Ref()]
	if sb == nil {
		return "", nil, "", nil
	}
	rm, err := s.releaseIndex(ctx, sb)
	if err != nil {
		return "", nil, "", err
	}
	for _, i := range matchesOf(rm.byAdvisory, a) {
		m := rm.ms[i]
		// a may be the union of several records (Advisory): a match of any of them counts.
		if !names(a, m.Advisory.ID) {
			continue
		}
		if statusRank(m.Status) > statusRank(status) {
			status, reason = m.Status, m.Reason
		}
		comps = append(comps, m.Component.PURL)
	}
	return status, comps, reason, nil
}

// fixes reports whether release r fixes advisory a: its signed custom lists the advisory's id
// or an alias in fixes, or it has an SBOM that no longer matches the advisory as affected (nor
// as undecidable).
func (s *Service) fixes(ctx context.Context, c *catalog, r *release.Release, a *vuln.Advisory) (bool, error) {
	for _, f := range r.Fixes {
		if names(a, f) {
			return true, nil
		}
	}
	rm, err := s.releaseIndexOf(ctx, c, r)
	if err != nil || rm == nil {
		return false, err
	}
	// The verdict's status alone, without gathering its components.
	for _, k := range c.keysOf(a) {
		for _, i := range rm.byAdvisory[k] {
			if m := rm.ms[i]; names(a, m.Advisory.ID) && (m.Status == vuln.StatusAffected || m.Status == vuln.StatusUnmatched) {
				return false, nil
			}
		}
	}
	return true, nil
}

// lowestFix is the lowest published release of r's product, newer than r, that fixes a; nil if
// none.
func (s *Service) lowestFix(ctx context.Context, c *catalog, r *release.Release, a *vuln.Advisory) (*release.Release, error) {
	for _, cand := range c.byProduct[r.Product] {
		if release.Compare(cand, r) <= 0 {
			continue
		}
		ok, err := s.fixes(ctx, c, cand, a)
		if err != nil {
			return nil, err
		}
		if ok {
			return cand, nil
		}
	}
	return nil, nil
}

// days is a duration in days, one decimal.
func days(d time.Duration) float64 {
	return float64(int64(d.Hours()/24*10+0.5*sign(d))) / 10
}

func sign(d time.Duration) float64 {
	if d < 0 {
		return -1
	}
	return 1
}

// OnEnroll records the image a device enrolled with, at its enrolment time: the first entry of
// its install history, which time-to-patch needs to know what it ran before its first update.
// A failure is logged; the enrolment stands.
func (s *Service) OnEnroll(ctx context.Context, d *fleet.Device) {
	if d.InstalledTarget == "" {
		return
	}
	if known, err := s.signedImage(ctx, d.InstalledTarget, d.InstalledSHA256); err != nil || !known {
		if err != nil {
			s.logger().Warn("record enrolled image", "device", d.ID, "err", err)
		}
		return
	}
	if err := s.Store.AddInstall(ctx, d.ID, d.InstalledTarget, d.EnrolledAt); err != nil {
		s.logger().Warn("record enrolled image", "device", d.ID, "err", err)
		return
	}
	s.reported.Store(d.ID, d.InstalledTarget)
}

// SBOM returns the stored SBOM of product@version; apperr.NotFound if it has none.
func (s *Service) SBOM(ctx context.Context, product, version string) (*SBOM, error) {
	return s.Store.FindSBOM(ctx, product, version)
}
