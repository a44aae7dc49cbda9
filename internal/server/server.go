// Package server is a running Upkeep server: it opens the stores and the artifact store, wires
// them to the domain services and the HTTP API, and owns every background job (last-seen
// flushes, rollout ticks, re-signing, warnings, following other replicas), each stoppable and
// awaited by Close. The upkeep command's serve, the demo, the benchmarks and the end-to-end
// tests all start it.
package server

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/auth"
	blobfs "upkeep.dev/upkeep/internal/blob/fs"
	blobs3 "upkeep.dev/upkeep/internal/blob/s3"
	"upkeep.dev/upkeep/internal/csafpub"
	"upkeep.dev/upkeep/internal/ddi"
	"upkeep.dev/upkeep/internal/deltagen"
	"upkeep.dev/upkeep/internal/director"
	"upkeep.dev/upkeep/internal/exposure"
	"upkeep.dev/upkeep/internal/faillog"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/httpapi"
	"upkeep.dev/upkeep/internal/imagerepo"
	"upkeep.dev/upkeep/internal/label"
	"upkeep.dev/upkeep/internal/product"
	"upkeep.dev/upkeep/internal/push"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/rollout"
	"upkeep.dev/upkeep/internal/sso"
	"upkeep.dev/upkeep/internal/store/postgres"
	"upkeep.dev/upkeep/internal/store/sqlite"
	"upkeep.dev/upkeep/internal/store/sqlstore"
	"upkeep.dev/upkeep/internal/transparency"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/webhook"
	"upkeep.dev/upkeep/wire"
)

// Config configures `upkeep serve`.
type Config struct {
	Addr        string // listen address; ":0" picks a free port
	DataDir     string // SQLite database and artifacts folder live here
	KeysDir     string // online keys and bootstrap trust files
	Database    string // "" (SQLite in DataDir) or a postgres:// URL
	Blobs       string // "" (a folder in DataDir) or s3://bucket?endpoint=...
	S3AccessKey string
	S3SecretKey string
	MaxArtifact int64
	PollSeconds int
	// MaxCheckins bounds check-ins in flight; past it devices get 429 and a spread Retry-After.
	// 0: the HTTP API's default (4096).
	MaxCheckins int
	// MaxTokenRequests bounds device token requests in flight. 0: the HTTP API's default (256).
	MaxTokenRequests int
	// BodyTimeout is how long a device request's body may take to arrive; it is read in full
	// before the request takes a place among MaxCheckins or MaxTokenRequests. Default 10 s.
	BodyTimeout time.Duration
	// MaxPerDevice bounds one device's check-ins and reports in flight (default 4), MaxPerIP one
	// source address's (IPv6: /64) token requests and enrolments in flight (default 32).
	MaxPerDevice, MaxPerIP int
	// EnrollPerMinute limits enrolments without an enrolment token per source address (default
	// 30); ReportsPerMinute limits reports per device (default 20). Beyond: 429 + Retry-After.
	EnrollPerMinute, ReportsPerMinute int
	// MaxPending bounds the devices awaiting approval (default 10,000); PendingTTL is how long
	// one waits before the housekeeping job removes it (default 7 days).
	MaxPending int
	PendingTTL time.Duration
	// EventRetention is how long device events are kept (default 90 days), MaxDeviceEvents how
	// many per device at most (default 1,000); the housekeeping job applies both.
	EventRetention  time.Duration
	MaxDeviceEvents int
	// AuditRetention is how long the audit trail's records are kept (default 400 days; 0 keeps
	// them forever: unlike the other bounds, a zero here is not replaced by the default). The
	// audit-prune job removes older ones and keeps the last one's hash as the chain's checkpoint.
	AuditRetention time.Duration
	// HousekeepingEvery is how often the housekeeping job (pending expiry, event retention)
	// and the audit-prune job run. Default 10 minutes.
	HousekeepingEvery time.Duration
	// RolloutEvery is how often the rollout engine drives running campaigns. Default 1 s.
	RolloutEvery time.Duration
	// TokenTTL is the device token lifetime, at most auth.MaxTokenTTL (24 h); tokens that
	// expire further than this (and auth.TokenSkew) from now are refused.
	TokenTTL  time.Duration
	Lifetimes tuf.Lifetimes
	Logger    *slog.Logger
	Now       func() time.Time // a fake clock in tests
	// PublicURL is the base URL the public reaches this server at; the labels' QR codes link
	// under it (/p/{product}). Empty: the listen URL.
	PublicURL    string
	Manufacturer string // who places the products on the market, as declarations name it
	// TLSCert and TLSKey are PEM files of the server's certificate (chain) and key: the server
	// speaks HTTPS, and loads them again when they change (checked at most every TLSCheckEvery,
	// 0: a second), so a renewed certificate needs no restart. Empty: plain HTTP, which Validate
	// allows only on a loopback address or BehindProxy.
	TLSCert, TLSKey string
	TLSCheckEvery   time.Duration
	// BehindProxy says a TLS-terminating proxy is in front: plain HTTP on any address.
	BehindProxy bool
	// PublicRefresh is how long a product's public pages are served before their inputs are read
	// again (0: transparency.DefaultInterval); label.go.
	PublicRefresh time.Duration
	// MetricsToken, if set, is the bearer token /metrics requires. Empty: /metrics is open, as
	// it is meant to be on the default loopback address; a warning is logged when the server
	// listens on another one.
	MetricsToken string
	// DDI configures the hawkBit DDI API (internal/ddi): tenant, gateway token, auto-registration.
	// PollSeconds, PublicURL and the target-token key are filled in by Open.
	DDI ddi.Config
	// Logs bounds devices' failure log bundles (push.go).
	Logs LogConfig
	// Push configures the MQTT broker that nudges devices to check in (internal/push); an
	// empty URL turns push off, and devices poll.
	Push push.Config
	// NoDeltaJobs turns off the generation of per-pair deltas after publications
	// (internal/deltagen); DeltaEvery is how often the planner looks for new releases (default
	// 30 s) and how long the generator idles between jobs.
	NoDeltaJobs bool
	DeltaEvery  time.Duration
	// Wrap, if set, wraps the whole HTTP handler: a seam for tests (the end-to-end tests check
	// every request and answer against the OpenAPI document with it) and for an in-process
	// proxy. Nil serves the handler as it is.
	Wrap func(http.Handler) http.Handler
	// OIDC configures single sign-on through an OpenID Connect provider (internal/sso); an
	// empty Issuer turns it off. An empty RedirectURL is the public URL (or the listen URL)
	// followed by /api/v1/oidc/callback.
	OIDC sso.Config
	// TenantPoolConns is the PostgreSQL pool size of each tenant's stack (default
	// DefaultTenantPoolConns); the default tenant's pool is sized as before. tenant.go.
	TenantPoolConns int
	// TenantsEvery is how often a replica reads the tenants list to open tenants another
	// replica added (default DefaultTenantsEvery).
	TenantsEvery time.Duration

	// tenant is set in the derived configuration of a tenant's stack (tenant.go): the stack
	// does not listen; the default stack's front handler serves it under /t/{tenant}/.
	tenant string
	// Webhooks bounds webhooks and their delivery (attempts, backoff, timeouts, retention,
	// queue length); zero fields take webhook.DefaultConfig's values.
	Webhooks webhook.Config
	// WebhookResolver resolves webhook host names at creation; nil: the system resolver. Tests
	// set one to play a name that rebinds to another address after creation.
	WebhookResolver webhook.Resolver
}

