// Package ddi serves hawkBit's Direct Device Integration API (DDI v1) at
// /{tenant}/controller/v1/{controllerId}, so that devices running SWUpdate's suricatta, RAUC's
// rauc-hawkbit-updater or Zephyr's hawkBit client are updated by Upkeep unchanged.
//
// DDI devices are fleet devices of kind fleet.KindDDI: in groups, filters and campaigns like any
// other. The director assigns them releases as it does agents; this package turns the device's
// assignment into a DDI action (an integer id, kept in Store), its install policy into the
// deployment's download/update modes, its maintenance window and the confirmation (consent)
// flow, and the device's feedback into fleet reports (fleet.Service.Report), which move campaign
// members on. It offers only targets of the image repository's offline-signed targets metadata.
// A DDI device verifies only its bundle's own signature: it checks no Uptane metadata, so the
// server's signed targets protect what is offered, not what the device accepts.
package ddi

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/wire"
)

// DefaultTenant is hawkBit's default tenant, the one tenant an Upkeep server serves unless
// configured otherwise. Tenants compare case-insensitively, as in hawkBit (Zephyr's client
// sends "default").
const DefaultTenant = "DEFAULT"

// Devices is the device store as the DDI API needs it (fleet.Store has it).
type Devices interface {
	// FindDevice returns apperr.NotFound if the device does not exist.
	FindDevice(ctx context.Context, id string) (*fleet.Device, error)
	// UpdateDevice returns apperr.NotFound if the device does not exist.
	UpdateDevice(ctx context.Context, id string, u fleet.DeviceUpdate) error
}

// Fleet is the device service (fleet.Service has it).
type Fleet interface {
	// Register stores a new DDI device; apperr.Conflict if the id exists.
	Register(ctx context.Context, d *fleet.Device) error
	// Checkin records that the device polled and returns its director version from memory.
	Checkin(ctx context.Context, id string, c wire.Checkin) (wire.CheckinResponse, error)
	// Report stores events and the device's state and moves its campaign members on.
	Report(ctx context.Context, id string, r wire.Report) error
}

// Targets is the image repository's signed targets (imagerepo.Service has it).
type Targets interface {
	// TargetFile returns the current offline-signed entry of a target, or apperr.NotFound.
	TargetFile(ctx context.Context, name string) (*metadata.TargetFiles, error)
}

// Config configures the DDI API.
type Config struct {
	// Tenant is the one tenant served; "" is DefaultTenant.
	Tenant string
	// GatewayToken, if set, authenticates any controller of the tenant (Authorization:
	// GatewayToken ...), as hawkBit's gateway security token does.
	GatewayToken string
	// Product and HardwareID, if both set, let an unknown controller that presents the gateway
	// token register itself as a device of this product and hardware. AutoAccept accepts it at
	// once; otherwise it waits, pending, for `upkeep devices accept`.
	Product, HardwareID string
	AutoAccept          bool
	// PollSeconds is the polling interval given to devices (config.polling.sleep).
	PollSeconds int
	// PublicURL is the base of the links given to devices; "" uses the request's scheme and Host.
	PublicURL string
	// TokenKey derives the target tokens (HMAC-SHA256); every replica needs the same key.
	TokenKey []byte
	// MaxInFlight bounds DDI requests in flight; past it devices get 429 with a Retry-After.
	// 0: 4096.
	MaxInFlight int
	// CacheFor is how long a poll answer is reused while nothing changes on this replica
	// (feedback, configData, confirmation and new assignments invalidate it at once; a change
	// made through another replica shows after at most this long). 0: 5 s.
	CacheFor time.Duration
}

// Service answers DDI devices. It is safe for concurrent use.
type Service struct {
	Config  Config
	Devices Devices
	Fleet   Fleet
	Actions Store
	Targets Targets
	Blobs   release.BlobStore
	// AllowDDI returns an error (apperr.Forbidden) if the product's policy forbids DDI devices;
	// nil allows all.
	AllowDDI func(ctx context.Context, product string) error
	Now      func() time.Time
	Logger   *slog.Logger

	inflight atomic.Int64
	polls    sync.Map // device id → *pollEntry
	digests  sync.Map // sha256 → *digest (md5 and sha1 of a blob, computed once)
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

func (s *Service) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func (s *Service) tenant() string {
	if s.Config.Tenant == "" {
		return DefaultTenant
	}
	return s.Config.Tenant
}

func (s *Service) cacheFor() time.Duration {
	if s.Config.CacheFor > 0 {
		return s.Config.CacheFor
	}
	return 5 * time.Second
}

var controllerIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$`)

// ValidControllerID checks a controller id as Upkeep stores it: 1-64 characters of
// A-Z a-z 0-9 . _ : -, starting with a letter or digit.
func ValidControllerID(id string) error {
	if !controllerIDRe.MatchString(id) {
		return apperr.E(apperr.Invalid, "controller id %.64q: want 1-64 characters of A-Z a-z 0-9 . _ : -", id)
	}
	return nil
}

// TargetToken is the target security token of a controller: an HMAC of its id under the
// server's key, so it is checked without the database. It is printed by `upkeep devices create
// --ddi` and goes into the device's DDI client configuration.
func (s *Service) TargetToken(controllerID string) string {
	m := hmac.New(sha256.New, s.Config.TokenKey)
	m.Write([]byte("upkeep-ddi-target-token/v1\x00"))
	m.Write([]byte(controllerID))
	return hex.EncodeToString(m.Sum(nil)[:20])
}

// authKind is how a request authenticated.
type authKind int

const (
	authNone authKind = iota
	authTarget
	authGateway
)

// authenticate checks the Authorization header of a request for controllerID: a target token
// (hawkBit's "TargetToken") or the tenant's gateway token ("GatewayToken").
func (s *Service) authenticate(header, controllerID string) authKind {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(header), " ")
	tok = strings.TrimSpace(tok)
	if !ok || tok == "" {
		return authNone
	}
	switch {
	case strings.EqualFold(scheme, "TargetToken") && len(s.Config.TokenKey) > 0:
		if subtle.ConstantTimeCompare([]byte(tok), []byte(s.TargetToken(controllerID))) == 1 {
			return authTarget
		}
	case strings.EqualFold(scheme, "GatewayToken") && s.Config.GatewayToken != "":
		a, b := sha256.Sum256([]byte(tok)), sha256.Sum256([]byte(s.Config.GatewayToken))
		if subtle.ConstantTimeCompare(a[:], b[:]) == 1 {
			return authGateway
		}
	}
	return authNone
}

