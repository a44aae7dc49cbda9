// Package fleet holds devices, their enrolment and the events they report, with the Store port
// that persists them.
package fleet

import (
	"context"
	"slices"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/inventory"
)

// Device statuses.
const (
	StatusPending  = "pending"  // enrolled without a token; waits for an operator
	StatusAccepted = "accepted" // may fetch metadata and artifacts
	StatusRejected = "rejected" // refused by an operator while pending
	// StatusDecommissioned: taken out of service by an operator. Its token stops working, the
	// director serves it nothing, its history stays, and it cannot enrol again with the same
	// key until an operator readmits it (Service.Accept with readmit).
	StatusDecommissioned = "decommissioned"
)

// Device kinds: how a device talks to the server. A DDI device verifies only its bundle's own
// signature (SWUpdate, RAUC), never Uptane metadata; docs/ARCHITECTURE.md, "DDI devices".
const (
	KindAgent = "upkeep" // the Upkeep agent: /device/v1, full Uptane verification
	KindDDI   = "ddi"    // a hawkBit DDI client: /{tenant}/controller/v1/{controllerId}
)

// Device is an enrolled device.
type Device struct {
	ID              string // hex of the first 16 bytes of SHA-256 of the public key; a DDI device's controller id
	Kind            string // KindAgent or KindDDI; "" reads as KindAgent
	PublicKey       []byte // Ed25519; empty for a DDI device
	Serial          string
	Product         string
	HardwareID      string
	Attributes      map[string]string
	Status          string
	InstalledTarget string
	InstalledVer    string
	SecurityVersion int64
	InstalledSHA256 string
	State           string // last state the agent reported
	LastError       string
	Assigned        string // target the director names for it
	AssignPolicy    string // JSON install policy signed with the assignment; empty: install at once
	DirectorVersion int64
	LastSeen        time.Time
	EnrolledAt      time.Time
	// Simulated marks a device enrolled with a simulation token (`upkeep simulate`): it counts
	// in no public figure and `devices remove --simulated` removes it.
	Simulated bool
}

// DeviceFilter selects devices. Zero fields match everything.
type DeviceFilter struct {
	IDs        []string
	Product    string
	HardwareID string
	Status     string
	Kind       string
	Offset     int
	Limit      int // 0: no limit
}

// Sort orders of DevicePage.
const (
	SortID       = "id"
	SortSerial   = "serial"
	SortProduct  = "product"
	SortVersion  = "version"
	SortState    = "state"
	SortHardware = "hardware"
)

// Sorts lists the sort orders of DevicePage.
var Sorts = []string{SortID, SortSerial, SortProduct, SortVersion, SortState, SortHardware}

// MaxPage bounds DevicePage.Limit, MaxPageIDs DevicePage.IDs (a database takes only so many
// parameters in one statement).
const (
	MaxPage    = 500
	MaxPageIDs = 10_000
)

// DevicePage selects one page of devices in a stable order, after a cursor: keyset pagination,
// whose cost does not grow with the page's position. Zero fields match everything.
type DevicePage struct {
	Product, Version, Status, State string
	// Attributes: each KEY=VALUE holds when the attribute equals VALUE or, for a list (a
	// repeated inventory key), when one of its values does; exactly, case included. Keys are
	// inventory keys (inventory.ValidKey).
	Attributes map[string]string
	// IDs, if not nil, limits the page to these devices (a group's members).
	IDs []string
	// Search matches devices whose id or serial begins with it, letters A to Z in either
	// case (docs/DECISIONS.md: an index range, whatever the fleet's size; attributes are
	// found by Attributes, product, version and state by their fields).
	Search string
	Sort   string // one of Sorts; "" is SortID. Ties are broken by id.
	Desc   bool
	// After is where the previous page ended; nil: the first page.
	After *DeviceCursor
	Limit int // 1 to MaxPage
}

// DeviceCursor is a position in a DevicePage's order: the sort key and id of a device.
type DeviceCursor struct {
	Key, ID string
}

// CursorOf is the cursor just after d in the order sort.
func CursorOf(d *Device, sort string) DeviceCursor {
	key := d.ID
	switch sort {
	case SortSerial:
		key = d.Serial
	case SortProduct:
		key = d.Product
	case SortVersion:
		key = d.InstalledVer
	case SortState:
		key = d.State
	case SortHardware:
		key = d.HardwareID
	}
	return DeviceCursor{Key: key, ID: d.ID}
}

// FleetCount counts the devices sharing a status, product, installed version and state.
type FleetCount struct {
	Status, Product, Version, State string
	Devices                         int
	Stale                           int // of them, not seen since the cutoff (or never)
	Errors                          int // of them, with a last error reported
}

// DeviceUpdate changes the non-nil fields of a device.
type DeviceUpdate struct {
	Status          *string
	InstalledTarget *string
	InstalledVer    *string
	SecurityVersion *int64
	InstalledSHA256 *string
	State           *string
	LastError       *string
	Assigned        *string
	AssignPolicy    *string
	DirectorVersion *int64 // only ever raised
	Attributes      *map[string]string
}