// DefaultConfig returns the embedded defaults.
func DefaultConfig() Config {
	return Config{
		Addr: "127.0.0.1:8080", DataDir: "upkeep-data", KeysDir: "keys", MaxArtifact: 4 << 30,
		PollSeconds: 300, TokenTTL: time.Hour, Lifetimes: tuf.DefaultLifetimes(),
		BodyTimeout: httpapi.DefaultBodyTimeout, MaxPerDevice: httpapi.DefaultMaxPerDevice, MaxPerIP: httpapi.DefaultMaxPerIP,
		EnrollPerMinute: httpapi.DefaultEnrollPerMinute, ReportsPerMinute: httpapi.DefaultReportsPerMinute,
		MaxPending: DefaultMaxPending, PendingTTL: DefaultPendingTTL, EventRetention: DefaultEventRetention,
		MaxDeviceEvents: DefaultMaxDeviceEvents, HousekeepingEvery: DefaultHousekeepingEvery, AuditRetention: DefaultAuditRetention,
	}
}

// Defaults of the bounds on what unauthenticated clients and devices can make the server store.
const (
	DefaultMaxPending        = 10000
	DefaultPendingTTL        = 7 * 24 * time.Hour
	DefaultEventRetention    = 90 * 24 * time.Hour
	DefaultMaxDeviceEvents   = 1000
	DefaultHousekeepingEvery = 10 * time.Minute
	DefaultAuditRetention    = 400 * 24 * time.Hour
)

// withDefaults fills in the zero limits of a configuration not made by DefaultConfig.
func (c Config) withDefaults() Config {
	c.BodyTimeout = cmp.Or(c.BodyTimeout, httpapi.DefaultBodyTimeout)
	c.MaxPending = cmp.Or(c.MaxPending, DefaultMaxPending)
	c.PendingTTL = cmp.Or(c.PendingTTL, DefaultPendingTTL)
	c.EventRetention = cmp.Or(c.EventRetention, DefaultEventRetention)
	c.MaxDeviceEvents = cmp.Or(c.MaxDeviceEvents, DefaultMaxDeviceEvents)
	c.HousekeepingEvery = cmp.Or(c.HousekeepingEvery, DefaultHousekeepingEvery)
	return c
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.Addr == "":
		return errors.New("server config: addr is empty")
	case c.DataDir == "":
		return errors.New("server config: data dir is empty")
	case c.KeysDir == "":
		return errors.New("server config: keys dir is empty")
	case c.MaxArtifact <= 0:
		return errors.New("server config: max artifact size must be positive")
	case c.PollSeconds <= 0:
		return errors.New("server config: poll seconds must be positive")
	case c.MaxCheckins < 0:
		return errors.New("server config: max check-ins must not be negative")
	case c.MaxTokenRequests < 0:
		return errors.New("server config: max token requests must not be negative")
	case c.BodyTimeout < 0:
		return errors.New("server config: body timeout must not be negative")
	case c.MaxPerDevice < 0 || c.MaxPerIP < 0:
		return errors.New("server config: max per device and max per IP must not be negative")
	case c.EnrollPerMinute < 0 || c.ReportsPerMinute < 0:
		return errors.New("server config: enrolments and reports per minute must not be negative")
	case c.MaxPending < 0 || c.PendingTTL < 0:
		return errors.New("server config: max pending and pending TTL must not be negative")
	case c.EventRetention < 0 || c.MaxDeviceEvents < 0:
		return errors.New("server config: event retention and max device events must not be negative")
	case c.AuditRetention < 0:
		return errors.New("server config: audit retention must not be negative (0 keeps records forever)")
	case c.TenantPoolConns < 0 || c.TenantsEvery < 0:
		return errors.New("server config: tenant pool size and tenants interval must not be negative")
	case c.HousekeepingEvery < 0:
		return errors.New("server config: housekeeping interval must not be negative")
	case c.Webhooks.Timeout < 0 || c.Webhooks.RetryBase < 0 || c.Webhooks.RetryMax < 0 || c.Webhooks.Retention < 0 ||
		c.Webhooks.MaxAttempts < 0 || c.Webhooks.MaxQueue < 0 || c.Webhooks.MaxPayload < 0 || c.Webhooks.MaxWebhooks < 0 || c.Webhooks.Workers < 0:
		return errors.New("server config: webhook bounds must not be negative")
	case c.TokenTTL < time.Minute:
		return errors.New("server config: device token TTL must be at least a minute")
	case c.TokenTTL > auth.MaxTokenTTL:
		return fmt.Errorf("server config: device token TTL must be at most %s", auth.MaxTokenTTL)
	case c.PublicURL != "" && !validPublicURL(c.PublicURL):
		return errors.New("server config: public URL must be an absolute http:// or https:// URL")
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errors.New("server config: tls cert and tls key go together")
	case c.TLSCert == "" && !c.BehindProxy && !loopback(c.Addr):
		return fmt.Errorf("server config: addr %s is not a loopback address, and plain HTTP there would carry device tokens and operator secrets in clear: "+
			"give a certificate (--tls-cert, --tls-key), or --behind-proxy if a TLS-terminating proxy is in front", c.Addr)
	}
	return nil
}

