package fleet

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/event"
	"upkeep.dev/upkeep/internal/inventory"
	"upkeep.dev/upkeep/wire"
)

// Service enrols devices and answers their check-ins and reports. Check-ins are answered from
// memory: director versions are cached and last-seen times are written in batches by Flush.
// It is safe for concurrent use.
type Service struct {
	Store  Store
	Tokens auth.DeviceTokens
	// Now is the service's clock: signed request times, enrolment and event times. Tests set a
	// fake one to sign metadata at other times.
	Now func() time.Time
	// TokenClock issues and checks device tokens; nil: the wall clock, which the devices'
	// own clocks follow too.
	TokenClock  func() time.Time
	PollSeconds int
	Logger      *slog.Logger
	// Events, if set, is told of a device's fatal failures and rollbacks (event.DeviceFailed,
	// event.DeviceRolledBack) once their report is stored: one event of each kind per report.
	Events event.Emitter
	// OnReport is told of every stored report (the rollout engine moves campaign members on).
	OnReport func(ctx context.Context, id string, r wire.Report) error
	// OnEnroll is told of every newly stored device (the patch service records the image it
	// enrolled with); its failure does not undo the enrolment.
	OnEnroll func(ctx context.Context, d *Device)
	// MaxPending bounds the devices awaiting an operator's approval: past it, an enrolment
	// without an enrolment token is apperr.Busy. 0: no bound. The count is read from the store
	// at most every pendingRecount and kept up to date in between, so that a flood of
	// enrolments does not count the table each time; with several replicas the bound holds to
	// within what the others admitted in that time.
	MaxPending int

	mu       sync.Mutex
	versions map[string]int64     // director version per known device
	seen     map[string]time.Time // last-seen times not yet written
	accepted sync.Map             // device id → struct{}: devices found accepted
	// denied holds the decommissioned devices (Refresh): their tokens are refused at once,
	// whatever a replica cached about them.
	denied atomic.Pointer[map[string]struct{}]

	pendingMu      sync.Mutex
	pending        int       // devices pending, as last counted plus those enrolled since
	pendingCounted time.Time // when last counted; zero: never
}

// pendingRecount is how long a count of pending devices is trusted.
const pendingRecount = 10 * time.Second

// admitPending reserves a place for one more pending device, or refuses with apperr.Busy when
// MaxPending are pending. A reservation whose device is not stored is returned with
// unreservePending.
func (s *Service) admitPending(ctx context.Context) error {
	if s.MaxPending <= 0 {
		return nil
	}
	s.pendingMu.Lock()
	defer s.pendingMu.Unlock()
	if now := s.now(); s.pendingCounted.IsZero() || now.Sub(s.pendingCounted) > pendingRecount || now.Before(s.pendingCounted) {
		n, err := s.Store.CountDevices(ctx, DeviceFilter{Status: StatusPending})
		if err != nil {
			return err
		}
		s.pending, s.pendingCounted = n, s.now()
	}
	if s.pending >= s.MaxPending {
		return apperr.E(apperr.Busy, "%d devices already await an operator's approval: enrol again later, or with an enrolment token", s.pending)
	}
	s.pending++
	return nil
}

func (s *Service) unreservePending() {
	if s.MaxPending > 0 {
		s.pendingMu.Lock()
		s.pending--
		s.pendingMu.Unlock()
	}
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

func (s *Service) tokenNow() time.Time {
	if s.TokenClock != nil {
		return s.TokenClock()
	}
	return time.Now()
}

func parseSigned(req wire.SignedRequest, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(req.Payload)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return apperr.Wrap(apperr.Invalid, err, "malformed signed payload: "+err.Error())
	}
	return nil
}

