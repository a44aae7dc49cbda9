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
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/limit"
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
	// made through another replica shows after at most this long). It is also how long a
	// replica trusts what it read of a device to check its target token (the token generation,
	// the device's kind and status): a token rotated or a device rejected through another
	// replica stops working there after at most this long. 0: 5 s.
	CacheFor time.Duration
	// BodyTimeout is how long the body of a write (feedback, configData) may take to arrive; it
	// is read in full before the request takes any place in flight, and after it the answer is
	// 408. 0: limit.DefaultBodyTimeout (10 s).
	BodyTimeout time.Duration
	// MaxPerDevice bounds one controller's requests in flight, MaxPerIP one source address's
	// (IPv6: its /64) requests while their token is checked and its gateway registrations, so
	// that one client cannot take the others' share of MaxInFlight. 0: limit.DefaultMaxPerDevice
	// (4), limit.DefaultMaxPerIP (32).
	MaxPerDevice, MaxPerIP int
	// WritesPerMinute is how many writes (feedback of any kind, configData) one device may send
	// a minute; RegisterPerMinute how many controllers one source address may register with the
	// gateway token a minute. Beyond either: 429 with the Retry-After when the allowance is
	// back. 0: DefaultWritesPerMinute (20), DefaultRegisterPerMinute (30).
	WritesPerMinute, RegisterPerMinute int
}

// Defaults of the per-device and per-address rates (Config fields of the same meaning).
const (
	DefaultWritesPerMinute   = 20
	DefaultRegisterPerMinute = 30
)

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
	// Revocations returns the server's revocation generation, which every replica follows and
	// which moves when a device is rejected or decommissioned or a target token rotated: what a
	// replica remembers of a device to check its token, and its poll answer, are read again
	// when it moved. nil: only CacheFor bounds them.
	Revocations func() int64

	inflight     atomic.Int64
	polls        sync.Map // device id → *pollEntry
	digests      sync.Map // sha256 → *digest (md5 and sha1 of a blob, computed once)
	creds        sync.Map // device id → *cred: what a target token is checked against
	perDevice    limit.PerKey
	perIP        limit.PerKey
	writeRate    limit.Rate // writes per device
	registerRate limit.Rate // gateway registrations per source address
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

// TargetToken is the target security token of a controller: an HMAC under the server's key of
// its id and its token generation (Store.TokenGeneration), so a token is rotated by raising the
// generation. Generation 0, a device whose token was never rotated, keeps the first derivation
// (the id alone). It is printed by `upkeep devices create --ddi` and goes into the device's DDI
// client configuration.
func (s *Service) TargetToken(controllerID string, generation int64) string {
	m := hmac.New(sha256.New, s.Config.TokenKey)
	if generation == 0 {
		m.Write([]byte("upkeep-ddi-target-token/v1\x00"))
		m.Write([]byte(controllerID))
	} else { // a controller id holds no NUL: the fields cannot run into each other
		m.Write([]byte("upkeep-ddi-target-token/v2\x00"))
		m.Write([]byte(controllerID))
		m.Write([]byte("\x00" + strconv.FormatInt(generation, 10)))
	}
	return hex.EncodeToString(m.Sum(nil)[:20])
}

// cred is what a replica read of a device to check its target token: the token generation and
// whether the device may use a token at all (a DDI device, accepted or pending).
type cred struct {
	gen    int64
	usable bool
	dev    *fleet.Device // as read then; nil if the device does not exist
	at     time.Time
	revs   int64 // the revocation generation it was read at
}

func (s *Service) revocations() int64 {
	if s.Revocations == nil {
		return 0
	}
	return s.Revocations()
}

