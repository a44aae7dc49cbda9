package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/agent"
	"upkeep.dev/upkeep/internal/agent/boot"
	"upkeep.dev/upkeep/internal/faultproxy"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/sim"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/wire"
)

// Network robustness: a device whose agent reaches the real server only through a
// fault-injecting proxy, updating from a small factory image to a 3 MiB release.

const (
	artifactPath = "/device/v1/targets/"
	checkinPath  = "/device/v1/checkin"
	netImageSize = 3 << 20
	netCkpt      = 256 << 10
)

// netEnv is a real server with a factory release and a 3 MiB release to update to.
type netEnv struct {
	*env
	factory []byte
	old     *wire.Release
	img     []byte
	rel     *wire.Release
}

func newNetEnv(t *testing.T) *netEnv {
	t.Helper()
	n := &netEnv{env: newEnv(t), factory: image("1.0.0", 64<<10), img: image("2.0.0", netImageSize)}
	n.old = n.publish("1.0.0", 1, n.factory)
	n.rel = n.publish("2.0.0", 2, n.img)
	return n
}

// netDevice is a simulated device whose agent talks to the server through its own proxy.
type netDevice struct {
	proxy *faultproxy.Proxy
	boot  *boot.Sim
	slots *boot.FileSlots
	cfg   agent.Config
	agent *agent.Agent
}

