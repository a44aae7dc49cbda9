package wire

import (
	"encoding/json"
	"time"
)

// Device is a device as the management API shows it.
type Device struct {
	ID              string            `json:"id"`
	Kind            string            `json:"kind,omitempty"` // upkeep (the agent, Uptane) | ddi (a hawkBit DDI client: bundle signature only)
	Status          string            `json:"status"`         // pending | accepted | rejected | decommissioned
	Serial          string            `json:"serial"`
	Product         string            `json:"product"`
	HardwareID      string            `json:"hardware_id"`
	Attributes      map[string]string `json:"attributes,omitempty"`
	Installed       Installed         `json:"installed"`
	State           string            `json:"state"`
	LastError       string            `json:"last_error,omitempty"`
	Assigned        string            `json:"assigned,omitempty"` // target the director names
	DirectorVersion int64             `json:"director_version"`
	LastSeen        time.Time         `json:"last_seen,omitzero"`
	EnrolledAt      time.Time         `json:"enrolled_at"`
	Simulated       bool              `json:"simulated,omitempty"` // enrolled by `upkeep simulate`
}

// Release is a published release.
type Release struct {
	Product         string    `json:"product"`
	Version         string    `json:"version"`
	HardwareIDs     []string  `json:"hardware_ids"`
	SecurityVersion int64     `json:"security_version"`
	Class           string    `json:"class"`
	Target          string    `json:"target"`
	Length          int64     `json:"length"`
	SHA256          string    `json:"sha256"`
	PublishedAt     time.Time `json:"published_at"`
	// Running is how many of the product's devices in service run it; listed only when the
	// list is of one product (GET /api/v1/releases?product=P).
	Running int `json:"running,omitempty"`
}

// DeltasRequest adds delta targets (per-pair patches, chunk indexes) to releases already
// published: image-repository targets.json signed offline that adds only delta targets, each
// bound to published images and uploaded to /api/v1/blobs first.
type DeltasRequest struct {
	Targets json.RawMessage `json:"targets"`
}

// DeltasResponse names the delta targets added.
type DeltasResponse struct {
	Added []string `json:"added"`
}

// DelegationRequest uploads the offline-signed metadata of a delegation ceremony (`upkeep keys
// delegate`): the image repository's top-level targets and/or its bin and product roles, each
// by role name.
type DelegationRequest struct {
	Roles map[string]json.RawMessage `json:"roles"`
}

// DelegationResponse names the roles stored, in the order they were stored.
type DelegationResponse struct {
	Stored []string `json:"stored"`
}