// Server is a running `upkeep serve`: the wiring of stores, services and HTTP. End-to-end tests
// start it on :0.
type Server struct {
	Config     Config
	DB         *sqlstore.DB
	Blobs      release.BlobStore
	Images     *imagerepo.Service
	Director   *director.Service
	Fleet      *fleet.Service
	Metrics    *httpapi.Metrics
	URL        string
	AdminToken string // set only when this start created the first operator token
	// Transparency publishes the products' declarations, labels and pages (cmd/upkeep/label.go).
	Transparency *transparency.Service
	Rollouts     *rollout.Engine
	// Exposure holds SBOMs, advisories and VEX, and answers exposure and time-to-patch.
	Exposure *exposure.Service
	// CSAF publishes the products' CSAF advisories, VEX and OpenVEX documents.
	CSAF *csafpub.Service
	// Products owns the support policies.
	Products *product.Service
	// DDI serves hawkBit DDI clients (SWUpdate, RAUC, Zephyr) at /{tenant}/controller/v1/.
	DDI *ddi.Service
	// Logs keeps devices' failure log bundles.
	Logs *faillog.Service
	// Webhooks queues the services' events in the outbox and delivers them (the "webhooks" job).
	Webhooks *webhook.Service
	// DeltaJobs generates per-pair deltas after publications (nil with NoDeltaJobs).
	DeltaJobs *deltagen.Service

	http    *http.Server
	ln      net.Listener
	holder  string          // this replica's name for leases
	jobCtx  context.Context // ends when Close starts stopping the jobs
	cancel  context.CancelFunc
	serving sync.WaitGroup // the HTTP server's goroutine
	jobs    sync.WaitGroup // background jobs (Go, Every)
	running atomic.Int32
	api     *httpapi.Server
	handler http.Handler // api's routes; the default stack serves them behind the tenants' front
	tenants *tenants     // the tenants' stacks; nil in a tenant's own stack
	// tokenKey is the device-token HMAC key, from which the key sealing tenants' keys derives.
	tokenKey []byte
	// tlsConf is the listener's TLS configuration (nil: plain HTTP), whose session ticket keys
	// the tls-ticket-keys job moves on. Not s.http.TLSConfig: net/http sets that field itself
	// when serving starts (HTTP/2), concurrently with the jobs.
	tlsConf *tls.Config
	// revocations is the revocation generation this replica last read (followRevocations).
	revocations atomic.Int64
	push        pusher // the push broker, once connected (push.go)
}