// device enrols a device through a fresh proxy, starts its agent with cfg adjusted by tweak,
// and deploys the 3 MiB release to it.
func (n *netEnv) device(serial string, tweak func(*agent.Config)) *netDevice {
	t := n.t
	t.Helper()
	ctx := context.Background()
	u, err := url.Parse(n.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	d := &netDevice{proxy: faultproxy.New(u)}
	t.Cleanup(d.proxy.Close)
	dir := filepath.Join(n.dir, "devices", serial)
	if d.boot, err = boot.NewSim(filepath.Join(dir, "bootenv.json")); err != nil {
		t.Fatal(err)
	}
	if d.slots, err = boot.NewFileSlots(filepath.Join(dir, "slots")); err != nil {
		t.Fatal(err)
	}
	w, err := d.slots.Create(ctx, boot.SlotA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(n.factory); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	d.cfg = agent.Config{
		StateDir: filepath.Join(dir, "state"), Bootloader: d.boot, Slots: d.slots,
		HTTP: &http.Client{Transport: tr, Timeout: time.Minute}, Logger: quietLogger(),
		CheckpointEvery: netCkpt, MinRate: -1,
	}
	if tweak != nil {
		tweak(&d.cfg)
	}
	st, err := agent.Enroll(ctx, d.cfg, agent.EnrollOptions{
		Server: d.proxy.URL(), EnrollToken: n.enrollToken, ImageRoot: n.imageRoot, DirectorRoot: n.directorRoot,
		Identity:  wire.Identity{Serial: serial, Product: testProduct, HardwareID: testHardware},
		Installed: agent.Image{Target: n.old.Target, Version: n.old.Version, SecurityVersion: n.old.SecurityVersion, SHA256: n.old.SHA256, Slot: boot.SlotA},
	})
	if err != nil {
		t.Fatalf("enroll %s: %v", serial, err)
	}
	if d.agent, err = agent.New(ctx, d.cfg); err != nil {
		t.Fatal(err)
	}
	n.deploy(n.rel, st.DeviceID)
	return d
}

// cycle runs one agent cycle, failing the test if it hangs.
func (d *netDevice) cycle(t *testing.T) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := d.agent.Cycle(ctx)
	if ctx.Err() != nil {
		t.Fatalf("cycle hung until the test deadline: %v", err)
	}
	return err
}

func (d *netDevice) activeSHA256(t *testing.T) string {
	t.Helper()
	sum, err := (&sim.Device{Boot: d.boot, Slots: d.slots}).ActiveImageSHA256(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// requireUpdated checks that the device runs the 3 MiB release, byte for byte.
func (n *netEnv) requireUpdated(t *testing.T, d *netDevice) {
	t.Helper()
	st := d.agent.State()
	if st.Installed.Version != "2.0.0" || st.Phase != agent.PhaseIdle {
		t.Fatalf("installed %s, phase %s, want 2.0.0 idle (last error %q)", st.Installed.Version, st.Phase, st.LastError)
	}
	if got := d.activeSHA256(t); got != n.rel.SHA256 {
		t.Fatalf("active slot holds %s, want the signed %s", got, n.rel.SHA256)
	}
}

// requireOld checks that the device still runs its factory image and has nothing pending.
func (n *netEnv) requireOld(t *testing.T, d *netDevice) {
	t.Helper()
	st := d.agent.State()
	if st.Installed.Version != "1.0.0" || st.Phase != agent.PhaseIdle || st.Pending != nil {
		t.Fatalf("installed %s, phase %s, pending %+v; want 1.0.0, idle, none", st.Installed.Version, st.Phase, st.Pending)
	}
	if got := d.activeSHA256(t); got != n.old.SHA256 {
		t.Fatalf("active slot holds %s, want the factory %s", got, n.old.SHA256)
	}
}

// rangeStart is N of a "bytes=N-" Range header, or -1 if there is none.
func rangeStart(t *testing.T, r faultproxy.Request) int64 {
	t.Helper()
	if r.Range == "" {
		return -1
	}
	var n int64
	if _, err := fmt.Sscanf(r.Range, "bytes=%d-", &n); err != nil {
		t.Fatalf("Range %q: %v", r.Range, err)
	}
	return n
}

func requireVerification(t *testing.T, err error, r uptane.Reason) {
	t.Helper()
	var ve *uptane.VerificationError
	if !errors.As(err, &ve) || ve.Reason != r || !errors.Is(err, r) {
		t.Fatalf("cycle: %v, want a %q verification failure", err, r)
	}
	requireTUFCause(t, err, r)
}

func requireTransient(t *testing.T, err error) *agent.TransientError {
	t.Helper()
	var te *agent.TransientError
	if !errors.As(err, &te) {
		t.Fatalf("cycle: %v, want a transient error", err)
	}
	return te
}

// noRetries makes a download failure end the cycle at once, leaving it to the next one.
func noRetries(c *agent.Config) { c.DownloadRetries, c.MaxRetryWait = 1, time.Millisecond }

func TestDownloadResumesAfterDrop(t *testing.T) {
	t.Parallel()
	n := newNetEnv(t)
	d := n.device("SN-DROP", nil)
	d.proxy.Inject(artifactPath, 2, faultproxy.Drop{After: 1 << 20})
	if err := d.cycle(t); err != nil {
		t.Fatalf("cycle: %v", err)
	}
	n.requireUpdated(t, d)
	reqs := d.proxy.Requests(artifactPath)
	if len(reqs) != 3 {
		t.Fatalf("%d artifact requests, want 3 (two dropped, one to finish)", len(reqs))
	}
	if reqs[0].Range != "" {
		t.Errorf("first request asked for Range %q, want the whole image", reqs[0].Range)
	}
	prev := int64(0)
	for _, r := range reqs[1:] {
		start := rangeStart(t, r)
		if start <= prev || start >= netImageSize {
			t.Errorf("resumed with Range %q after byte %d, want a later start inside the image", r.Range, prev)
		}
		if want := `"` + n.rel.SHA256 + `"`; r.IfRange != want {
			t.Errorf("resume sent If-Range %q, want %q", r.IfRange, want)
		}
		prev = start
	}
}

func TestDownloadResumesAcrossCycles(t *testing.T) {
	t.Parallel()
	n := newNetEnv(t)
	d := n.device("SN-CYCLES", noRetries)
	d.proxy.Inject(artifactPath, faultproxy.Always, faultproxy.Drop{After: 1 << 20})
	requireTransient(t, d.cycle(t))
	st := d.agent.State()
	if st.Phase != agent.PhaseDownloading || st.Pending == nil || st.Pending.Staged <= 0 {
		t.Fatalf("phase %s, pending %+v; want downloading with bytes staged", st.Phase, st.Pending)
	}
	staged := st.Pending.Staged
	if got := d.proxy.Count(artifactPath); got != 1 {
		t.Errorf("%d artifact requests in the failed cycle, want 1", got)
	}

	d.proxy.Clear()
	if err := d.cycle(t); err != nil {
		t.Fatalf("second cycle: %v", err)
	}
	n.requireUpdated(t, d)
	reqs := d.proxy.Requests(artifactPath)
	if got := rangeStart(t, reqs[len(reqs)-1]); got != staged {
		t.Errorf("next cycle resumed with Range %q, want bytes=%d-", reqs[len(reqs)-1].Range, staged)
	}
}

func TestDownloadTruncated(t *testing.T) {
	t.Parallel()
	n := newNetEnv(t)
	d := n.device("SN-TRUNC", noRetries)
	const cut = 1536 << 10
	d.proxy.Inject(artifactPath, 1, faultproxy.Truncate{After: cut})
	requireTransient(t, d.cycle(t))
	st := d.agent.State()
	if st.Phase != agent.PhaseDownloading || st.Pending == nil || st.Pending.Staged != cut {
		t.Fatalf("phase %s, pending %+v; want downloading with the %d bytes that arrived staged", st.Phase, st.Pending, cut)
	}
	if err := d.cycle(t); err != nil {
		t.Fatalf("second cycle: %v", err)
	}
	n.requireUpdated(t, d)
	reqs := d.proxy.Requests(artifactPath)
	if len(reqs) != 2 || rangeStart(t, reqs[1]) != cut {
		t.Fatalf("artifact requests %+v, want a resume at byte %d", reqs, cut)
	}
}

func TestDownloadCorrupted(t *testing.T) {
	t.Parallel()

	// One corrupted byte: the stage is discarded and the image fetched again from byte 0.
	t.Run("once", func(t *testing.T) {
		t.Parallel()
		n := newNetEnv(t)
		d := n.device("SN-CORRUPT-ONCE", nil)
		d.proxy.Inject(artifactPath, 1, faultproxy.Corrupt{At: 2 << 20})
		if err := d.cycle(t); err != nil {
			t.Fatalf("cycle: %v", err)
		}
		n.requireUpdated(t, d)
		reqs := d.proxy.Requests(artifactPath)
		if len(reqs) != 2 {
			t.Fatalf("%d artifact requests, want 2 (one corrupted, one whole again)", len(reqs))
		}
		if reqs[1].Range != "" {
			t.Errorf("the download after a hash mismatch asked for Range %q, want the whole image", reqs[1].Range)
		}
		if st := d.agent.State(); st.FailedTarget != "" {
			t.Errorf("failed target %q after a mismatch that a new download cured", st.FailedTarget)
		}
	})

	// Corrupted every time: after three mismatches the image is failed and never fetched again.
	t.Run("always", func(t *testing.T) {
		t.Parallel()
		n := newNetEnv(t)
		d := n.device("SN-CORRUPT", nil)
		d.proxy.Inject(artifactPath, faultproxy.Always, faultproxy.Corrupt{At: 2 << 20})
		requireVerification(t, d.cycle(t), uptane.ReasonHashMismatch)
		n.requireOld(t, d)
		if st := d.agent.State(); st.FailedTarget != n.rel.Target || st.FailedSHA256 != n.rel.SHA256 {
			t.Errorf("failed target %s %s, want %s %s", st.FailedTarget, st.FailedSHA256, n.rel.Target, n.rel.SHA256)
		}
		reqs := d.proxy.Requests(artifactPath)
		if len(reqs) != 3 {
			t.Fatalf("%d artifact requests, want 3: a hash mismatch is fetched again twice, then fatal", len(reqs))
		}
		for _, r := range reqs {
			if r.Range != "" {
				t.Errorf("a download after a mismatch resumed with Range %q, want the whole image", r.Range)
			}
		}

		// The image is not fetched again, neither by the next cycle nor by a full verification.
		if err := d.cycle(t); err != nil {
			t.Fatalf("next cycle: %v", err)
		}
		if err := d.agent.Update(context.Background()); err != nil {
			t.Fatalf("update: %v", err)
		}
		n.requireOld(t, d)
		if got := d.proxy.Count(artifactPath); got != 3 {
			t.Errorf("%d artifact requests, want 3: a failed image is not retried", got)
		}
	})
}

func TestSlowRetrievalAborted(t *testing.T) {
	t.Parallel()
	n := newNetEnv(t)
	const window = 300 * time.Millisecond
	d := n.device("SN-SLOW", func(c *agent.Config) {
		noRetries(c)
		c.MinRate, c.SlowWindow = 64<<10, window
	})
	d.proxy.Inject(artifactPath, faultproxy.Always, faultproxy.Stall{After: 1 << 20, For: time.Minute})
	start := time.Now()
	err := d.cycle(t)
	took := time.Since(start)
	requireTransient(t, err)
	if !strings.Contains(err.Error(), "slower than the minimum rate") {
		t.Errorf("cycle: %v, want the slow-retrieval abort", err)
	}
	if took > 10*window {
		t.Errorf("the stalled download was aborted after %s, want about %s", took, 2*window)
	}
	st := d.agent.State()
	if st.Phase != agent.PhaseDownloading || st.Pending == nil || st.Pending.Staged <= 0 {
		t.Fatalf("phase %s, pending %+v; want downloading with bytes staged", st.Phase, st.Pending)
	}
	staged := st.Pending.Staged

	d.proxy.Clear()
	if err := d.cycle(t); err != nil {
		t.Fatalf("cycle after the stall: %v", err)
	}
	n.requireUpdated(t, d)
	reqs := d.proxy.Requests(artifactPath)
	if got := rangeStart(t, reqs[len(reqs)-1]); got != staged {
		t.Errorf("resumed with Range %q, want bytes=%d-", reqs[len(reqs)-1].Range, staged)
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	t.Parallel()
	n := newNetEnv(t)
	// Several devices at once: each must wait out the whole Retry-After, whatever its jitter.
	devs := make([]*netDevice, 4)
	for i := range devs {
		devs[i] = n.device(fmt.Sprintf("SN-RETRY-%d", i), nil)
		devs[i].proxy.Inject(artifactPath, 1, faultproxy.Status{Code: http.StatusServiceUnavailable, RetryAfter: "1"})
	}
	errs := make([]error, len(devs))
	var wg sync.WaitGroup
	for i, d := range devs {
		wg.Go(func() { errs[i] = d.agent.Cycle(context.Background()) })
	}
	wg.Wait()
	for i, d := range devs {
		if errs[i] != nil {
			t.Fatalf("device %d: cycle: %v", i, errs[i])
		}
		n.requireUpdated(t, d)
		reqs := d.proxy.Requests(artifactPath)
		if len(reqs) != 2 {
			t.Fatalf("device %d: %d artifact requests, want 2", i, len(reqs))
		}
		if gap := reqs[1].Time.Sub(reqs[0].Time); gap < time.Second {
			t.Errorf("device %d asked again %s after a 503 with Retry-After: 1, want at least 1s", i, gap)
		}
	}

	// Overload at check-in ends the cycle with the server's Retry-After.
	d := devs[0]
	d.proxy.Inject(checkinPath, 1, faultproxy.Status{Code: http.StatusTooManyRequests, RetryAfter: "7"})
	err := d.cycle(t)
	if te := requireTransient(t, err); te.RetryAfter != 7*time.Second {
		t.Errorf("RetryAfter %s, want 7s", te.RetryAfter)
	}
	var se *agent.ServerError
	if !errors.As(err, &se) || se.Status != http.StatusTooManyRequests {
		t.Errorf("cycle: %v, want the 429 answer", err)
	}
}

func TestEndlessDataThroughProxy(t *testing.T) {
	t.Parallel()
	n := newNetEnv(t)
	d := n.device("SN-ENDLESS", nil)
	d.proxy.Inject(artifactPath, faultproxy.Always, faultproxy.Extra{Bytes: 1 << 20})
	requireVerification(t, d.cycle(t), uptane.ReasonLengthMismatch)
	n.requireOld(t, d)
	if got := d.proxy.Count(artifactPath); got != 1 {
		t.Errorf("%d artifact requests, want 1", got)
	}
}

func TestPowerCutMidDownloadResumes(t *testing.T) {
	t.Parallel()
	n := newNetEnv(t)
	d := n.device("SN-POWER", nil)
	d.proxy.Inject(artifactPath, 1, faultproxy.Stall{After: 1536 << 10, For: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.agent.Cycle(ctx) }()

	// Wait for a checkpoint past the first megabyte, and keep the journal as it was then: the
	// power goes before the agent can record anything more.
	statePath := filepath.Join(d.cfg.StateDir, "state.json")
	var journal []byte
	var ckpt int64
	for deadline := time.Now().Add(15 * time.Second); ckpt < 1<<20; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint past 1 MiB")
		}
		b, err := os.ReadFile(statePath)
		if err != nil {
			continue
		}
		// The bytes just read, not a second read: the agent may write a newer journal between.
		var st agent.State
		if err := json.Unmarshal(b, &st); err == nil && st.Pending != nil && st.Phase == agent.PhaseDownloading {
			journal, ckpt = b, st.Pending.Staged
		}
	}
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the interrupted cycle succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the cycle did not stop when its context ended")
	}
	if err := os.WriteFile(statePath, journal, 0o600); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(journal, fmt.Appendf(nil, `"staged": %d`, ckpt)) {
		t.Fatalf("kept journal does not record %d staged bytes", ckpt)
	}

	if err := d.boot.PowerOn(context.Background()); err != nil {
		t.Fatal(err)
	}
	var err error
	if d.agent, err = agent.New(context.Background(), d.cfg); err != nil {
		t.Fatalf("agent after power-on: %v", err)
	}
	if st := d.agent.State(); st.Phase != agent.PhaseDownloading || st.Pending.Staged != ckpt {
		t.Fatalf("after power-on: phase %s, pending %+v; want downloading from %d", st.Phase, st.Pending, ckpt)
	}
	if err := d.cycle(t); err != nil {
		t.Fatalf("cycle after power-on: %v", err)
	}
	n.requireUpdated(t, d)
	reqs := d.proxy.Requests(artifactPath)
	if got := rangeStart(t, reqs[len(reqs)-1]); got != ckpt || got < netCkpt {
		t.Errorf("resumed with Range %q, want bytes=%d- (the last checkpoint)", reqs[len(reqs)-1].Range, ckpt)
	}
}

// A 429 on a metadata file keeps its Retry-After: the cycle ends with the server's wait, not
// the agent's own backoff.
func TestRetryAfterOnMetadata(t *testing.T) {
	t.Parallel()
	n := newNetEnv(t)
	d := n.device("SN-RETRY-META", nil)
	const timestamp = "/device/v1/director/timestamp.json"
	d.proxy.Inject(timestamp, 1, faultproxy.Status{Code: http.StatusTooManyRequests, RetryAfter: "42"})
	err := d.cycle(t)
	if te := requireTransient(t, err); te.RetryAfter != 42*time.Second {
		t.Errorf("RetryAfter %s after a 429 on %s with Retry-After: 42, want 42s (%v)", te.RetryAfter, timestamp, err)
	}
	if got := d.proxy.Count(timestamp); got != 1 {
		t.Errorf("%d requests for %s, want 1", got, timestamp)
	}
	n.requireOld(t, d)

	// An absurd Retry-After is capped.
	d.proxy.Inject(timestamp, 1, faultproxy.Status{Code: http.StatusServiceUnavailable, RetryAfter: "99999999999999999999"})
	if te := requireTransient(t, d.cycle(t)); te.RetryAfter != agent.MaxRetryAfter {
		t.Errorf("RetryAfter %s after Retry-After: 99999999999999999999, want the cap %s", te.RetryAfter, agent.MaxRetryAfter)
	}
	if err := d.cycle(t); err != nil {
		t.Fatalf("cycle once the server answers: %v", err)
	}
	n.requireUpdated(t, d)
}

// A slow but steady download outlasts the HTTP client's total timeout: artifacts use a client
// without one, and only the minimum-rate watchdog bounds the body.
func TestSlowDownloadOutlastsClientTimeout(t *testing.T) {
	t.Parallel()
	n := newNetEnv(t)
	const total = 300 * time.Millisecond
	d := n.device("SN-2G", func(c *agent.Config) {
		noRetries(c)
		c.HTTP.Timeout = total // the check-in and metadata client's total timeout, shortened
		c.MinRate, c.SlowWindow = 16<<10, time.Second
	})
	d.proxy.Inject(artifactPath, faultproxy.Always, faultproxy.Throttle{Rate: 2 << 20}) // about 1.5 s
	start := time.Now()
	if err := d.cycle(t); err != nil {
		t.Fatalf("cycle: %v", err)
	}
	if took := time.Since(start); took < 2*total {
		t.Fatalf("the throttled download took %s, want longer than the %s total timeout for the test to mean anything", took, total)
	}
	n.requireUpdated(t, d)
	if reqs := d.proxy.Requests(artifactPath); len(reqs) != 1 {
		t.Errorf("%d artifact requests, want 1 uninterrupted download", len(reqs))
	}
}

// A health script that hangs fails the health check after the hook timeout: the trial is
// rolled back instead of the agent waiting for ever.
func TestHungHealthCheckRollsBack(t *testing.T) {
	t.Parallel()
	n := newNetEnv(t)
	d := n.device("SN-HUNG-HEALTH", func(c *agent.Config) {
		c.HookTimeout = 300 * time.Millisecond
		c.Health = func(ctx context.Context) error {
			return exec.CommandContext(ctx, "sleep", "30").Run() // a health script that hangs
		}
	})
	start := time.Now()
	err := d.cycle(t)
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the cycle took %s with a hung health check and a 300ms hook timeout", took)
	}
	if err != nil {
		t.Fatalf("cycle: %v", err)
	}
	n.requireOld(t, d)
	st := d.agent.State()
	if st.FailedTarget != n.rel.Target || !strings.Contains(st.LastError, "hook timeout") {
		t.Errorf("failed target %q, last error %q; want %s failed by the hook timeout", st.FailedTarget, st.LastError, n.rel.Target)
	}
}

// fakeClock is a device clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	at time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.at
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at = c.at.Add(d)
}

