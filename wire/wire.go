// Package wire holds the request and response types that the server, the operator CLI and the
// device agent exchange. It imports only the standard library so that the agent stays small.
//
// Protocol history (ProtocolVersion):
//
//	1: enrolment, device tokens, check-in, reports, director and image metadata, artifacts;
//	   later, without a version change (optional, ignored by older agents): the poll jitter
//	   hint (HeaderPollJitter, CheckinResponse.PollJitterSeconds); the inventory
//	   (POST PathInventory, Inventory), which older agents never send; the bytes a download
//	   fetched against the image's length (Event.Downloaded, Event.ImageLength); failure log
//	   bundles (POST /device/v1/logs, LogBundle) and push credentials (POST /device/v1/push,
//	   PushCredentials), which a server without them answers 404.
package wire

import (
	"encoding/json"
	"time"
)

// ProtocolVersion is the current device protocol version, sent by agents in the
// Upkeep-Protocol header.
const ProtocolVersion = 1

// HTTP headers.
const (
	HeaderProtocol     = "Upkeep-Protocol"
	HeaderEnrollToken  = "Upkeep-Enroll-Token"
	HeaderPollInterval = "Upkeep-Poll-Seconds"
	// HeaderPollJitter is the spread, in seconds either way, the server suggests around the poll
	// interval (also in CheckinResponse.PollJitterSeconds); agents that ignore it stay correct.
	HeaderPollJitter = "Upkeep-Poll-Jitter-Seconds"
)

// Size limits for request bodies the server accepts.
const (
	MaxEnrollBody  = 16 << 10
	MaxCheckinBody = 4 << 10
	MaxReportBody  = 64 << 10
	MaxAPIBody     = 1 << 20
	MaxMetaBody    = 5 << 20
)

// Error is the body of every non-2xx answer.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Identity is what a device states about itself when it enrols.
type Identity struct {
	Serial     string            `json:"serial"`
	Product    string            `json:"product"`
	HardwareID string            `json:"hardware_id"`
	Attributes map[string]string `json:"attributes,omitempty"`
}

// EnrollPayload is signed by the device key. The signature covers the exact Payload bytes.
type EnrollPayload struct {
	PublicKey string    `json:"public_key"` // hex Ed25519 public key
	Identity  Identity  `json:"identity"`
	Time      time.Time `json:"time"`
	Installed Installed `json:"installed"`
}

// SignedRequest carries a JSON payload and the device's Ed25519 signature over it.
type SignedRequest struct {
	Payload   json.RawMessage `json:"payload"`
	Signature string          `json:"signature"` // hex
}

// TokenPayload asks for a fresh device token; signed by the device key.
type TokenPayload struct {
	DeviceID string    `json:"device_id"`
	Time     time.Time `json:"time"`
}