// Open opens the stores, bootstraps the repositories and starts listening.
func Open(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	// The data folder holds the database and the artifacts: the server's user's alone, whatever
	// the umask, and closed again if an earlier version left it open.
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if err := os.Chmod(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	keys, err := tuf.LoadServerKeys(cfg.KeysDir)
	if err != nil {
		return nil, fmt.Errorf("%w (run `upkeep keys init --dir %s` first)", err, cfg.KeysDir)
	}
	var db *sqlstore.DB
	if strings.HasPrefix(cfg.Database, "postgres://") || strings.HasPrefix(cfg.Database, "postgresql://") {
		db, err = postgres.Open(ctx, cfg.Database)
	} else if cfg.Database == "" {
		db, err = sqlite.Open(ctx, filepath.Join(cfg.DataDir, "upkeep.db"))
	} else {
		err = fmt.Errorf("database %q: want a postgres:// URL, or nothing for the embedded SQLite", cfg.Database)
	}
	if err != nil {
		return nil, err
	}
	s := &Server{Config: cfg, DB: db}
	s.jobCtx, s.cancel = context.WithCancel(context.Background())
	fail := func(err error) (*Server, error) { s.cancel(); s.jobs.Wait(); db.Close(); return nil, err }
	if strings.HasPrefix(cfg.Blobs, "s3://") {
		sc, err := blobs3.ParseURL(cfg.Blobs, cfg.S3AccessKey, cfg.S3SecretKey)
		if err != nil {
			return fail(err)
		}
		st := blobs3.New(sc)
		if err := st.CreateBucket(ctx); err != nil {
			return fail(err)
		}
		s.Blobs = st
	} else if cfg.Blobs == "" {
		if s.Blobs, err = blobfs.New(filepath.Join(cfg.DataDir, "artifacts")); err != nil {
			return fail(err)
		}
	} else {
		return fail(fmt.Errorf("blob store %q: want s3://bucket?endpoint=..., or nothing for a local folder", cfg.Blobs))
	}
	hmacKey, keyPath, err := deviceTokenKey(ctx, db, cfg.KeysDir, cfg.DataDir)
	if err != nil {
		return fail(err)
	}
	cfg.Logger.Debug("device-token key", "path", keyPath)
	s.tokenKey = hmacKey
	s.Metrics = httpapi.NewMetrics()
	s.Metrics.Rollouts = db.RolloutCounts
	// The device store is timed (upkeep_db_seconds): its calls are the ones on the device
	// routes' path (first check-in of a device, token requests, reports).
	s.Fleet = &fleet.Service{Store: fleet.TimedStore{Store: db, Observe: s.Metrics.ObserveDB}, Tokens: auth.DeviceTokens{Key: hmacKey, TTL: cfg.TokenTTL}, Now: now, PollSeconds: cfg.PollSeconds, Logger: cfg.Logger, MaxPending: cfg.MaxPending}
	s.Images = &imagerepo.Service{Store: db, Blobs: s.Blobs, Lifetimes: cfg.Lifetimes, Now: now, Logger: cfg.Logger,
		Keys: imagerepo.Keys{Snapshot: keys.Snapshot, Timestamp: keys.Timestamp}}
	s.Director = &director.Service{Store: db, Images: s.Images, Deltas: s.Images.Deltas, Devices: db, Releases: db, Key: keys.Director, Lifetimes: cfg.Lifetimes, Now: now, Logger: cfg.Logger,
		OnAssign: s.Fleet.SetDirectorVersion}
	if err := s.Images.Bootstrap(ctx, keys.ImageRoot, keys.ImageTargets); err != nil {
		return fail(err)
	}
	if err := s.Director.Bootstrap(ctx, keys.DirectorRoot); err != nil {
		return fail(err)
	}
	if n, err := db.CountAdminTokens(ctx); err != nil {
		return fail(err)
	} else if n == 0 {
		// The first operator token: admin, without expiry, as before roles existed, owned by the
		// user "admin" (who has no password until one is set: users password admin).
		if err := db.CreateUser(ctx, &auth.User{Name: "admin", Role: auth.RoleAdmin, CreatedAt: now().UTC()}); err != nil && !apperr.Is(err, apperr.Conflict) {
			return fail(err)
		}
		secret, hash := auth.NewSecret(auth.AdminPrefix)
		if err := db.CreateOperatorToken(ctx, &auth.OperatorToken{ID: auth.TokenID(hash), Name: "admin", Role: auth.RoleAdmin, Hash: hash, CreatedAt: now().UTC(), User: "admin"}); err != nil {
			return fail(err)
		}
		s.AdminToken = secret
	}
	gen, err := db.RevocationGeneration(ctx)
	if err != nil {
		return fail(err)
	}
	s.revocations.Store(gen)
	if err := s.Fleet.Refresh(ctx); err != nil {
		return fail(err)
	}
	s.Webhooks = &webhook.Service{Store: db, Config: cfg.Webhooks, Resolver: cfg.WebhookResolver, Now: now, Logger: cfg.Logger}
	s.Fleet.Events, s.Images.Events = s.Webhooks, s.Webhooks
	s.Rollouts = &rollout.Engine{Events: s.Webhooks, Store: db, Devices: db, Releases: db, Products: db, Assign: s.Director.AssignWith, AssignMany: s.Director.AssignMany, Unassign: s.Director.Unassign, Now: now, Logger: cfg.Logger}
	s.Exposure = &exposure.Service{Events: s.Webhooks, Store: db, Devices: db, Releases: db, Products: db, Targets: s.Images.Catalogue, Now: now, Logger: cfg.Logger}
	if err := s.Exposure.Load(ctx); err != nil {
		return fail(err)
	}
	s.Rollouts.Exposed = s.Exposure.Exposed
	s.Rollouts.Gate = s.Exposure.GateRelease
	s.Fleet.OnEnroll = s.Exposure.OnEnroll
	s.Fleet.OnReport = func(ctx context.Context, id string, r wire.Report) error {
		s.Exposure.OnReport(ctx, id, r) //nolint:errcheck // logs its own failures
		err := s.Rollouts.OnReport(ctx, id, r)
		if err == nil && r.Installed.SHA256 != "" && len(r.Events) > 0 {
			// A report that carries events may follow an install or a rollback: once the
			// campaigns have acted on it, the view's delta hint must start from the image the
			// device runs now. The report is stored; a failure here is logged, and the device
			// still gets the full image.
			if err := s.Director.Reported(ctx, id); err != nil {
				cfg.Logger.Warn("delta hint after a report", "device", id, "err", err)
			}
		}
		return err
	}
	s.newTransparency(db, now)
	s.Products = &product.Service{Events: s.Webhooks, Check: s.Transparency.CheckPolicy, Store: db, Devices: db, Resign: s.Director.Resign, Go: s.Go, Now: now, Logger: cfg.Logger}
	s.Director.Notice = s.Products.Notice
	ddiKey, err := db.Setting(ctx, "ddi_token_key", func() []byte { _, h := auth.NewSecret(""); return h })
	if err != nil {
		return fail(err)
	}
	dc := cfg.DDI
	dc.TokenKey, dc.PollSeconds, dc.PublicURL = ddiKey, cfg.PollSeconds, cmp.Or(dc.PublicURL, cfg.PublicURL)
	// DDI devices are held to the device API's limits unless configured apart: the same body
	// deadline and shares in flight, feedback and configData at the rate of reports,
	// gateway registrations at the rate of enrolments.
	dc.BodyTimeout = cmp.Or(dc.BodyTimeout, cfg.BodyTimeout)
	dc.MaxPerDevice, dc.MaxPerIP = cmp.Or(dc.MaxPerDevice, cfg.MaxPerDevice), cmp.Or(dc.MaxPerIP, cfg.MaxPerIP)
	dc.WritesPerMinute, dc.RegisterPerMinute = cmp.Or(dc.WritesPerMinute, cfg.ReportsPerMinute), cmp.Or(dc.RegisterPerMinute, cfg.EnrollPerMinute)
	s.DDI = &ddi.Service{Config: dc, Devices: db, Fleet: s.Fleet, Actions: db, Targets: s.Images, Blobs: s.Blobs, AllowDDI: s.Products.AllowDDI, Now: now, Logger: cfg.Logger, Revocations: s.revocations.Load}
	api := &httpapi.Server{SecureCookies: cfg.BehindProxy, Routes: s.DDI.Routes(), AdminRoutes: s.DDI.AdminRoutes(), Fleet: s.Fleet, Images: s.Images, Deltas: s.Images.Deltas, Director: s.Director, Devices: db, Releases: db, Products: s.Products, Blobs: s.Blobs, Admin: db, Logger: cfg.Logger, MaxArtifact: cfg.MaxArtifact, MaxCheckins: cfg.MaxCheckins, Rollouts: s.Rollouts,
		MaxTokenRequests: cfg.MaxTokenRequests, BodyTimeout: cfg.BodyTimeout, MaxPerDevice: cfg.MaxPerDevice, MaxPerIP: cfg.MaxPerIP,
		EnrollPerMinute: cfg.EnrollPerMinute, ReportsPerMinute: cfg.ReportsPerMinute,
		Exposure: s.Exposure, Generation: s.revocations.Load, Now: now, Audit: db, Webhooks: s.Webhooks,
		Metrics: s.Metrics, MetricsToken: cfg.MetricsToken, Transparency: s.Transparency, Ready: func(ctx context.Context) error { return db.SQL().PingContext(ctx) }}
	s.Logs = s.newFailureLogs()
	api.Logs, api.Push = s.Logs, &s.push
	if !cfg.NoDeltaJobs {
		s.DeltaJobs = &deltagen.Service{Store: db, Releases: db, Blobs: s.Blobs, Signed: s.Images.Deltas, Now: now, Logger: cfg.Logger}
		api.DeltaJobs = s.DeltaJobs
	}
	var certs *certReloader
	if cfg.tenant != "" {
		s.URL = cfg.PublicURL // the default stack's URL and /t/{tenant}
	} else if s.ln, err = net.Listen("tcp", cfg.Addr); err != nil {
		return fail(fmt.Errorf("listen %s: %w", cfg.Addr, err))
	} else {
		s.URL = "http://" + s.ln.Addr().String()
	}
	if cfg.TLSCert != "" && cfg.tenant == "" {
		if certs, err = newCertReloader(cfg.TLSCert, cfg.TLSKey, cmp.Or(cfg.TLSCheckEvery, time.Second), cfg.Logger); err != nil {
			s.ln.Close()
			return fail(err)
		}
		s.URL = "https://" + s.ln.Addr().String()
	}
	if cfg.tenant != "" {
		// Served by the default stack, which warns about an open /metrics.
	} else if ap, err := netip.ParseAddrPort(s.ln.Addr().String()); cfg.MetricsToken == "" && (err != nil || !ap.Addr().IsLoopback()) {
		cfg.Logger.Warn("/metrics is open to anyone who reaches the listen address: set --metrics-token (UPKEEP_METRICS_TOKEN)", "addr", s.ln.Addr().String())
	}
	if cfg.OIDC.Enabled() {
		oc := cfg.OIDC
		if oc.RedirectURL == "" {
			oc.RedirectURL = strings.TrimRight(cmp.Or(cfg.PublicURL, s.URL), "/") + "/api/v1/oidc/callback"
		}
		if oc.Now == nil {
			oc.Now = now
		}
		sv, err := sso.New(oc, db, cfg.Logger)
		if err != nil {
			s.ln.Close()
			return fail(err)
		}
		api.SSO = sv
	}
	s.Transparency.TimeToPatch = s.Exposure.LabelTimeToPatch
	if s.Transparency.PublicURL == "" {
		s.Transparency.PublicURL = s.URL
	}
	s.Webhooks.Source = s.Transparency.PublicURL
	s.api = api
	if err := s.newCSAF(db, now, api); err != nil {
		return fail(err)
	}
	s.startPush(ctx) // before serving: it wraps the director's OnAssign
	if cfg.tenant == "" {
		s.tenants = newTenants(s)
		api.Tenants = s.tenants
	} else {
		api.CookiePath = "/t/" + cfg.tenant + "/"
	}
	s.handler = api.Handler()
	if cfg.Wrap != nil {
		s.handler = cfg.Wrap(s.handler)
	}
	if cfg.tenant != "" {
		s.startJobs(s.jobCtx)
		return s, nil
	}
	if err := s.tenants.load(ctx); err != nil {
		s.tenants.closeAll()
		s.ln.Close()
		return fail(err)
	}
	s.http = &http.Server{Handler: s.tenants.front(s.handler), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	serve := func() error { return s.http.Serve(s.ln) }
	if certs != nil {
		// The listener gets this very config (ServeTLS would serve a copy), so that the
		// tls-ticket-keys job's new keys reach it.
		s.tlsConf = tlsConfig(certs, s.tokenKey, time.Now())
		s.tlsConf.NextProtos = []string{"h2", "http/1.1"}
		s.http.TLSConfig = s.tlsConf
		tl := tls.NewListener(s.ln, s.tlsConf)
		serve = func() error { return s.http.Serve(tl) }
	}
	s.serving.Add(1)
	go func() {
		defer s.serving.Done()
		if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cfg.Logger.Error("http server stopped", "err", err)
		}
	}()
	s.startJobs(s.jobCtx)
	return s, nil
}

// deltaJobs starts the per-pair delta jobs: the planner, every DeltaEvery, queues deltas to each
// product's newest release from the releases its devices run (one replica at a time, under a
// lease); the generator makes them one at a time, in every replica (the store hands a job to
// one of them).
func (s *Server) deltaJobs(ctx context.Context) {
	every := cmp.Or(s.Config.DeltaEvery, 30*time.Second)
	s.Every("delta-plan", every, func(ctx context.Context) {
		if ok, err := s.DB.AcquireLease(ctx, "delta-plan", s.holder, every); err != nil || !ok {
			return
		}
		if err := s.DeltaJobs.PlanLatest(ctx); err != nil && ctx.Err() == nil {
			s.Config.Logger.Warn("plan deltas", "err", err)
		}
	}, nil)
	s.Every("delta-generate", every/10, func(ctx context.Context) {
		for ctx.Err() == nil {
			if more, err := s.DeltaJobs.RunOne(ctx); err != nil || !more {
				if err != nil && ctx.Err() == nil {
					s.Config.Logger.Warn("generate deltas", "err", err)
				}
				return
			}
		}
	}, nil)
}

// startJobs starts the server's background jobs, each in a goroutine of its own that stops when
// ctx ends; Close waits for all of them.
func (s *Server) startJobs(ctx context.Context) {
	s.holder = newHolderID()
	s.Every("flush-last-seen", 2*time.Second, func(ctx context.Context) {
		t := time.Now()
		n, err := s.Fleet.Flush(ctx)
		if err != nil && ctx.Err() == nil {
			s.Config.Logger.Warn("flush last-seen", "err", err)
		}
		s.Metrics.ObserveDB("flush_last_seen", time.Since(t))
		s.Metrics.RowsWritten("last_seen", n)
	}, func() {
		s.Fleet.Flush(context.Background()) //nolint:errcheck // last try at shutdown
	})
	if s.tlsConf != nil {
		s.Every("tls-ticket-keys", time.Hour, func(context.Context) {
			s.tlsConf.SetSessionTicketKeys(ticketKeys(s.tokenKey, time.Now()))
		}, nil)
	}
	s.Every("follow-revocations", followRevocationsEvery, s.followRevocations, nil)
	s.Every("prune-used-requests", pruneRequestsEvery, s.pruneRequests, nil)
	s.Every("flush-token-use", 5*time.Second, func(ctx context.Context) {
		if err := s.api.FlushTokenUse(ctx); err != nil && ctx.Err() == nil {
			s.Config.Logger.Warn("flush operator token use", "err", err)
		}
	}, func() {
		s.api.FlushTokenUse(context.Background()) //nolint:errcheck // last try at shutdown
	})
	warned := map[string]time.Time{} // only the warnings job reads and writes it
	s.warn(ctx, warned)
	s.Every("warnings", time.Hour, func(ctx context.Context) { s.warn(ctx, warned) }, nil)
	s.Every("housekeeping", s.Config.HousekeepingEvery, s.housekeep, nil)
	s.Every("audit-prune", s.Config.HousekeepingEvery, func(ctx context.Context) {
		if _, err := s.PruneAudit(ctx); err != nil && ctx.Err() == nil {
			s.Config.Logger.Error("prune audit trail", "err", err)
		}
	}, nil)
	s.Every("advisory-refresh", advisoryRefreshEvery, s.refreshAdvisories, nil)
	if s.tenants != nil {
		s.Every("follow-tenants", cmp.Or(s.Config.TenantsEvery, DefaultTenantsEvery), s.followTenants, nil)
	}
	cursor, err := s.DB.LastDirectorChange(ctx)
	if err != nil {
		s.Config.Logger.Warn("director changes", "err", err)
	}
	s.Every("follow-director", 500*time.Millisecond, func(ctx context.Context) { cursor = s.followDirector(ctx, cursor) }, nil)
	s.Every("image-resign", 10*time.Minute, func(ctx context.Context) {
		if ok, err := s.DB.AcquireLease(ctx, "image-resign", s.holder, 5*time.Minute); err != nil || !ok {
			return
		}
		if err := s.Images.Refresh(ctx, false); err != nil && ctx.Err() == nil {
			s.Config.Logger.Error("re-sign image metadata", "err", err)
		}
		// Drop director changes that every replica read long ago (they follow within a second).
		if last, err := s.DB.LastDirectorChange(ctx); err == nil && last > keepDirectorChanges {
			if err := s.DB.PruneDirectorChanges(ctx, last-keepDirectorChanges); err != nil {
				s.Config.Logger.Warn("prune director changes", "err", err)
			}
		}
	}, nil)
	if s.DeltaJobs != nil {
		s.deltaJobs(ctx)
	}
	s.Go("webhooks", func(ctx context.Context) {
		t := time.NewTicker(webhooksEvery)
		defer t.Stop()
		var pruned time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-s.Webhooks.Woken(): // an event was queued here: no wait
			}
			pruned = s.deliverWebhooks(ctx, pruned)
		}
	})
	s.Go("rollout-engine", func(ctx context.Context) {
		engine := time.NewTicker(cmp.Or(s.Config.RolloutEvery, time.Second))
		defer engine.Stop()
		var next time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case <-engine.C:
				if time.Now().Before(next) {
					continue
				}
				next = s.tick(ctx, s.holder)
			case <-s.Rollouts.Woken(): // an operator started or resumed a campaign: no rest
				next = s.tick(ctx, s.holder)
			}
		}
	})
}

