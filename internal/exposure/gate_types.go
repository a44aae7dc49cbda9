package exposure

import (
	"context"
	"time"

	"upkeep.dev/upkeep/internal/vuln"
	"upkeep.dev/upkeep/wire"
)

// Feeds of exploitability and severity data, stored one row per CVE.
const (
	FeedKEV  = "kev"
	FeedEPSS = "epss"
	FeedNVD  = "nvd"
)

// FeedRow is one CVE's entry in a feed: Body is the vuln package's JSON (vuln.KEV, vuln.EPSS,
// vuln.CVESeverity); Rank orders copies of one CVE (a later score date or NVD modification).
type FeedRow struct {
	Feed, CVE string
	Rank      int64
	Body      []byte
}

// VEX statuses an analyst records, as OpenVEX and the CSAF VEX profile name them.
const (
	TriageNotAffected        = "not_affected"
	TriageAffected           = "affected"
	TriageFixed              = "fixed"
	TriageUnderInvestigation = "under_investigation"
)

// Justifications of a not_affected statement (CSAF 2.0 §3.2.3.5 flag labels, OpenVEX v0.2.0).
var Justifications = []string{
	"component_not_present",
	"vulnerable_code_not_present",
	"vulnerable_code_not_in_execute_path",
	"vulnerable_code_cannot_be_controlled_by_adversary",
	"inline_mitigations_already_exist",
}

// Triage (an analyst's VEX statement about a vulnerability in a product) and Waiver (a named
// waiver of the release gate for one vulnerability, kept after it expires or is revoked) are
// wire types.
type (
	Triage = wire.Triage
	Waiver = wire.Waiver
)

// waiverActive reports whether w holds at t.
func waiverActive(w *Waiver, t time.Time) bool {
	return w.RevokedAt == nil && (w.ExpiresAt == nil || t.Before(*w.ExpiresAt))
}

// GateStore persists what the release gate and the exploitability data need. Implementations
// are safe for concurrent use.
type GateStore interface {
	// PutFeedRows stores rows by (feed, cve) in one transaction: a new one is inserted, a stored
	// one replaced when the body differs and the rank is not lower. It returns Imported, Updated
	// or Unchanged for each, and adds one to the VulnGeneration if anything changed.
	PutFeedRows(ctx context.Context, rows []FeedRow) ([]string, error)
	// FindFeedRows calls fn for every stored row.
	FindFeedRows(ctx context.Context, fn func(FeedRow) error) error
	// PutTriage stores a statement by (product, version, vuln, component), replacing one stored
	// there; it adds one to the VulnGeneration.
	PutTriage(ctx context.Context, t *Triage) (string, error)
	// FindTriage lists the statements of product ("" for all).
	FindTriage(ctx context.Context, product string) ([]Triage, error)
	// CreateWaiver stores a new waiver; apperr.Conflict if its id exists.
	CreateWaiver(ctx context.Context, w *Waiver) error
	// RevokeWaiver marks a waiver revoked; apperr.NotFound if there is none, apperr.Conflict if
	// it was revoked already.
	RevokeWaiver(ctx context.Context, id, by string, at time.Time) error
	// FindWaivers lists the waivers of product ("" for all), revoked and expired ones included.
	FindWaivers(ctx context.Context, product string) ([]Waiver, error)
	// PutSBOMCheck keeps an SBOM sent for a release check, by digest.
	PutSBOMCheck(ctx context.Context, s *SBOM) error
	// FindSBOMCheck returns the SBOM checked with this digest; apperr.NotFound if none.
	FindSBOMCheck(ctx context.Context, digest string) (*SBOM, error)
}

// triageVEX is the statement the index applies.
func triageVEX(t Triage) vuln.VEX {
	v := vuln.VEX{Vuln: t.Vuln, PURL: t.Component, Product: vuln.GenericPURL(t.Product, t.Version), Justification: t.Justification,
		Impact: t.Impact, Source: "upkeep triage " + t.Analyst}
	switch t.Status {
	case TriageNotAffected:
		v.Status = vuln.VEXNotAffected
	case TriageAffected:
		v.Status, v.Impact = vuln.VEXAffected, t.Action
	case TriageFixed:
		v.Status = vuln.VEXFixed
	default:
		v.Status = vuln.VEXUnderInvestigation
	}
	return v
}
