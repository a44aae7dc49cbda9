package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/auth"
	blobfs "upkeep.dev/upkeep/internal/blob/fs"
	blobs3 "upkeep.dev/upkeep/internal/blob/s3"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/httpapi"
	"upkeep.dev/upkeep/internal/patch"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/repo"
	"upkeep.dev/upkeep/internal/rollout"
	"upkeep.dev/upkeep/internal/store/postgres"
	"upkeep.dev/upkeep/internal/store/sqlite"
	"upkeep.dev/upkeep/internal/store/sqlstore"
	"upkeep.dev/upkeep/internal/transparency"
	"upkeep.dev/upkeep/internal/trust"
	"upkeep.dev/upkeep/wire"
)

// ServerConfig configures `upkeep serve`.
type ServerConfig struct {
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
	// RolloutEvery is how often the rollout engine drives running campaigns. Default 1 s.
	RolloutEvery time.Duration
	TokenTTL     time.Duration
	Lifetimes    trust.Lifetimes
	Logger       *slog.Logger
	Now          func() time.Time // a fake clock in tests
	// PublicURL is the base URL the public reaches this server at; the labels' QR codes link
	// under it (/p/{product}). Empty: the listen URL.
	PublicURL    string
	Manufacturer string // who places the products on the market, as declarations name it
	// PublicRefresh is how long a product's public pages are served before their inputs are read
	// again (0: transparency.DefaultInterval); label.go.
	PublicRefresh time.Duration
}

// DefaultServerConfig returns the embedded defaults.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{
		Addr: "127.0.0.1:8080", DataDir: "upkeep-data", KeysDir: "keys", MaxArtifact: 4 << 30,
		PollSeconds: 300, TokenTTL: time.Hour, Lifetimes: trust.DefaultLifetimes(),
	}
}

// Validate names the first bad field.
func (c ServerConfig) Validate() error {
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
	case c.TokenTTL < time.Minute:
		return errors.New("server config: device token TTL must be at least a minute")
	case c.PublicURL != "" && !validPublicURL(c.PublicURL):
		return errors.New("server config: public URL must be an absolute http:// or https:// URL")
	}
	return nil
}

// Server is a running `upkeep serve`: the wiring of stores, services and HTTP. End-to-end tests
// start it on :0.
type Server struct {
	Config     ServerConfig
	DB         *sqlstore.DB
	Blobs      release.BlobStore
	Repo       *repo.Service
	Fleet      *fleet.Service
	Metrics    *httpapi.Metrics
	URL        string
	AdminToken string // set only when this start created the first operator token
	// Transparency publishes the products' declarations, labels and pages (cmd/upkeep/label.go).
	Transparency *transparency.Service
	Rollouts     *rollout.Engine
	// Patch holds SBOMs, advisories and VEX, and answers exposure and time-to-patch.
	Patch *patch.Service

	http   *http.Server
	ln     net.Listener
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// OpenServer opens the stores, bootstraps the repositories and starts listening.
func OpenServer(ctx context.Context, cfg ServerConfig) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	keys, err := trust.LoadServerKeys(cfg.KeysDir)
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
	fail := func(err error) (*Server, error) { db.Close(); return nil, err }
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
	hmacKey, err := db.Setting(ctx, "device_token_key", func() []byte { _, h := auth.NewSecret(""); return h })
	if err != nil {
		return fail(err)
	}
	s.Metrics = httpapi.NewMetrics()
	s.Metrics.Rollouts = db.RolloutCounts
	// The device store is timed (upkeep_db_seconds): its calls are the ones on the device
	// routes' path (first check-in of a device, token requests, reports).
	s.Fleet = &fleet.Service{Store: fleet.TimedStore{Store: db, Observe: s.Metrics.ObserveDB}, Tokens: auth.DeviceTokens{Key: hmacKey, TTL: cfg.TokenTTL}, Now: now, PollSeconds: cfg.PollSeconds, Logger: cfg.Logger}
	s.Repo = &repo.Service{Meta: db, Releases: db, Devices: db, Blobs: s.Blobs, Lifetimes: cfg.Lifetimes, Now: now, Logger: cfg.Logger,
		Keys: repo.Keys{Snapshot: keys.Snapshot, Timestamp: keys.Timestamp, Director: keys.Director}, OnAssign: s.Fleet.SetDirectorVersion}
	if err := s.Repo.Bootstrap(ctx, keys.ImageRoot, keys.DirectorRoot, keys.ImageTargets); err != nil {
		return fail(err)
	}
	if n, err := db.CountAdminTokens(ctx); err != nil {
		return fail(err)
	} else if n == 0 {
		secret, hash := auth.NewSecret(auth.AdminPrefix)
		if err := db.CreateAdminToken(ctx, "admin", hash); err != nil {
			return fail(err)
		}
		s.AdminToken = secret
	}
	s.Rollouts = &rollout.Engine{Store: db, Devices: db, Releases: db, Products: db, Assign: s.Repo.AssignWith, AssignMany: s.Repo.AssignMany, Unassign: s.Repo.Unassign, Now: now, Logger: cfg.Logger}
	s.Patch = &patch.Service{Store: db, Devices: db, Releases: db, Targets: s.Repo.CurrentTargets, Now: now, Logger: cfg.Logger}
	if err := s.Patch.Load(ctx); err != nil {
		return fail(err)
	}
	s.Fleet.OnEnroll = s.Patch.OnEnroll
	s.Fleet.OnReport = func(ctx context.Context, id string, r wire.Report) error {
		s.Patch.OnReport(ctx, id, r) //nolint:errcheck // logs its own failures
		return s.Rollouts.OnReport(ctx, id, r)
	}
	s.Repo.Notice = func(ctx context.Context, product string) (*trust.Notice, error) {
		p, err := db.FindProduct(ctx, product)
		if apperr.Is(err, apperr.NotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		pol, err := release.ParsePolicy(p.Policy)
		if err != nil {
			return nil, err
		}
		return &trust.Notice{Product: product, EndOfSupport: pol.SupportEnd}, nil
	}
	api := &httpapi.Server{Fleet: s.Fleet, Repo: s.Repo, Devices: db, Releases: db, Products: db, Blobs: s.Blobs, Admin: db, Logger: cfg.Logger, MaxArtifact: cfg.MaxArtifact, MaxCheckins: cfg.MaxCheckins, Rollouts: s.Rollouts,
		Patch: s.Patch, Exposed: s.Patch.Exposed,
		Metrics: s.Metrics, Transparency: s.newTransparency(db, now), Ready: func(ctx context.Context) error { return db.SQL().PingContext(ctx) }}
	if s.ln, err = net.Listen("tcp", cfg.Addr); err != nil {
		return fail(fmt.Errorf("listen %s: %w", cfg.Addr, err))
	}
	s.URL = "http://" + s.ln.Addr().String()
	s.Transparency.TimeToPatch = s.Patch.LabelTimeToPatch
	if s.Transparency.PublicURL == "" {
		s.Transparency.PublicURL = s.URL
	}
	s.http = &http.Server{Handler: api.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	bg, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := s.http.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cfg.Logger.Error("http server stopped", "err", err)
		}
	}()
	go func() { defer s.wg.Done(); s.background(bg) }()
	return s, nil
}

