package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"upkeep.dev/upkeep/internal/agent"
	"upkeep.dev/upkeep/wire"
)

// FleetOptions describe a simulated fleet: N lightweight devices that speak the real device
// protocol and run the real agent, including full Uptane verification and hash-checked
// downloads, but keep their image in memory (bytes are hashed and dropped), so that thousands
// fit on one machine.
type FleetOptions struct {
	Server       string
	EnrollToken  string
	ImageRoot    []byte
	DirectorRoot []byte
	Devices      int
	Product      string
	Hardware     string
	// Factory facts: what every device runs at first.
	FactoryTarget, FactoryVersion, FactorySHA256 string
	FactorySecVer                                int64
	// Attributes gives device i its inventory attributes (region tags…); nil: none.
	Attributes func(i int) map[string]string
	// FailRate is the share of installs whose health check fails (the agent rolls back);
	// RollbackRate the share whose trial boot does not come up (the boot loader falls back).
	FailRate, RollbackRate float64
	// Fail decides per device and image instead of the rates, if set: "health", "boot" or "".
	Fail func(i int, target string) string
	// Latency is added to every request, each way's worth at once.
	Latency time.Duration
	Poll    time.Duration // the agents' poll interval until the server suggests one
	Spread  time.Duration // the first polls are spread over this much time; 0: Poll
	Dir     string        // state folders; a tmpfs (/dev/shm) keeps fsyncs cheap
	Seed    uint64
	Logger  *slog.Logger
	// Window gives device i its own maintenance window; nil: none.
	Window func(i int) string
	// Consent answers device i's owner when asked; nil: never consents.
	Consent func(i int, img agent.Image) bool
	HTTP    *http.Client
}

// Fleet is a running simulated fleet.
type Fleet struct {
	o       FleetOptions
	Members []*FleetDevice
	wg      sync.WaitGroup
	cancel  context.CancelFunc

	mu       sync.Mutex
	verified []bool // devices seen to have verified once
}

// FleetDevice is one simulated device.
type FleetDevice struct {
	ID        string
	Index     int
	Agent     *agent.Agent
	Installer *MemInstaller
}

// latencyTransport delays each request.
type latencyTransport struct {
	rt      http.RoundTripper
	latency time.Duration
}

func (t latencyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.latency > 0 {
		select {
		case <-time.After(t.latency):
		case <-r.Context().Done():
			return nil, r.Context().Err()
		}
	}
	return t.rt.RoundTrip(r)
}

// NewFleet enrols the devices (a few at a time) and returns the fleet, not yet running.
func NewFleet(ctx context.Context, o FleetOptions) (*Fleet, error) {
	if o.Devices < 1 {
		return nil, errors.New("simulate: at least one device")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Poll == 0 {
		o.Poll = 5 * time.Second
	}
	if o.Spread == 0 {
		o.Spread = o.Poll
	}
	if o.HTTP == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConns, tr.MaxIdleConnsPerHost, tr.MaxConnsPerHost = 512, 512, 512
		o.HTTP = &http.Client{Transport: latencyTransport{rt: tr, latency: o.Latency}, Timeout: 2 * time.Minute}
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	f := &Fleet{o: o, Members: make([]*FleetDevice, o.Devices)}
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	for i := range o.Devices {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d, err := f.enroll(ctx, i)
			if err != nil {
				firstErr.CompareAndSwap(nil, &err)
				return
			}
			f.Members[i] = d
		}()
		if firstErr.Load() != nil {
			break
		}
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return nil, *p
	}
	return f, nil
}

func (f *Fleet) enroll(ctx context.Context, i int) (*FleetDevice, error) {
	o := f.o
	rng := rand.New(rand.NewPCG(o.Seed, uint64(i)))
	inst := &MemInstaller{current: o.FactorySHA256, fail: func(target string) string {
		if o.Fail != nil {
			return o.Fail(i, target)
		}
		switch x := rng.Float64(); {
		case x < o.FailRate:
			return "health"
		case x < o.FailRate+o.RollbackRate:
			return "boot"
		}
		return ""
	}}
	cfg := agent.Config{StateDir: f.stateDir(i), Installer: inst, HTTP: o.HTTP, Logger: o.Logger.With("sim", i),
		PollInterval: o.Poll, Health: inst.health, CheckpointEvery: 1 << 40, Lightweight: true}
	if o.Window != nil {
		cfg.Window = o.Window(i)
	}
	if o.Consent != nil {
		cfg.Consent = func(_ context.Context, img agent.Image) (bool, error) { return o.Consent(i, img), nil }
	}
	id := wire.Identity{Serial: fmt.Sprintf("SIM-%06d", i), Product: o.Product, HardwareID: o.Hardware}
	if o.Attributes != nil {
		id.Attributes = o.Attributes(i)
	}
	st, err := agent.Enroll(ctx, cfg, agent.EnrollOptions{Server: o.Server, EnrollToken: o.EnrollToken, Identity: id, ImageRoot: o.ImageRoot, DirectorRoot: o.DirectorRoot,
		Installed: agent.Image{Target: o.FactoryTarget, Version: o.FactoryVersion, SecurityVersion: o.FactorySecVer, SHA256: o.FactorySHA256}})
	if err != nil {
		return nil, fmt.Errorf("enrol simulated device %d: %w", i, err)
	}
	a, err := agent.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &FleetDevice{ID: st.DeviceID, Index: i, Agent: a, Installer: inst}, nil
}