// SessionRetention is how long a login session's row is kept after it expired or was revoked.
const SessionRetention = 24 * time.Hour

// webhooksEvery is how often the webhooks job looks for due deliveries (it is also woken when
// this replica queues an event), webhooksLease the lease that lets one replica deliver, and
// webhooksPruneEvery how often it applies the retention and the queue bound.
const (
	webhooksEvery      = time.Second
	webhooksLease      = 10 * time.Second
	webhooksPruneEvery = 10 * time.Minute
)

// deliverWebhooks sends the due webhook deliveries if this replica holds the "webhooks" lease
// (one replica at a time delivers; each delivery is also claimed in the database, so that a
// replica that dies mid-delivery loses nothing: its claims lapse and the next holder sends them
// again). It prunes every webhooksPruneEvery and returns when it last did.
func (s *Server) deliverWebhooks(ctx context.Context, pruned time.Time) time.Time {
	if ok, err := s.DB.AcquireLease(ctx, "webhooks", s.holder, webhooksLease); err != nil || !ok {
		return pruned
	}
	defer s.keepLease(ctx, "webhooks", s.holder, webhooksLease)()
	if _, err := s.Webhooks.Deliver(ctx); err != nil && ctx.Err() == nil {
		s.Config.Logger.Warn("webhook delivery", "err", err)
	}
	if time.Since(pruned) >= webhooksPruneEvery {
		if err := s.Webhooks.Prune(ctx); err != nil && ctx.Err() == nil {
			s.Config.Logger.Warn("prune webhook deliveries", "err", err)
		}
		pruned = time.Now()
	}
	return pruned
}

