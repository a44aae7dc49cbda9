// Package label turns a product's support policy and the platform's own records into the
// artefacts that tell an owner what to expect from a device's security updates:
//
//   - Evidence: figures computed from release, fleet and advisory data (ComputeEvidence);
//   - Declaration: the machine-readable update-capability declaration, versioned by a JSON
//     Schema published with the package (BuildDeclaration, Schema, Validate);
//   - a DSSE envelope that signs the declaration and verifies offline (Sign, Verify);
//   - Report: a verdict per provision of ETSI EN 303 645, NISTIR 8259A, the EU Cyber
//     Resilience Act and the UK PSTI regime, computed from the declaration alone (Conformance);
//   - the consumer label: a primary layer as SVG or PNG with a QR code (RenderSVG, RenderPNG)
//     and a detailed public page (RenderHTML).
//
// The package is pure: it reads no database and makes no request. Callers pass the data in,
// and every function is safe for concurrent use.
package label

import "time"

// Delivery modes of security updates, as Policy.Delivery holds them. They are persisted.
const (
	DeliveryAutomatic = "automatic" // installed without the owner's action; the owner may opt out
	DeliveryConsent   = "consent"   // installed once the owner agrees
	DeliveryNone      = "none"      // the product receives no updates
)

// Release classes, as ReleaseFact.Class holds them.
const (
	ClassSecurity = "security"
	ClassFeature  = "feature"
)

// Support statuses of a declaration.
const (
	StatusSupported    = "supported"      // today is on or before the support end date
	StatusEndOfSupport = "end_of_support" // the support end date has passed
)

// Manufacturer identifies who places the product on the market.
type Manufacturer struct {
	Name    string `json:"name"`
	Contact string `json:"contact,omitempty"` // postal or e-mail address for the public
	Website string `json:"website,omitempty"`
}

// Policy is a product's support policy, as set by the manufacturer.
type Policy struct {
	Product          string // the platform's product key
	ProductName      string // the name an owner sees on the box
	ModelDesignation string
	Manufacturer     Manufacturer
	// SupportEnd is the last day of security-update support; only its date (UTC) counts.
	SupportEnd time.Time
	// SupportStart and SupportStartBasis say when the support period starts counting, and from
	// what: "placed_on_market", "purchase" or "activation". Both may be empty.
	SupportStart      time.Time
	SupportStartBasis string
	// JustificationUnder5y explains a support period shorter than five years.
	JustificationUnder5y string
	// Delivery is DeliveryAutomatic (also when empty), DeliveryConsent or DeliveryNone.
	Delivery         string
	OwnerOptOut      bool     // the owner can turn automatic installation off
	SecuritySeparate bool     // security updates are delivered separately from feature updates
	Notification     []string // how owners are told about updates: "app", "email", "device", ...
	VDPURL           string   // the published vulnerability disclosure policy
	VDPContact       string   // where to report a vulnerability
	AdvisoriesURL    string   // where security advisories are published
	// RemediationDays is the declared commitment: days from advisory to fixed release for high
	// and critical vulnerabilities. Zero means no commitment.
	RemediationDays int
	History         []PolicyChange // append-only, oldest first
	UpdatedAt       time.Time
}

// PolicyChange is one entry of a policy's append-only history. Field names the changed field
// ("support_end", "delivery", ...); Old and New hold its values, JSON-encoded or plain.
type PolicyChange struct {
	At                     time.Time
	Actor, Field, Old, New string
}

// Mechanism describes the update mechanism. It is derived from the platform's configuration,
// never typed by a user.
type Mechanism struct {
	SignedAndVerifiedOnDevice bool
	RollbackProtection        bool
	AtomicAB                  bool
	AutomaticRollback         bool
	OfflineSigningKeys        bool
	SignatureAlgorithm        string // e.g. "ed25519"
	HashAlgorithms            string // the digests the device checks an image against, e.g. "sha256" or "sha256+sha512"
	TrustAnchor               string // e.g. "TUF root (offline keys) + Uptane director"
}

// ReleaseFact is one published release of the product.
type ReleaseFact struct {
	Version     string
	Class       string // ClassSecurity or ClassFeature
	PublishedAt time.Time
	Fixes       []string // advisory identifiers the release fixes
}

// DeviceFact is one device of the product's fleet.
type DeviceFact struct {
	// InstalledVersion is the version of the signed release whose image the device runs; empty
	// when the image it reports is not one (UnknownImage) or it reports none.
	InstalledVersion string
	// UnknownImage is set when the device reports an image that is not a signed target of the
	// product (its name and SHA-256 match no release): what a device says it runs is only its
	// claim, and such a device never counts as on a supported release.
	UnknownImage bool
	LastSeen     time.Time
	// DDI: the device speaks hawkBit DDI (SWUpdate, RAUC, Zephyr) and verifies only its
	// bundle's own signature, not the platform's Uptane metadata.
	DDI bool
}

// TimeToPatch ties one advisory to the release that fixed it. FixReleased is zero while no
// fixed release exists; Fleet90At is nil until 90% of the fleet runs a fixed release. Severity
// is "critical", "high", "medium", "low", or "unknown" (also when empty).
type TimeToPatch struct {
	Advisory    string
	Severity    string
	Published   time.Time
	FixReleased time.Time
	Fleet90At   *time.Time
	// Exploited: in the CISA KEV catalog; Published is then the earlier of the advisory's
	// publication and the catalog's dateAdded.
	Exploited bool
}
