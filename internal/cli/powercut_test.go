package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/agent"
	"upkeep.dev/upkeep/internal/agent/boot"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/wire"
)

// Power-cut harness settings. The agent's default checkpoint (4 MiB) is as large as a release,
// so a device cut every few hundred milliseconds would keep no download progress; 256 KiB keeps
// several checkpoints in every image.
const (
	powercutDefault      = 200                    // cuts unless UPKEEP_POWERCUTS says otherwise
	powercutDeltaDefault = 60                     // TestPowerCutsDelta's
	powercutMaxSleep     = 400 * time.Millisecond // a cut lands 0–400 ms after the agent starts
	powercutMinSize      = 2 << 20
	powercutMaxSize      = 4 << 20
	powercutCheckpoint   = "262144"
	powercutPoll         = "300ms"
	powercutConverge     = 90 * time.Second
	powercutRaceCuts     = 40          // under the race detector
	unhealthyEvery       = 5           // every fifth release fails its health check on the device
	unhealthyMarker      = "UNHEALTHY" // written at unhealthyOffset of such an image
	unhealthyOffset      = 32          // past the "UPKEEP-IMAGE <version>" header
	agentLogTail         = 2 << 10     // bytes of the agent's log quoted in a failure
	maxViolations        = 10          // the loop stops after this many; each is reported
	// Every powercutAimEvery-th cut is aimed: it still comes at its random instant, unless the
	// agent enters, before then, the phase of the update step that fewest cuts have landed in so
	// far (powercutSteps); it is then cut at once. The install step lasts a few milliseconds
	// (arming the trial: two fsynced writes), so random instants alone rarely land in it.
	powercutAimEvery = 4
	powercutAimPoll  = 200 * time.Microsecond // how often an aimed cut reads the journal
	// An aimed cut at a step no cut has landed in yet waits for it this long, not only until its
	// random instant: the agent reports and checks in before it downloads and installs, so the
	// install step may begin later than powercutMaxSleep after the start.
	powercutAimLonger = 3 * time.Second
)

// powercutSteps are the steps of an update the cuts must land in, each with the journal phases
// that stand for it. The test fails unless at least one cut lands in each. They are in order of
// how rarely a cut at a random instant lands in them: an aimed cut whose candidates are tied
// goes to the first.
var powercutSteps = []powercutStep{
	{"install", []string{agent.PhaseInstalling}},
	{"trial boot", []string{agent.PhaseRebooting, agent.PhaseVerifying}},
	{"download", []string{agent.PhaseDownloading}},
}

// TestPowerCuts runs the real upkeep-agent binary against a real server and cuts its power at
// random instants: SIGKILL 0–400 ms after it starts, then the boot ROM and boot loader's
// power-on (boot.Sim.PowerOn: trial boot counting, fallback to the committed slot past the
// boot limit), then the agent again. The server keeps assigning newer releases (2–4 MiB, rising
// security versions, every fifth one failing its health check on the device), so that cuts
// land in the download, at checkpoints, in the install, the trial boot, the health check and
// the commit. Every fourth cut is aimed at the update step fewest cuts have reached so far
// (powercutAimEvery); the journal phase read right after each cut says where it landed, and
// the test fails unless cuts landed in the download, the install and the trial boot.
//
// After every cut the booted slot, and the committed slot the boot loader falls back to, must
// hold complete images that the offline targets key signed, each the image the journal says is
// installed or on trial; the journal must be readable and the agent must never exit by itself. At the end the agent runs without
// cuts and must converge: idle on the newest assignment, or a clean rollback to the previous
// image, with the server's view matching the device.
//
// UPKEEP_POWERCUTS sets the number of cuts (default 200; too few for a cut to land in every step
// fail); UPKEEP_POWERCUT_SEED repeats the cut instants and release sizes of an earlier run.
func TestPowerCuts(t *testing.T) { runPowerCuts(t, false, powercutDefault) }

// TestPowerCutsDelta is TestPowerCuts with delta updates: each release is published with its
// chunk index and a per-pair delta from the release before it, and each image shares most of
// its bytes with the one before, so the device rebuilds its images from a patch (when it runs
// the delta's source) or from chunks of its active slot (after a rollback), with the journal of
// the rebuild cut like a download. The same invariants hold, and deltas must have been used.
func TestPowerCutsDelta(t *testing.T) { runPowerCuts(t, true, powercutDeltaDefault) }