// IsDDI reports whether the device is a hawkBit DDI client.
func (d *Device) IsDDI() bool { return d.Kind == KindDDI }

// Event is one reported step of an update.
type Event struct {
	DeviceID string
	Time     time.Time
	Target   string
	Step     string
	Status   string
	Fatal    bool
	Message  string
}

// EnrollToken admits devices without an operator's approval.
type EnrollToken struct {
	ID        string
	Name      string
	Hash      []byte // SHA-256 of the secret
	UsesLeft  int    // -1: unlimited
	ExpiresAt time.Time
	Product   string // if set, only devices of this product
	// Simulation marks every device enrolled with the token as Simulated.
	Simulation bool
	CreatedAt  time.Time
	RevokedAt  time.Time // zero: not revoked
}

// Defaults and bounds of enrolment tokens.
const (
	DefaultEnrollUses = 1000
	DefaultEnrollTTL  = 30 * 24 * time.Hour
	MaxEnrollUses     = 1_000_000
	MaxEnrollTTL      = 366 * 24 * time.Hour
)

// Store persists the fleet. Implementations are safe for concurrent use.
type Store interface {
	// CreateDevice adds a device. Returns apperr.Conflict if the id exists.
	CreateDevice(ctx context.Context, d *Device) error
	// FindDevice returns apperr.NotFound if the device does not exist.
	FindDevice(ctx context.Context, id string) (*Device, error)
	// FindDevices lists devices ordered by id.
	FindDevices(ctx context.Context, f DeviceFilter) ([]*Device, error)
	// PageDevices returns the page p selects, in its order. Returns apperr.Invalid for a
	// sort, limit or attribute key out of bounds.
	PageDevices(ctx context.Context, p DevicePage) ([]*Device, error)
	// CountFleet counts every device by status, product, installed version and state (in the
	// SQL stores, from indexes: no table row read for most devices); those not seen since
	// staleBefore (or never) are also counted in Stale, those with a last error in Errors.
	CountFleet(ctx context.Context, staleBefore time.Time) ([]FleetCount, error)
	// CountDevices counts the devices f selects; its Offset and Limit are ignored.
	CountDevices(ctx context.Context, f DeviceFilter) (int, error)
	// UpdateDevice returns apperr.NotFound if the device does not exist.
	UpdateDevice(ctx context.Context, id string, u DeviceUpdate) error
	// TouchDevices records last-seen times in one batch; unknown ids are ignored.
	TouchDevices(ctx context.Context, seen map[string]time.Time) error
	// AddEvents appends events.
	AddEvents(ctx context.Context, events []Event) error
	// RecordReport updates a device and appends its events in one transaction; apperr.NotFound
	// if the device does not exist (and then nothing is stored).
	RecordReport(ctx context.Context, id string, u DeviceUpdate, events []Event) error
	// FindEvents returns a device's newest events first, at most limit.
	FindEvents(ctx context.Context, deviceID string, limit int) ([]Event, error)
	// CreateEnrollToken stores a token.
	CreateEnrollToken(ctx context.Context, t *EnrollToken) error
	// UseEnrollToken consumes one use of the token with this hash, atomically. Returns
	// apperr.Unauthorized if it does not exist, is used up or expired at now, and apperr.Forbidden
	// (taking no use) if it is limited to a product other than product.
	UseEnrollToken(ctx context.Context, hash []byte, product string, now time.Time) (*EnrollToken, error)
	// FindEnrollTokens lists enrolment tokens, oldest first, without their hashes.
	FindEnrollTokens(ctx context.Context) ([]*EnrollToken, error)
	// RevokeEnrollToken marks a token revoked at at; it admits no device after that. Returns
	// apperr.NotFound if there is no such token.
	RevokeEnrollToken(ctx context.Context, id string, at time.Time) error
	// SetDeviceStatus moves a device from one of the statuses from to status to, atomically, and
	// moves the revocation generation in the same transaction. Returns apperr.NotFound if the
	// device does not exist and apperr.Conflict (changing nothing) if its status is not in from.
	SetDeviceStatus(ctx context.Context, id string, from []string, to string) error
	// DecommissionedDevices lists the ids of decommissioned devices.
	DecommissionedDevices(ctx context.Context) ([]string, error)
	// UseRequest records the id of a signed device request until expires. Returns
	// apperr.Conflict if the id is recorded already: the request is a replay.
	UseRequest(ctx context.Context, id []byte, expires time.Time) error
	// PruneRequests forgets request ids that expired before before, and returns how many.
	PruneRequests(ctx context.Context, before time.Time) (int64, error)
	// RemoveSimulatedDevices deletes every Simulated device with its events, director views,
	// campaign and group memberships and install history, in one transaction, and returns
	// their ids.
	RemoveSimulatedDevices(ctx context.Context) ([]string, error)
}