func validIdentity(id wire.Identity) error {
	for kind, v := range map[string]string{"product": id.Product, "hardware id": id.HardwareID, "serial": id.Serial} {
		if v == "" || len(v) > 64 || !utf8.ValidString(v) || strings.ContainsAny(v, "/\\\x00") {
			return apperr.E(apperr.Invalid, "identity: %s must be 1-64 characters without slashes", kind)
		}
	}
	if len(id.Attributes) > 32 {
		return apperr.E(apperr.Invalid, "identity: at most 32 attributes")
	}
	for k, v := range id.Attributes {
		if k == "" || len(k) > 64 || len(v) > 256 || !utf8.ValidString(k+v) || strings.ContainsRune(k+v, 0) {
			return apperr.E(apperr.Invalid, "identity: attribute %.64q too long or empty", k)
		}
	}
	return nil
}

// Enroll admits a device. The payload must be signed by the key it carries. With a valid
// enrolment token the device is accepted and gets a device token; without one it is left pending
// for an operator. A wrong token is apperr.Unauthorized and creates nothing.
func (s *Service) Enroll(ctx context.Context, req wire.SignedRequest, enrollToken string) (*wire.EnrollResponse, error) {
	var p wire.EnrollPayload
	if err := parseSigned(req, &p); err != nil {
		return nil, err
	}
	pub, err := hex.DecodeString(p.PublicKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, apperr.E(apperr.Invalid, "public_key must be a hex Ed25519 key")
	}
	if err := auth.VerifyDeviceSignature(pub, req.Payload, req.Signature, p.Time, s.now()); err != nil {
		return nil, apperr.Wrap(apperr.Unauthorized, err, "enrolment refused: "+err.Error())
	}
	if err := validIdentity(p.Identity); err != nil {
		return nil, err
	}
	p.Installed = cleanInstalled(p.Installed)
	id := auth.DeviceID(pub)
	sr := signedRequest{req.Payload, p.Time}
	if d, err := s.Store.FindDevice(ctx, id); err == nil {
		return s.grant(ctx, d, sr, false) // enrolment is idempotent for the same key
	} else if !apperr.Is(err, apperr.NotFound) {
		return nil, err
	}
	status, simulated := StatusPending, false
	if enrollToken != "" {
		// This request will issue a token: it is spent before anything else is taken.
		if err := s.spend(ctx, sr); err != nil {
			return nil, err
		}
		// The store refuses a token limited to another product before taking a use.
		tok, err := s.Store.UseEnrollToken(ctx, auth.HashSecret(enrollToken), p.Identity.Product, s.now())
		if err != nil {
			return nil, err
		}
		status, simulated = StatusAccepted, tok.Simulation
	} else {
		if err := s.admitPending(ctx); err != nil {
			return nil, err
		}
	}
	d := &Device{
		ID: id, PublicKey: pub, Serial: p.Identity.Serial, Product: p.Identity.Product, HardwareID: p.Identity.HardwareID,
		Attributes: p.Identity.Attributes, Status: status, InstalledTarget: p.Installed.Target, InstalledVer: p.Installed.Version,
		SecurityVersion: p.Installed.SecurityVersion, InstalledSHA256: p.Installed.SHA256, State: "enrolled", EnrolledAt: s.now(),
		Simulated: simulated,
	}
	if err := s.Store.CreateDevice(ctx, d); err != nil {
		if status == StatusPending {
			s.unreservePending()
		}
		if apperr.Is(err, apperr.Conflict) { // a concurrent retry of the same enrolment
			if d, err = s.Store.FindDevice(ctx, id); err != nil {
				return nil, err
			}
			return s.grant(ctx, d, sr, status == StatusAccepted)
		}
		return nil, err
	}
	if s.OnEnroll != nil {
		s.OnEnroll(ctx, d)
	}
	s.logger().Info("device enrolled", "device", id, "status", status, "product", d.Product)
	return s.answer(d), nil
}

func (s *Service) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// signedRequest is a verified device request: its signed payload bytes and its stated time.
type signedRequest struct {
	payload []byte
	at      time.Time
}

