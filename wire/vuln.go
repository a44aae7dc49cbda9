package wire

import "time"

// Types of the vulnerability API (/api/v1/advisories, /api/v1/exposure,
// /api/v1/releases/{p}/{v}/sbom, /api/v1/products/{name}/time-to-patch).

// FileError is a file that could not be imported, by name.
type FileError struct {
	File  string `json:"file"`
	Error string `json:"error"`
}

// ImportResult counts what an import did. Malformed files are listed in Errors and counted in
// Skipped; they do not stop the import.
type ImportResult struct {
	Imported     int `json:"imported"`
	Updated      int `json:"updated"`
	Unchanged    int `json:"unchanged"`
	Skipped      int `json:"skipped"`
	VEXImported  int `json:"vex_imported"`
	VEXUpdated   int `json:"vex_updated"`
	VEXUnchanged int `json:"vex_unchanged"`
	// KEV, EPSS and CVEs count the catalog entries, scores and NVD severities stored (new or
	// changed); unchanged ones count in Unchanged.
	KEV    int         `json:"kev,omitempty"`
	EPSS   int         `json:"epss,omitempty"`
	CVEs   int         `json:"cves,omitempty"`
	Errors []FileError `json:"errors,omitempty"`
}

// Add sums two results.
func (r *ImportResult) Add(o ImportResult) {
	r.Imported += o.Imported
	r.Updated += o.Updated
	r.Unchanged += o.Unchanged
	r.Skipped += o.Skipped
	r.VEXImported += o.VEXImported
	r.VEXUpdated += o.VEXUpdated
	r.VEXUnchanged += o.VEXUnchanged
	r.KEV += o.KEV
	r.EPSS += o.EPSS
	r.CVEs += o.CVEs
	r.Errors = append(r.Errors, o.Errors...)
}

// Exposure is one vulnerability (the records that alias each other, under the id of the most
// severe) against one release that devices run.
type Exposure struct {
	Advisory    string    `json:"advisory"`
	Aliases     []string  `json:"aliases,omitempty"`
	Severity    string    `json:"severity"`
	Summary     string    `json:"summary,omitempty"`
	Product     string    `json:"product"`
	Release     string    `json:"release"` // version
	Devices     int       `json:"devices"`
	Since       time.Time `json:"since"` // max(advisory published, the release's first install)
	DaysExposed float64   `json:"days_exposed"`
	FixedIn     string    `json:"fixed_in,omitempty"` // lowest newer release that fixes it
	Status      string    `json:"status"`             // affected | not_affected | unmatched
	Reason      string    `json:"reason,omitempty"`
	// Components are the matching components, each with its own verdict: an affected row may
	// also name a component that could not be decided.
	Components []ComponentFinding `json:"components"`
	// SeveritySource says where Severity came from: a record and its field, or an NVD CVE.
	SeveritySource string    `json:"severity_source,omitempty"`
	KEV            *KEVInfo  `json:"kev,omitempty"`  // in the CISA KEV catalog
	EPSS           *EPSSInfo `json:"epss,omitempty"` // its EPSS score
	VEX            []VEXNote `json:"vex,omitempty"`  // statements about it here, suppressing or not
	// Gate is the release gate's word on this row: "blocks", "waived by W-…", or "".
	Gate string `json:"gate,omitempty"`
}

// ComponentFinding is one component's verdict for one vulnerability.
type ComponentFinding struct {
	PURL   string `json:"purl"`
	Status string `json:"status"` // affected | not_affected | unmatched
	Reason string `json:"reason,omitempty"`
}

// KEVInfo is a vulnerability's entry in the CISA Known Exploited Vulnerabilities catalog.
type KEVInfo struct {
	CVE        string    `json:"cve"`
	DateAdded  time.Time `json:"date_added"`
	DueDate    time.Time `json:"due_date,omitzero"`
	Ransomware bool      `json:"ransomware,omitempty"` // knownRansomwareCampaignUse: Known
}

// EPSSInfo is a vulnerability's EPSS score (the highest of its CVEs).
type EPSSInfo struct {
	CVE        string    `json:"cve"`
	Score      float64   `json:"score"`
	Percentile float64   `json:"percentile"`
	Date       time.Time `json:"date,omitzero"`
}

// VEXNote is a VEX statement that speaks of a finding.
type VEXNote struct {
	Status        string `json:"status"` // known_not_affected | known_affected | fixed | under_investigation
	Justification string `json:"justification,omitempty"`
	Statement     string `json:"statement,omitempty"` // impact or action statement
	Source        string `json:"source,omitempty"`
}

// ExposureReport is the fleet's exposure at At.
type ExposureReport struct {
	At          time.Time  `json:"at"`
	Exposed     []Exposure `json:"exposed"`
	NotAffected []Exposure `json:"not_affected,omitempty"` // with All
	Unmatched   []Exposure `json:"unmatched,omitempty"`    // with All
	// WithoutSBOM lists releases devices run that have no SBOM: their exposure is unknown.
	WithoutSBOM []string `json:"without_sbom,omitempty"`
	// Undecided counts the (vulnerability, release, component) findings that could not be
	// decided (GIT ranges, unknown ecosystems), those inside affected rows included; unmatched
	// rows are listed only with All, but always counted.
	Undecided int `json:"undecided"`
	// NoSeverity counts the rows a severity filter left out because no source gave them a
	// severity (import an NVD feed or the GHSA records to fill them in).
	NoSeverity int `json:"no_severity,omitempty"`
}