// The daily full verification: when the director does not change, check-ins alone do not
// verify; once FullCheckEvery has passed, one cycle runs the full verification, and a frozen
// image repository (a timestamp that expired) is reported as a verification failure.
func TestFullVerificationWhenDirectorUnchanged(t *testing.T) {
	t.Parallel()
	srvClock := &shiftClock{}
	n := &netEnv{env: newEnvWith(t, func(c *server.Config) { c.Now = srvClock.Now }), factory: image("1.0.0", 64<<10), img: image("2.0.0", netImageSize)}
	n.old = n.publish("1.0.0", 1, n.factory)
	n.rel = n.publish("2.0.0", 2, n.img)
	clock := &fakeClock{at: time.Now()}
	const every = 10 * time.Minute // shortened from a day, within the device token's lifetime
	d := n.device("SN-DAILY", func(c *agent.Config) { c.Now, c.FullCheckEvery = clock.Now, every })
	if err := d.cycle(t); err != nil {
		t.Fatalf("first cycle: %v", err)
	}
	n.requireUpdated(t, d)
	if err := d.cycle(t); err != nil { // the check-in after the commit, as Run makes at once
		t.Fatalf("second cycle: %v", err)
	}
	dirVersion := d.agent.State().DirectorVersion

	// The image repository freezes: its newest timestamp has already expired (signed with a
	// clock two days behind; timestamps live a day). The director's view of the device stays.
	srvClock.Shift(-48 * time.Hour)
	n.publish("3.0.0", 3, image("3.0.0", 64<<10))
	const meta = "/repo/image/"
	before, beforeTS := d.proxy.Count(meta), d.proxy.Count(meta+"timestamp.json")

	clock.Advance(every / 2)
	if err := d.cycle(t); err != nil {
		t.Fatalf("cycle before the full check is due: %v", err)
	}
	if got := d.proxy.Count(meta) - before; got != 0 {
		t.Fatalf("%d image metadata requests before FullCheckEvery passed, want none", got)
	}

	clock.Advance(every/2 + time.Minute)
	err := d.cycle(t)
	requireVerification(t, err, uptane.ReasonExpired)
	if !strings.Contains(err.Error(), "expired") {
		t.Errorf("full verification: %v, want the expired timestamp named", err)
	}
	if got := d.proxy.Count(meta+"timestamp.json") - beforeTS; got == 0 {
		t.Error("the due full verification did not fetch the image timestamp")
	}
	st := d.agent.State()
	if st.DirectorVersion != dirVersion {
		t.Errorf("director version %d, want %d unchanged: the check was the daily one", st.DirectorVersion, dirVersion)
	}
	if !strings.Contains(st.LastError, "expired") || st.LastFullCheck.Before(clock.Now()) {
		t.Errorf("last error %q, last full check %s; want the expiry recorded at %s", st.LastError, st.LastFullCheck, clock.Now())
	}
	n.requireUpdated(t, d) // still on the image it verified and committed
	found := false
	evs, evErr := n.cli.Events(context.Background(), st.DeviceID)
	if evErr != nil {
		t.Fatal(evErr)
	}
	for _, ev := range evs {
		found = found || (ev.Fatal && ev.Step == wire.StepVerify && ev.Status == wire.StatusFailed && strings.Contains(ev.Message, "expired"))
	}
	if !found {
		t.Errorf("the server holds no fatal verify event naming the expiry: %+v", evs)
	}
}