// spend records a signed request as used, so that it issues a token once. Its id is the SHA-256
// of the signed payload (which names the device and the time; the Ed25519 signature over it is
// deterministic and cannot be varied), kept until the request's time window has closed, in the
// database that every replica shares. Returns apperr.Conflict for a replay.
func (s *Service) spend(ctx context.Context, r signedRequest) error {
	sum := sha256.Sum256(r.payload)
	err := s.Store.UseRequest(ctx, sum[:], r.at.Add(auth.MaxClockSkew).UTC())
	if apperr.Is(err, apperr.Conflict) {
		return apperr.Wrap(apperr.Conflict, err, "signed request already used: each signed request gets one answer with a token; sign a new one")
	}
	return err
}

// grant answers a verified request of an existing device: a decommissioned device is refused,
// and a request that issues a token is spent first (unless spent already). A request answered
// "pending" is not spent: it issues nothing, and agents whose clocks stand still (the recorded
// golden requests) repeat the same bytes once they are accepted.
func (s *Service) grant(ctx context.Context, d *Device, r signedRequest, spent bool) (*wire.EnrollResponse, error) {
	if d.Status == StatusDecommissioned {
		return nil, apperr.E(apperr.Forbidden, "device %s is decommissioned: an operator must readmit it (upkeep devices accept --readmit)", d.ID)
	}
	if d.Status == StatusAccepted && !spent {
		if err := s.spend(ctx, r); err != nil {
			return nil, err
		}
	}
	return s.answer(d), nil
}

func (s *Service) answer(d *Device) *wire.EnrollResponse {
	r := &wire.EnrollResponse{DeviceID: d.ID, Status: d.Status}
	if d.Status == StatusAccepted {
		r.Token, r.ExpiresAt = s.Tokens.Issue(d.ID, s.tokenNow())
	}
	return r
}

// Token issues a fresh device token to an accepted device that signs a token request.
func (s *Service) Token(ctx context.Context, req wire.SignedRequest) (*wire.EnrollResponse, error) {
	var p wire.TokenPayload
	if err := parseSigned(req, &p); err != nil {
		return nil, err
	}
	d, err := s.Store.FindDevice(ctx, p.DeviceID)
	if err != nil {
		if apperr.Is(err, apperr.NotFound) {
			return nil, apperr.E(apperr.Unauthorized, "unknown device %.64q: enrol first", p.DeviceID)
		}
		return nil, err
	}
	if err := auth.VerifyDeviceSignature(d.PublicKey, req.Payload, req.Signature, p.Time, s.now()); err != nil {
		return nil, apperr.Wrap(apperr.Unauthorized, err, "token refused: "+err.Error())
	}
	return s.grant(ctx, d, signedRequest{req.Payload, p.Time}, false)
}

// Accept lets a pending or rejected device in (an accepted one stays so). A decommissioned
// device is readmitted only if readmit is set; otherwise apperr.Conflict.
func (s *Service) Accept(ctx context.Context, id string, readmit bool) error {
	from := []string{StatusPending, StatusRejected, StatusAccepted}
	if readmit {
		from = append(from, StatusDecommissioned)
	}
	err := s.Store.SetDeviceStatus(ctx, id, from, StatusAccepted)
	if apperr.Is(err, apperr.Conflict) {
		return apperr.Wrap(apperr.Conflict, err, apperr.Message(err)+": a decommissioned device is readmitted only on purpose (accept --readmit)")
	}
	if err != nil {
		return err
	}
	s.logger().Info("device accepted", "device", id, "readmit", readmit)
	return s.Refresh(ctx)
}

// Reject refuses a pending device; it stays known (enrolling again answers "rejected") until an
// operator accepts it. apperr.Conflict if the device is not pending.
func (s *Service) Reject(ctx context.Context, id string) error {
	err := s.Store.SetDeviceStatus(ctx, id, []string{StatusPending, StatusRejected}, StatusRejected)
	if apperr.Is(err, apperr.Conflict) {
		return apperr.Wrap(apperr.Conflict, err, apperr.Message(err)+": only a pending device is rejected (decommission an accepted one)")
	}
	return err
}

