package cli

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"upkeep.dev/upkeep/internal/bench"
)

func benchCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Measure the server: fleet rollouts and check-ins"}
	cfg := bench.RolloutConfig{Devices: 10000, Size: 1 << 20, Waves: "1%,10%,100%", PollSeconds: 5, Hammer: 10 * time.Second, Conns: 64, Progress: 10 * time.Second}
	rollout := &cobra.Command{
		Use:   "rollout",
		Short: "Start a server process, enrol N simulated devices, roll a release out to all of them and time it",
		Long: `Starts ` + "`upkeep serve`" + ` as a separate process (so that its memory is measured alone) on
the embedded defaults in a temporary folder, publishes a factory image and a release of --size
bytes, enrols --devices simulated devices (real protocol and verification, in this process),
rolls the release out in --waves and reports: the time until every device runs it, the
server's resident memory per 10,000 devices, and check-ins per second with --conns
connections polling as fast as they can for --hammer.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return bench.Rollout(cmd.Context(), cfg, cmd.OutOrStdout())
		},
	}
	f := rollout.Flags()
	f.IntVar(&cfg.Devices, "devices", cfg.Devices, "simulated devices")
	f.IntVar(&cfg.Size, "size", cfg.Size, "release size in bytes")
	f.StringVar(&cfg.Waves, "waves", cfg.Waves, "campaign waves")
	f.IntVar(&cfg.PollSeconds, "poll-seconds", cfg.PollSeconds, "poll interval the server suggests")
	f.DurationVar(&cfg.Hammer, "hammer", cfg.Hammer, "check-in saturation phase (0: skip)")
	f.DurationVar(&cfg.Progress, "progress", cfg.Progress, "how often the rollout's progress is printed")
	f.IntVar(&cfg.Conns, "conns", cfg.Conns, "connections in the check-in phase")
	f.StringVar(&cfg.Database, "db", "", "postgres:// URL (default: the embedded SQLite)")
	cmd.AddCommand(append([]*cobra.Command{rollout, benchDeltaCmd(), benchDeltaStepCmd(), benchHTTPFloorCmd()}, benchHTTPCmds()...)...)
	return cmd
}

// benchHTTPCmds returns the bench subcommands defined here.
func benchHTTPCmds() []*cobra.Command {
	// Each command has a configuration of its own: flag defaults differ between them.
	common := func(c *cobra.Command, cfg *bench.HTTPConfig) {
		c.Flags().StringVar(&cfg.Postgres, "postgres", cfg.Postgres, "existing PostgreSQL database to connect to; the bench creates and drops its own next to it (env UPKEEP_BENCH_POSTGRES; empty: skip PostgreSQL)")
		c.Flags().DurationVar(&cfg.Duration, "duration", cfg.Duration, "length of each measurement")
	}
	wrkFlags := func(c *cobra.Command, cfg *bench.HTTPConfig) {
		common(c, cfg)
		c.Flags().IntSliceVar(&cfg.Conns, "conns", cfg.Conns, "wrk connections (repeatable)")
		c.Flags().IntVar(&cfg.Threads, "threads", cfg.Threads, "wrk threads")
		c.Flags().IntVar(&cfg.Repeat, "repeat", cfg.Repeat, "wrk runs per figure (the median is reported)")
	}
	ccfg := bench.DefaultHTTPConfig()
	checkin := &cobra.Command{
		Use:   "checkin",
		Short: "Check-ins per second with wrk, next to nginx serving a 300-byte file under the same load",
		Long: `Starts ` + "`upkeep serve`" + ` on SQLite and (with --postgres) on a fresh PostgreSQL database,
enrols --devices devices through the real protocol on each, and drives POST /device/v1/checkin
with wrk (each request as the next device: its token, the agent's JSON body and If-None-Match,
answered 304 from memory). nginx, started from a temporary configuration, serves a 300-byte file
under the same wrk load as the reference. Needs wrk and nginx in PATH.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return bench.Checkin(cmd.Context(), ccfg, cmd.OutOrStdout())
		},
	}
	wrkFlags(checkin, &ccfg)
	checkin.Flags().IntVar(&ccfg.Devices, "devices", ccfg.Devices, "enrolled devices the check-ins rotate through")
	checkin.Flags().BoolVar(&ccfg.TLS, "tls", false, "serve HTTPS (upkeep and nginx, one self-signed certificate for 127.0.0.1 made for the run), and measure full and resumed handshake rates")

	dcfg := bench.DefaultHTTPConfig()
	dcfg.Conns = []int{4}
	download := &cobra.Command{
		Use:   "download",
		Short: "Artifact download throughput through the server, next to nginx serving the same file",
		Long: `Starts ` + "`upkeep serve`" + ` (SQLite, artifacts in a folder), publishes a release of --size bytes,
enrols one device and fetches GET /device/v1/targets/NAME with its token through wrk; nginx
serves the same bytes from a file under the same load. Needs wrk and nginx in PATH.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return bench.Download(cmd.Context(), dcfg, cmd.OutOrStdout())
		},
	}
	wrkFlags(download, &dcfg)
	download.Flags().IntVar(&dcfg.Size, "size", dcfg.Size, "artifact size in bytes")

	fcfg := bench.DefaultHTTPConfig()
	fcfg.Devices, fcfg.Duration = 100000, 3*time.Minute
	fleet := &cobra.Command{
		Use:   "fleet",
		Short: "A simulated fleet polling at a realistic rate: replicas on one PostgreSQL database, or one node on SQLite",
		Long: `Starts --replicas ` + "`upkeep serve`" + ` processes on a fresh PostgreSQL database (or, with --sqlite,
one on its embedded SQLite database), enrols --devices devices through the real protocol
(spread over the replicas), then polls check-ins: every device every --interval as the server's
hints say, each check-in to a random replica. With --tls the servers serve HTTPS and every
check-in opens a connection of its own that resumes a TLS session, as a device polling every
30 minutes does. After --warmup it measures for --duration: check-ins per second, their p50 and
p99 latency, 429s and other errors, each replica's CPU per check-in and memory, the load
generator's CPU, and what the check-ins wrote to the database. With --outage D every replica
then stops for D and starts again on the same address and data; devices back off as the agent
does (5 s doubling to 8 minutes, never sooner than a Retry-After), and the bench reports how
long until every device that noticed had checked in again (it fails past 10 minutes). Devices
are lightweight: a key, a token (renewed as the agent does) and the director version they trust.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if fcfg.SQLite && !cmd.Flags().Changed("replicas") {
				fcfg.Replicas = 1 // one node: SQLite is not shared between processes
			}
			return bench.Fleet(cmd.Context(), fcfg, cmd.OutOrStdout())
		},
	}
	common(fleet, &fcfg)
	fleet.Flags().IntVar(&fcfg.Devices, "devices", fcfg.Devices, "simulated devices")
	fleet.Flags().IntVar(&fcfg.Replicas, "replicas", fcfg.Replicas, "server processes")
	fleet.Flags().DurationVar(&fcfg.Interval, "interval", fcfg.Interval, "each device's poll interval")
	fleet.Flags().DurationVar(&fcfg.Warmup, "warmup", fcfg.Warmup, "polling before the measured window")
	fleet.Flags().IntVar(&fcfg.Enrolers, "enrolers", fcfg.Enrolers, "enrolments in flight")
	fleet.Flags().BoolVar(&fcfg.TLS, "tls", false, "serve HTTPS with a self-signed certificate; each check-in a new connection resuming a TLS session")
	fleet.Flags().BoolVar(&fcfg.SQLite, "sqlite", false, "one node on SQLite instead of replicas on PostgreSQL")
	fleet.Flags().DurationVar(&fcfg.Outage, "outage", 0, "after the window, stop every replica this long, start them again and follow the devices back (0: no outage)")
	return []*cobra.Command{checkin, download, fleet}
}

func benchDeltaCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "delta OLD NEW [OLD NEW ...]",
		Short: "Delta updates: patch size, generation and apply time and peak RSS, next to bsdiff, xdelta3, zstd --patch-from and casync",
		Long: `For each image pair, makes and applies the per-pair delta (upkdlt2) and the chunked form
(caibx index; the device reuses the chunks of its active image and fetches the rest), and the same
with Debian's bsdiff/bspatch, xdelta3 -9, zstd -19 --long=31 --patch-from and casync when they are
installed, each step in a process of its own, so that the peak RSS (getrusage) is that step's.
Every applied image is compared with NEW. scripts/delta-images.sh builds the pairs from Debian
packages.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 || len(args)%2 != 0 {
				return fmt.Errorf("want pairs of image files, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			if dir == "" {
				if dir, err = os.MkdirTemp("", "upkeep-delta-bench"); err != nil {
					return err
				}
				defer os.RemoveAll(dir)
			}
			cfg := bench.DeltaConfig{Exe: exe, Dir: dir, Out: cmd.OutOrStdout()}
			for i := 0; i < len(args); i += 2 {
				cfg.Pairs = append(cfg.Pairs, [2]string{args[i], args[i+1]})
			}
			_, err = bench.Delta(cmd.Context(), cfg)
			return err
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "scratch folder (default: a temporary one, removed after)")
	return cmd
}

func benchDeltaStepCmd() *cobra.Command {
	return &cobra.Command{Use: "delta-step", Hidden: true, DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return bench.DeltaStep(cmd.Context(), args, cmd.OutOrStdout())
		}}
}

// benchHTTPFloorCmd is the net/http floor `bench checkin` measures next to nginx and the server
// (a child process of the bench, hidden).
func benchHTTPFloorCmd() *cobra.Command {
	var addr, cert, key string
	cmd := &cobra.Command{Use: "http-floor", Hidden: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return bench.ServeHTTPFloor(ctx, addr, cert, key, cmd.OutOrStdout())
		}}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:0", "listen address")
	cmd.Flags().StringVar(&cert, "tls-cert", "", "PEM certificate (HTTPS)")
	cmd.Flags().StringVar(&key, "tls-key", "", "PEM key")
	return cmd
}