func runPowerCuts(t *testing.T, deltas bool, cuts int) {
	if testing.Short() {
		t.Skip("builds the agent binary and cuts its power hundreds of times")
	}
	converge := powercutConverge
	if raceEnabled {
		// The race-instrumented server is several times slower; the full count runs without it.
		cuts, converge = powercutRaceCuts, 3*powercutConverge
	}
	if v := os.Getenv("UPKEEP_POWERCUTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("UPKEEP_POWERCUTS=%q: want a positive number of cuts", v)
		}
		cuts = n
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("UPKEEP_POWERCUT_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("UPKEEP_POWERCUT_SEED=%q: want an unsigned number", v)
		}
		seed = s
	}
	t.Logf("seed %d (UPKEEP_POWERCUT_SEED=%d repeats the cut instants and release sizes)", seed, seed)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("failed with seed %d", seed)
		}
	})
	rng := rand.New(rand.NewPCG(seed, seed>>1|1))
	start := time.Now()

	ctx := context.Background()
	e := newEnvWith(t, func(c *server.Config) { c.PollSeconds = 1 })
	dir := t.TempDir()
	bin := filepath.Join(dir, "upkeep-agent")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/upkeep-agent").CombinedOutput(); err != nil {
		t.Fatalf("build agent: %v\n%s", err, out)
	}

	h := &powercutHarness{t: t, e: e, rng: rng, signed: map[string]*powercutRelease{}, deltas: deltas}
	factory := h.publish() // 1.0.0, security version 1
	d := newPowercutDevice(t, e, bin, filepath.Join(dir, "device"), factory)
	h.assigned, h.previous = factory, factory
	h.assignNext(d.id)

	var st powercutStats
	phaseAtCut, byPhase := map[string]int{}, map[string]int{}
	aimed, aimedHit := 0, 0
	fellBack, rearmed := map[string]bool{}, map[string]bool{} // pending images, by sha256
	for i := range cuts {
		wait := time.Duration(rng.Int64N(int64(powercutMaxSleep) + 1))
		from := d.journalPhase()
		run := d.start(t)
		if i%powercutAimEvery == powercutAimEvery-1 {
			aimed++
			step, until := leastCutStep(byPhase), wait
			if stepCount(byPhase, step.phases) == 0 {
				until = powercutAimLonger
			}
			if d.awaitPhase(from, step.phases, until) {
				aimedHit++
			}
		} else {
			time.Sleep(wait)
		}
		if err := run.cut(); err != nil {
			st.agentExits++
			t.Errorf("cut %d: %v", i, err)
		}

		// What the cut interrupted, as the journal and the boot loader recorded it.
		before, err := agent.ReadStatus(d.state)
		if err != nil {
			t.Fatalf("cut %d: journal unreadable after the cut: %v\nagent log:\n%s", i, err, run.logTail())
		}
		bs, err := d.bootState(ctx)
		if err != nil {
			t.Fatalf("cut %d: boot environment unreadable after the cut: %v", i, err)
		}
		label := before.Phase
		if bs.Trying {
			label += " (trial running)"
		}
		phaseAtCut[label]++
		byPhase[before.Phase]++

		// Power comes back: the boot ROM and boot loader run before anything else.
		envBefore := d.env(t)
		if p := before.Pending; p != nil && fellBack[p.SHA256] && envBefore.UpgradeAvailable == 1 && envBefore.BootPart == p.Slot {
			rearmed[p.SHA256] = true // armed again after the boot loader had given it up
		}
		bl, err := boot.NewSim(d.bootEnv)
		if err != nil {
			t.Fatalf("cut %d: boot env: %v", i, err)
		}
		if err := bl.PowerOn(ctx); err != nil {
			t.Fatalf("cut %d: power on: %v", i, err)
		}
		if envAfter := d.env(t); envBefore.UpgradeAvailable == 1 && envAfter.UpgradeAvailable == 0 {
			st.fallbacks++ // the trial used up its boots: the boot loader went back to the committed slot
			if before.Pending != nil {
				fellBack[before.Pending.SHA256] = true
			}
		}
		h.check(ctx, d, i, run, &st)
		if j, err := agent.ReadStatus(d.state); err == nil && fellBack[j.Installed.SHA256] {
			rearmed[j.Installed.SHA256] = true // committed after the boot loader had given it up
		}
		if n := st.bricked + st.wrongImage + st.agentExits; n >= maxViolations {
			t.Fatalf("stopped after cut %d: %d violations (bricked %d, wrong image %d, agent exits %d)", i, n, st.bricked, st.wrongImage, st.agentExits)
		}
	}

	// Power stays on: the device must converge on what it was last assigned.
	run := d.start(t)
	defer run.cut() //nolint:errcheck // the run ends with the test
	var final *agent.State
	for deadline := time.Now().Add(converge); ; time.Sleep(100 * time.Millisecond) {
		s, err := agent.ReadStatus(d.state)
		if err == nil && s.Phase == agent.PhaseIdle && (s.Installed.SHA256 == h.assigned.sha || s.FailedSHA256 == h.assigned.sha) {
			final = s
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("device did not converge on %s within %s: %+v (%v)\nagent log:\n%s", h.assigned.version, converge, s, err, run.logTail())
		}
	}
	bs, err := d.bootState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if bs.Trying || bs.Committed != bs.Booted {
		t.Errorf("converged, yet the boot loader runs slot %s with slot %s committed (trial %t)", bs.Booted, bs.Committed, bs.Trying)
	}
	running, _ := d.slotImage(bs.Booted)
	switch {
	case final.Installed.SHA256 == h.assigned.sha:
		st.updates++
		if h.assigned.unhealthy {
			t.Errorf("device committed %s, whose health check fails", h.assigned.version)
		}
	default:
		st.rollbacks++
		if final.LastError == "" || final.Installed.SHA256 != h.previous.sha {
			t.Errorf("rollback of %s is not clean: installed %s, last error %q; want %s and an error", h.assigned.version, final.Installed.Version, final.LastError, h.previous.version)
		}
	}
	if running != final.Installed.SHA256 {
		t.Errorf("converged on %s, but booted slot %s holds %s", final.Installed.Version, bs.Booted, h.describe(running))
	}
	var seen []wire.Device
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		seen, err = e.cli.Devices(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(seen) == 1 && seen[0].Installed.SHA256 == final.Installed.SHA256 && seen[0].Installed.Version == final.Installed.Version && seen[0].State == final.Phase {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server sees %+v; the device runs %s and is %s", seen, final.Installed.Version, final.Phase)
		}
	}

	leftovers := map[string]int{}
	filepath.WalkDir(d.state, func(path string, de fs.DirEntry, err error) error { //nolint:errcheck // a count for the log
		if err == nil && !de.IsDir() && strings.Contains(de.Name(), ".tmp-") {
			leftovers[strings.TrimPrefix(de.Name()[:strings.Index(de.Name(), ".tmp-")], ".")]++
		}
		return nil
	})
	t.Logf("cuts=%d completed_updates=%d rollbacks=%d (health check %d, cut during the trial %d) bricked=%d wrong_image_boots=%d agent_exits=%d releases=%d final=%s/%s wall=%s",
		cuts, st.updates, st.rollbacks, st.healthRollbacks, st.rollbacks-st.healthRollbacks, st.bricked, st.wrongImage, st.agentExits,
		len(h.signed), final.Installed.Version, final.Phase, time.Since(start).Round(time.Second))
	t.Logf("journal phase at the cut: %s", formatCounts(phaseAtCut))
	t.Logf("aimed cuts: %d, of which %d came when the agent entered the step aimed at", aimed, aimedHit)
	t.Logf("boot loader fallbacks at power-on: %d; images armed for a trial again after their fallback: %d", st.fallbacks, len(rearmed))
	t.Logf("temporary files left behind by interrupted atomic writes: %s", formatCounts(leftovers))
	if st.bricked != 0 || st.wrongImage != 0 {
		t.Errorf("bricked=%d wrong_image_boots=%d; want 0 and 0", st.bricked, st.wrongImage)
	}
	if deltas {
		forms := map[string]int{}
		for _, ev := range e.downloadEvents(d.id) {
			switch {
			case strings.HasPrefix(ev, "ok: delta "):
				forms[strings.Fields(ev)[2]]++
			case strings.HasPrefix(ev, "ok:"):
				forms["full image"]++
			case strings.Contains(ev, "delta failed"):
				forms["delta failed"]++
			}
		}
		t.Logf("completed downloads by form (the last 100 events): %s", formatCounts(forms))
		if forms["upkdlt2:"]+forms["caibx:"] == 0 {
			t.Errorf("no download used a delta: %s", formatCounts(forms))
		}
	}
	var steps, missed []string
	for _, s := range powercutSteps {
		n := stepCount(byPhase, s.phases)
		steps = append(steps, fmt.Sprintf("%s %d", s.name, n))
		if n == 0 {
			missed = append(missed, s.name)
		}
	}
	t.Logf("cuts by update step: %s", strings.Join(steps, ", "))
	if len(missed) > 0 {
		t.Errorf("no cut landed in the %s step (cuts by step: %s; journal phase at the cut: %s)",
			strings.Join(missed, " or the "), strings.Join(steps, ", "), formatCounts(phaseAtCut))
	}
}