// Start runs every device's agent until Stop or ctx ends. Their first polls are spread over
// FleetOptions.Spread.
func (f *Fleet) Start(ctx context.Context) {
	ctx, f.cancel = context.WithCancel(ctx)
	for _, d := range f.Members {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			select {
			case <-time.After(rand.N(f.o.Spread)):
			case <-ctx.Done():
				return
			}
			d.Agent.Run(ctx) //nolint:errcheck // ends with ctx
		}()
	}
}

// Stop ends the agents and waits for them.
func (f *Fleet) Stop() {
	if f.cancel != nil {
		f.cancel()
	}
	f.wg.Wait()
}

// Verified counts devices whose journal records a full verification: a fleet whose every
// device has verified once is in its steady state, polling with cheap check-ins.
// Journals are read only for devices not yet seen verified: a verification is never undone.
func (f *Fleet) Verified() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.verified == nil {
		f.verified = make([]bool, len(f.Members))
	}
	n := 0
	for i := range f.Members {
		if !f.verified[i] {
			st, err := agent.ReadStatus(f.stateDir(i))
			f.verified[i] = err == nil && !st.LastFullCheck.IsZero()
		}
		if f.verified[i] {
			n++
		}
	}
	return n
}

func (f *Fleet) stateDir(i int) string { return filepath.Join(f.o.Dir, fmt.Sprintf("dev-%06d", i)) }

// Running counts devices by the SHA-256 of the image they run.
func (f *Fleet) Running() map[string]int {
	out := map[string]int{}
	for _, d := range f.Members {
		out[d.Installer.Current()]++
	}
	return out
}

// MemInstaller is a simulated device's installer: it hashes nothing itself (the agent verifies
// the stream) and keeps no bytes, only which image runs, with a trial boot that can fail.
type MemInstaller struct {
	mu       sync.Mutex
	current  string // sha256 of the committed image
	trial    string // image on trial boot, if any
	bootFail bool
	booted   bool   // the trial image was booted (Reboot ran since Install)
	failing  string // "health" or "boot" for the image on trial
	fail     func(target string) string
	// Received counts the image bytes that arrived.
	Received atomic.Int64
	// Installed lists every image install started, by target, in order.
	installs []string
}

// Installs lists the targets whose install started on this device, in order.
func (m *MemInstaller) Installs() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.installs...)
}

// Current is the SHA-256 of the image the device runs.
func (m *MemInstaller) Current() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.trial != "" && m.booted && !m.bootFail {
		return m.trial
	}
	return m.current
}

type discard struct{ m *MemInstaller }

func (d discard) Write(p []byte) (int, error) { d.m.Received.Add(int64(len(p))); return len(p), nil }
func (discard) Sync() error                   { return nil }
func (discard) Close() error                  { return nil }
func (discard) Abort() error                  { return nil }

// Prepare implements agent.Installer.
func (m *MemInstaller) Prepare(context.Context, *agent.Image) error { return nil }

// Stage implements agent.Installer.
func (m *MemInstaller) Stage(context.Context, *agent.Image, int64) (agent.Stager, error) {
	return discard{m}, nil
}

// ReadStaged implements agent.Installer: nothing is kept, so a download starts over.
func (m *MemInstaller) ReadStaged(context.Context, *agent.Image) (io.ReadCloser, error) {
	return nil, errors.New("simulated device keeps no staged bytes")
}

// Install implements agent.Installer.
func (m *MemInstaller) Install(_ context.Context, img *agent.Image) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.trial, m.bootFail, m.booted, m.failing = img.SHA256, false, false, m.fail(img.Target)
	m.installs = append(m.installs, img.Target)
	return true, nil
}

// Reboot implements agent.Installer: a trial boot that fails falls back at once.
func (m *MemInstaller) Reboot(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.booted, m.bootFail = m.trial != "", m.failing == "boot"
	return nil
}

// Outcome implements agent.Installer.
func (m *MemInstaller) Outcome(_ context.Context, img *agent.Image) (agent.Outcome, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.current == img.SHA256:
		return agent.OutcomeCommitted, nil
	case m.trial == img.SHA256 && m.booted && !m.bootFail:
		return agent.OutcomeTrial, nil
	}
	return agent.OutcomePrevious, nil
}

func (m *MemInstaller) health(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failing == "health" {
		return errors.New("simulated health check failure")
	}
	return nil
}

// Commit implements agent.Installer.
func (m *MemInstaller) Commit(_ context.Context, img *agent.Image) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.current, m.trial, m.booted = img.SHA256, "", false
	return nil
}

// Rollback implements agent.Installer.
func (m *MemInstaller) Rollback(context.Context, *agent.Image) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.trial, m.bootFail, m.booted = "", false, false
	return false, nil
}