// An owner who opted out of automatic updates is asked before any update installs, security
// updates included: the image downloads, then waits until the owner consents.
func TestOptOutWaitsForConsent(t *testing.T) {
	t.Parallel()
	n := newNetEnv(t)
	d := n.device("SN-OPTOUT", nil)
	if err := agent.SetOptOut(d.cfg.StateDir, true); err != nil {
		t.Fatal(err)
	}
	if err := d.cycle(t); err != nil {
		t.Fatalf("cycle: %v", err)
	}
	st := d.agent.State()
	if st.Phase != agent.PhaseDownloaded || st.Pending == nil || !strings.Contains(st.Pending.Waiting, "consent") {
		t.Fatalf("phase %s, pending %+v; want the security update downloaded and waiting for consent", st.Phase, st.Pending)
	}
	if got := d.activeSHA256(t); got != n.old.SHA256 {
		t.Fatalf("active slot holds %s before consent, want the factory image", got)
	}
	evs, err := n.cli.Events(context.Background(), st.DeviceID)
	if err != nil {
		t.Fatal(err)
	}
	waiting := false
	for _, ev := range evs {
		waiting = waiting || (ev.Step == wire.StepInstall && ev.Status == wire.StatusWaiting)
	}
	if !waiting {
		t.Errorf("the server was not told the install waits: %+v", evs)
	}
	if err := d.cycle(t); err != nil { // still no consent: still waiting
		t.Fatalf("cycle: %v", err)
	}
	if st := d.agent.State(); st.Phase != agent.PhaseDownloaded {
		t.Fatalf("phase %s without consent, want downloaded", st.Phase)
	}

	if _, err := agent.GrantConsent(d.cfg.StateDir); err != nil {
		t.Fatal(err)
	}
	if err := d.cycle(t); err != nil {
		t.Fatalf("cycle after consent: %v", err)
	}
	n.requireUpdated(t, d)
	if got := d.proxy.Count(artifactPath); got != 1 {
		t.Errorf("%d artifact requests, want 1: the download happened before consent", got)
	}
}