type powercutStep struct {
	name   string
	phases []string
}

// stepCount is how many cuts landed in one of phases.
func stepCount(byPhase map[string]int, phases []string) int {
	n := 0
	for _, p := range phases {
		n += byPhase[p]
	}
	return n
}

// leastCutStep is the update step fewest cuts have landed in so far (the first such in
// powercutSteps).
func leastCutStep(byPhase map[string]int) powercutStep {
	step := powercutSteps[0]
	for _, s := range powercutSteps[1:] {
		if stepCount(byPhase, s.phases) < stepCount(byPhase, step.phases) {
			step = s
		}
	}
	return step
}

// powercutStats counts what the cuts led to.
type powercutStats struct {
	updates, rollbacks, healthRollbacks int
	bricked, wrongImage, agentExits     int
	fallbacks                           int // power-ons at which the boot loader gave up a trial
}

// powercutRelease is a release the offline targets key signed.
type powercutRelease struct {
	version   string
	size      int
	unhealthy bool
	delta     bool // an image of TestPowerCutsDelta: most bytes shared with the others
	sha       string
	rel       *wire.Release
}

// bytes regenerates the image.
func (r *powercutRelease) bytes() []byte {
	if r.delta {
		b := fsImage(7, r.size) // the same stream for every release: a shorter image is a prefix
		copy(b, "UPKEEP-IMAGE "+r.version)
		sum := sha256.Sum256([]byte(r.version))
		at := 4096 + int(binary.LittleEndian.Uint32(sum[:]))%(r.size-1<<20)
		copy(b[at:], bytes.Repeat([]byte("release "+r.version+" "), 4096)) // the "changed packages"
		if r.unhealthy {
			copy(b[unhealthyOffset:], unhealthyMarker)
		}
		return b
	}
	return powercutImage(r.version, r.size, r.unhealthy)
}

