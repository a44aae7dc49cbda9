package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/devclient"
	"upkeep.dev/upkeep/internal/sim"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/wire"
)

// RolloutConfig configures `upkeep bench rollout`.
type RolloutConfig struct {
	Devices     int
	Size        int
	Waves       string
	PollSeconds int
	Hammer      time.Duration // check-in saturation phase
	Progress    time.Duration // how often the rollout's progress is printed
	Conns       int
	Database    string // postgres:// URL, or empty for SQLite
}

// serversProfiled counts the server processes started with a CPU profile of their own.
var serversProfiled atomic.Int64

// ServerProcess is an `upkeep serve` child process.
type ServerProcess struct {
	cmd        *exec.Cmd
	URL, Token string
}

// StartServerProcess starts `exe serve` on a free loopback port with data in dataDir, keys in
// keys and its log in logPath, and returns once it listens. Token is the operator token when
// this start created it (the first start on a database), else empty.
func StartServerProcess(ctx context.Context, exe, dataDir, keys, logPath string, args ...string) (*ServerProcess, error) {
	cmd := exec.CommandContext(ctx, exe, append([]string{"serve", "--addr", "127.0.0.1:0", "--data", dataDir, "--keys", keys}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stderr = logf
	if p := os.Getenv("UPKEEP_CPUPROFILE"); p != "" {
		// FILE.server for the first server of the run, FILE.server2... for the next: replicas
		// writing one file would leave none readable.
		name := p + ".server"
		if n := serversProfiled.Add(1); n > 1 {
			name += strconv.FormatInt(n, 10)
		}
		cmd.Env = append(os.Environ(), "UPKEEP_CPUPROFILE="+name)
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &ServerProcess{cmd: cmd}
	sc := bufio.NewScanner(out)
	for p.URL == "" && sc.Scan() { // the token, if any, comes before the "serving on" line
		line := sc.Text()
		if u, ok := strings.CutPrefix(line, "upkeep serving on "); ok {
			p.URL = u
		}
		if _, t, ok := strings.Cut(line, "keep it): "); ok {
			p.Token = t
		}
	}
	go io.Copy(io.Discard, out) //nolint:errcheck // drain
	if p.URL == "" {
		p.Stop()
		return nil, fmt.Errorf("server did not start: see %s", logPath)
	}
	return p, nil
}

// Stop interrupts the server and waits for it to exit.
func (p *ServerProcess) Stop() {
	p.cmd.Process.Signal(os.Interrupt) //nolint:errcheck // best effort
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }() //nolint:errcheck // the exit status says nothing here
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill() //nolint:errcheck // it would not stop
		<-done
	}
}

// rssKiB reads a process's resident set (VmRSS) and its peak (VmHWM) from /proc.
func rssKiB(pid int) (rss, hwm int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			hwm = n
		}
	}
	return rss, hwm
}

// SimGCPercent is the garbage collector's target in a process that simulates a fleet: the
// simulated devices keep tens of KiB each alive, and the default target would mark that whole
// heap again after every few MiB of verification garbage. The server runs in its own process
// with the default.
const SimGCPercent = 400