// Decommission takes an accepted device out of service: its token stops working on every
// replica within a second (each follows the revocation generation, Refresh), the director
// serves it nothing, and its events and reports stay. apperr.Conflict if it is not accepted.
func (s *Service) Decommission(ctx context.Context, id string) error {
	err := s.Store.SetDeviceStatus(ctx, id, []string{StatusAccepted, StatusDecommissioned}, StatusDecommissioned)
	if apperr.Is(err, apperr.Conflict) {
		return apperr.Wrap(apperr.Conflict, err, apperr.Message(err)+": only an accepted device is decommissioned (reject a pending one)")
	}
	if err != nil {
		return err
	}
	s.logger().Info("device decommissioned", "device", id)
	return s.Refresh(ctx)
}

// Refresh reloads the decommissioned devices from the store. The server calls it whenever the
// revocation generation moves (another replica, or this one, revoked something).
func (s *Service) Refresh(ctx context.Context) error {
	ids, err := s.Store.DecommissionedDevices(ctx)
	if err != nil {
		return err
	}
	m := make(map[string]struct{}, len(ids))
	for _, id := range ids {
		m[id] = struct{}{}
		s.accepted.Delete(id)
	}
	s.denied.Store(&m)
	return nil
}

// Denied reports whether the device was decommissioned (as of the last Refresh): its tokens are
// refused. Cheap: every device request asks.
func (s *Service) Denied(id string) bool {
	m := s.denied.Load()
	if m == nil {
		return false
	}
	_, ok := (*m)[id]
	return ok
}

// Authenticate returns the device id a valid device token was issued to, checked on TokenClock
// (the clock that issued it), refusing the tokens of decommissioned devices (ErrDecommissioned).
// It reads no store.
func (s *Service) Authenticate(token string) (string, error) {
	id, err := s.Tokens.Check(token, s.tokenNow())
	if err != nil {
		return "", err
	}
	if s.Denied(id) {
		return "", ErrDecommissioned
	}
	return id, nil
}

// ErrDecommissioned is Authenticate's error for a well-signed token of a decommissioned device.
var ErrDecommissioned = errors.New("device is decommissioned")

// RemoveSimulated deletes every simulated device (Store.RemoveSimulatedDevices) and forgets
// what this replica cached about them; it returns how many it removed. A removed device's
// token stops working at its next request on this replica (the store no longer knows it);
// another replica that cached it as accepted serves it until the token expires, with no
// director view left to name anything.
func (s *Service) RemoveSimulated(ctx context.Context) (int, error) {
	ids, err := s.Store.RemoveSimulatedDevices(ctx)
	if err != nil {
		return 0, err
	}
	s.mu.Lock()
	for _, id := range ids {
		delete(s.versions, id)
		delete(s.seen, id)
	}
	s.mu.Unlock()
	for _, id := range ids {
		s.accepted.Delete(id)
	}
	s.logger().Info("simulated devices removed", "devices", len(ids))
	return len(ids), nil
}

// RequireAccepted returns nil if the device exists and is accepted, else apperr.Unauthorized.
// Each replica remembers the devices it found accepted and asks the store once per device, not
// on every request; a decommissioned device is refused first (Denied), whatever is remembered.
func (s *Service) RequireAccepted(ctx context.Context, id string) error {
	if s.Denied(id) {
		return apperr.E(apperr.Unauthorized, "device is decommissioned")
	}
	if _, ok := s.accepted.Load(id); ok {
		return nil
	}
	d, err := s.Store.FindDevice(ctx, id)
	if apperr.Is(err, apperr.NotFound) || err == nil && d.Status != StatusAccepted {
		return apperr.E(apperr.Unauthorized, "device is unknown or not accepted")
	}
	if err != nil {
		return err
	}
	s.accepted.Store(id, struct{}{})
	return nil
}

