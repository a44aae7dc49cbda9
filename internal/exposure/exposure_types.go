// Package exposure drives patching from vulnerabilities: it keeps each release's SBOM and the
// imported advisories and VEX statements, matches them (internal/vuln) against what the fleet
// runs, and answers which devices are exposed to what, since when, which release fixes it, and
// how long fixes took to ship and to reach the fleet (docs/VULNERABILITIES.md).
package exposure

import (
	"context"
	"time"

	"upkeep.dev/upkeep/wire"

	"upkeep.dev/upkeep/internal/vuln"
)

// SBOM is the bill of materials of one release.
type SBOM struct {
	Product, Version string
	Format           string // "CycloneDX 1.6", "SPDX 2.3"
	Digest           string // sha256 hex of the uploaded bytes
	// Signed reports that Digest is the sbom_sha256 of the release's offline-signed image
	// target, so that the SBOM is bound to the image by the targets signature.
	Signed     bool
	Components []vuln.Component // nil when listed by FindSBOMs
	// Subject is the purl of what the SBOM describes (vuln.SBOM.Subject), "" if it names none.
	Subject    string
	UploadedAt time.Time
}

// Outcomes of storing an advisory or a VEX statement.
const (
	Imported  = "imported"  // new
	Updated   = "updated"   // replaced an older copy
	Unchanged = "unchanged" // the stored copy is as new or newer
)

// StoredAdvisory is an advisory with the time this server first imported it (the published
// time of advisories that carry none).
type StoredAdvisory struct {
	Advisory  *vuln.Advisory
	FirstSeen time.Time
	// SeverityFrom names the record whose severity a merged group took, and how that record
	// got it; "" for a single record (its Advisory.SeveritySource says).
	SeverityFrom string
}

// Install is one point of a device's timeline: from At on, the device ran Target. Commit is
// true for a commit event (the device switched to Target), false for the first report that
// named Target as installed.
type Install struct {
	DeviceID string
	Target   string
	At       time.Time
	Commit   bool
}

// Store persists SBOMs, advisories, VEX statements and install timelines. Implementations are
// safe for concurrent use.
type Store interface {
	// PutSBOM stores or replaces a release's SBOM.
	PutSBOM(ctx context.Context, s *SBOM) error
	// FindSBOM returns apperr.NotFound if the release has no SBOM.
	FindSBOM(ctx context.Context, product, version string) (*SBOM, error)
	// FindSBOMs lists the SBOMs of a product ("" for all), without their components.
	FindSBOMs(ctx context.Context, product string) ([]*SBOM, error)
	// PutAdvisories stores advisories by id in one transaction: a new id is inserted, an
	// existing one replaced only by a copy with a later Modified (keeping its first import
	// time). It returns Imported, Updated or Unchanged for each.
	PutAdvisories(ctx context.Context, advs []*vuln.Advisory, now time.Time) ([]string, error)
	// FindAdvisories calls fn for every stored advisory; an error from fn stops and is returned.
	FindAdvisories(ctx context.Context, fn func(StoredAdvisory) error) error
	// PutVEX stores statements by (source, vuln, purl, range, product), replacing the status, justification
	// and impact. It returns Imported, Updated or Unchanged for each.
	PutVEX(ctx context.Context, vs []vuln.VEX, now time.Time) ([]string, error)
	// FindVEX lists every stored statement.
	FindVEX(ctx context.Context) ([]vuln.VEX, error)
	// VulnGeneration returns the generation of the stored advisories and VEX statements:
	// PutAdvisories and PutVEX add one to it, in their transaction, when they change anything.
	// Servers sharing the store compare it to know when to reload their index.
	VulnGeneration(ctx context.Context) (int64, error)
	// AddInstall records that a device reported running target, unless it did before.
	AddInstall(ctx context.Context, deviceID, target string, at time.Time) error
	// FindInstalls returns the timeline points of the devices of product ("" for all): the
	// first reports of each target and the commit events with status ok, ordered by time.
	FindInstalls(ctx context.Context, product string) ([]Install, error)
	// The release gate, analysts' VEX statements and the exploitability feeds.
	GateStore
}

// SBOMSummary is what the API tells about a release's SBOM.
type SBOMSummary = wire.SBOMSummary

// Summary describes s; the component count needs a full read (FindSBOM).
func (s *SBOM) Summary() SBOMSummary {
	return SBOMSummary{Product: s.Product, Version: s.Version, Format: s.Format, SHA256: s.Digest, Signed: s.Signed,
		Components: len(s.Components), UploadedAt: s.UploadedAt}
}