// errNotDDI is returned for a controller id that names a device of another kind.
var errNotDDI = errors.New("not a DDI device")

// device returns the DDI device a request speaks for, registering it on its first request with
// the gateway token if the server is configured so. A device that is not accepted is returned
// with its status; the handlers give it no action.
func (s *Service) device(ctx context.Context, id string, how authKind) (*fleet.Device, error) {
	d, err := s.Devices.FindDevice(ctx, id)
	if apperr.Is(err, apperr.NotFound) && how == authGateway && s.Config.Product != "" && s.Config.HardwareID != "" {
		if err := s.allow(ctx, s.Config.Product); err != nil {
			return nil, err
		}
		st := fleet.StatusPending
		if s.Config.AutoAccept {
			st = fleet.StatusAccepted
		}
		nd := &fleet.Device{ID: id, Kind: fleet.KindDDI, Serial: id, Product: s.Config.Product, HardwareID: s.Config.HardwareID, Status: st}
		if err := s.Fleet.Register(ctx, nd); err != nil && !apperr.Is(err, apperr.Conflict) {
			return nil, err
		}
		d, err = s.Devices.FindDevice(ctx, id)
	}
	if apperr.Is(err, apperr.NotFound) {
		return nil, apperr.E(apperr.Unauthorized, "unknown controller %s", id)
	}
	if err != nil {
		return nil, err
	}
	if !d.IsDDI() {
		return nil, apperr.Wrap(apperr.Unauthorized, errNotDDI, "controller "+id+" is not a DDI device")
	}
	if err := s.allow(ctx, d.Product); err != nil {
		return nil, err
	}
	if d.Status != fleet.StatusAccepted && d.Status != fleet.StatusPending {
		return nil, apperr.E(apperr.Forbidden, "device %s is %s", id, d.Status)
	}
	return d, nil
}

func (s *Service) allow(ctx context.Context, product string) error {
	if s.AllowDDI == nil {
		return nil
	}
	return s.AllowDDI(ctx, product)
}

// Create stores a DDI device created ahead of time by an operator, accepted, and returns its
// target token.
func (s *Service) Create(ctx context.Context, id, product, hardwareID string) (string, error) {
	if err := ValidControllerID(id); err != nil {
		return "", err
	}
	if len(s.Config.TokenKey) == 0 {
		return "", apperr.E(apperr.Unavailable, "DDI is not enabled on this server")
	}
	if err := s.allow(ctx, product); err != nil {
		return "", err
	}
	d := &fleet.Device{ID: id, Kind: fleet.KindDDI, Serial: id, Product: product, HardwareID: hardwareID, Status: fleet.StatusAccepted}
	if err := s.Fleet.Register(ctx, d); err != nil {
		if apperr.Is(err, apperr.Conflict) {
			old, ferr := s.Devices.FindDevice(ctx, id)
			if ferr == nil && old.IsDDI() {
				return "", apperr.E(apperr.Conflict, "DDI device %s exists; its target token is unchanged (devices token --ddi %s)", id, id)
			}
			return "", apperr.E(apperr.Conflict, "device %s exists", id)
		}
		return "", err
	}
	return s.TargetToken(id), nil
}

// Token returns the target token of an existing DDI device.
func (s *Service) Token(ctx context.Context, id string) (string, error) {
	d, err := s.Devices.FindDevice(ctx, id)
	if err != nil {
		return "", err
	}
	if !d.IsDDI() {
		return "", apperr.E(apperr.Invalid, "device %s is not a DDI device", id)
	}
	return s.TargetToken(id), nil
}

// sleep formats a polling interval as DDI's "HH:MM:SS".
func sleep(seconds int) string {
	if seconds <= 0 {
		seconds = 300
	}
	return fmt.Sprintf("%02d:%02d:%02d", seconds/3600, seconds/60%60, seconds%60)
}
