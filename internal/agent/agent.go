// Package agent is the Upkeep device agent: it enrols the device, polls the server cheaply,
// verifies updates Uptane-style against the image and director repositories, downloads with a
// streaming hash check, installs into the inactive A/B slot, trial-boots, health-checks and
// commits or rolls back, journaling every step before taking it.
//
// The agent must stay small: it links no database, template or server package.
package agent

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"upkeep.dev/upkeep/internal/agent/boot"
	"upkeep.dev/upkeep/internal/delta"
	"upkeep.dev/upkeep/internal/devclient"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/wire"
)

// Config configures an agent. StateDir must be on persistent storage outside the A/B slots.
type Config struct {
	StateDir string
	// Installer puts images in place. If nil, Bootloader and Slots make an ABInstaller.
	Installer  Installer
	Bootloader boot.Bootloader
	Slots      boot.Slots
	// Health decides whether a freshly booted image is good. Nil means healthy.
	Health func(ctx context.Context) error
	// NoticeHook is told when the director's lifecycle notice (end of support) appears or
	// changes, so the device can tell its owner. nil n: the notice was withdrawn.
	NoticeHook func(ctx context.Context, n *uptane.Notice) error
	HTTP       *http.Client
	Logger     *slog.Logger
	Now        func() time.Time
	// Window is the device's own maintenance window, HH:MM-HH:MM UTC: a downloaded image is
	// installed only inside it, unless the director's install policy sets another window or
	// waives it for a critical campaign. Empty: any time.
	Window string
	// Consent asks the owner whether an image that needs consent may be installed now (for
	// example a command the device's UI answers). Consent is also granted by writing the
	// image's SHA-256 into the state folder's "consent" file (GrantConsent). Nil: the file only.
	Consent func(ctx context.Context, img Image) (bool, error)
	// HookTimeout bounds each call of Health, Consent and NoticeHook; a health check that has
	// not answered by then has failed (the update rolls back). Default 5 minutes.
	HookTimeout time.Duration
	// FullCheckEvery forces a full verification at least this often even when check-ins say
	// nothing changed, so that a frozen server shows up through metadata expiry. Default 24h.
	FullCheckEvery time.Duration
	// PollInterval is used until the server suggests one. Default 5 minutes.
	PollInterval time.Duration
	// FixedPoll: PollInterval was chosen by the device's owner (--poll) and the server's
	// suggested interval does not change it; its jitter hint and Retry-After still count.
	FixedPoll bool
	// InventoryDir holds executables printing key=value inventory lines (Mender's inventory
	// scripts); they run at start, after each update and every InventoryInterval (default 24h),
	// each for at most InventoryTimeout (default 30s). Empty: built-in attributes only.
	InventoryDir      string
	InventoryInterval time.Duration
	InventoryTimeout  time.Duration
	// Version is the agent's version, reported in the inventory.
	Version string
	// Lightweight is for the simulator's thousands of in-process devices: no inventory (their
	// attributes are those they enrolled with) and no runtime status file.
	Lightweight bool
	// MinRate and SlowWindow are the slow-retrieval defence: a download that brings fewer than
	// MinRate bytes per second over a SlowWindow is aborted (and resumed later). Defaults 256 B/s
	// over 60 s; a negative MinRate turns the defence off.
	MinRate    int64
	SlowWindow time.Duration
	// CheckpointEvery is how many downloaded bytes may be lost to a power cut. Default 4 MiB.
	CheckpointEvery int64
	// DownloadRetries is how often one cycle retries a failed download before leaving it to
	// the next cycle; MaxRetryWait caps each wait. Defaults 4 and 2 minutes.
	DownloadRetries int
	MaxRetryWait    time.Duration
}

// The slow-retrieval defence's defaults.
const (
	defaultMinRate    = 256
	defaultSlowWindow = time.Minute
)

const defaultHookTimeout = 5 * time.Minute

