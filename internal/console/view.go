package console

import (
	"html/template"
	"time"
)

// View is what a page template gets: the layout's fields and the page's own Data.
type View struct {
	Layout
	Data any
}

// Layout is what every page shows around its content.
type Layout struct {
	// Base is the path every console link is relative to, ending in "/": "/", or a tenant's
	// "/t/NAME/".
	Base  string
	Title string
	// Section names the navigation entry of the page ("overview", "devices", ...).
	Section string
	// User and Role are the signed-in operator's; empty on the login page.
	User, Role string
	// CSRF is the session's token, sent by htmx in CSRFHeader and by forms in the field csrf.
	CSRF, CSRFHeader string
	// Nav lists the sections the role may see.
	Nav []NavLink
	// Now is the instant the page describes.
	Now time.Time
	// Notice is a one-line message at the top of the page (an action's result).
	Notice string
}

// NavLink is one entry of the navigation.
type NavLink struct {
	Section string // the Layout.Section of its pages
	Name    string
	Href    string // relative to Base
}

// Login is the login page.
type Login struct {
	User    string // as typed, after a refusal
	Error   string
	Token   string // the login form's double-submit token
	Next    string // where to go after signing in, relative to Base
	SSO     string // the single sign-on route, relative to Base; empty when not configured
	Public  string // the public product pages, relative to Base
	Status  int
	Refused bool
}

// Problem is an error page: forbidden, not found, a failed action.
type Problem struct {
	Status  int
	Heading string
	Message string
	Back    string // a link relative to Base; empty: none
}

// Confirm is the confirmation step of an action.
type Confirm struct {
	Question string // "Decommission device 3f2a…?"
	Detail   string // what follows from it
	Action   string // the form's action, relative to Base
	Button   string // the button's text
	Cancel   string // relative to Base
	Danger   bool
	Fields   []Field // hidden fields carried through
}

// Field is a hidden form field.
type Field struct{ Name, Value string }

// Count is one labelled number, with a link to what it counts (relative to Base; may be empty).
type Count struct {
	Label string
	N     int
	Href  string
	Of    int // the whole it is part of, for a bar; 0: none
}

// Overview is the landing page.
type Overview struct {
	Devices   int
	CountedAt time.Time // when the device figures were counted (they are reused briefly)
	ByStatus  []Count
	ByState   []Count
	ByProduct []Count
	ByVersion []Count // product@version
	// Attention lists devices needing attention: failed, rolled back, stale, past support.
	Attention []Count
	// Exposure counts open exposures by severity; ExposureOK is false when the exposure
	// service is not configured or failed (ExposureNote says why).
	Exposure     []Count
	ExposureOK   bool
	ExposureNote string
	ExposureLazy bool          // the page fetches the exposure part after it loads
	Campaigns    []CampaignRow // running and paused
	Expiring     []Expiry      // offline metadata and support periods nearing their end
	StaleAfter   string
	CanDevices   bool
	CanRollouts  bool
	CanVulns     bool
}

// Expiry is a date that ends something: offline-signed metadata, a product's support.
type Expiry struct {
	What    string
	At      time.Time
	Expired bool
	Soon    bool
}

// DeviceList is the devices page.
type DeviceList struct {
	Query     DeviceQuery
	Rows      []DeviceRow
	Next      string // the next page's URL, relative to Base; empty on the last page
	First     string // the first page's URL when not on it
	Total     int    // devices the filter selects; -1 when not counted
	Products  []string
	Statuses  []string
	Sorts     []Option
	Groups    []string
	FilterErr string
}

// DeviceQuery is the devices page's filter, as typed.
type DeviceQuery struct {
	Q, Product, Version, Status, State, Group, Attr, Sort string
	Desc                                                  bool
}

// Option is one choice of a select.
type Option struct{ Value, Label string }

// DeviceRow is one device in the list.
type DeviceRow struct {
	ID, Serial, Product, Version, Status, State, Hardware string
	LastSeen                                              time.Time
	Attention                                             string // why it needs attention, if it does
}

// Device is a device's page.
type Device struct {
	ID, Kind, Serial, Product, Hardware, Status, State, LastError string
	Installed, InstalledVer, Assigned, InstalledSHA256            string
	SecurityVersion                                               int64
	Attributes                                                    []Field
	LastSeen, EnrolledAt                                          time.Time
	SupportEnd                                                    time.Time // zero: no policy
	PastSupport                                                   bool
	Simulated                                                     bool
	Events                                                        []Event
	Logs                                                          []Log
	Exposure                                                      []Exposed
	ExposureNote                                                  string
	CanVulns, ExposureLazy                                        bool   // shown to roles with vuln:read; fetched after the page loads
	Actions                                                       []Link // accept, reject, decommission, as the role and status allow
	Campaigns                                                     []Link
}

// Event is one line of a device's timeline.
type Event struct {
	Time                          time.Time
	Target, Step, Status, Message string
	Fatal                         bool
}

// Log is a failure log bundle a device uploaded.
type Log struct {
	ID, Target, Reason string
	At                 time.Time
	Size               int64
	Lines              []string // the head of the bundle's text
}

// Exposed is one advisory a device's release is exposed to.
type Exposed struct {
	Advisory, Severity, Summary, FixedIn string
}

// Link is a labelled link relative to Base.
type Link struct {
	Label, Href string
	Danger      bool
}

// CampaignRow is one campaign in a list.
type CampaignRow struct {
	ID, Release, Selector, State, Class, PauseReason string
	Wave, Waves                                      int
	Members, Done, Failed                            int
	CreatedAt, UpdatedAt                             time.Time
}

// RolloutList is the campaigns page.
type RolloutList struct {
	Rows        []CampaignRow
	State       string // the state filter
	States      []string
	Total       int
	CanCreate   bool
	First, Next string // links to the first and the next page; empty when there is none
}

// Campaign is a campaign's page.
type Campaign struct {
	CampaignRow
	Target, WaveSpec, HealthGate, Window, Days, Mode string
	SuccessThreshold, FailureThreshold               string
	Consent, Dynamic                                 bool
	Stale                                            int
	WaveRows                                         []WaveRow
	FailedMembers                                    []Member
	Waiting                                          []Member
	Timeline                                         []TimelineEntry
	Actions                                          []Link
	Live                                             bool // still changing: the page follows its stream
	Stream                                           string
	Downloaded                                       string
	// Chart is an SVG chart of members by state over time, rendered by the server; empty: none.
	Chart template.HTML
}

// WaveRow is one wave's progress.
type WaveRow struct {
	N, Size                                           int
	Released                                          bool
	Pending, Assigned, Waiting, Committed, Healthy    int
	Failed, TimedOut, Superseded, Cancelled, Finished int
}

// Member is one device of a campaign with a note.
type Member struct {
	DeviceID, Status, Detail string
	Wave                     int
	Since                    time.Time
}

// TimelineEntry is one event of a campaign's timeline.
type TimelineEntry struct {
	Time          time.Time
	Actor, Action string
	Detail        string
}

// RolloutForm is the campaign creation form, with what was typed after a refusal.
type RolloutForm struct {
	Release, Target, Waves, Success, Failure, HealthGate, Window, Days, Mode string
	// Fixes is an advisory: the campaign takes the devices exposed to it (`--fixes`), within
	// Target if one is given.
	Fixes                        string
	Consent, Start, IgnoreWindow bool
	Releases                     []string
	Groups                       []string
	Count                        DeviceCount
	Error                        string
}

// DeviceCount is the live count of the devices a campaign target selects.
type DeviceCount struct {
	Target string
	N      int
	Stale  int
	Err    string
	Empty  bool // nothing typed yet
}
