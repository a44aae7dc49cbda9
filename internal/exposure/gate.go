package exposure

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/product"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/internal/vuln"
	"upkeep.dev/upkeep/wire"
)

// ReleaseCheck and GateResult are the wire types of a release check.
type (
	ReleaseCheck = wire.ReleaseCheck
	GateResult   = wire.GateResult
)

// policy reads a product's policy; the zero Policy (no gate) when there is none.
func (s *Service) policy(ctx context.Context, name string) (product.Policy, error) {
	if s.Products == nil {
		return product.Policy{}, nil
	}
	p, err := s.Products.FindProduct(ctx, name)
	if apperr.Is(err, apperr.NotFound) {
		return product.Policy{}, nil
	}
	if err != nil {
		return product.Policy{}, err
	}
	pol, err := product.ParsePolicy(p.Policy)
	if err != nil {
		return product.Policy{}, err
	}
	return *pol, nil
}

// CheckRelease matches an SBOM (CycloneDX or SPDX JSON) against the advisories, VEX statements
// and exploitability data, as the release product@version, and applies the product's release
// gate. No device and no published release is needed. The SBOM is kept by digest, so that
// publishing the release whose signed target names it passes the same gate (GatePublish).
func (s *Service) CheckRelease(ctx context.Context, productName, version string, raw []byte) (*ReleaseCheck, error) {
	if err := tuf.ValidIdent("product", productName); err != nil {
		return nil, apperr.E(apperr.Invalid, "%v", err)
	}
	if version != "" {
		if err := tuf.ValidIdent("version", version); err != nil {
			return nil, apperr.E(apperr.Invalid, "%v", err)
		}
	}
	sb, err := vuln.ParseSBOM(raw)
	if err != nil {
		return nil, apperr.Wrap(apperr.Invalid, err, "SBOM refused: "+err.Error()+" (want CycloneDX 1.2–1.6 or SPDX 2.2–2.3 JSON)")
	}
	st := &SBOM{Product: productName, Version: version, Format: sb.Format, Digest: sb.Digest, Components: sb.Components, UploadedAt: s.now()}
	if sb.Subject != nil {
		st.Subject = sb.Subject.PURL
	}
	if err := s.Store.PutSBOMCheck(ctx, st); err != nil {
		return nil, err
	}
	return s.check(ctx, st)
}

// ReleaseCheck matches the stored SBOM of product@version against the advisories held now and
// applies the release gate, as CheckRelease does for an SBOM not yet published: one SBOM's
// matches, without the fleet. Returns apperr.NotFound if the release has no SBOM.
func (s *Service) ReleaseCheck(ctx context.Context, productName, version string) (*ReleaseCheck, error) {
	sb, err := s.SBOM(ctx, productName, version)
	if err != nil {
		return nil, err
	}
	return s.check(ctx, sb)
}

// check matches an SBOM and applies the gate.
func (s *Service) check(ctx context.Context, sb *SBOM) (*ReleaseCheck, error) {
	ix, _ := s.state()
	subj := subject(sb)
	ms := ix.MatchIn(subj, sb.Components)
	rows, _ := s.rows(ms, subj, sb.Product, sb.Version, map[string]*StoredAdvisory{})
	out := &ReleaseCheck{Product: sb.Product, Version: sb.Version, SHA256: sb.Digest, Format: sb.Format, Components: len(sb.Components),
		At: s.now(), Findings: []Exposure{}}
	pol, err := s.policy(ctx, sb.Product)
	if err != nil {
		return nil, err
	}
	out.Gate.KEV, out.Gate.Severity = pol.GateKEV, pol.GateSeverity
	var waivers []Waiver
	if pol.Gated() {
		if waivers, err = s.Store.FindWaivers(ctx, sb.Product); err != nil {
			return nil, err
		}
	}
	now := s.now()
	for _, r := range rows {
		out.Undecided += undecided(r)
		if r.Status == vuln.StatusAffected && pol.Gated() {
			blocks := (pol.GateKEV && r.KEV != nil) || (pol.GateSeverity != "" && severityRank(r.Severity) >= severityRank(pol.GateSeverity))
			if blocks {
				if w := waiverFor(waivers, r, sb.Version, now); w != nil {
					r.Gate = fmt.Sprintf("waived by %s (%s): %s", w.ID, w.CreatedBy, w.Reason)
					out.Gate.Waived = append(out.Gate.Waived, r.Advisory)
				} else {
					r.Gate = "blocks"
					out.Gate.Blockers = append(out.Gate.Blockers, r.Advisory)
				}
			}
		}
		out.Findings = append(out.Findings, *r)
	}
	out.Gate.Blocked = len(out.Gate.Blockers) > 0
	slices.SortStableFunc(out.Findings, func(a, b Exposure) int {
		return cmp.Compare(rowRank[b.Status], rowRank[a.Status])
	})
	sortWithin := func(status string) {
		i := slices.IndexFunc(out.Findings, func(e Exposure) bool { return e.Status == status })
		if i < 0 {
			return
		}
		j := i
		for j < len(out.Findings) && out.Findings[j].Status == status {
			j++
		}
		sortRows(out.Findings[i:j], "")
	}
	for _, st := range []string{vuln.StatusAffected, vuln.StatusUnmatched, vuln.StatusNotAffected} {
		sortWithin(st)
	}
	return out, nil
}