// DeltaJob is a per-pair delta the server generates for a release in the background: from the
// image of a release the product's devices run to the release's image. The server cannot sign
// it; `upkeep release deltas --sign` checks it by applying it and signs it (Signed).
type DeltaJob struct {
	Product     string    `json:"product"`
	Version     string    `json:"version"`
	From        string    `json:"from"`    // the source release's version
	Target      string    `json:"target"`  // the delta target name it is signed under
	Image       string    `json:"image"`   // the release's image target
	Source      string    `json:"source"`  // the source release's image target
	Devices     int       `json:"devices"` // devices running the source when it was planned
	State       string    `json:"state"`   // queued, running, done or failed
	Done        int64     `json:"done"`    // destination bytes generated
	ImageLength int64     `json:"image_length"`
	PatchLength int64     `json:"patch_length,omitempty"`
	PatchSHA256 string    `json:"patch_sha256,omitempty"`
	PatchSHA512 string    `json:"patch_sha512,omitempty"`
	Error       string    `json:"error,omitempty"`
	Signed      bool      `json:"signed"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// DeltaJobs lists a release's delta jobs (GET /api/v1/deltas?product=P&version=V).
type DeltaJobs struct {
	Jobs []DeltaJob `json:"jobs"`
}

// DeltaPlanRequest asks the server to plan per-pair deltas to a release now (POST
// /api/v1/deltas/generate), from the Top releases (default 3) that at least MinDevices
// (default 1) of the product's devices run; the server also does so by itself after each
// publication.
type DeltaPlanRequest struct {
	Product    string `json:"product"`
	Version    string `json:"version"`
	Top        int    `json:"top,omitempty"`
	MinDevices int    `json:"min_devices,omitempty"`
}

// PublishRequest uploads a new image-repository targets.json that the release engineer signed
// offline. The artifact named Target must already have been uploaded to /api/v1/blobs.
type PublishRequest struct {
	Target  string          `json:"target"`
	Targets json.RawMessage `json:"targets"`
}

// DeployRequest asks the director to assign a release to devices.
type DeployRequest struct {
	Release    string   `json:"release"` // product@version
	DeviceIDs  []string `json:"device_ids,omitempty"`
	All        bool     `json:"all,omitempty"`
	HardwareID string   `json:"hardware_id,omitempty"` // with All: only this hardware
}

// DeployResponse says how many devices were assigned and which were skipped.
type DeployResponse struct {
	Assigned int               `json:"assigned"`
	Skipped  map[string]string `json:"skipped,omitempty"` // device id -> reason
}

// EnrollTokenRequest creates an enrolment token.
type EnrollTokenRequest struct {
	Name    string        `json:"name"`
	Uses    int           `json:"uses"` // 0: the default (1,000); at most 1,000,000
	TTL     time.Duration `json:"ttl"`  // 0: the default (30 days); at most 366 days
	Product string        `json:"product,omitempty"`
	// Simulation marks every device enrolled with the token as simulated: left out of public
	// figures and removable with `upkeep devices remove --simulated`.
	Simulation bool `json:"simulation,omitempty"`
}

// RemoveDevicesResponse says how many devices DELETE /api/v1/devices?simulated=true removed.
type RemoveDevicesResponse struct {
	Removed int `json:"removed"`
}

// EnrollToken is an enrolment token as the management API lists it (never its secret).
type EnrollToken struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Product   string    `json:"product,omitempty"`
	UsesLeft  int       `json:"uses_left"` // -1: unlimited (tokens made before limits existed)
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	CreatedAt time.Time `json:"created_at"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

// OperatorTokenRequest creates an operator token.
type OperatorTokenRequest struct {
	Name   string        `json:"name"`
	Role   string        `json:"role"`             // one of the roles (docs/OPERATORS.md)
	TTL    time.Duration `json:"ttl"`              // 0: the default (90 days); at most 366 days
	Groups []string      `json:"groups,omitempty"` // group scope; role deployer only
}

// OperatorToken is an operator token as the management API lists it; Token (the secret) is set
// only in the answer that created it.
type OperatorToken struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at,omitzero"` // zero: never
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	LastUsed  time.Time `json:"last_used,omitzero"`
	User      string    `json:"user,omitempty"`   // who created it
	Groups    []string  `json:"groups,omitempty"` // group scope
	Token     string    `json:"token,omitempty"`
}

// UserRequest adds an operator user. An empty password leaves the user without password login
// (tokens only).
type UserRequest struct {
	Name     string   `json:"name"`
	Role     string   `json:"role"`
	Groups   []string `json:"groups,omitempty"` // group scope; role deployer only
	Password string   `json:"password,omitempty"`
}

// UserRoleRequest changes a user's role and group scope; it ends the user's sessions and
// revokes their tokens.
type UserRoleRequest struct {
	Role   string   `json:"role"`
	Groups []string `json:"groups,omitempty"`
}

// PasswordRequest sets a user's password.
type PasswordRequest struct {
	Password string `json:"password"`
}

// User is an operator user as the management API lists it (never the password hash).
type User struct {
	Name        string    `json:"name"`
	Role        string    `json:"role"`
	Groups      []string  `json:"groups,omitempty"`
	HasPassword bool      `json:"has_password"`
	CreatedAt   time.Time `json:"created_at"`
	DisabledAt  time.Time `json:"disabled_at,omitzero"`
	Issuer      string    `json:"issuer,omitempty"` // the OpenID Connect provider of a single sign-on user
}

// PersonalTokenRequest is POST /api/v1/session/token: an operator token for the session's own
// user, with the user's role and group scope.
type PersonalTokenRequest struct {
	Name string        `json:"name,omitempty"` // default "login USER"
	TTL  time.Duration `json:"ttl,omitempty"`  // 0: the default (12 h); at most 7 days
}

// LoginRequest is POST /api/v1/login.
type LoginRequest struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

// Session says who the caller is (GET /api/v1/session, and the answer to a login). CSRFToken,
// set for login sessions only, goes in HeaderCSRF of every state-changing request made with
// the session cookie.
type Session struct {
	User        string    `json:"user,omitempty"`
	Role        string    `json:"role"`
	Groups      []string  `json:"groups,omitempty"`
	Permissions []string  `json:"permissions"`
	Kind        string    `json:"kind"` // session | token
	TokenID     string    `json:"token_id,omitempty"`
	CSRFToken   string    `json:"csrf_token,omitempty"`
	ExpiresAt   time.Time `json:"expires_at,omitzero"`
}

