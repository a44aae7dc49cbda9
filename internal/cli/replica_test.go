package cli

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"upkeep.dev/upkeep/internal/bench"
	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/sim"
	"upkeep.dev/upkeep/internal/store/storetest"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/wire"
)

// balancer is a round-robin reverse proxy in front of replicas, as a load balancer would be:
// a replica that refuses connections is skipped.
type balancer struct {
	mu       sync.Mutex
	backends []*url.URL
	down     map[int]bool
	next     atomic.Int64
}

func (b *balancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := len(b.backends)
	for range n {
		i := int(b.next.Add(1)) % n
		b.mu.Lock()
		down := b.down[i]
		b.mu.Unlock()
		if down {
			continue
		}
		var failed bool
		p := httputil.NewSingleHostReverseProxy(b.backends[i])
		p.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
			var op *net.OpError
			if errors.As(err, &op) && op.Op == "dial" {
				failed = true // nothing was sent: try the next replica
				return
			}
			w.WriteHeader(http.StatusBadGateway)
		}
		rec := &http.Request{}
		*rec = *r
		p.ServeHTTP(w, rec)
		if !failed {
			return
		}
		b.mu.Lock()
		b.down[i] = true
		b.mu.Unlock()
	}
	http.Error(w, "no replica answers", http.StatusBadGateway)
}