// EnrollResponse answers enrolment and token requests.
type EnrollResponse struct {
	DeviceID  string    `json:"device_id"`
	Status    string    `json:"status"` // pending | accepted | rejected
	Token     string    `json:"token,omitempty"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// Installed describes the image a device runs.
type Installed struct {
	Target          string `json:"target,omitempty"` // TUF target name
	Version         string `json:"version,omitempty"`
	SecurityVersion int64  `json:"security_version"`
	SHA256          string `json:"sha256,omitempty"`
}

// Checkin is the cheap poll a device sends. It must stay small.
type Checkin struct {
	Installed       Installed `json:"installed"`
	State           string    `json:"state,omitempty"`
	DirectorVersion int64     `json:"director_version"` // the director targets version the device trusts
}

// CheckinResponse tells the device whether its director metadata changed.
type CheckinResponse struct {
	DirectorVersion int64 `json:"director_version"`
	Changed         bool  `json:"changed"`
	PollSeconds     int   `json:"poll_seconds"`
	// PollJitterSeconds: poll at a random time within PollSeconds ± this (optional; wider while
	// the server is loaded). Older agents ignore it.
	PollJitterSeconds int `json:"poll_jitter_seconds,omitempty"`
}

// PathInventory is where a device sends its inventory.
const PathInventory = "/device/v1/inventory"

// MaxInventoryBody bounds the body of an inventory; the attributes' own limits (package
// internal/inventory: count, key and value sizes, 32 KiB in all) are checked after decoding.
const MaxInventoryBody = 64 << 10

// Inventory is the device's whole attribute set, as its inventory scripts and the agent's
// built-in attributes give it: key to values (a repeated key gives a list). It replaces what the
// server held. The agent sends it only when its digest changed since the server last
// acknowledged one. Attributes are device-asserted: they target, they never grant.
type Inventory struct {
	Attributes map[string][]string `json:"attributes"`
}

// InventoryResponse acknowledges a stored inventory with its digest (SHA-256 of the canonical
// form, internal/inventory.Attributes.Digest).
type InventoryResponse struct {
	Digest     string `json:"digest"`
	Attributes int    `json:"attributes"`
}

// Update steps a device reports.
const (
	StepCheck     = "check"
	StepVerify    = "verify"
	StepDownload  = "download"
	StepInstall   = "install"
	StepReboot    = "reboot"
	StepHealth    = "health"
	StepCommit    = "commit"
	StepRollback  = "rollback"
	StatusStarted = "started"
	StatusOK      = "ok"
	StatusFailed  = "failed"
	// StatusWaiting: downloaded, and waiting for the owner's consent or a maintenance window.
	StatusWaiting = "waiting"
)

// Event is one step of an update on a device.
type Event struct {
	Time    time.Time `json:"time"`
	Target  string    `json:"target,omitempty"`
	Step    string    `json:"step"`
	Status  string    `json:"status"`
	Fatal   bool      `json:"fatal,omitempty"`
	Message string    `json:"message,omitempty"`
	// Downloaded and ImageLength, on a successful download event: the bytes the device fetched
	// for the image (a delta's, or the whole image's) and the image's length. Older agents send
	// neither; the server trusts neither beyond the campaign's bytes-saved figure.
	Downloaded  int64 `json:"downloaded,omitempty"`
	ImageLength int64 `json:"image_length,omitempty"`
}

// Report carries events and the device's current view of itself.
type Report struct {
	Installed Installed `json:"installed"`
	State     string    `json:"state"`
	Events    []Event   `json:"events"`
}

// MaxReportEvents bounds the events in one report.
const MaxReportEvents = 64

// CampaignSpec creates a rollout campaign.
type CampaignSpec struct {
	Release          string   `json:"release"`           // product@version
	Target           string   `json:"target,omitempty"`  // group name or filter (product=x,region=eu)
	Devices          []string `json:"devices,omitempty"` // explicit devices
	Fixes            string   `json:"fixes,omitempty"`   // advisory id: target its exposed devices
	Waves            string   `json:"waves,omitempty"`   // 1%,10%,100% | 10,100 | exp:10:2
	SuccessThreshold float64  `json:"success_threshold,omitempty"`
	FailureThreshold *float64 `json:"failure_threshold,omitempty"` // absent: the default; 0: pause on the first failure
	HealthGate       string   `json:"health_gate,omitempty"`       // duration; "0s" for none
	SilentAfter      string   `json:"silent_after,omitempty"`      // duration
	AssignTimeout    string   `json:"assign_timeout,omitempty"`    // duration; "0s": never time out
	StaleAfter       string   `json:"stale_after,omitempty"`       // duration; "0s": keep every device
	Mode             string   `json:"mode,omitempty"`              // forced | soft
	Window           string   `json:"window,omitempty"`            // HH:MM-HH:MM UTC
	IgnoreWindow     bool     `json:"ignore_window,omitempty"`
	Days             string   `json:"days,omitempty"`  // weekdays (UTC) the window opens on: mon,wed,sat
	Start            bool     `json:"start,omitempty"` // start at once
	// Dynamic takes in devices that come to match Target after the start (newly enrolled, or
	// with changed attributes) into the current wave, until Until (absent: until cancelled).
	Dynamic bool      `json:"dynamic,omitempty"`
	Until   time.Time `json:"until,omitzero"`
	// StartAt schedules the start (state "scheduled" until then).
	StartAt time.Time `json:"start_at,omitzero"`
}

// Campaign is a rollout campaign as the management API shows it.
type Campaign struct {
	ID               string    `json:"id"`
	Release          string    `json:"release"`
	Target           string    `json:"target"`
	Selector         string    `json:"selector"`
	Class            string    `json:"class"`
	State            string    `json:"state"`
	Wave             int       `json:"wave"` // 1-based number of the newest released wave; 0 before start
	Waves            []int     `json:"waves"`
	SuccessThreshold float64   `json:"success_threshold"`
	FailureThreshold float64   `json:"failure_threshold"`
	HealthGate       string    `json:"health_gate"`
	AssignTimeout    string    `json:"assign_timeout,omitempty"` // "0s": never
	Stale            int       `json:"stale,omitempty"`          // devices left out at creation: not seen for the stale-after time
	Consent          bool      `json:"consent"`
	Window           string    `json:"window,omitempty"`
	IgnoreWindow     bool      `json:"ignore_window,omitempty"`
	Days             string    `json:"days,omitempty"`
	Dynamic          bool      `json:"dynamic,omitempty"`
	Until            time.Time `json:"until,omitzero"`
	StartAt          time.Time `json:"start_at,omitzero"`
	PauseReason      string    `json:"pause_reason,omitempty"`
	Actor            string    `json:"actor"`
	CreatedAt        time.Time `json:"created_at"`
	UpdatedAt        time.Time `json:"updated_at"`
}

// CampaignStatus is a campaign with its per-wave counts, waiting and failed devices and timeline.
type CampaignStatus struct {
	Campaign Campaign          `json:"campaign"`
	Waves    []map[string]int  `json:"waves"` // per wave: member status -> count
	Waiting  []CampaignMember  `json:"waiting,omitempty"`
	Failed   []CampaignMember  `json:"failed,omitempty"`
	Timeline []AuditEntry      `json:"timeline"`
	Download *CampaignDownload `json:"download,omitempty"` // absent until a member reports its download
}

// CampaignDownload is what a campaign's downloads cost: the bytes its devices fetched for images
// of ImageBytes in all; the difference is what delta updates saved.
type CampaignDownload struct {
	Devices    int   `json:"devices"`
	Bytes      int64 `json:"bytes"`
	ImageBytes int64 `json:"image_bytes"`
}

// CampaignMember is one device of a campaign.
type CampaignMember struct {
	DeviceID string    `json:"device_id"`
	Wave     int       `json:"wave"` // 1-based
	Status   string    `json:"status"`
	Since    time.Time `json:"since"`
	Detail   string    `json:"detail,omitempty"`
}

// AuditEntry is one recorded action.
type AuditEntry struct {
	Time    time.Time `json:"time"`
	Actor   string    `json:"actor"`
	Action  string    `json:"action"`
	Subject string    `json:"subject"`
	Detail  string    `json:"detail,omitempty"`
}

// Group is a device group: static members, or a filter over inventory.
type Group struct {
	Name    string   `json:"name"`
	Filter  string   `json:"filter,omitempty"`
	Window  string   `json:"window,omitempty"`
	Days    string   `json:"days,omitempty"`    // weekdays (UTC) the window opens on; empty: every day
	Devices []string `json:"devices,omitempty"` // members (resolved for a filter) when shown
	Count   int      `json:"count"`
}

// GroupDevices adds or removes static members.
type GroupDevices struct {
	Add    []string `json:"add,omitempty"`
	Remove []string `json:"remove,omitempty"`
}