// withDefaults fills in the zero fields.
func (c Config) withDefaults() Config {
	if c.FullCheckEvery == 0 {
		c.FullCheckEvery = 24 * time.Hour
	}
	if c.HookTimeout <= 0 {
		c.HookTimeout = defaultHookTimeout
	}
	if c.PollInterval == 0 {
		c.PollInterval = 5 * time.Minute
	}
	if c.InventoryInterval <= 0 {
		c.InventoryInterval = DefaultInventoryInterval
	}
	if c.InventoryTimeout <= 0 {
		c.InventoryTimeout = DefaultInventoryTimeout
	}
	if c.MinRate == 0 {
		c.MinRate = defaultMinRate
	}
	if c.SlowWindow == 0 {
		c.SlowWindow = defaultSlowWindow
	}
	if c.CheckpointEvery == 0 {
		c.CheckpointEvery = 4 << 20
	}
	if c.DownloadRetries == 0 {
		c.DownloadRetries = 4
	}
	if c.MaxRetryWait == 0 {
		c.MaxRetryWait = 2 * time.Minute
	}
	if c.Installer == nil && c.Bootloader != nil && c.Slots != nil {
		c.Installer = &ABInstaller{Boot: c.Bootloader, Slots: c.Slots}
	}
	return c
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	switch {
	case c.StateDir == "":
		return errors.New("agent config: StateDir is required")
	case c.Installer == nil && (c.Bootloader == nil || c.Slots == nil):
		return errors.New("agent config: an Installer, or a Bootloader with Slots, is required")
	}
	return nil
}

// Agent runs updates on one device. It is not safe for concurrent use: one goroutine drives it.
type Agent struct {
	cfg        Config
	installer  Installer
	key        ed25519.PrivateKey
	state      *State
	api        *devclient.Client
	dl         *devclient.Client // artifacts: no total timeout (downloadClient)
	log        *slog.Logger
	poll       time.Duration
	pollJitter time.Duration // the server's suggested spread around poll (devclient.NextPoll); 0: ±20%
	// reportAfter is when the server's Retry-After on a refused report ends: until then queued
	// events stay queued instead of being sent again.
	reportAfter time.Time
	// hint and lookup are the last verification's delta hint and image-repository lookup.
	hint   *delta.Hint
	lookup func(name string) (*metadata.TargetFiles, error)
	// ring keeps the agent's recent log lines; failLog is the failure log bundle waiting to be
	// sent, not before failLogAfter (faillog.go).
	ring         *LogRing
	failLog      *wire.LogBundle
	failLogAfter time.Time
	// push is the broker connection's state and nudges (push.go).
	push *pushState
	// inventoryNext is when the inventory is due again (zero: now; inventoryTurn).
	inventoryNext time.Time
	runtime       Runtime // guarded by runtimeMu
}

// EnrollOptions are the facts a device states when it enrols.
type EnrollOptions struct {
	Server       string
	EnrollToken  string // empty: the device waits for an operator
	Identity     wire.Identity
	Installed    Image  // the factory image
	ImageRoot    []byte // provisioned image-repository root.json
	DirectorRoot []byte // provisioned director root.json
}

// Enroll creates the device key (if absent), stores the provisioned trust roots and enrols with
// the server. It is idempotent: enrolling again with the same state directory re-sends the
// same key.
func Enroll(ctx context.Context, cfg Config, o EnrollOptions) (*State, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("enroll: state directory required")
	}
	for name, root := range map[string][]byte{imageMeta: o.ImageRoot, dirMeta: o.DirectorRoot} {
		if _, err := tuf.ParseRoot(root); err != nil {
			return nil, fmt.Errorf("enroll: provisioned %s root: %w", name, err)
		}
		dir := filepath.Join(cfg.StateDir, name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("enroll: %w", err)
		}
		if _, err := os.Stat(filepath.Join(dir, rootFile)); errors.Is(err, fs.ErrNotExist) {
			if err := boot.WriteFileAtomic(filepath.Join(dir, rootFile), root, 0o600); err != nil {
				return nil, fmt.Errorf("enroll: %w", err)
			}
		}
	}
	key, err := loadOrCreateKey(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	st, err := loadState(cfg.StateDir)
	if err != nil {
		st = &State{Phase: PhaseIdle, Installed: o.Installed}
	}
	st.Identity, st.Server = o.Identity, strings.TrimRight(o.Server, "/")
	c := &devclient.Client{Base: st.Server, HTTP: httpClient(cfg)}
	resp, err := c.Enroll(ctx, key, wire.EnrollPayload{
		PublicKey: fmt.Sprintf("%x", key.Public()), Identity: o.Identity, Time: now(cfg),
		Installed: wire.Installed{Target: st.Installed.Target, Version: st.Installed.Version, SecurityVersion: st.Installed.SecurityVersion, SHA256: st.Installed.SHA256},
	}, o.EnrollToken)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	st.DeviceID, st.Status, st.Token, st.TokenExpires = resp.DeviceID, resp.Status, resp.Token, resp.ExpiresAt
	if err := saveState(cfg.StateDir, st); err != nil {
		return nil, err
	}
	// The server may hold no inventory for this enrolment (a new server, a readmitted device):
	// the next run sends the whole set again.
	os.Remove(filepath.Join(cfg.StateDir, inventoryDigestFile)) //nolint:errcheck // absent is fine
	return st, nil
}