// credOf returns the device's cred, read from the store at most every CacheFor and whenever
// the revocation generation moved; fresh reports whether it was read for this call (its dev is
// then current). The poll path stays cheap: a device polling within CacheFor is not read.
func (s *Service) credOf(ctx context.Context, id string) (c *cred, fresh bool, err error) {
	revs := s.revocations()
	if v, ok := s.creds.Load(id); ok {
		if c := v.(*cred); time.Since(c.at) < s.cacheFor() && c.revs == revs {
			return c, false, nil
		}
	}
	c = &cred{at: time.Now(), revs: revs}
	d, err := s.Devices.FindDevice(ctx, id)
	switch {
	case apperr.Is(err, apperr.NotFound):
	case err != nil:
		return nil, false, err
	default:
		c.dev = d
		c.usable = d.IsDDI() && (d.Status == fleet.StatusAccepted || d.Status == fleet.StatusPending)
		if c.usable {
			if c.gen, err = s.Actions.TokenGeneration(ctx, id); err != nil {
				return nil, false, err
			}
		}
	}
	if c.dev != nil { // unknown ids are not remembered: they would fill the map
		s.creds.Store(id, c)
	}
	return c, true, nil
}

// forget drops what this replica remembers of a device: its cred and its poll answer.
func (s *Service) forget(id string) {
	s.creds.Delete(id)
	s.polls.Delete(id)
}

// authKind is how a request authenticated.
type authKind int

const (
	authNone authKind = iota
	authTarget
	authGateway
)

// Authorization schemes of DDI (hawkBit's "TargetToken" and "GatewayToken").
const (
	SchemeTarget  = "TargetToken"
	SchemeGateway = "GatewayToken"
)

// parseAuthorization splits an Authorization header into its scheme, canonical (SchemeTarget or
// SchemeGateway; the header's is case-insensitive), and its token. ok is false for any other
// scheme, an empty token, or a token that is not 1-256 printable ASCII characters.
func parseAuthorization(header string) (scheme, token string, ok bool) {
	sc, tok, found := strings.Cut(strings.TrimSpace(header), " ")
	tok = strings.TrimSpace(tok)
	if !found || tok == "" || len(tok) > 256 {
		return "", "", false
	}
	for i := 0; i < len(tok); i++ {
		if tok[i] <= ' ' || tok[i] > '~' {
			return "", "", false
		}
	}
	switch {
	case strings.EqualFold(sc, SchemeTarget):
		return SchemeTarget, tok, true
	case strings.EqualFold(sc, SchemeGateway):
		return SchemeGateway, tok, true
	}
	return "", "", false
}

// authenticate checks the Authorization header of a request for controllerID: a target token
// of the device's current generation, the device a DDI device accepted or pending (a rejected
// device's token stops working, and so does that of any status but these two), or the tenant's
// gateway token. With a target token it also returns the device when it was read for this
// call. An error is the store's.
func (s *Service) authenticate(ctx context.Context, header, controllerID string) (authKind, *fleet.Device, error) {
	scheme, tok, ok := parseAuthorization(header)
	if !ok {
		return authNone, nil, nil
	}
	switch {
	case scheme == SchemeTarget && len(s.Config.TokenKey) > 0:
		c, fresh, err := s.credOf(ctx, controllerID)
		if err != nil || !c.usable {
			return authNone, nil, err
		}
		if subtle.ConstantTimeCompare([]byte(tok), []byte(s.TargetToken(controllerID, c.gen))) == 1 {
			if fresh {
				return authTarget, c.dev, nil
			}
			return authTarget, nil, nil
		}
	case scheme == SchemeGateway && s.Config.GatewayToken != "":
		a, b := sha256.Sum256([]byte(tok)), sha256.Sum256([]byte(s.Config.GatewayToken))
		if subtle.ConstantTimeCompare(a[:], b[:]) == 1 {
			return authGateway, nil, nil
		}
	}
	return authNone, nil, nil
}

// errNotDDI is returned for a controller id that names a device of another kind.
var errNotDDI = errors.New("not a DDI device")

// retryLater is a refusal (apperr.Busy) with the time after which the client may try again; fail
// sends it as Retry-After.
type retryLater struct {
	wait time.Duration
	err  error
}

func (e *retryLater) Error() string { return e.err.Error() }
func (e *retryLater) Unwrap() error { return e.err }

func busy(wait time.Duration, format string, args ...any) error {
	return &retryLater{wait: wait, err: apperr.E(apperr.Busy, format, args...)}
}