// Rollout runs `upkeep bench rollout`.
func Rollout(ctx context.Context, cfg RolloutConfig, out io.Writer) error {
	defer debug.SetGCPercent(debug.SetGCPercent(SimGCPercent))
	dir, err := os.MkdirTemp(sim.TempDir(), "upkeep-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	keys := filepath.Join(dir, "keys")
	if _, err := tuf.InitKeySet(keys, 1, 1, tuf.DefaultLifetimes(), time.Now()); err != nil {
		return err
	}
	args := []string{"--poll-seconds", strconv.Itoa(cfg.PollSeconds)}
	store := "SQLite"
	if cfg.Database != "" {
		args, store = append(args, "--db", cfg.Database), "PostgreSQL"
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	srv, err := StartServerProcess(ctx, exe, filepath.Join(dir, "data"), keys, filepath.Join(dir, "server.log"), args...)
	if err != nil {
		return err
	}
	if srv.Token == "" {
		return fmt.Errorf("the new server printed no operator token")
	}
	defer srv.Stop()
	rss0, _ := rssKiB(srv.cmd.Process.Pid)
	ref, err := referenceSHA256(ctx, dir)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "reference: sha256sum of 64 MiB takes %s on this machine now\n", ref.Round(time.Millisecond))
	fmt.Fprintf(out, "server pid %d on %s (%s, artifacts on %s), RSS %d KiB at start\n", srv.cmd.Process.Pid, srv.URL, store, dir, rss0)
	c := &client.Client{Base: srv.URL, Token: srv.Token}
	targetsKey, err := tuf.LoadKey(filepath.Join(keys, tuf.FileTargetsKey))
	if err != nil {
		return err
	}
	imageRoot, _ := os.ReadFile(filepath.Join(keys, tuf.FileImageRoot))
	directorRoot, _ := os.ReadFile(filepath.Join(keys, tuf.FileDirectorRoot))
	publish := func(version string, sv int64, size int) (*wire.Release, error) {
		f := filepath.Join(dir, "fw-"+version+".img")
		if err := os.WriteFile(f, sim.Image(version, size), 0o644); err != nil {
			return nil, err
		}
		return c.Publish(ctx, client.PublishOptions{File: f, TargetsKey: targetsKey, TrustedRoot: imageRoot, Expires: tuf.DefaultLifetimes().Targets,
			Custom: uptane.TargetCustom{Product: "thermostat", HardwareIDs: []string{"tstat-v2"}, Version: version, SecurityVersion: sv, Class: uptane.ClassSecurity}})
	}
	factory, err := publish("1.0.0", 1, 4<<10)
	if err != nil {
		return err
	}
	rel, err := publish("1.1.0", 2, cfg.Size)
	if err != nil {
		return err
	}
	tok, err := c.CreateEnrollToken(ctx, wire.EnrollTokenRequest{Name: "bench", Uses: 1_000_000})
	if err != nil {
		return err
	}
	t := time.Now()
	fleet, err := sim.NewFleet(ctx, sim.FleetOptions{Server: srv.URL, EnrollToken: tok.Token, ImageRoot: imageRoot, DirectorRoot: directorRoot,
		Devices: cfg.Devices, Product: "thermostat", Hardware: "tstat-v2", FactoryTarget: factory.Target, FactoryVersion: factory.Version,
		FactorySHA256: factory.SHA256, FactorySecVer: factory.SecurityVersion, Poll: time.Duration(cfg.PollSeconds) * time.Second, Dir: filepath.Join(dir, "fleet")})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "enrolled %d devices in %s (%.0f/s)\n", cfg.Devices, time.Since(t).Round(time.Millisecond), float64(cfg.Devices)/time.Since(t).Seconds())
	fleet.Start(ctx)
	defer fleet.Stop()
	// The rollout starts from a steady fleet: every device has polled and verified its director
	// view once, as a fleet in the field has.
	// cpu reports the CPU time server and simulator spent since the last call, per device.
	lastSrv, _ := procCPU(srv.cmd.Process.Pid)
	lastSim, _ := procCPU(0)
	lastBusy, lastSteal := hostCPU()
	cpu := func() string {
		srvCPU, _ := procCPU(srv.cmd.Process.Pid)
		simCPU, _ := procCPU(0)
		busy, steal := hostCPU()
		d := func(x time.Duration) string {
			return (x / time.Duration(cfg.Devices)).Round(10 * time.Microsecond).String()
		}
		msg := fmt.Sprintf("CPU per device: server %s, simulator %s", d(srvCPU-lastSrv), d(simCPU-lastSim))
		if busy+steal > lastBusy+lastSteal {
			msg += fmt.Sprintf("; stolen by the hypervisor: %.0f%% of the CPU time wanted", 100*float64(steal-lastSteal)/float64(busy-lastBusy+steal-lastSteal))
		}
		lastSrv, lastSim, lastBusy, lastSteal = srvCPU, simCPU, busy, steal
		return msg
	}
	t = time.Now()
	endProfile := ProfilePhase("verify", srv.cmd.Process.Pid)
	for fleet.Verified() < cfg.Devices {
		if time.Since(t) > 10*time.Minute {
			return fmt.Errorf("only %d of %d devices verified their metadata in 10 minutes", fleet.Verified(), cfg.Devices)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	endProfile()
	fmt.Fprintf(out, "every device verified its metadata once after %s (%s)\n", time.Since(t).Round(time.Millisecond), cpu())
	endProfile = ProfilePhase("poll", srv.cmd.Process.Pid)
	time.Sleep(time.Duration(cfg.PollSeconds) * time.Second) // and polled once more
	endProfile()
	rss1, _ := rssKiB(srv.cmd.Process.Pid)
	fmt.Fprintf(out, "server RSS with %d devices polling every %ds: %d KiB (%d KiB per 10,000 devices over the empty server); polling for %ds: %s\n",
		cfg.Devices, cfg.PollSeconds, rss1, (rss1-rss0)*10000/cfg.Devices, cfg.PollSeconds, cpu())

	before, err := requestsByRoute(ctx, srv.URL)
	if err != nil {
		return err
	}
	t = time.Now()
	endProfile = ProfilePhase("rollout", srv.cmd.Process.Pid)
	defer endProfile()
	camp, err := c.CreateRollout(ctx, wire.CampaignSpec{Release: "thermostat@1.1.0", Target: "product=thermostat", Waves: cfg.Waves, HealthGate: "0s", Start: true})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "campaign %s created and started in %s\n", camp.ID, time.Since(t).Round(time.Millisecond))
	progress := time.NewTicker(cfg.Progress)
	defer progress.Stop()
	for fleet.Running()[rel.SHA256] < cfg.Devices {
		if time.Since(t) > 10*time.Minute {
			return fmt.Errorf("rollout did not finish in 10 minutes: %v", fleet.Running())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-progress.C:
			asked := time.Now()
			if st, err := c.RolloutStatus(ctx, camp.ID); err == nil {
				members := map[string]int{}
				for _, w := range st.Waves {
					for k, n := range w {
						members[k] += n
					}
				}
				srvCPU, _ := procCPU(srv.cmd.Process.Pid)
				simCPU, _ := procCPU(0)
				fmt.Fprintf(out, "  after %s: campaign members %v; %d devices run the release; CPU since the start: server %s, simulator %s\n",
					asked.Sub(t).Round(time.Second), members, fleet.Running()[rel.SHA256],
					(srvCPU - lastSrv).Round(100*time.Millisecond), (simCPU - lastSim).Round(100*time.Millisecond))
			}
		case <-time.After(100 * time.Millisecond):
		}
	}
	took := time.Since(t)
	endProfile()
	_, hwm := rssKiB(srv.cmd.Process.Pid)
	fmt.Fprintf(out, "rollout of %d bytes in waves %s reached %d devices in %s (campaign %s); server peak RSS %d KiB; %s\n",
		cfg.Size, cfg.Waves, cfg.Devices, took.Round(time.Millisecond), camp.ID, hwm, cpu())
	if after, err := requestsByRoute(ctx, srv.URL); err == nil {
		var parts []string
		for _, route := range slices.Sorted(maps.Keys(after)) {
			if n := after[route] - before[route]; n > 0 {
				parts = append(parts, fmt.Sprintf("%s %.2f", route, n/float64(cfg.Devices)))
			}
		}
		fmt.Fprintf(out, "requests per device during the rollout: %s\n", strings.Join(parts, ", "))
	}

	if cfg.Hammer > 0 {
		rps, p99, err := hammerCheckins(ctx, srv.URL, fleet, cfg.Conns, cfg.Hammer)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "check-ins: %.0f/s with %d connections for %s, p99 %s (plus the fleet's own polling)\n", rps, cfg.Conns, cfg.Hammer, p99.Round(10*time.Microsecond))
	}
	return nil
}