func now(cfg Config) time.Time {
	if cfg.Now != nil {
		return cfg.Now().UTC()
	}
	return time.Now().UTC()
}

func httpClient(cfg Config) *http.Client {
	c := &http.Client{Timeout: 5 * time.Minute}
	if cfg.HTTP != nil {
		*c = *cfg.HTTP
	}
	return noAuthRedirects(c)
}

// downloadClient is the client for artifacts: cfg.HTTP (or the default transport) without a
// total timeout, since a large image over a slow link takes as long as it takes. Connecting,
// the TLS handshake and the wait for the response headers are bounded by the transport
// (NewDownloadClient); the body is watched by the slow-retrieval defence (MinRate, SlowWindow).
func downloadClient(cfg Config) *http.Client {
	c := NewDownloadClient()
	if cfg.HTTP != nil {
		*c = *cfg.HTTP
		c.Timeout = 0
	}
	return noAuthRedirects(c)
}

// Timeouts of the artifact transport before the body starts to arrive.
const (
	dialTimeout           = 30 * time.Second
	tlsTimeout            = 30 * time.Second
	responseHeaderTimeout = time.Minute
)

// NewDownloadClient returns an HTTP client for image downloads: no total timeout, but bounded
// connect, TLS handshake and response-header waits. The caller bounds the body (StreamTarget
// and the agent abort a transfer slower than a minimum rate).
func NewDownloadClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
	tr.TLSHandshakeTimeout = tlsTimeout
	tr.ResponseHeaderTimeout = responseHeaderTimeout
	return &http.Client{Transport: tr}
}

func noAuthRedirects(c *http.Client) *http.Client {
	// Artifacts may be redirected to pre-signed object-storage URLs: the device token must not
	// follow, whatever the host.
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= 5 {
			return errors.New("too many redirects")
		}
		req.Header.Del("Authorization")
		return nil
	}
	return c
}