// waiverFor finds an active waiver of the product for this row's vulnerability (by id or alias)
// and release.
func waiverFor(ws []Waiver, r *Exposure, version string, now time.Time) *Waiver {
	for i := range ws {
		w := &ws[i]
		if !waiverActive(w, now) || (w.Version != "" && w.Version != version) {
			continue
		}
		if strings.EqualFold(w.Vuln, r.Advisory) || slices.ContainsFunc(r.Aliases, func(a string) bool { return strings.EqualFold(a, w.Vuln) }) {
			return w
		}
	}
	return nil
}

// refusal is the error of a blocked gate.
func refusal(what string, c *ReleaseCheck) error {
	return apperr.E(apperr.Forbidden, "the release gate of %s refuses to %s %s@%s: %s (gate: kev=%v severity=%q); record a VEX statement (`upkeep vex set`) or a waiver (`upkeep waiver add`) if it is not exploitable or accepted",
		c.Product, what, c.Product, c.Version, strings.Join(c.Gate.Blockers, ", "), c.Gate.KEV, c.Gate.Severity)
}

// GatePublish applies the release gate of the product named by the signed target before the
// image repository accepts it: with a gate, the target's custom must name an SBOM digest
// (sbom_sha256) that was sent to CheckRelease (release publish --sbom does so first), and no
// vulnerability of it may block. apperr.Forbidden names the blockers. Without a gate it
// returns nil.
func (s *Service) GatePublish(ctx context.Context, target string, targets []byte) error {
	md, err := metadata.Targets().FromBytes(targets)
	if err != nil {
		return nil // the image repository refuses it with its own (verification) error
	}
	tf, ok := md.Signed.Targets[target]
	if !ok {
		return nil // the image repository refuses it with its own message
	}
	c, err := uptane.ParseTargetCustom(tf)
	if err != nil {
		return nil
	}
	pol, err := s.policy(ctx, c.Product)
	if err != nil || !pol.Gated() {
		return err
	}
	if c.SBOM == "" {
		return apperr.E(apperr.Forbidden, "the release gate of %s needs the release's SBOM: publish with --sbom", c.Product)
	}
	sb, err := s.Store.FindSBOMCheck(ctx, strings.ToLower(c.SBOM))
	if apperr.Is(err, apperr.NotFound) {
		return apperr.E(apperr.Forbidden, "the release gate of %s has not seen the SBOM sha256 %s: send it first (`upkeep release check --sbom`; `release publish --sbom` does it)", c.Product, c.SBOM)
	}
	if err != nil {
		return err
	}
	sb.Product, sb.Version = c.Product, c.Version
	res, err := s.check(ctx, sb)
	if err != nil {
		return err
	}
	if res.Gate.Blocked {
		return refusal("publish", res)
	}
	return nil
}

// GateRelease applies the release gate before a campaign rolls rel out (rollout.Engine.Gate):
// the release's stored SBOM is checked now, against today's advisories, KEV catalog, VEX
// statements and waivers. With a gate, a release without an SBOM is refused.
func (s *Service) GateRelease(ctx context.Context, rel *release.Release) error {
	pol, err := s.policy(ctx, rel.Product)
	if err != nil || !pol.Gated() {
		return err
	}
	sb, err := s.Store.FindSBOM(ctx, rel.Product, rel.Version)
	if apperr.Is(err, apperr.NotFound) {
		return apperr.E(apperr.Forbidden, "the release gate of %s needs the SBOM of %s: attach it with `upkeep sbom attach`", rel.Product, rel.Ref())
	}
	if err != nil {
		return err
	}
	res, err := s.check(ctx, sb)
	if err != nil {
		return err
	}
	if res.Gate.Blocked {
		return refusal("roll out", res)
	}
	return nil
}

// ---- VEX triage ----