// requestsByRoute reads the server's request counters (all status codes) from /metrics.
func requestsByRoute(ctx context.Context, base string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "upkeep_http_requests_total{")
		if !ok {
			continue
		}
		_, rest, _ := strings.Cut(line, `route="`)
		route, rest, _ := strings.Cut(rest, `"`)
		_, val, _ := strings.Cut(rest, "} ")
		if n, err := strconv.ParseFloat(val, 64); err == nil {
			out[route] += n
		}
	}
	return out, sc.Err()
}

// hammerCheckins sends check-ins as fast as conns connections allow, each as a different device
// that holds the newest director version (the server answers 304 from memory): the device's
// own check-in, with its token, through the device client.
func hammerCheckins(ctx context.Context, url string, fleet *sim.Fleet, conns int, d time.Duration) (float64, time.Duration, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}
	c := &devclient.Client{HTTP: &http.Client{Transport: tr, Timeout: 10 * time.Second}, Base: url}
	var n atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for i := w; time.Now().Before(deadline) && ctx.Err() == nil; i += conns {
				st := fleet.Members[i%len(fleet.Members)].Agent.State()
				t := time.Now()
				if _, err := c.Checkin(ctx, st.Token, st.CheckinBody()); err != nil {
					err = fmt.Errorf("check-in: %w", err)
					mu.Lock()
					if firstErr == nil && ctx.Err() == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				mine = append(mine, time.Since(t))
				n.Add(1)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return 0, 0, firstErr
	}
	if len(lat) == 0 {
		return 0, 0, errors.New("no check-in completed")
	}
	slices.Sort(lat)
	return float64(n.Load()) / d.Seconds(), lat[len(lat)*99/100], nil
}

// Process is the server's operating-system process.
func (p *ServerProcess) Process() *os.Process { return p.cmd.Process }