// device returns the DDI device a request speaks for, registering it on its first request with
// the gateway token if the server is configured so. A device that is not accepted is returned
// with its status; the handlers give it no action.
//
// Registration is bounded as enrolment is: per source address, RegisterPerMinute registrations
// and MaxPerIP in flight; a pending registration takes a place among fleet.Service.MaxPending
// (the fleet refuses it with apperr.Busy past that), so a gateway token holder cannot fill the
// table with controller ids awaiting approval.
func (s *Service) device(ctx context.Context, q *request) (*fleet.Device, error) {
	id := q.id
	if q.dev != nil {
		d := q.dev
		q.dev = nil // read for this request: good once
		return s.check(ctx, d)
	}
	d, err := s.Devices.FindDevice(ctx, id)
	if apperr.Is(err, apperr.NotFound) && q.how == authGateway && s.Config.Product != "" && s.Config.HardwareID != "" {
		if err := s.register(ctx, q); err != nil {
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
	return s.check(ctx, d)
}

// register stores a controller that presented the gateway token, within its source address's
// limits.
func (s *Service) register(ctx context.Context, q *request) error {
	if err := s.allow(ctx, s.Config.Product); err != nil {
		return err
	}
	if !s.perIP.Acquire(q.client, cmp.Or(s.Config.MaxPerIP, limit.DefaultMaxPerIP)) {
		return busy(time.Second, "too many registrations from this address in flight: try again later")
	}
	defer s.perIP.Release(q.client)
	if ok, wait := s.registerRate.Allow(q.client, cmp.Or(s.Config.RegisterPerMinute, DefaultRegisterPerMinute), time.Now()); !ok {
		return busy(wait, "too many controllers registered from this address: try again later")
	}
	st := fleet.StatusPending
	if s.Config.AutoAccept {
		st = fleet.StatusAccepted
	}
	nd := &fleet.Device{ID: q.id, Kind: fleet.KindDDI, Serial: q.id, Product: s.Config.Product, HardwareID: s.Config.HardwareID, Status: st}
	if err := s.Fleet.Register(ctx, nd); err != nil && !apperr.Is(err, apperr.Conflict) {
		if apperr.Is(err, apperr.Busy) {
			return &retryLater{wait: time.Minute, err: err}
		}
		return err
	}
	return nil
}

// check applies the rules every request of a DDI device passes: a DDI device, of a product that
// allows DDI, accepted or pending.
func (s *Service) check(ctx context.Context, d *fleet.Device) (*fleet.Device, error) {
	id := d.ID
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
// target token. The token generation is raised first, so a device created again under the id of
// a removed one does not get the removed one's token.
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
	gen, err := s.Actions.RotateToken(ctx, id)
	if err != nil {
		return "", err
	}
	s.forget(id)
	return s.TargetToken(id, gen), nil
}

// Token returns the target token of an existing DDI device; with rotate, a new one (the next
// generation), and the old one stops working: at once on this replica, within CacheFor on the
// others.
func (s *Service) Token(ctx context.Context, id string, rotate bool) (string, error) {
	if len(s.Config.TokenKey) == 0 {
		return "", apperr.E(apperr.Unavailable, "DDI is not enabled on this server")
	}
	d, err := s.Devices.FindDevice(ctx, id)
	if err != nil {
		return "", err
	}
	if !d.IsDDI() {
		return "", apperr.E(apperr.Invalid, "device %s is not a DDI device", id)
	}
	var gen int64
	if rotate {
		gen, err = s.Actions.RotateToken(ctx, id)
		s.forget(id)
		if err == nil {
			s.logger().Info("DDI target token rotated", "device", id, "generation", gen)
		}
	} else {
		gen, err = s.Actions.TokenGeneration(ctx, id)
	}
	if err != nil {
		return "", err
	}
	return s.TargetToken(id, gen), nil
}

// sleep formats a polling interval as DDI's "HH:MM:SS".
func sleep(seconds int) string {
	if seconds <= 0 {
		seconds = 300
	}
	return fmt.Sprintf("%02d:%02d:%02d", seconds/3600, seconds/60%60, seconds%60)
}