// SetTriage records an analyst's VEX statement (by product, version, vulnerability and
// component, replacing one recorded there) and applies it at once to exposure, --fixes
// campaigns, time-to-patch, the label and the gate. A not_affected statement needs one of
// Justifications; an affected one an action statement. actor is recorded as the analyst when
// the statement names none.
func (s *Service) SetTriage(ctx context.Context, t Triage, actor string) (*Triage, error) {
	if err := tuf.ValidIdent("product", t.Product); err != nil {
		return nil, apperr.E(apperr.Invalid, "%v", err)
	}
	if t.Version != "" {
		if err := tuf.ValidIdent("version", t.Version); err != nil {
			return nil, apperr.E(apperr.Invalid, "%v", err)
		}
	}
	t.Vuln = strings.TrimSpace(t.Vuln)
	if t.Vuln == "" || len(t.Vuln) > 128 || strings.ContainsAny(t.Vuln, " \t\n/") {
		return nil, apperr.E(apperr.Invalid, "vulnerability %q: want an id such as CVE-2024-45337 or GO-2024-3321", t.Vuln)
	}
	if t.Component != "" {
		if _, err := vuln.ComponentFromPURL(t.Component); err != nil {
			return nil, apperr.E(apperr.Invalid, "component %q: want a purl: %v", t.Component, err)
		}
	}
	switch t.Status {
	case TriageNotAffected:
		if !slices.Contains(Justifications, t.Justification) {
			return nil, apperr.E(apperr.Invalid, "not_affected needs a justification: %s", strings.Join(Justifications, ", "))
		}
	case TriageAffected:
		if strings.TrimSpace(t.Action) == "" {
			return nil, apperr.E(apperr.Invalid, "affected needs an action statement (what users should do)")
		}
	case TriageFixed, TriageUnderInvestigation:
	default:
		return nil, apperr.E(apperr.Invalid, "status %q: want not_affected, affected, fixed or under_investigation", t.Status)
	}
	if t.Status != TriageNotAffected && t.Justification != "" {
		return nil, apperr.E(apperr.Invalid, "a justification goes with not_affected only")
	}
	if strings.TrimSpace(t.Analyst) == "" {
		t.Analyst = actor
	}
	t.UpdatedAt = s.now()
	s.importMu.Lock()
	defer s.importMu.Unlock()
	if _, err := s.Store.PutTriage(ctx, &t); err != nil {
		return nil, err
	}
	// A statement cannot be taken out of a vuln.Index: rebuild it.
	if err := s.load(ctx); err != nil {
		return nil, err
	}
	return &t, nil
}

// Triage lists the analysts' statements of product ("" for all).
func (s *Service) Triage(ctx context.Context, product string) ([]Triage, error) {
	return s.Store.FindTriage(ctx, product)
}

// ---- waivers ----

// CreateWaiver records a named waiver of the release gate for one vulnerability of a product
// (one release, or every release when Version is ""). Reason and CreatedBy are required; the
// waiver is never deleted, only revoked.
func (s *Service) CreateWaiver(ctx context.Context, w Waiver) (*Waiver, error) {
	if err := tuf.ValidIdent("product", w.Product); err != nil {
		return nil, apperr.E(apperr.Invalid, "%v", err)
	}
	if w.Version != "" {
		if err := tuf.ValidIdent("version", w.Version); err != nil {
			return nil, apperr.E(apperr.Invalid, "%v", err)
		}
	}
	if strings.TrimSpace(w.Vuln) == "" || strings.TrimSpace(w.Reason) == "" || strings.TrimSpace(w.CreatedBy) == "" {
		return nil, apperr.E(apperr.Invalid, "a waiver needs a vulnerability, a reason and the name of who grants it")
	}
	if w.ExpiresAt != nil && !w.ExpiresAt.After(s.now()) {
		return nil, apperr.E(apperr.Invalid, "the waiver would expire before it starts")
	}
	b := make([]byte, 6)
	rand.Read(b)
	w.ID, w.CreatedAt, w.RevokedAt, w.RevokedBy = "W-"+hex.EncodeToString(b), s.now(), nil, ""
	if err := s.Store.CreateWaiver(ctx, &w); err != nil {
		return nil, err
	}
	return &w, nil
}

// RevokeWaiver revokes a waiver; apperr.NotFound or apperr.Conflict (revoked already).
func (s *Service) RevokeWaiver(ctx context.Context, id, by string) error {
	if strings.TrimSpace(by) == "" {
		return apperr.E(apperr.Invalid, "name who revokes the waiver")
	}
	return s.Store.RevokeWaiver(ctx, id, by, s.now())
}

// Waivers lists the waivers of product ("" for all), revoked and expired ones included.
func (s *Service) Waivers(ctx context.Context, product string) ([]Waiver, error) {
	return s.Store.FindWaivers(ctx, product)
}