// housekeep removes what devices and unauthenticated clients left that is no longer wanted:
// enrolments that waited longer than PendingTTL for an operator, and device events beyond the
// retention (older than EventRetention, or past MaxDeviceEvents of a device), and DDI actions
// likewise (those of removed devices; closed ones older than EventRetention or past
// ddi.MaxActionsKept of a device, but the last installed), and login sessions a day after they
// ended (SessionRetention). One replica at a
// time does it (the "housekeeping" lease); the work is idempotent either way.
func (s *Server) housekeep(ctx context.Context) {
	if ok, err := s.DB.AcquireLease(ctx, "housekeeping", s.holder, s.Config.HousekeepingEvery); err != nil || !ok {
		return
	}
	now := s.now()
	if n, err := s.DB.DeletePendingDevices(ctx, now.Add(-s.Config.PendingTTL)); err != nil {
		if ctx.Err() == nil {
			s.Config.Logger.Warn("expire pending enrolments", "err", err)
		}
	} else if n > 0 {
		s.Config.Logger.Info("expired pending enrolments", "devices", n, "older_than", s.Config.PendingTTL.String())
	}
	t := time.Now()
	if n, err := s.DB.PruneEvents(ctx, now.Add(-s.Config.EventRetention), s.Config.MaxDeviceEvents); err != nil {
		if ctx.Err() == nil {
			s.Config.Logger.Warn("prune device events", "err", err)
		}
	} else if n > 0 {
		s.Config.Logger.Info("pruned device events", "events", n)
	}
	s.Metrics.ObserveDB("prune_events", time.Since(t))
	t = time.Now()
	if n, err := s.DB.PruneActions(ctx, now.Add(-s.Config.EventRetention), ddi.MaxActionsKept); err != nil {
		if ctx.Err() == nil {
			s.Config.Logger.Warn("prune DDI actions", "err", err)
		}
	} else if n > 0 {
		s.Config.Logger.Info("pruned DDI actions", "actions", n)
	}
	s.Metrics.ObserveDB("prune_ddi_actions", time.Since(t))
	if n, err := s.DB.PruneSessions(ctx, now.Add(-SessionRetention)); err != nil {
		if ctx.Err() == nil {
			s.Config.Logger.Warn("prune login sessions", "err", err)
		}
	} else if n > 0 {
		s.Config.Logger.Info("pruned login sessions", "sessions", n)
	}
	s.pruneLogs(ctx)
}