// TimedStore is a Store that tells Observe how long each call took, by operation name
// ("find_device", "touch_devices", ...): the server's database latency metric. It is safe for
// concurrent use if Store and Observe are.
type TimedStore struct {
	Store
	Observe func(op string, d time.Duration)
}

var _ Store = TimedStore{}

func (s TimedStore) done(op string, start time.Time) { s.Observe(op, time.Since(start)) }

// CreateDevice implements Store.
func (s TimedStore) CreateDevice(ctx context.Context, d *Device) error {
	defer s.done("create_device", time.Now())
	return s.Store.CreateDevice(ctx, d)
}

// FindDevice implements Store.
func (s TimedStore) FindDevice(ctx context.Context, id string) (*Device, error) {
	defer s.done("find_device", time.Now())
	return s.Store.FindDevice(ctx, id)
}

// FindDevices implements Store.
func (s TimedStore) FindDevices(ctx context.Context, f DeviceFilter) ([]*Device, error) {
	defer s.done("find_devices", time.Now())
	return s.Store.FindDevices(ctx, f)
}

// CountDevices implements Store.
func (s TimedStore) CountDevices(ctx context.Context, f DeviceFilter) (int, error) {
	defer s.done("count_devices", time.Now())
	return s.Store.CountDevices(ctx, f)
}

// UpdateDevice implements Store.
func (s TimedStore) UpdateDevice(ctx context.Context, id string, u DeviceUpdate) error {
	defer s.done("update_device", time.Now())
	return s.Store.UpdateDevice(ctx, id, u)
}

// TouchDevices implements Store.
func (s TimedStore) TouchDevices(ctx context.Context, seen map[string]time.Time) error {
	defer s.done("touch_devices", time.Now())
	return s.Store.TouchDevices(ctx, seen)
}

// AddEvents implements Store.
func (s TimedStore) AddEvents(ctx context.Context, events []Event) error {
	defer s.done("add_events", time.Now())
	return s.Store.AddEvents(ctx, events)
}

// RecordReport implements Store.
func (s TimedStore) RecordReport(ctx context.Context, id string, u DeviceUpdate, events []Event) error {
	defer s.done("record_report", time.Now())
	return s.Store.RecordReport(ctx, id, u, events)
}

// FindEvents implements Store.
func (s TimedStore) FindEvents(ctx context.Context, deviceID string, limit int) ([]Event, error) {
	defer s.done("find_events", time.Now())
	return s.Store.FindEvents(ctx, deviceID, limit)
}

// CreateEnrollToken implements Store.
func (s TimedStore) CreateEnrollToken(ctx context.Context, t *EnrollToken) error {
	defer s.done("create_enroll_token", time.Now())
	return s.Store.CreateEnrollToken(ctx, t)
}

// UseRequest implements Store.
func (s TimedStore) UseRequest(ctx context.Context, id []byte, expires time.Time) error {
	defer s.done("use_request", time.Now())
	return s.Store.UseRequest(ctx, id, expires)
}

// UseEnrollToken implements Store.
func (s TimedStore) UseEnrollToken(ctx context.Context, hash []byte, product string, now time.Time) (*EnrollToken, error) {
	defer s.done("use_enroll_token", time.Now())
	return s.Store.UseEnrollToken(ctx, hash, product, now)
}

// RemoveSimulatedDevices implements Store.
func (s TimedStore) RemoveSimulatedDevices(ctx context.Context) ([]string, error) {
	defer s.done("remove_simulated_devices", time.Now())
	return s.Store.RemoveSimulatedDevices(ctx)
}

// Check returns apperr.Invalid for a page out of bounds: an unknown sort, a limit outside 1 to
// MaxPage, an attribute key that is not an inventory key, a value or search too long.
func (p DevicePage) Check() error {
	if p.Sort != "" && !slices.Contains(Sorts, p.Sort) {
		return apperr.E(apperr.Invalid, "sort %.32q: want one of %v", p.Sort, Sorts)
	}
	if p.Limit < 1 || p.Limit > MaxPage {
		return apperr.E(apperr.Invalid, "page size %d: want 1 to %d", p.Limit, MaxPage)
	}
	for k, v := range p.Attributes {
		if err := inventory.ValidKey(k); err != nil {
			return apperr.Wrap(apperr.Invalid, err, err.Error())
		}
		if len(v) > inventory.MaxValue {
			return apperr.E(apperr.Invalid, "attribute %s: value longer than %d bytes", k, inventory.MaxValue)
		}
	}
	if len(p.IDs) > MaxPageIDs {
		return apperr.E(apperr.Invalid, "%d devices to choose from: at most %d (filter by their attributes instead)", len(p.IDs), MaxPageIDs)
	}
	if len(p.Search) > 256 {
		return apperr.E(apperr.Invalid, "search longer than 256 bytes")
	}
	return nil
}
