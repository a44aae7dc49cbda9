package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"upkeep.dev/upkeep/internal/bench"
	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/sim"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/wire"
)

// SimulateConfig configures `upkeep simulate`.
type SimulateConfig struct {
	Server, Token, Keys, Dir   string
	Devices                    int
	FailRate, RollbackRate     float64
	Latency, Poll, Duration    time.Duration
	Product, Hardware, Factory string
	Regions                    []string
	Seed                       uint64
	// Cleanup removes every simulated device when the simulation ends.
	Cleanup bool
}

// simulationTokenTTL bounds the simulator's enrolment token, should enrolment stop before it
// used every one of its uses.
const simulationTokenTTL = time.Hour

func simulateCmd(g *globals) *cobra.Command {
	cfg := SimulateConfig{Devices: 100, Poll: 30 * time.Second, Product: "thermostat", Hardware: "tstat-v2", Keys: "keys", Regions: []string{"eu-west", "eu-north", "us-east", "apac"}}
	cmd := &cobra.Command{
		Use:   "simulate --devices N [--fail-rate 0.02] [--rollback-rate 0.01] [--latency 50ms]",
		Short: "Run N lightweight simulated devices against a server (real protocol, real verification)",
		Long: `Enrols N simulated devices and runs the real agent for each: check-ins, full Uptane
verification of director and image metadata, hash-checked downloads. Images are hashed and
dropped, not stored, so that thousands of devices fit on one machine. --fail-rate devices fail
their health check after an install (the agent rolls back); --rollback-rate devices do not come
up from the trial boot (the boot loader falls back). The trusted roots come from --keys (root.json
and director-root.json, as provisioned at manufacturing).

It runs until interrupted (Ctrl-C), or for --duration, printing what the fleet runs every few
seconds. The devices are enrolled with a simulation token (admitting exactly --devices devices,
for an hour at most) and marked simulated: no public figure, declaration or conformance report
counts them. --cleanup removes them when the simulation ends; otherwise
"upkeep devices remove --simulated" does.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Server, cfg.Token = g.server, g.token
			defer debug.SetGCPercent(debug.SetGCPercent(bench.SimGCPercent))
			return RunSimulate(cmd.Context(), cfg, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Devices, "devices", cfg.Devices, "number of simulated devices")
	f.Float64Var(&cfg.FailRate, "fail-rate", 0, "share of installs whose health check fails")
	f.Float64Var(&cfg.RollbackRate, "rollback-rate", 0, "share of installs whose trial boot does not come up")
	f.DurationVar(&cfg.Latency, "latency", 0, "added to every request")
	f.DurationVar(&cfg.Poll, "poll", cfg.Poll, "agents' poll interval until the server suggests one")
	f.DurationVar(&cfg.Duration, "duration", 0, "stop after this long (default: until interrupted)")
	f.StringVar(&cfg.Keys, "keys", cfg.Keys, "folder with root.json and director-root.json")
	f.StringVar(&cfg.Product, "product", cfg.Product, "product of the devices")
	f.StringVar(&cfg.Hardware, "hardware", cfg.Hardware, "hardware id of the devices")
	f.StringVar(&cfg.Factory, "factory", "", "version the devices run at first (default: the product's oldest release)")
	f.StringSliceVar(&cfg.Regions, "regions", cfg.Regions, "region attributes dealt out to the devices (for group filters)")
	f.StringVar(&cfg.Dir, "dir", "", "state folders (default: a temporary folder, in /dev/shm when there is one)")
	f.Uint64Var(&cfg.Seed, "seed", 1, "seed for failures")
	f.BoolVar(&cfg.Cleanup, "cleanup", false, "remove the simulated devices when the simulation ends (else: upkeep devices remove --simulated)")
	return cmd
}

// RunSimulate enrols and runs a simulated fleet, printing what it runs every few seconds.
func RunSimulate(ctx context.Context, cfg SimulateConfig, out io.Writer) error {
	if cfg.Token == "" {
		return fmt.Errorf("an operator token is needed (--token or UPKEEP_TOKEN): the simulator makes its own enrolment token")
	}
	c := &client.Client{Base: cfg.Server, Token: cfg.Token}
	imageRoot, err := os.ReadFile(filepath.Join(cfg.Keys, tuf.FileImageRoot))
	if err != nil {
		return fmt.Errorf("image root: %w", err)
	}
	directorRoot, err := os.ReadFile(filepath.Join(cfg.Keys, tuf.FileDirectorRoot))
	if err != nil {
		return fmt.Errorf("director root: %w", err)
	}
	rels, err := c.Releases(ctx, cfg.Product)
	if err != nil {
		return err
	}
	slices.SortFunc(rels, func(a, b wire.Release) int { return a.PublishedAt.Compare(b.PublishedAt) })
	var factory *wire.Release
	for i := range rels {
		if cfg.Factory == "" || rels[i].Version == cfg.Factory {
			factory = &rels[i]
			break
		}
	}
	if factory == nil {
		return fmt.Errorf("no release %q of %s to run at first: publish one", cfg.Factory, cfg.Product)
	}
	// A simulation token marks its devices as simulated (left out of every public figure) and
	// admits exactly this many devices of this product, within the hour: once the fleet has
	// enrolled it admits nothing more.
	tok, err := c.CreateEnrollToken(ctx, wire.EnrollTokenRequest{Name: "simulator", Simulation: true, Uses: cfg.Devices,
		TTL: simulationTokenTTL, Product: cfg.Product})
	if err != nil {
		return err
	}
	if cfg.Cleanup {
		defer func() {
			fin, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if n, err := c.RemoveSimulatedDevices(fin); err != nil {
				fmt.Fprintln(out, "simulated devices not removed:", err)
			} else {
				fmt.Fprintf(out, "%d simulated devices removed\n", n)
			}
		}()
	}
	dir := cfg.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp(sim.TempDir(), "upkeep-sim-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	start := time.Now()
	fleet, err := sim.NewFleet(ctx, sim.FleetOptions{Server: cfg.Server, EnrollToken: tok.Token, ImageRoot: imageRoot, DirectorRoot: directorRoot,
		Devices: cfg.Devices, Product: cfg.Product, Hardware: cfg.Hardware, FactoryTarget: factory.Target, FactoryVersion: factory.Version,
		FactorySHA256: factory.SHA256, FactorySecVer: factory.SecurityVersion, FailRate: cfg.FailRate, RollbackRate: cfg.RollbackRate,
		Latency: cfg.Latency, Poll: cfg.Poll, Dir: dir, Seed: cfg.Seed, Attributes: func(i int) map[string]string {
			if len(cfg.Regions) == 0 {
				return nil
			}
			return map[string]string{"region": cfg.Regions[i%len(cfg.Regions)]}
		}})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%d simulated devices enrolled in %s, running %s@%s\n", cfg.Devices, time.Since(start).Round(time.Millisecond), cfg.Product, factory.Version)
	if cfg.Duration > 0 {
		fmt.Fprintf(out, "simulating for %s (Ctrl-C stops sooner)\n", cfg.Duration)
	} else {
		fmt.Fprintln(out, "simulating until Ctrl-C (or give --duration)")
	}
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	fleet.Start(ctx)
	defer fleet.Stop()
	names := map[string]string{}
	last := ""
	for {
		select {
		case <-ctx.Done():
			fin, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			fmt.Fprintln(out, "simulation stopped:", describeRunning(fin, fleet.Running(), names, c))
			return nil
		case <-time.After(5 * time.Second):
		}
		if line := describeRunning(ctx, fleet.Running(), names, c); line != last {
			fmt.Fprintf(out, "%s  %s\n", time.Now().Format(time.TimeOnly), line)
			last = line
		}
	}
}

// describeRunning names the versions the fleet runs, with counts.
func describeRunning(ctx context.Context, running map[string]int, names map[string]string, c *client.Client) string {
	var parts []string
	for sha, n := range running {
		name, ok := names[sha]
		if !ok {
			if rels, err := c.Releases(ctx, ""); err == nil {
				for _, r := range rels {
					names[r.SHA256] = r.Version
				}
			}
			if name, ok = names[sha]; !ok {
				name = sha[:min(len(sha), 12)]
			}
		}
		parts = append(parts, fmt.Sprintf("%s: %d", name, n))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}