// auditPruneBatch bounds the records one prune transaction removes.
const auditPruneBatch = 10000

// PruneAudit applies the audit retention (Config.AuditRetention; 0 keeps everything) if this
// replica holds the "audit-prune" lease: the records older than it are removed, a batch per
// transaction, and the last one's hash becomes the chain's checkpoint, from which verification
// starts. It returns how many records it removed.
func (s *Server) PruneAudit(ctx context.Context) (int64, error) {
	if s.Config.AuditRetention <= 0 {
		return 0, nil
	}
	if ok, err := s.DB.AcquireLease(ctx, "audit-prune", s.holder, s.Config.HousekeepingEvery); err != nil || !ok {
		return 0, err
	}
	before := s.now().Add(-s.Config.AuditRetention)
	var total int64
	for {
		t := time.Now()
		n, err := s.DB.PruneRecords(ctx, before, auditPruneBatch)
		s.Metrics.ObserveDB("prune_audit", time.Since(t))
		total += n
		if err != nil {
			return total, err
		}
		if n < auditPruneBatch {
			break
		}
	}
	if total > 0 {
		s.Config.Logger.Info("pruned audit records", "records", total, "older_than", s.Config.AuditRetention.String())
	}
	return total, nil
}

func (s *Server) now() time.Time {
	if s.Config.Now != nil {
		return s.Config.Now()
	}
	return time.Now()
}

// Go runs fn as a background job named name: in a goroutine of its own, with a context that
// ends when the server closes. Close waits for it to return. Safe for concurrent use.
func (s *Server) Go(name string, fn func(ctx context.Context)) {
	s.jobs.Add(1)
	s.running.Add(1)
	go func() {
		defer s.jobs.Done()
		defer s.running.Add(-1)
		defer func() {
			if r := recover(); r != nil {
				s.Config.Logger.Error("background job panicked", "job", name, "panic", r)
			}
		}()
		fn(s.jobCtx)
	}()
}

// Every runs fn every d as a background job named name until the server closes, then runs last
// (if not nil) once.
func (s *Server) Every(name string, d time.Duration, fn func(ctx context.Context), last func()) {
	s.Go(name, func(ctx context.Context) {
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				if last != nil {
					last()
				}
				return
			case <-t.C:
				fn(ctx)
			}
		}
	})
}

// Jobs is the number of background jobs running: 0 once Close has returned.
func (s *Server) Jobs() int { return int(s.running.Load()) }

// tick drives the running campaigns if this replica holds the engine's lease (one replica at a
// time does), and returns when the next tick may run. A tick reads every member of the running
// campaigns; the engine rests for tickRest times as long as it took (at most maxTickRest), so
// that it keeps to a few percent of a core however large the campaigns are (a 10,000-device tick
// takes ~0.1 s).
func (s *Server) tick(ctx context.Context, holder string) time.Time {
	ok, err := s.DB.AcquireLease(ctx, "rollout-engine", holder, 15*time.Second)
	if err != nil {
		s.Config.Logger.Warn("rollout engine lease", "err", err)
	}
	if !ok {
		return time.Time{}
	}
	defer s.keepLease(ctx, "rollout-engine", holder, 15*time.Second)()
	t := time.Now()
	if err := s.Rollouts.Tick(ctx); err != nil && ctx.Err() == nil {
		s.Config.Logger.Error("rollout engine", "err", err)
	}
	s.Metrics.ObserveDB("rollout_tick", time.Since(t))
	return t.Add(min(tickRest*time.Since(t), maxTickRest))
}

// tickRest is how many times a rollout engine tick's duration passes before the next one, and
// maxTickRest the longest rest (a tick that assigned a large wave took long for that reason).
const (
	tickRest    = 20
	maxTickRest = 5 * time.Second
)

// followRevocationsEvery is how often a replica reads the revocation generation: a revoked
// operator token or a decommissioned device's token stops working on every replica within this
// time and one query (well under a second).
const followRevocationsEvery = 250 * time.Millisecond

// pruneRequestsEvery is how often used signed requests whose window closed are forgotten.
const pruneRequestsEvery = 5 * time.Minute

// followRevocations reads the revocation generation and, when another replica (or this one)
// revoked something, reloads the decommissioned devices and makes every cached operator token be
// read again.
func (s *Server) followRevocations(ctx context.Context) {
	gen, err := s.DB.RevocationGeneration(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.Config.Logger.Warn("revocation generation", "err", err)
		}
		return
	}
	if gen == s.revocations.Load() {
		return
	}
	if err := s.Fleet.Refresh(ctx); err != nil {
		if ctx.Err() == nil {
			s.Config.Logger.Warn("reload decommissioned devices", "err", err)
		}
		return // the generation is read again next time
	}
	s.revocations.Store(gen) // cached operator tokens of older generations are read again
}

// pruneRequests forgets the used signed device requests whose window has closed (a minute
// after, for clocks that differ between replicas); only one replica does it at a time.
func (s *Server) pruneRequests(ctx context.Context) {
	if ok, err := s.DB.AcquireLease(ctx, "prune-used-requests", s.holder, pruneRequestsEvery/2); err != nil || !ok {
		return
	}
	if _, err := s.DB.PruneRequests(ctx, s.now().Add(-time.Minute)); err != nil && ctx.Err() == nil {
		s.Config.Logger.Warn("prune used requests", "err", err)
	}
}

// keepDirectorChanges is how many director changes stay for replicas to follow.
const keepDirectorChanges = 1 << 20

// followDirector brings the check-in cache up to date with director views that any replica
// signed since cursor, and returns the new cursor. It re-reads a margin below the cursor, since
// sequence numbers can commit out of order on PostgreSQL.
func (s *Server) followDirector(ctx context.Context, cursor int64) int64 {
	const margin, batch = 1024, 10000
	for {
		cs, err := s.DB.DirectorChanges(ctx, max(cursor-margin, 0), batch)
		if err != nil {
			if ctx.Err() == nil {
				s.Config.Logger.Warn("director changes", "err", err)
			}
			return cursor
		}
		for _, c := range cs {
			s.Fleet.SetDirectorVersion(c.DeviceID, c.Version)
			cursor = max(cursor, c.Seq)
		}
		if len(cs) < batch {
			return cursor
		}
	}
}