// Login sessions: the cookie and the CSRF header.
const (
	SessionCookie = "upkeep_session"
	HeaderCSRF    = "X-CSRF-Token"
)

// EnrollTokenResponse returns the token once.
type EnrollTokenResponse struct {
	ID    string `json:"id"`
	Token string `json:"token"`
}

// BlobInfo is the answer to a blob upload.
type BlobInfo struct {
	SHA256 string `json:"sha256"`
	SHA512 string `json:"sha512"`
	Length int64  `json:"length"`
}

// Product is a product with its support policy, as the management API shows it.
type Product struct {
	Name      string          `json:"name"`
	Policy    json.RawMessage `json:"policy"`
	UpdatedAt time.Time       `json:"updated_at"`
	Warning   string          `json:"warning,omitempty"` // end of support near or past
}

// PolicyChange is one entry of a product's policy history.
type PolicyChange struct {
	At    time.Time `json:"at"`
	Actor string    `json:"actor"`
	Field string    `json:"field"`
	Old   string    `json:"old"`
	New   string    `json:"new"`
}

// DDIDeviceRequest creates a hawkBit DDI device ahead of time (POST /api/v1/ddi/devices).
type DDIDeviceRequest struct {
	ID         string `json:"id"` // the controller id
	Product    string `json:"product"`
	HardwareID string `json:"hardware_id"`
}

// DDIDeviceResponse carries a DDI device's target token (Authorization: TargetToken ...).
type DDIDeviceResponse struct {
	ID          string `json:"id"`
	TargetToken string `json:"target_token"`
	Tenant      string `json:"tenant"`
}

// Tenant is an organisation served under /t/{name}/ with a server stack of its own: store,
// artifacts, keys, users, tokens and jobs (GET /api/v1/tenants, on the default tenant only).
type Tenant struct {
	Name      string    `json:"name"`
	Path      string    `json:"path"` // the URL prefix: /t/{name}
	CreatedAt time.Time `json:"created_at"`
	Ready     bool      `json:"ready"`   // its stack was opened by the replica that added it
	Serving   bool      `json:"serving"` // this replica serves it
}

// TenantRequest adds a tenant (POST /api/v1/tenants). Keys holds the online part of the
// tenant's own key set, as `upkeep keys init` writes it, by file name: snapshot.key,
// timestamp.key, director.key, root.json, director-root.json, targets.json. The offline keys
// stay with the operator.
type TenantRequest struct {
	Name string            `json:"name"`
	Keys map[string][]byte `json:"keys"`
}

// TenantCreated answers POST /api/v1/tenants: the tenant and its first admin token, shown once.
type TenantCreated struct {
	Tenant     Tenant `json:"tenant"`
	AdminToken string `json:"admin_token"`
}

// WebhookRequest creates a webhook (docs/OPERATORS.md, "Webhooks").
type WebhookRequest struct {
	URL          string   `json:"url"`                     // https://, or http:// with AllowHTTP
	Events       []string `json:"events,omitempty"`        // event types; empty: all
	Description  string   `json:"description,omitempty"`   // at most 256 bytes
	AllowPrivate bool     `json:"allow_private,omitempty"` // may reach loopback, private and other special addresses
	AllowHTTP    bool     `json:"allow_http,omitempty"`    // may use plain http://
}

// Webhook is a webhook as the management API lists it; Secret (whsec_<base64>, the
// signing key) is set only in the answer that created it.
type Webhook struct {
	ID           string    `json:"id"`
	URL          string    `json:"url"`
	Events       []string  `json:"events,omitempty"`
	Description  string    `json:"description,omitempty"`
	AllowPrivate bool      `json:"allow_private,omitempty"`
	AllowHTTP    bool      `json:"allow_http,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	CreatedBy    string    `json:"created_by,omitempty"`
	Secret       string    `json:"secret,omitempty"`
}

// WebhookTest answers a test: the id of the ping event queued for the webhook.
type WebhookTest struct {
	EventID string `json:"event_id"`
}

// WebhookDelivery is one event for one webhook: its state (pending, delivered, failed,
// dropped), attempts so far and the last answer.
type WebhookDelivery struct {
	ID         int64     `json:"id"`
	Webhook    string    `json:"webhook"`
	EventID    string    `json:"event_id"`
	Type       string    `json:"type"`
	State      string    `json:"state"`
	Attempts   int       `json:"attempts"`
	NextAt     time.Time `json:"next_at,omitzero"`
	LastStatus int       `json:"last_status,omitempty"`
	LastError  string    `json:"last_error,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	DoneAt     time.Time `json:"done_at,omitzero"`
}