// background flushes batched last-seen times and re-signs image metadata before it expires.
func (s *Server) background(ctx context.Context) {
	flush := time.NewTicker(2 * time.Second)
	resign := time.NewTicker(10 * time.Minute)
	warn := time.NewTicker(time.Hour)
	defer warn.Stop()
	warned := map[string]time.Time{}
	s.warn(ctx, warned)
	defer flush.Stop()
	defer resign.Stop()
	engine := time.NewTicker(cmp.Or(s.Config.RolloutEvery, time.Second))
	defer engine.Stop()
	follow := time.NewTicker(500 * time.Millisecond)
	defer follow.Stop()
	advisories := time.NewTicker(advisoryRefreshEvery)
	defer advisories.Stop()
	cursor, err := s.DB.LastDirectorChange(ctx)
	if err != nil {
		s.Config.Logger.Warn("director changes", "err", err)
	}
	holder := newHolderID()
	var nextTick time.Time
	for {
		select {
		case <-ctx.Done():
			s.Fleet.Flush(context.Background()) //nolint:errcheck // last try at shutdown
			return
		case <-flush.C:
			t := time.Now()
			if err := s.Fleet.Flush(ctx); err != nil {
				s.Config.Logger.Warn("flush last-seen", "err", err)
			}
			s.Metrics.ObserveDB("flush_last_seen", time.Since(t))
		case <-warn.C:
			s.warn(ctx, warned)
		case <-advisories.C:
			s.refreshAdvisories(ctx)
		case <-follow.C:
			cursor = s.followDirector(ctx, cursor)
		case <-engine.C:
			if time.Now().Before(nextTick) {
				continue
			}
			nextTick = s.tick(ctx, holder)
		case <-s.Rollouts.Woken(): // an operator started or resumed a campaign: no rest
			nextTick = s.tick(ctx, holder)
		case <-resign.C:
			if ok, err := s.DB.AcquireLease(ctx, "image-resign", holder, 5*time.Minute); err != nil || !ok {
				continue
			}
			if err := s.Repo.RefreshImage(ctx, false); err != nil {
				s.Config.Logger.Error("re-sign image metadata", "err", err)
			}
			// Drop director changes that every replica read long ago (they follow within a second).
			if cursor > keepDirectorChanges {
				if err := s.DB.PruneDirectorChanges(ctx, cursor-keepDirectorChanges); err != nil {
					s.Config.Logger.Warn("prune director changes", "err", err)
				}
			}
		}
	}
}

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

// Close finishes in-flight requests (up to 10 s), stops background work and closes the stores.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := s.http.Shutdown(ctx)
	s.cancel()
	s.wg.Wait()
	return errors.Join(err, s.DB.Close())
}

// warn runs the operators' warnings: products whose support ends soon, offline-signed metadata
// that expires soon. warned remembers, by product and by "repo/role", when each was last given.
func (s *Server) warn(ctx context.Context, warned map[string]time.Time) {
	s.warnEndOfSupport(ctx, warned)
	if err := s.Repo.WarnExpiring(ctx, warned); err != nil {
		s.Config.Logger.Warn("offline metadata expiry", "err", err)
	}
}

// warnEndOfSupport tells operators, once a day per product, that a product's security-update
// support ends within its warning period (or has ended).
func (s *Server) warnEndOfSupport(ctx context.Context, warned map[string]time.Time) {
	ps, err := s.DB.FindProducts(ctx)
	if err != nil {
		s.Config.Logger.Error("end-of-support check", "err", err)
		return
	}
	now := time.Now()
	for _, p := range ps {
		pol, err := release.ParsePolicy(p.Policy)
		if err != nil || !pol.EndingSoon(now) || now.Sub(warned[p.Name]) < 24*time.Hour {
			continue
		}
		warned[p.Name] = now
		s.Config.Logger.Warn("security-update support is ending", "product", p.Name, "support_end", pol.SupportEnd)
	}
}