// A power cut after the last checkpoint of a complete download (the journal says downloading,
// with every byte staged): the agent verifies the staged image instead of asking the server for
// a range past its end.
func TestPowerCutAfterLastByteVerifiesStage(t *testing.T) {
	t.Parallel()
	n := newNetEnv(t)
	d := n.device("SN-POWER-END", noRetries)
	d.proxy.Inject(artifactPath, 1, faultproxy.Drop{After: 1 << 20})
	requireTransient(t, d.cycle(t))
	st := d.agent.State()
	if st.Phase != agent.PhaseDownloading || st.Pending == nil || st.Pending.Staged <= 0 {
		t.Fatalf("phase %s, pending %+v; want downloading with bytes staged", st.Phase, st.Pending)
	}
	// The rest arrives and is checkpointed, and the power goes before "downloaded" is journaled.
	ctx := context.Background()
	staged := st.Pending.Staged
	w, err := (&agent.ABInstaller{Boot: d.boot, Slots: d.slots}).Stage(ctx, st.Pending, staged)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(n.img[staged:]); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	statePath := filepath.Join(d.cfg.StateDir, "state.json")
	journal, err := os.ReadFile(statePath)
	if err != nil {
		t.Fatal(err)
	}
	was := fmt.Appendf(nil, `"staged": %d`, staged)
	if !bytes.Contains(journal, was) {
		t.Fatalf("journal does not record %d staged bytes", staged)
	}
	journal = bytes.Replace(journal, was, fmt.Appendf(nil, `"staged": %d`, len(n.img)), 1)
	if err := os.WriteFile(statePath, journal, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.boot.PowerOn(ctx); err != nil {
		t.Fatal(err)
	}
	if d.agent, err = agent.New(ctx, d.cfg); err != nil {
		t.Fatalf("agent after power-on: %v", err)
	}
	before := d.proxy.Count(artifactPath)
	if err := d.cycle(t); err != nil {
		t.Fatalf("cycle after power-on: %v", err)
	}
	n.requireUpdated(t, d)
	if got := d.proxy.Count(artifactPath) - before; got != 0 {
		t.Errorf("%d artifact requests after power-on, want none: the staged image was complete", got)
	}
}