func powercutImage(version string, size int, unhealthy bool) []byte {
	b := image(version, size)
	if unhealthy {
		copy(b[unhealthyOffset:], unhealthyMarker)
	}
	return b
}

// powercutHarness publishes releases, assigns them and checks the device after each cut.
type powercutHarness struct {
	t      *testing.T
	e      *env
	rng    *rand.Rand
	signed map[string]*powercutRelease // by sha256
	n      int
	// deltas: images share most bytes and are published with chunk indexes and a per-pair
	// delta from the release before (last).
	deltas bool
	last   *powercutRelease
	// assigned is what the director names; previous is what the device ran when it was named.
	assigned, previous *powercutRelease
}

// publish signs and publishes the next release: 1.0.0 first, each with a security version one
// higher than the last.
func (h *powercutHarness) publish() *powercutRelease {
	h.t.Helper()
	r := &powercutRelease{version: fmt.Sprintf("1.0.%d", h.n), size: powercutMinSize + h.rng.IntN(powercutMaxSize-powercutMinSize+1), delta: h.deltas}
	r.unhealthy = h.n > 0 && h.n%unhealthyEvery == 0
	b := r.bytes()
	sum := sha256.Sum256(b)
	r.sha = hex.EncodeToString(sum[:])
	if h.deltas {
		from := map[string][]byte{}
		if h.last != nil {
			from[h.last.version] = h.last.bytes()
		}
		r.rel = h.e.publishDelta(r.version, int64(h.n+1), b, from)
	} else {
		r.rel = h.e.publish(r.version, int64(h.n+1), b)
	}
	h.last = r
	if r.rel.SHA256 != r.sha || r.rel.Length != int64(r.size) {
		h.t.Fatalf("published %s as %s (%d bytes), want %s (%d bytes)", r.version, r.rel.SHA256, r.rel.Length, r.sha, r.size)
	}
	h.signed[r.sha] = r
	h.n++
	return r
}