// SetDirectorVersion raises the check-in cache's director version of a device, after this or
// another replica signed a new view. It records the version even for a device not cached yet:
// a check-in that read the device from the store just before the change committed would
// otherwise cache the older version for good.
func (s *Service) SetDirectorVersion(id string, v int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.versions == nil {
		s.versions = map[string]int64{}
	}
	if cur, ok := s.versions[id]; !ok || v > cur {
		s.versions[id] = v
	}
}

// Checkin answers a device's poll. It touches the database only the first time it sees a device.
func (s *Service) Checkin(ctx context.Context, id string, c wire.Checkin) (wire.CheckinResponse, error) {
	s.mu.Lock()
	v, ok := s.versions[id]
	if s.seen == nil {
		s.seen = map[string]time.Time{}
	}
	s.seen[id] = s.now()
	s.mu.Unlock()
	if !ok {
		d, err := s.Store.FindDevice(ctx, id)
		if err != nil {
			return wire.CheckinResponse{}, err
		}
		v = d.DirectorVersion
		s.mu.Lock()
		if cur, ok := s.versions[id]; !ok || cur < v {
			if s.versions == nil {
				s.versions = map[string]int64{}
			}
			s.versions[id] = v
		}
		v = s.versions[id]
		s.mu.Unlock()
	}
	return wire.CheckinResponse{DirectorVersion: v, Changed: v != c.DirectorVersion, PollSeconds: s.PollSeconds}, nil
}

// Flush writes the batched last-seen times and returns how many devices it wrote.
func (s *Service) Flush(ctx context.Context) (int, error) {
	s.mu.Lock()
	seen := s.seen
	s.seen = nil
	s.mu.Unlock()
	if len(seen) == 0 {
		return 0, nil
	}
	if err := s.Store.TouchDevices(ctx, seen); err != nil {
		s.mu.Lock() // keep them for the next flush
		for id, t := range seen {
			if _, ok := s.seen[id]; !ok {
				if s.seen == nil {
					s.seen = map[string]time.Time{}
				}
				s.seen[id] = t
			}
		}
		s.mu.Unlock()
		return 0, err
	}
	return len(seen), nil
}

// maxMessage is the longest event message stored, in bytes; longer ones are cut.
const maxMessage = 1024