func loadOrCreateKey(dir string) (ed25519.PrivateKey, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	path := filepath.Join(dir, keyFile)
	if k, err := tuf.LoadKey(path); err == nil {
		return k.Private, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	k, err := tuf.GenerateKey()
	if err != nil {
		return nil, err
	}
	if err := tuf.SaveKey(path, k); err != nil {
		return nil, err
	}
	return k.Private, nil
}

// New loads an enrolled agent and finishes whatever the journal says was in progress (a trial
// boot to check and commit, or a rollback to report).
func New(ctx context.Context, cfg Config) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	st, err := loadState(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	key, err := loadOrCreateKey(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, installer: cfg.Installer, key: key, state: st, log: cfg.Logger, poll: cfg.PollInterval}
	if a.log == nil {
		a.log = slog.Default()
	}
	a.log, a.ring = withRing(a.log)
	a.log = a.log.With("device", st.DeviceID)
	a.api = &devclient.Client{Base: st.Server, HTTP: httpClient(cfg)}
	a.dl = &devclient.Client{Base: st.Server, HTTP: downloadClient(cfg)}
	if err := a.resume(ctx); err != nil {
		return nil, err
	}
	return a, nil
}

// State returns a copy of the agent's state that later work does not change.
func (a *Agent) State() State {
	st := *a.state
	if st.Pending != nil {
		p := *st.Pending
		st.Pending = &p
	}
	if st.Notice != nil {
		n := *st.Notice
		st.Notice = &n
	}
	st.Outbox = slices.Clone(st.Outbox)
	return st
}

func (a *Agent) save() error { return saveState(a.cfg.StateDir, a.state) }

// token returns a valid device token, asking for a fresh one with a signed request if needed.
func (a *Agent) token(ctx context.Context) (string, error) {
	if a.state.Token != "" && now(a.cfg).Add(time.Minute).Before(a.state.TokenExpires) {
		return a.state.Token, nil
	}
	resp, err := a.api.Token(ctx, a.key, wire.TokenPayload{DeviceID: a.state.DeviceID, Time: now(a.cfg)})
	if err != nil {
		return "", fmt.Errorf("device token: %w", err)
	}
	a.state.Status = resp.Status
	if resp.Token == "" {
		return "", errNotAccepted
	}
	a.state.Token, a.state.TokenExpires = resp.Token, resp.ExpiresAt
	return resp.Token, a.save()
}

// event queues a report event; it is sent with the next report.
func (a *Agent) event(target, step, status string, fatal bool, msg string) {
	a.eventWith(wire.Event{Target: target, Step: step, Status: status, Fatal: fatal, Message: msg})
}

// eventWith queues ev, stamped with the time.
func (a *Agent) eventWith(ev wire.Event) {
	ev.Time = now(a.cfg)
	a.state.Outbox = append(a.state.Outbox, ev)
	if n := len(a.state.Outbox); n > maxOutbox {
		a.state.Outbox = a.state.Outbox[n-maxOutbox:]
	}
	a.log.Info("update step", "target", ev.Target, "step", ev.Step, "status", ev.Status, "fatal", ev.Fatal, "msg", ev.Message)
}

// errReportLater is flush's answer while the server's Retry-After on a report runs.
var errReportLater = errors.New("report: the server asked to report later")

// flush reports queued events. Failure keeps them for the next try; a report the server refused
// with Retry-After (429: this device's report allowance is used up) is not tried again before
// then.
func (a *Agent) flush(ctx context.Context) error {
	defer a.uploadFailLog(ctx)
	if len(a.state.Outbox) == 0 {
		return nil
	}
	if time.Now().Before(a.reportAfter) {
		return errReportLater
	}
	ev := a.state.Outbox
	if len(ev) > wire.MaxReportEvents {
		ev = ev[:wire.MaxReportEvents]
	}
	i := a.state.Installed
	rep := wire.Report{Installed: wire.Installed{Target: i.Target, Version: i.Version, SecurityVersion: i.SecurityVersion, SHA256: i.SHA256}, State: a.state.Phase, Events: ev}
	tok, err := a.token(ctx)
	if err == nil {
		err = a.api.Report(ctx, tok, rep)
	}
	if err != nil {
		var te *TransientError
		if errors.As(err, &te) && te.RetryAfter > 0 {
			a.reportAfter = time.Now().Add(te.RetryAfter)
		}
		return fmt.Errorf("report: %w", err)
	}
	a.state.Outbox = a.state.Outbox[len(ev):]
	return a.save()
}

// Run polls until ctx ends. Transient errors back off exponentially with jitter, honouring the
// server's Retry-After.
func (a *Agent) Run(ctx context.Context) error {
	backoff := time.Duration(0)
	for {
		a.inventoryTurn(ctx) // at start, after an update, every InventoryInterval
		before := a.state.Installed.SHA256
		err := a.Cycle(ctx)
		wait := a.poll
		if err == nil && a.state.Installed.SHA256 != before {
			// A new image was committed: check in at once, so that the server's inventory and a
			// campaign's health gate see the device on it without waiting a poll interval.
			wait = 0
			a.inventoryNext = time.Time{}
		}
		var te *TransientError
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.As(err, &te):
			backoff = devclient.NextBackoff(backoff)
			wait = devclient.RetryWait(backoff, te.RetryAfter) // never sooner than the server asked
			a.log.Warn("check failed, will retry", "err", err, "in", wait)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
			continue
		case err != nil:
			backoff = 0
			a.log.Error("update cycle failed", "err", err)
		default:
			backoff = 0
		}
		next := devclient.NextPoll(wait, a.pollJitter)
		if next > 0 {
			// One line per idle period, so that whoever reads the log sees the agent waiting.
			a.log.Info("idle until the next check-in", "next_checkin", time.Now().Add(next).UTC().Format(time.RFC3339), "in", next.Round(time.Second).String())
		}
		a.pushTick(ctx) // first: status then shows the push state with the next check-in
		a.noteIdle(time.Now().Add(next))
		if err := a.sleep(ctx, next); err != nil { // a push nudge ends it early (push.go)
			return err
		}
	}
}
