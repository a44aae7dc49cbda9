package demo

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/show"
	"upkeep.dev/upkeep/internal/sim"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/wire"
)

// Config configures `upkeep demo`.
type Config struct {
	Devices   int
	Once      bool
	Addr      string
	ImageSize int
	Timeout   time.Duration
	Out       io.Writer
	// Played, if set, is called once the demo has played, while its server still runs, with the
	// console's URL and login (tests look at the console then); its error ends the demo.
	Played func(ctx context.Context, consoleURL, user, password string) error
}

// consoleUser is the demo's console login, an admin.
const consoleUser = "demo"

// Run makes keys, starts the server and cfg.Devices simulated devices running the real agent
// code, publishes 1.0.0 and the security fix 1.0.1, deploys it and reports progress.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Devices < 1 {
		return errors.New("demo: --devices must be at least 1")
	}
	out := cfg.Out
	dir, err := os.MkdirTemp("", "upkeep-demo-")
	if err != nil {
		return err
	}
	// The folder holds the demo's offline keys: it goes however the demo ends.
	defer os.RemoveAll(dir)
	keys := filepath.Join(dir, "keys")
	if _, err := tuf.InitKeySet(keys, 1, 1, tuf.DefaultLifetimes(), time.Now()); err != nil {
		return err
	}
	fmt.Fprintf(out, "keys created in %s (root-1.key and targets.key are the offline keys)\n", keys)
	scfg := server.DefaultConfig()
	scfg.Addr, scfg.DataDir, scfg.KeysDir, scfg.PollSeconds = cfg.Addr, filepath.Join(dir, "data"), keys, 1
	scfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := server.Open(ctx, scfg)
	if err != nil && strings.Contains(err.Error(), "address already in use") {
		fmt.Fprintf(out, "%s is taken; using a free port\n", scfg.Addr)
		scfg.Addr = "127.0.0.1:0"
		srv, err = server.Open(ctx, scfg)
	}
	if err != nil {
		return err
	}
	defer srv.Close()
	fmt.Fprintf(out, "server listening on %s (SQLite and artifacts in %s)\n", srv.URL, scfg.DataDir)
	c := &client.Client{Base: srv.URL, Token: srv.AdminToken}
	password := rand.Text() // 26 base32 characters
	if _, err := c.CreateUser(ctx, wire.UserRequest{Name: consoleUser, Role: "admin", Password: password}); err != nil {
		return fmt.Errorf("console user: %w", err)
	}
	fmt.Fprintf(out, "console: %s/ (user %s, password %s)\n", srv.URL, consoleUser, password)
	if _, err := c.SetPolicy(ctx, "thermostat", demoPolicy()); err != nil {
		return fmt.Errorf("support policy: %w", err)
	}
	fmt.Fprintf(out, "thermostat's support policy is public: %s/p/thermostat (label, signed declaration, conformance report)\n", srv.URL)
	targetsKey, err := tuf.LoadKey(filepath.Join(keys, tuf.FileTargetsKey))
	if err != nil {
		return err
	}
	imageRoot, _ := os.ReadFile(filepath.Join(keys, tuf.FileImageRoot))
	directorRoot, _ := os.ReadFile(filepath.Join(keys, tuf.FileDirectorRoot))
	publish := func(version string, secVer int64, content []byte) (*wire.Release, error) {
		f := filepath.Join(dir, "thermostat-"+version+".img")
		if err := os.WriteFile(f, content, 0o644); err != nil {
			return nil, err
		}
		rel, err := c.Publish(ctx, client.PublishOptions{File: f, TargetsKey: targetsKey, TrustedRoot: imageRoot, Expires: tuf.DefaultLifetimes().Targets,
			Custom: uptane.TargetCustom{Product: "thermostat", HardwareIDs: []string{"tstat-v2"}, Version: version, SecurityVersion: secVer, Class: uptane.ClassSecurity}})
		if err != nil {
			return nil, fmt.Errorf("publish %s: %w", version, err)
		}
		fmt.Fprintf(out, "published %s@%s, signed offline (security version %d, %d bytes)\n", rel.Product, rel.Version, rel.SecurityVersion, rel.Length)
		return rel, nil
	}
	v100 := sim.Image("1.0.0", cfg.ImageSize)
	r100, err := publish("1.0.0", 1, v100)
	if err != nil {
		return err
	}
	tok, err := c.CreateEnrollToken(ctx, wire.EnrollTokenRequest{Name: "demo-factory"})
	if err != nil {
		return err
	}
	httpc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: time.Minute}
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	devs := make([]*sim.Device, cfg.Devices)
	var wg sync.WaitGroup
	errs := make(chan error, cfg.Devices)
	for i := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := sim.NewDevice(ctx, filepath.Join(dir, "devices", fmt.Sprintf("dev-%03d", i)), sim.Options{
				Server: srv.URL, EnrollToken: tok.Token, ImageRoot: imageRoot, DirectorRoot: directorRoot,
				Identity: wire.Identity{Serial: fmt.Sprintf("TS2-%06d", i), Product: "thermostat", HardwareID: "tstat-v2"},
				Factory:  v100, FactoryTarget: r100.Target, FactoryVersion: r100.Version, FactorySecVer: r100.SecurityVersion,
				HTTP: httpc, Logger: quiet, PollInterval: time.Second, HealthImage: demoHealth,
			})
			if err != nil {
				errs <- err
				return
			}
			devs[i] = d
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return fmt.Errorf("start simulated device: %w", err)
	}
	fmt.Fprintf(out, "%d simulated devices enrolled, running 1.0.0 on slot A\n", cfg.Devices)
	runCtx, stopDevices := context.WithCancel(ctx)
	defer stopDevices()
	for _, d := range devs {
		wg.Add(1)
		go func() { defer wg.Done(); d.Agent.Run(runCtx) }() //nolint:errcheck // ends with the context
	}
	defer wg.Wait()
	defer stopDevices()

	r101, err := publish("1.0.1", 2, sim.Image("1.0.1", cfg.ImageSize))
	if err != nil {
		return err
	}
	dep, err := c.Deploy(ctx, wire.DeployRequest{Release: "thermostat@1.0.1", All: true})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "deployed thermostat@1.0.1 to %d devices: the director signed a target for each\n", dep.Assigned)
	updated, err := watchRollout(ctx, c, out, cfg, r101)
	if err != nil {
		return err
	}
	if err := demoBadRelease(ctx, c, out, publish, cfg); err != nil {
		return err
	}
	if !cfg.Once {
		fmt.Fprintf(out, "\n%d/%d devices updated to %s. The server keeps running:\n  open the console at %s/ (user %s, password %s): the fleet, the finished rollout and the paused campaign\n  open %s/p/thermostat\n  export UPKEEP_SERVER=%s UPKEEP_TOKEN=%s\n  go run ./cmd/upkeep devices list\n  go run ./cmd/upkeep rollout list\nPress Ctrl-C to stop; the demo's folder (keys and data) is removed.\n",
			updated, cfg.Devices, r101.Version, srv.URL, consoleUser, password, srv.URL, srv.URL, srv.AdminToken)
		<-ctx.Done()
		fmt.Fprintln(out, "demo stopped")
		return nil
	}
	if cfg.Played != nil {
		if err := cfg.Played(ctx, srv.URL+"/", consoleUser, password); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "%d/%d devices updated to %s\n", updated, cfg.Devices, r101.Version)
	if updated != cfg.Devices {
		return fmt.Errorf("only %d of %d devices updated", updated, cfg.Devices)
	}
	return nil
}