// newHolderID names this replica for leases: host, process and a random suffix.
func newHolderID() string {
	host, _ := os.Hostname()
	var b [4]byte
	rand.Read(b[:]) //nolint:errcheck // crypto/rand does not fail
	return fmt.Sprintf("%s/%d/%x", host, os.Getpid(), b)
}

// Close finishes in-flight requests (up to 10 s), stops every background job and waits for it,
// and closes the stores.
func (s *Server) Close() error {
	var err error
	if s.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.endStreams() // open console event streams would hold Shutdown until its deadline
		err = s.http.Shutdown(ctx)
		s.serving.Wait()
	}
	s.cancel()
	s.jobs.Wait()
	if p := s.push.Service(); p != nil {
		p.Close()
	}
	if s.tenants != nil {
		err = errors.Join(err, s.tenants.closeAll())
	}
	return errors.Join(err, s.DB.Close())
}

// endStreams ends the console's event streams of this stack and of its tenants'.
func (s *Server) endStreams() {
	if s.api != nil {
		s.api.EndStreams()
	}
	if s.tenants != nil {
		for _, ts := range *s.tenants.stacks.Load() {
			ts.srv.endStreams()
		}
	}
}

// Handler is the server's HTTP handler: its routes, and in the default stack the tenants'
// under /t/{tenant}/.
func (s *Server) Handler() http.Handler {
	if s.http != nil {
		return s.http.Handler
	}
	return s.handler
}

// warn runs the operators' warnings: products whose support ends soon, offline-signed metadata
// that expires soon. warned remembers, by product and by "repo/role", when each was last given.
func (s *Server) warn(ctx context.Context, warned map[string]time.Time) {
	s.Products.WarnEndOfSupport(ctx, warned)
	if err := s.Images.WarnExpiring(ctx, warned); err != nil {
		s.Config.Logger.Warn("offline metadata expiry", "err", err)
	}
}

// keepLease renews the named lease every third of its ttl until stop is called, so that a tick
// that runs longer than the ttl keeps it: another replica would otherwise take it over mid-tick
// and do the same work again (safely, since each campaign is stepped under its lock, but twice).
func (s *Server) keepLease(ctx context.Context, name, holder string, ttl time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if _, err := s.DB.AcquireLease(ctx, name, holder, ttl); err != nil && ctx.Err() == nil {
					s.Config.Logger.Warn("renew lease", "lease", name, "err", err)
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}

// newTransparency builds the service behind the public product pages. Open fills in the
// listen URL when no public URL is configured.
func (s *Server) newTransparency(db *sqlstore.DB, now func() time.Time) *transparency.Service {
	s.Transparency = &transparency.Service{
		Products: db, Releases: db, Devices: db, KeysDir: s.Config.KeysDir, PublicURL: s.Config.PublicURL,
		Manufacturer: label.Manufacturer{Name: s.Config.Manufacturer}, Interval: s.Config.PublicRefresh, Now: now, Logger: s.Config.Logger,
	}
	return s.Transparency
}

// newCSAF builds the CSAF provider and OpenVEX publisher (docs/VULNERABILITIES.md): each
// product's analysts' statements and the vulnerabilities its releases fixed, signed with the
// provider's OpenPGP key KEYS/csaf/provider.asc (generated on first use).
func (s *Server) newCSAF(db *sqlstore.DB, now func() time.Time, api *httpapi.Server) error {
	name := s.Config.Manufacturer
	if name == "" {
		name = "Upkeep"
	}
	signer, err := csafpub.LoadOrCreateSigner(filepath.Join(s.Config.KeysDir, "csaf", "provider.asc"), name, "")
	if err != nil {
		return err
	}
	s.CSAF = &csafpub.Service{
		Publisher: csafpub.Publisher{Name: name, Namespace: s.Transparency.PublicURL},
		PublicURL: s.Transparency.PublicURL, Signer: signer, Interval: s.Config.PublicRefresh, Now: now, Logger: s.Config.Logger,
		Source: csafpub.Source{
			Products: func(ctx context.Context) ([][2]string, error) {
				ps, err := s.Products.Products(ctx)
				if err != nil {
					return nil, err
				}
				out := make([][2]string, 0, len(ps))
				for _, p := range ps {
					display := p.Name
					if pol, err := product.ParsePolicy(p.Policy); err == nil && pol.ProductName != "" {
						display = pol.ProductName
					}
					out = append(out, [2]string{p.Name, display})
				}
				return out, nil
			},
			Releases: func(ctx context.Context, p string) ([]csafpub.Release, error) {
				rels, err := db.FindReleases(ctx, release.Filter{Product: p})
				if err != nil {
					return nil, err
				}
				out := make([]csafpub.Release, len(rels))
				for i, r := range rels {
					out[i] = csafpub.Release{Version: r.Version, Published: r.PublishedAt}
				}
				return out, nil
			},
			Triage: s.Exposure.Triage,
			Fixed: func(ctx context.Context, p string) ([]wire.TimeToPatch, error) {
				t, err := s.Exposure.TimeToPatch(ctx, p)
				if err != nil {
					return nil, err
				}
				return t.Advisories, nil
			},
		},
	}
	api.CSAF = s.CSAF
	return nil
}

func validPublicURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.RawQuery == "" && u.Fragment == ""
}

// advisoryRefreshEvery is how often a server checks whether another replica changed the stored
// advisories or VEX statements (one small query) and reloads its index if so.
const advisoryRefreshEvery = 3 * time.Second

// refreshAdvisories brings the vulnerability index up to date with imports made by other
// replicas sharing the database.
func (s *Server) refreshAdvisories(ctx context.Context) {
	reloaded, err := s.Exposure.Refresh(ctx)
	if err != nil {
		s.Config.Logger.Warn("refresh advisory index", "err", err)
		return
	}
	if reloaded {
		s.Config.Logger.Info("advisory index reloaded: another server imported advisories or VEX")
	}
}