// ReleaseCheck is what a release's SBOM matches before the release ships, and the release
// gate's verdict.
type ReleaseCheck struct {
	Product    string    `json:"product"`
	Version    string    `json:"version,omitempty"`
	SHA256     string    `json:"sbom_sha256"`
	Format     string    `json:"format"`
	Components int       `json:"components"`
	At         time.Time `json:"at"`
	// Findings are the vulnerabilities it matches: affected, then undecided, then those a VEX
	// statement suppresses.
	Findings  []Exposure `json:"findings"`
	Undecided int        `json:"undecided"`
	Gate      GateResult `json:"gate"`
}

// GateResult is the release gate's verdict.
type GateResult struct {
	// KEV and Severity are the product's gate settings; neither set means no gate.
	KEV      bool     `json:"kev"`
	Severity string   `json:"severity,omitempty"`
	Blocked  bool     `json:"blocked"`
	Blockers []string `json:"blockers,omitempty"` // vulnerability ids
	Waived   []string `json:"waived,omitempty"`   // vulnerability ids let through by a waiver
}

// Triage is a security analyst's VEX statement about a vulnerability in a product.
type Triage struct {
	Product       string    `json:"product"`
	Version       string    `json:"version,omitempty"` // "" for every release
	Vuln          string    `json:"vulnerability"`
	Component     string    `json:"component,omitempty"` // purl; "" for the product as a whole
	Status        string    `json:"status"`              // not_affected | affected | fixed | under_investigation
	Justification string    `json:"justification,omitempty"`
	Impact        string    `json:"impact,omitempty"`
	Action        string    `json:"action,omitempty"`
	Analyst       string    `json:"analyst"`
	UpdatedAt     time.Time `json:"updated_at,omitzero"`
}

// Waiver lets a release through the gate despite one vulnerability.
type Waiver struct {
	ID        string     `json:"id"`
	Product   string     `json:"product"`
	Version   string     `json:"version,omitempty"`
	Vuln      string     `json:"vulnerability"`
	Reason    string     `json:"reason"`
	CreatedBy string     `json:"created_by"`
	CreatedAt time.Time  `json:"created_at,omitzero"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	RevokedBy string     `json:"revoked_by,omitempty"`
}

// FleetFigure is time-to-patch B(p): from the fixed release's publication until p% of the
// devices exposed then run a fixing release.
type FleetFigure struct {
	Percent int        `json:"percent"`
	Reached bool       `json:"reached"`
	At      *time.Time `json:"at,omitempty"`
	Days    *float64   `json:"days,omitempty"`
}

// TimeToPatch holds both time-to-patch figures of one advisory for one product.
type TimeToPatch struct {
	Advisory  string    `json:"advisory"`
	Aliases   []string  `json:"aliases,omitempty"`
	Severity  string    `json:"severity"`
	Published time.Time `json:"published"`
	Affected  []string  `json:"affected"` // versions whose SBOM matches it as affected
	FixedIn   string    `json:"fixed_in,omitempty"`
	// FixPublished is when FixedIn was published.
	FixPublished *time.Time `json:"fix_published,omitempty"`
	// VendorDays is time-to-patch A: fix published − advisory published; while no fix exists
	// (VendorOpen), the running age of the advisory.
	VendorDays float64 `json:"vendor_days"`
	VendorOpen bool    `json:"vendor_open,omitempty"`
	// ExposedAtFix is |E|, the devices that ran an affected release when the fix was published.
	ExposedAtFix int `json:"exposed_at_fix"`
	// PatchedNow is how many of them run a fixing release now.
	PatchedNow int           `json:"patched_now"`
	Fleet      []FleetFigure `json:"fleet,omitempty"`
	// Exploited: the vulnerability is in the KEV catalog. Published is then the earlier of
	// the advisory's publication and the catalog's dateAdded (PublishedFrom says which).
	Exploited     bool   `json:"exploited,omitempty"`
	PublishedFrom string `json:"published_from,omitempty"` // advisory | kev
}

// ProductTimeToPatch is the time-to-patch of every advisory affecting a product's releases.
type ProductTimeToPatch struct {
	Product    string        `json:"product"`
	At         time.Time     `json:"at"`
	Advisories []TimeToPatch `json:"advisories"`
}

// SBOMSummary is what the API tells about a release's SBOM.
type SBOMSummary struct {
	Product    string    `json:"product"`
	Version    string    `json:"version"`
	Format     string    `json:"format"`
	SHA256     string    `json:"sha256"`
	Signed     bool      `json:"signed"` // the digest is the one in the release's signed target
	Components int       `json:"components"`
	UploadedAt time.Time `json:"uploaded_at"`
}

// RevokeWaiverRequest is the body of POST /api/v1/waivers/{id}/revoke: who revokes it.
type RevokeWaiverRequest struct {
	By string `json:"by"`
}