// demoCrashMarker in an image's header makes the demo devices' health check fail on it.
const demoCrashMarker = "CRASHES-ON-BOOT"

func demoHealth(header []byte) error {
	if strings.Contains(string(header), demoCrashMarker) {
		return errors.New("the application does not start: watchdog reset")
	}
	return nil
}

// demoBadRelease is the demo's second act: a release that crashes on boot goes out as a campaign
// in waves; the devices of the first wave roll back, and the campaign pauses itself before any
// other device gets it.
func demoBadRelease(ctx context.Context, c *client.Client, out io.Writer, publish func(string, int64, []byte) (*wire.Release, error), cfg Config) error {
	fmt.Fprintln(out, "\nAct two: thermostat@1.0.2 crashes on boot, and goes out as a campaign whose waves take 10%, 50% and 100% of the fleet")
	img := sim.Image("1.0.2", cfg.ImageSize)
	copy(img[len("UPKEEP-DEMO-IMAGE 1.0.2\n"):], demoCrashMarker)
	bad, err := publish("1.0.2", 2, img)
	if err != nil {
		return err
	}
	camp, err := c.CreateRollout(ctx, wire.CampaignSpec{Release: "thermostat@1.0.2", Target: "product=thermostat", Waves: "10%,50%,100%", HealthGate: "30s", Start: true})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "campaign %s started: %s\n", camp.ID, show.Waves(camp.Waves))
	deadline := time.Now().Add(cfg.Timeout)
	for {
		st, err := c.RolloutStatus(ctx, camp.ID)
		if err != nil {
			return err
		}
		if st.Campaign.State != "running" || time.Now().After(deadline) {
			// Let the first wave's devices finish rolling back before showing the counts.
			time.Sleep(2 * time.Second)
			if st, err = c.RolloutStatus(ctx, camp.ID); err != nil {
				return err
			}
			show.CampaignStatus(out, st)
			if st.Campaign.State != "paused" {
				return fmt.Errorf("the bad release's campaign is %s, not paused", st.Campaign.State)
			}
			// Counted from the fleet, not the wave sizes: devices the director never named 1.0.2.
			ds, err := c.Devices(ctx, "")
			if err != nil {
				return err
			}
			never := 0
			for _, d := range ds {
				if d.Assigned != bad.Target && d.Installed.Version != bad.Version {
					never++
				}
			}
			fmt.Fprintf(out, "the campaign paused itself; %d of %d devices never received 1.0.2\n\n", never, len(ds))
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// watchRollout prints progress until every device committed rel or the timeout passed.
func watchRollout(ctx context.Context, c *client.Client, out io.Writer, cfg Config, rel *wire.Release) (int, error) {
	deadline := time.Now().Add(cfg.Timeout)
	last := ""
	for {
		ds, err := c.Devices(ctx, "")
		if err != nil {
			return 0, err
		}
		counts := map[string]int{}
		updated, failed := 0, 0
		for _, d := range ds {
			switch {
			case d.Installed.Version == rel.Version && d.State == "idle":
				updated++
			case d.LastError != "":
				failed++
			default:
				counts[d.State]++
			}
		}
		line := fmt.Sprintf("rollout %s: %s %d/%d updated, %d failed", rel.Version, show.Bar(updated, len(ds), 30), updated, len(ds), failed)
		if line != last {
			fmt.Fprintln(out, line)
			last = line
		}
		if updated == len(ds) || time.Now().After(deadline) || updated+failed == len(ds) && failed > 0 {
			reasons := map[string]int{}
			for _, d := range ds {
				if d.LastError != "" && !(d.Installed.Version == rel.Version && d.State == "idle") {
					reasons[d.LastError]++
				}
			}
			for why, n := range reasons {
				fmt.Fprintf(out, "  %d devices failed: %s\n", n, why)
			}
			for _, d := range ds {
				if d.Installed.Version != rel.Version && d.LastError == "" {
					fmt.Fprintf(out, "  device %s still on %s (state %q, last check-in %s)\n", d.ID, d.Installed.Version, d.State, d.LastSeen.Format(time.TimeOnly))
				}
			}
			return updated, nil
		}
		select {
		case <-ctx.Done():
			return updated, ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// demoPolicy is the demo product's support policy: five years of security updates, installed
// automatically, with a vulnerability contact, so that its public page and label exist.
func demoPolicy() map[string]any {
	return map[string]any{
		"support_end":       time.Now().AddDate(5, 0, 0).UTC().Format(time.DateOnly),
		"notification":      []string{"app"},
		"vdp_url":           "https://example.com/security",
		"product_name":      "Demo thermostat",
		"model_designation": "TS2",
	}
}