// cleanText makes device-supplied text storable: invalid UTF-8 becomes U+FFFD, NUL bytes are
// dropped, and the result is cut to at most max bytes on a character boundary.
func cleanText(s string, max int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	s = strings.ReplaceAll(s, "\x00", "")
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

func cleanInstalled(in wire.Installed) wire.Installed {
	in.Target, in.Version, in.SHA256 = cleanText(in.Target, 255), cleanText(in.Version, 64), cleanText(in.SHA256, 64)
	return in
}

// FailureEvent is the data of the device.failed and device.rolled_back events.
type FailureEvent struct {
	Device    string    `json:"device"`
	Target    string    `json:"target,omitempty"` // the image that failed or was rolled back from
	Step      string    `json:"step"`
	Message   string    `json:"message,omitempty"`
	Time      time.Time `json:"time"`                // as the device's clock has it
	Installed string    `json:"installed,omitempty"` // what the device runs now
}

// emitFailures tells s.Events of the report's first fatal failure and first rollback.
func (s *Service) emitFailures(ctx context.Context, id string, r wire.Report) {
	if s.Events == nil {
		return
	}
	var failed, rolledBack bool
	for _, e := range r.Events {
		typ := ""
		switch {
		case e.Step == wire.StepRollback && !rolledBack:
			typ, rolledBack = event.DeviceRolledBack, true
		case e.Step != wire.StepRollback && e.Fatal && e.Status == wire.StatusFailed && !failed:
			typ, failed = event.DeviceFailed, true
		default:
			continue
		}
		// The event's time is the server's (when it learned); the device's own clock, which it
		// may set as it likes, is in the data.
		event.Emit(ctx, s.Events, event.Event{Type: typ, Subject: "device/" + id, Time: s.now(),
			Data: FailureEvent{Device: id, Target: e.Target, Step: e.Step, Message: e.Message, Time: e.Time, Installed: r.Installed.Target}})
	}
}

// SetInventory replaces a device's attributes with the inventory it sent, once every limit holds
// (internal/inventory: apperr.TooLarge for a limit, apperr.Invalid for a bad key or value; then
// nothing changes). Only the current set is kept. Groups, filters and dynamic campaigns read
// the stored attributes, so they see the change at once. Inventory is device-asserted: it
// selects devices for targeting and grants nothing.
func (s *Service) SetInventory(ctx context.Context, id string, inv wire.Inventory) (wire.InventoryResponse, error) {
	attrs := inventory.Attributes(inv.Attributes)
	if err := attrs.Validate(); err != nil {
		if errors.Is(err, inventory.ErrLimit) {
			return wire.InventoryResponse{}, apperr.E(apperr.TooLarge, "%v", err)
		}
		return wire.InventoryResponse{}, apperr.E(apperr.Invalid, "%v", err)
	}
	flat := attrs.Flatten()
	if err := s.Store.UpdateDevice(ctx, id, DeviceUpdate{Attributes: &flat}); err != nil {
		return wire.InventoryResponse{}, err
	}
	return wire.InventoryResponse{Digest: attrs.Digest(), Attributes: len(attrs)}, nil
}

// Report records a device's events and its current state. It validates the whole report before
// storing any of it.
func (s *Service) Report(ctx context.Context, id string, r wire.Report) error {
	if len(r.Events) > wire.MaxReportEvents {
		return apperr.E(apperr.Invalid, "at most %d events per report", wire.MaxReportEvents)
	}
	if len(r.State) > 32 || len(r.Installed.Target) > 255 || len(r.Installed.Version) > 64 || len(r.Installed.SHA256) > 64 {
		return apperr.E(apperr.Invalid, "state or installed fields too long")
	}
	// Text is stored as the database's text: valid UTF-8 without NUL (PostgreSQL refuses
	// either, and a device would resend a refused report for ever).
	r.State, r.Installed = cleanText(r.State, 32), cleanInstalled(r.Installed)
	r.Events = slices.Clone(r.Events)
	events := make([]Event, 0, len(r.Events))
	var lastErr *string
	for i := range r.Events {
		e := &r.Events[i]
		if e.Step == "" || len(e.Step) > 32 || len(e.Status) > 32 || len(e.Target) > 255 {
			return apperr.E(apperr.Invalid, "event step, status or target missing or too long")
		}
		e.Step, e.Status, e.Target, e.Message = cleanText(e.Step, 32), cleanText(e.Status, 32), cleanText(e.Target, 255), cleanText(e.Message, maxMessage)
		if e.Step == "" {
			return apperr.E(apperr.Invalid, "event step missing")
		}
		msg := e.Message
		if e.Time.IsZero() {
			e.Time = s.now()
		}
		events = append(events, Event{DeviceID: id, Time: e.Time, Target: e.Target, Step: e.Step, Status: e.Status, Fatal: e.Fatal, Message: msg})
		if e.Status == wire.StatusFailed {
			m := fmt.Sprintf("%s: %s", e.Step, msg)
			lastErr = &m
		} else if e.Step == wire.StepCommit && e.Status == wire.StatusOK {
			empty := ""
			lastErr = &empty
		}
	}
	u := DeviceUpdate{State: &r.State, LastError: lastErr}
	if r.Installed.Target != "" {
		u.InstalledTarget, u.InstalledVer, u.SecurityVersion, u.InstalledSHA256 = &r.Installed.Target, &r.Installed.Version, &r.Installed.SecurityVersion, &r.Installed.SHA256
	}
	if err := s.Store.RecordReport(ctx, id, u, events); err != nil { // NotFound for unknown devices
		return err
	}
	s.emitFailures(ctx, id, r)
	if s.OnReport != nil {
		return s.OnReport(ctx, id, r)
	}
	return nil
}
