package cli

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/agent"
	"upkeep.dev/upkeep/internal/push/brokertest"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/sim"
	"upkeep.dev/upkeep/wire"
)

// BenchmarkDeployToDownload: UPKEEP_BENCH_DEVICES (default 1,000) simulated devices running the
// real agent, each with its push connection to a real Mosquitto and a poll interval of an hour;
// `deploy --all`, then the time until each device starts its download (its first image bytes
// arrive). Target: p95 <= 5 s. UPKEEP_BENCH_DATA_DIR puts the server's data folder (its SQLite
// database) under that folder. Run once:
//
//	go test -run '^$' -bench BenchmarkDeployToDownload -benchtime 1x -timeout 30m ./internal/cli/
func BenchmarkDeployToDownload(b *testing.B) {
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("UPKEEP_BENCH_DEVICES")); err == nil && v > 0 {
		n = v
	}
	br := brokertest.Start(b)
	e := newEnvWith(b, func(c *server.Config) {
		c.PollSeconds = 3600
		c.Push.URL, c.Push.Username, c.Push.Password = br.URL, brokertest.AdminUser, brokertest.AdminPassword
		c.Push.Timeout = 10 * time.Minute                               // a fleet's first credential requests queue in the broker
		if parent := os.Getenv("UPKEEP_BENCH_DATA_DIR"); parent != "" { // e.g. /dev/shm: SQLite's fsyncs cost nothing
			d, err := os.MkdirTemp(parent, "upkeep-bench-server-")
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { os.RemoveAll(d) })
			c.DataDir = d
		}
	})
	ctx := context.Background()
	v100 := image("1.0.0", 16<<10)
	r100 := e.publish("1.0.0", 1, v100)
	dir, err := os.MkdirTemp("/dev/shm", "upkeep-bench-")
	if err != nil {
		dir = b.TempDir()
	} else {
		defer os.RemoveAll(dir)
	}
	f, err := sim.NewFleet(ctx, sim.FleetOptions{Server: e.srv.URL, EnrollToken: e.enrollToken, ImageRoot: e.imageRoot, DirectorRoot: e.directorRoot,
		Devices: n, Product: testProduct, Hardware: testHardware, FactoryTarget: r100.Target, FactoryVersion: r100.Version, FactorySHA256: r100.SHA256,
		FactorySecVer: r100.SecurityVersion, Poll: time.Hour, Spread: 5 * time.Second, Dir: filepath.Join(dir, "fleet")})
	if err != nil {
		b.Fatal(err)
	}
	for _, d := range f.Members {
		d.Agent.EnablePush(agent.PushOptions{})
	}
	f.Start(ctx)
	defer func() {
		f.Stop()
		for _, d := range f.Members {
			d.Agent.ClosePush()
		}
	}()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		c := 0
		for _, d := range f.Members {
			if d.Agent.PushState() == agent.PushConnected {
				c++
			}
		}
		if c == n {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d devices connected to the broker", c, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	r101 := e.publish("1.0.1", 2, image("1.0.1", 16<<10))
	b.ResetTimer()
	start := time.Now()
	if _, err := e.cli.Deploy(ctx, wire.DeployRequest{Release: r101.Product + "@" + r101.Version, All: true}); err != nil {
		b.Fatal(err)
	}
	deployed := time.Since(start)
	lat := make([]time.Duration, n)
	left := n
	for left > 0 {
		if time.Since(start) > 5*time.Minute {
			b.Fatalf("%d of %d devices started their download within 5 minutes", n-left, n)
		}
		for i, d := range f.Members {
			if lat[i] == 0 && d.Installer.Received.Load() > 0 {
				lat[i] = time.Since(start)
				left--
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	// When each device's nudge-driven check-in began: the push path alone, without the Uptane
	// verification that the simulated devices do on the server's two cores.
	nudged := make([]time.Duration, 0, n)
	for _, d := range f.Members {
		if at := d.Agent.PushLastNudge(); !at.IsZero() {
			nudged = append(nudged, at.Sub(start))
		}
	}
	slices.Sort(nudged)
	if len(nudged) > 0 {
		b.ReportMetric(nudged[len(nudged)*95/100].Seconds(), "s-nudge-p95")
		b.ReportMetric(float64(len(nudged)), "nudged")
	}
	slices.Sort(lat)
	b.ReportMetric(lat[n/2].Seconds(), "s-p50")
	b.ReportMetric(lat[n*95/100].Seconds(), "s-p95")
	b.ReportMetric(lat[n-1].Seconds(), "s-max")
	b.ReportMetric(float64(n), "devices")
	b.ReportMetric(deployed.Seconds(), "s-deploy-call")
}
