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
	Imported     int         `json:"imported"`
	Updated      int         `json:"updated"`
	Unchanged    int         `json:"unchanged"`
	Skipped      int         `json:"skipped"`
	VEXImported  int         `json:"vex_imported"`
	VEXUpdated   int         `json:"vex_updated"`
	VEXUnchanged int         `json:"vex_unchanged"`
	Errors       []FileError `json:"errors,omitempty"`
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
	Components  []string  `json:"components"` // purls of the matching components
}

// ExposureReport is the fleet's exposure at At.
type ExposureReport struct {
	At          time.Time  `json:"at"`
	Exposed     []Exposure `json:"exposed"`
	NotAffected []Exposure `json:"not_affected,omitempty"` // with All
	Unmatched   []Exposure `json:"unmatched,omitempty"`    // with All
	// WithoutSBOM lists releases devices run that have no SBOM: their exposure is unknown.
	WithoutSBOM []string `json:"without_sbom,omitempty"`
	// Undecided counts the (advisory, release) findings that could not be decided (GIT ranges,
	// unknown ecosystems), listed in Unmatched only with All but always counted.
	Undecided int `json:"undecided"`
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