// TestReplicasSurviveKill runs three `upkeep serve` replicas on one PostgreSQL behind a
// round-robin balancer, rolls a release out to 2,000 simulated devices in waves, and kills the
// replica that drives the rollout with SIGKILL in the middle. The rollout must complete, every
// device must have reported its commit (no report lost), and no device may have been handed two
// different images.
func TestReplicasSurviveKill(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("runs three server processes and 2,000 simulated devices (without the race detector, which would slow them past any timeout)")
	}
	dsn := storetest.PostgresDSN(t)
	ctx := context.Background()
	dir := t.TempDir()
	bin := filepath.Join(dir, "upkeep")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/upkeep").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	keys := filepath.Join(dir, "keys")
	if _, err := tuf.InitKeySet(keys, 1, 1, tuf.DefaultLifetimes(), time.Now()); err != nil {
		t.Fatal(err)
	}
	var replicas []*bench.ServerProcess
	lb := &balancer{down: map[int]bool{}}
	for i := range 3 {
		p, err := bench.StartServerProcess(ctx, bin, filepath.Join(dir, "shared"), keys, filepath.Join(dir, fmt.Sprintf("replica-%d.log", i)), "--db", dsn, "--poll-seconds", "3")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Stop)
		replicas = append(replicas, p)
		u, _ := url.Parse(p.URL)
		lb.backends = append(lb.backends, u)
	}
	token := replicas[0].Token // the first start on the database made it
	front := &http.Server{Handler: lb}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go front.Serve(ln) //nolint:errcheck // closed by the test
	t.Cleanup(func() { front.Close() })
	base := "http://" + ln.Addr().String()
	cli := &client.Client{Base: base, Token: token}
	e := &env{t: t, dir: dir, keys: keys, cli: cli, imageRoot: readFile(t, filepath.Join(keys, tuf.FileImageRoot)), directorRoot: readFile(t, filepath.Join(keys, tuf.FileDirectorRoot))}
	if e.targetsKey, err = tuf.LoadKey(filepath.Join(keys, tuf.FileTargetsKey)); err != nil {
		t.Fatal(err)
	}
	factory := e.publish("1.0.0", 1, image("1.0.0", 4<<10))
	rel := e.publish("1.1.0", 2, image("1.1.0", 32<<10))
	tok, err := cli.CreateEnrollToken(ctx, wire.EnrollTokenRequest{Name: "replicas", Uses: 1_000_000})
	if err != nil {
		t.Fatal(err)
	}
	simDir, err := os.MkdirTemp(sim.TempDir(), "upkeep-replicas-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(simDir) })
	const devices = 2000
	logPath := filepath.Join(dir, "fleet.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	fleetLog := slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelWarn}))
	fleet, err := sim.NewFleet(ctx, sim.FleetOptions{Server: base, EnrollToken: tok.Token, ImageRoot: e.imageRoot, DirectorRoot: e.directorRoot,
		Devices: devices, Product: testProduct, Hardware: testHardware, FactoryTarget: factory.Target, FactoryVersion: factory.Version,
		FactorySHA256: factory.SHA256, FactorySecVer: factory.SecurityVersion, Poll: time.Second, Dir: simDir, Logger: fleetLog})
	if err != nil {
		t.Fatal(err)
	}
	fleet.Start(ctx)
	t.Cleanup(fleet.Stop)
	camp, err := cli.CreateRollout(ctx, wire.CampaignSpec{Release: "thermostat@1.1.0", Target: "product=thermostat", Waves: "5%,30%,100%", HealthGate: "0s", Start: true})
	if err != nil {
		t.Fatal(err)
	}

	// Once the first wave is out, kill the replica that holds the engine's lease.
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	e.waitCampaign(camp.ID, 60*time.Second, "second wave", func(s *wire.CampaignStatus) bool { return s.Campaign.Wave >= 2 })
	var holder string
	if err := db.QueryRowContext(ctx, `SELECT holder FROM leases WHERE name = 'rollout-engine'`).Scan(&holder); err != nil {
		t.Fatal(err)
	}
	killed := -1
	for i, r := range replicas {
		if pidOf(holder) == r.Process().Pid {
			killed = i
		}
	}
	if killed < 0 {
		t.Fatalf("lease holder %q is none of the replicas", holder)
	}
	if err := replicas[killed].Process().Kill(); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed replica %d (pid %d), which held the rollout engine's lease", killed, replicas[killed].Process().Pid)

	e.waitCampaign(camp.ID, 120*time.Second, "completion after the kill", func(s *wire.CampaignStatus) bool { return s.Campaign.State == "completed" })
	for deadline := time.Now().Add(90 * time.Second); fleet.Running()[rel.SHA256] != devices; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			for _, d := range fleet.Members {
				if d.Installer.Current() != rel.SHA256 {
					st := d.Agent.State()
					dev, err := cli.Devices(ctx, "")
					var seen wire.Device
					for _, x := range dev {
						if x.ID == d.ID {
							seen = x
						}
					}
					log, _ := exec.Command("grep", "-m", "20", fmt.Sprintf("sim=%d ", d.Index), logPath).Output()
					t.Logf("device %d's warnings:\n%s", d.Index, log)
					t.Errorf("device %s: phase %s, director version %d, last error %q; server: assigned %q, state %q, seen %s (%v)",
						d.ID, st.Phase, st.DirectorVersion, st.LastError, seen.Assigned, seen.State, seen.LastSeen, err)
				}
			}
			t.Fatalf("devices run %v, want all %d on 1.1.0", fleet.Running(), devices)
		}
	}
	for _, d := range fleet.Members {
		if got := d.Installer.Installs(); len(got) != 1 || got[0] != rel.Target {
			t.Errorf("device %s installed %v, want exactly %s once", d.ID, got, rel.Target)
		}
	}
	// Every device's commit reached the database: no report was lost with the killed replica.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		var n int
		if err := db.QueryRowContext(ctx, `SELECT count(DISTINCT device_id) FROM device_events WHERE target = $1 AND step = 'commit' AND status = 'ok'`, rel.Target).Scan(&n); err != nil {
			t.Fatal(err)
		}
		var installed int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM devices WHERE installed_sha256 = $1`, rel.SHA256).Scan(&installed); err != nil {
			t.Fatal(err)
		}
		if n == devices && installed == devices {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d devices reported their commit and %d are recorded on 1.1.0, want %d", n, installed, devices)
		}
	}
}

func readFile(t *testing.T, path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pidOf reads the process id out of a lease holder name (host/pid/random).
func pidOf(holder string) int {
	parts := strings.Split(holder, "/")
	if len(parts) != 3 {
		return 0
	}
	pid, _ := strconv.Atoi(parts[1])
	return pid
}