// assignNext publishes a newer release and names it for the device.
func (h *powercutHarness) assignNext(deviceID string) {
	h.t.Helper()
	r := h.publish()
	h.e.deploy(r.rel, deviceID)
	h.assigned = r
}

// check verifies the invariants after cut i and the power-on that followed it, and assigns a
// newer release once the device has finished with the current one.
func (h *powercutHarness) check(ctx context.Context, d *powercutDevice, i int, run *powercutRun, st *powercutStats) {
	t := h.t
	t.Helper()
	bs, err := d.bootState(ctx)
	if err != nil {
		t.Fatalf("cut %d: boot environment after power-on: %v", i, err)
	}
	j, err := agent.ReadStatus(d.state)
	if err != nil {
		t.Fatalf("cut %d: journal unreadable: %v", i, err)
	}
	if !slices.Contains(powercutPhases, j.Phase) {
		t.Fatalf("cut %d: journal phase %q is none the agent knows", i, j.Phase)
	}
	env, _ := os.ReadFile(d.bootEnv)
	where := func() string {
		return fmt.Sprintf("journal %s (installed %s, pending %s), boot env %s\nagent log before the cut:\n%s",
			j.Phase, j.Installed.Version, pendingVersion(j), bytes.TrimSpace(env), run.logTail())
	}

	// The booted slot, and the committed slot the boot loader falls back to, hold complete
	// images the offline key signed, and each is the image the journal says is installed or on
	// trial.
	for _, s := range []struct {
		role string
		slot boot.Slot
	}{{"booted", bs.Booted}, {"committed", bs.Committed}} {
		if s.role == "committed" && s.slot == bs.Booted {
			break
		}
		got, size := d.slotImage(s.slot)
		r, signed := h.signed[got]
		switch {
		case signed && size == r.size:
		case size == 0:
			st.bricked++
			t.Errorf("cut %d: BRICKED: %s slot %s is empty; %s", i, s.role, s.slot, where())
			return
		case h.prefixOf(d.slotPath(s.slot)) != nil:
			st.bricked++
			t.Errorf("cut %d: BRICKED: %s slot %s holds the first %d bytes of %s, a cut-short image; %s",
				i, s.role, s.slot, size, h.prefixOf(d.slotPath(s.slot)).version, where())
			return
		default:
			st.wrongImage++
			t.Errorf("cut %d: WRONG IMAGE: %s slot %s holds %s (%d bytes), which the offline key never signed; %s", i, s.role, s.slot, got, size, where())
			return
		}
		if got != j.Installed.SHA256 && (j.Pending == nil || got != j.Pending.SHA256) {
			st.wrongImage++
			t.Errorf("cut %d: WRONG IMAGE: %s slot %s holds %s, the journal knows only %s and %s; %s", i, s.role, s.slot, r.version, j.Installed.Version, pendingVersion(j), where())
			return
		}
	}
	if j.Phase != agent.PhaseIdle {
		return
	}
	running, _ := d.slotImage(bs.Booted)
	switch {
	case j.Installed.SHA256 == h.assigned.sha:
		st.updates++
		if h.assigned.unhealthy {
			t.Errorf("cut %d: device committed %s, whose health check fails; %s", i, h.assigned.version, where())
		}
	case j.FailedSHA256 == h.assigned.sha:
		st.rollbacks++
		if h.assigned.unhealthy {
			st.healthRollbacks++
		}
		if j.LastError == "" || j.Installed.SHA256 != h.previous.sha || running != h.previous.sha {
			t.Errorf("cut %d: rollback of %s is not clean: installed %s, booted %s, last error %q; want %s; %s",
				i, h.assigned.version, j.Installed.Version, h.describe(running), j.LastError, h.previous.version, where())
		}
	default:
		return // the assignment is still to be downloaded
	}
	h.previous = h.signed[j.Installed.SHA256]
	h.assignNext(d.id)
}

