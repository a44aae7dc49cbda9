package console

import (
	"html/template"
	"time"
)

// The view models of the releases, vulnerabilities, products and administration pages.

// ReleaseList is the releases page: the releases of each product, newest first.
type ReleaseList struct {
	Products []string // every product with a release, for the filter
	Product  string   // the filter; empty: all
	Groups   []ReleaseGroup
}

// ReleaseGroup is one product's releases.
type ReleaseGroup struct {
	Product  string
	Releases []ReleaseRow
}

// ReleaseRow is one line of the releases list.
type ReleaseRow struct {
	Product, Version string
	Class            string
	SecurityVersion  int64
	Fixes            []string
	Running          int // accepted devices running it
	PublishedAt      time.Time
}

// ReleasePage is one release.
type ReleasePage struct {
	ReleaseRow
	HardwareIDs []string
	Targets     []TargetInfo
	// Publisher is who published it, from the audit trail; empty with PublisherHidden when the
	// viewer's role may not read the audit trail.
	Publisher       string
	PublisherHidden bool
	SBOM            *SBOMInfo         // nil: none attached
	Advisories      []ReleaseAdvisory // at most MaxExposureRows
	AdvisoriesTotal int
	VulnHidden      bool // the role may not read vulnerability data
}

// TargetInfo is one signed target of the image repository and its fields.
type TargetInfo struct {
	Name           string
	Length         int64
	Hashes         []Field // algorithm → hex
	Custom         string  // the signed custom fields, indented JSON
	TargetsVersion int64
}

// SBOMInfo is a release's SBOM and some of its components.
type SBOMInfo struct {
	Format, Digest string
	Signed         bool
	UploadedAt     time.Time
	Total          int
	Components     []Component // at most MaxComponents
}

// MaxComponents bounds the components a release page lists.
const MaxComponents = 300

// Component is one SBOM component.
type Component struct{ Name, Version, Ecosystem, PURL string }

// ReleaseAdvisory is an advisory matching a release's SBOM.
type ReleaseAdvisory struct {
	ID, Severity, FixedIn string
	Status                string // affected, or unmatched: undecidable
	Gate                  string // the release gate's word: "blocks", "waived by …", or ""
	Exploited             bool
}

// VulnList is the vulnerabilities page: the exposure table.
type VulnList struct {
	Severity, Product, Sort string
	KEV                     bool
	Severities, Sorts       []string
	Products                []string
	Rows                    []ExposureRow
	Total                   int // rows before the MaxExposureRows cut
	WithoutSBOM             []string
	Undecided               int
	CanDeploy               bool
}

// MaxExposureRows bounds the exposure table, in the report's order (known exploited, severity,
// EPSS, days exposed): the page stays light with thousands of advisories, and the filters
// reach the rest.
const MaxExposureRows = 200

// ExposureRow is one advisory on one release.
type ExposureRow struct {
	Advisory, Severity, Summary string
	Product, Release            string
	Devices                     int
	Days                        float64
	FixedIn                     string
	KEV                         bool
	EPSS                        float64
	// Fix is the rollout creation form prefilled to fix it (relative to Base); empty when no
	// release fixes it or the role may not deploy.
	Fix string
}

// ProductList is the products page.
type ProductList struct {
	Products []ProductRow
}

// ProductRow is one product.
type ProductRow struct {
	Name, Display, SupportEnd, Delivery, Warning string
	UpdatedAt                                    time.Time
}

// ProductPage is one product: its policy, the editor, its label and figures.
type ProductPage struct {
	ProductRow
	Policy   []Field // the policy as set, field by field
	Edit     *PolicyForm
	History  []PolicyChangeRow
	LabelURL string // relative to Base, with a version so that a change shows at once
	Public   string // the public page, relative to Base
	// Chart is the time-to-patch chart, with its table; empty when the role may not read
	// vulnerability data or there is none.
	Chart, ChartTable template.HTML
	Error             string // a refused change, shown above the form
}

// PolicyForm is the support policy editor's fields.
type PolicyForm struct {
	SupportEnd, SupportStart, SupportStartBasis, Delivery string
	ProductName, ModelDesignation                         string
	VDPURL, VDPContact, AdvisoriesURL                     string
	RemediationDays, WarnDays                             int
	SecuritySeparate, GateKEV                             bool
	GateSeverity                                          string
	Deliveries, Bases, GateSeverities                     []string
}

// PolicyChangeRow is one entry of a policy's history.
type PolicyChangeRow struct {
	At                     time.Time
	Actor, Field, Old, New string
}

// AdminPage is one page of the administration section, with the tabs the role may see.
type AdminPage struct {
	Tabs []NavLink
	Tab  string
	Data any
}

// UserAdmin is the users tab.
type UserAdmin struct {
	Users    []UserRow
	Roles    []string
	CanWrite bool
}

// UserRow is one user.
type UserRow struct {
	Name, Role, Groups, Issuer string
	HasPassword, Disabled      bool
	CreatedAt                  time.Time
}

// TokenAdmin is the operator tokens tab.
type TokenAdmin struct {
	Tokens   []TokenRow
	Roles    []string
	CanWrite bool
	Created  *Secret // a token just created, its secret shown once
}

// TokenRow is an operator token or an enrolment token (never its secret).
type TokenRow struct {
	ID, Name, Role, User, Product string
	Uses                          int
	CreatedAt, ExpiresAt          time.Time
	LastUsed                      time.Time
	Revoked, Expired              bool
}

// Secret is a credential shown once after its creation.
type Secret struct{ ID, Value, Note string }

// EnrollAdmin is the enrolment tokens tab.
type EnrollAdmin struct {
	Tokens   []TokenRow
	CanWrite bool
	Created  *Secret
}

// WebhookAdmin is the webhooks tab.
type WebhookAdmin struct {
	Hooks      []WebhookRow
	Deliveries []DeliveryRow
	CanWrite   bool
	Created    *Secret
}

// WebhookRow is one webhook.
type WebhookRow struct {
	ID, URL, Events string
	CreatedAt       time.Time
}

// DeliveryRow is one delivery attempt of a webhook.
type DeliveryRow struct {
	Webhook, Event, Type, State string
	Attempts                    int
	At                          time.Time
	Status                      int
	Error                       string
}

// AuditAdmin is the audit trail tab.
type AuditAdmin struct {
	Actor, Action, Target, Outcome, Since, Until string
	Records                                      []AuditRow
	Older                                        string // the next page's query, relative to Base; empty: none
	Export                                       string // the API's export of the same filter, relative to Base
	Error                                        string
}

// AuditRow is one audit record.
type AuditRow struct {
	Seq                    int64
	Time                   time.Time
	Actor, ActorType       string
	Action, Target, Detail string
	IP                     string
	Outcome                int
}