// prefixOf returns the signed release whose image the slot file at path is a proper prefix of
// (an image cut short, that cannot boot), or nil.
func (h *powercutHarness) prefixOf(path string) *powercutRelease {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return nil
	}
	for _, r := range h.signed {
		if r.size > len(b) && bytes.HasPrefix(r.bytes(), b) {
			return r
		}
	}
	return nil
}

// describe names the signed release with that sha256, or says it is none.
func (h *powercutHarness) describe(sum string) string {
	switch r, ok := h.signed[sum]; {
	case sum == "":
		return "nothing"
	case ok:
		return r.version
	default:
		return "an image no release has (" + sum + ")"
	}
}

var powercutPhases = []string{
	agent.PhaseIdle, agent.PhaseDownloading, agent.PhaseDownloaded, agent.PhaseInstalling, agent.PhaseInstalled,
	agent.PhaseRebooting, agent.PhaseVerifying, agent.PhaseCommitted, agent.PhaseRollingBack, agent.PhaseFailed,
}

func pendingVersion(s *agent.State) string {
	if s.Pending == nil {
		return "nothing pending"
	}
	return s.Pending.Version + " in slot " + string(s.Pending.Slot)
}

// powercutDevice is one enrolled device: the agent's state folder with file-backed A/B slots
// and the simulated boot loader's environment in it.
type powercutDevice struct {
	bin, state, bootEnv, id string
	args                    []string
}

// newPowercutDevice writes the factory image into slot A, provisions the boot environment and
// enrols the device with the real agent binary.
func newPowercutDevice(t *testing.T, e *env, bin, state string, factory *powercutRelease) *powercutDevice {
	t.Helper()
	d := &powercutDevice{bin: bin, state: state, bootEnv: filepath.Join(state, "bootenv.json")}
	if err := os.MkdirAll(filepath.Join(state, "slots"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.slotPath(boot.SlotA), factory.bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := boot.NewSim(d.bootEnv); err != nil { // factory environment: slot A committed and booted
		t.Fatal(err)
	}
	enroll := exec.Command(bin, "enroll", "--state", state, "--server", e.srv.URL, "--token", e.enrollToken, "--serial", "CUT-1",
		"--product", testProduct, "--hardware", testHardware, "--image-root", filepath.Join(e.keys, "root.json"),
		"--director-root", filepath.Join(e.keys, "director-root.json"), "--installed-target", factory.rel.Target,
		"--installed-version", factory.version, "--installed-security-version", "1", "--installed-sha256", factory.sha)
	if out, err := enroll.CombinedOutput(); err != nil || !strings.Contains(string(out), "accepted") {
		t.Fatalf("enroll: %v\n%s", err, out)
	}
	st, err := agent.ReadStatus(state)
	if err != nil {
		t.Fatal(err)
	}
	d.id = st.DeviceID

	// The health check a device runs once a new image has booted (a shell, so that it takes a
	// few milliseconds and cuts land in it): it fails for an image that carries the marker.
	health := filepath.Join(filepath.Dir(state), "health.sh")
	script := fmt.Sprintf(`#!/bin/sh
booted=$(sed -n 's/.*"booted":"\([ab]\)".*/\1/p' '%s')
if head -c 64 '%s'/slot-"$booted".img | grep -qa %s; then
	echo "image in slot $booted is marked unhealthy" >&2
	exit 1
fi
`, d.bootEnv, filepath.Join(state, "slots"), unhealthyMarker)
	if err := os.WriteFile(health, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	d.args = []string{"run", "--state", state, "--boot", "sim", "--poll", powercutPoll, "--checkpoint-bytes", powercutCheckpoint,
		"--health-cmd", "/bin/sh '" + health + "'"}
	return d
}

// journalPhase is the phase the journal names now, or "" if it cannot be read.
func (d *powercutDevice) journalPhase() string {
	var j struct {
		Phase string `json:"phase"`
	}
	b, err := os.ReadFile(filepath.Join(d.state, "state.json"))
	if err != nil || json.Unmarshal(b, &j) != nil {
		return ""
	}
	return j.Phase
}

// awaitPhase waits up to max for the agent to enter one of phases, reading the journal every
// powercutAimPoll. It reports whether it did: the journal moved to one of them from another
// phase during the wait (the journal at the start, from, does not count, so that a resumed
// phase is not cut before the agent has done anything).
func (d *powercutDevice) awaitPhase(from string, phases []string, max time.Duration) bool {
	prev := from
	for deadline := time.Now().Add(max); time.Now().Before(deadline); time.Sleep(powercutAimPoll) {
		p := d.journalPhase()
		if p != prev && slices.Contains(phases, p) {
			return true
		}
		prev = p
	}
	return false
}

func (d *powercutDevice) slotPath(s boot.Slot) string {
	return filepath.Join(d.state, "slots", "slot-"+string(s)+".img")
}

// slotImage hashes the image in slot s; "" and 0 for a slot never written.
func (d *powercutDevice) slotImage(s boot.Slot) (sum string, size int) {
	b, err := os.ReadFile(d.slotPath(s))
	if errors.Is(err, fs.ErrNotExist) || len(b) == 0 {
		return "", 0
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:]), len(b)
}

// powercutEnv is the simulated boot loader's environment file, as boot.Sim writes it.
type powercutEnv struct {
	BootPart         boot.Slot `json:"boot_part"`
	Committed        boot.Slot `json:"committed"`
	UpgradeAvailable int       `json:"upgrade_available"`
	Bootcount        int       `json:"bootcount"`
	Bootlimit        int       `json:"bootlimit"`
	Booted           boot.Slot `json:"booted"`
}

func (d *powercutDevice) env(t *testing.T) powercutEnv {
	t.Helper()
	var e powercutEnv
	b, err := os.ReadFile(d.bootEnv)
	if err == nil {
		err = json.Unmarshal(b, &e)
	}
	if err != nil {
		t.Fatalf("boot environment: %v", err)
	}
	return e
}

func (d *powercutDevice) bootState(ctx context.Context) (boot.State, error) {
	bl, err := boot.NewSim(d.bootEnv)
	if err != nil {
		return boot.State{}, err
	}
	return bl.State(ctx)
}

// powercutRun is one run of `upkeep-agent run` between two power cuts.
type powercutRun struct {
	cmd *exec.Cmd
	log *bytes.Buffer
}

func (d *powercutDevice) start(t *testing.T) *powercutRun {
	t.Helper()
	r := &powercutRun{cmd: exec.Command(d.bin, d.args...), log: &bytes.Buffer{}}
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start agent: %v", err)
	}
	return r
}

// cut kills the agent with SIGKILL. It returns an error if the agent had already exited: an
// agent that stops on its own (a journal it cannot carry on, a failed start) is a device left
// without updates.
func (r *powercutRun) cut() error {
	killErr := r.cmd.Process.Kill()
	r.cmd.Wait() //nolint:errcheck // the state says how it ended
	ws, ok := r.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if errors.Is(killErr, os.ErrProcessDone) || !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		return fmt.Errorf("the agent exited by itself (%s)\nagent log:\n%s", r.cmd.ProcessState, r.logTail())
	}
	return nil
}

func (r *powercutRun) logTail() string {
	b := r.log.Bytes()
	if len(b) > agentLogTail {
		b = b[len(b)-agentLogTail:]
	}
	return string(b)
}

func formatCounts(m map[string]int) string {
	keys := slices.SortedFunc(maps.Keys(m), func(a, b string) int {
		if m[a] != m[b] {
			return m[b] - m[a]
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}
