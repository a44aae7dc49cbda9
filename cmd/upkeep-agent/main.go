// Command upkeep-agent is the Upkeep device agent: enroll, run, status.
//
// It links only the agent, the wire protocol and TUF verification: no database driver, no
// templates, no server code (deps_test.go enforces it).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"upkeep.dev/upkeep/internal/agent"
	"upkeep.dev/upkeep/internal/agent/boot"
	"upkeep.dev/upkeep/internal/envfile"
	"upkeep.dev/upkeep/internal/installpolicy"
	"upkeep.dev/upkeep/internal/tlsclient"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/wire"
)

const usage = `upkeep-agent: the Upkeep device agent

  upkeep-agent [--config /etc/upkeep/agent.env] COMMAND [flags]

  upkeep-agent enroll --server https://HOST [--ca ca.pem] [--token T] --serial S --product P --hardware H
                      --image-root root.json --director-root director-root.json
  upkeep-agent run    [--poll 5m]
  upkeep-agent status   (the journal, the next check-in, the push connection's state)
  upkeep-agent inventory
                      (print the attributes the agent reports: built-in ones and those of the
                      scripts in --inventory-dir; failing scripts are named on stderr)
  upkeep-agent consent   (the owner consents to the update that waits for it)
  upkeep-agent opt-out on|off
                      (on: the owner opts out of automatic updates; every update, security
                      updates too, is downloaded but waits for the owner's consent before it
                      installs, as with --consent-cmd or 'upkeep-agent consent'; off: automatic)
  upkeep-agent tuf-client --metadata-dir D [--metadata-url U] init ROOT | refresh | download
                      (the TUF conformance suite's client protocol; see docs/TUF-CONFORMANCE.md)

Common flags (each also an UPKEEP_* variable, see packaging/agent.env):
  --ca FILE (a private CA for the server's certificate; http:// servers are refused off loopback),
  --state DIR (default /var/lib/upkeep, which needs root: try it as a user with --state ./agent-state),
  --installer ab|file|module,
  --boot uboot|grub|sim (required by --installer ab; sim only simulates one), --boot-env FILE, --slots DIR (file-backed A/B slots),
  --slot-a PATH --slot-b PATH (raw partitions or image files),
  --file-path PATH, --module PATH, --health-cmd CMD, --hook-timeout 5m, --poll 5m,
  --window HH:MM-HH:MM (maintenance window, UTC), --consent-cmd CMD,
  --inventory-dir DIR (default /etc/upkeep/inventory.d), --inventory-interval 24h, --inventory-timeout 30s,
  --push on|off (keep an MQTT connection to the broker the server offers; default on).
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	args := os.Args[1:]
	cfgPath, required := envOr("UPKEEP_CONFIG", "/etc/upkeep/agent.env"), os.Getenv("UPKEEP_CONFIG") != ""
	if len(args) >= 2 && args[0] == "--config" {
		cfgPath, required, args = args[1], true, args[2:]
	}
	if err := loadConfig(cfgPath, required); err != nil {
		fmt.Fprintln(os.Stderr, "upkeep-agent:", err)
		os.Exit(2)
	}
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if isHelp(args[0]) {
		fmt.Fprint(os.Stdout, usage)
		return
	}
	if err := run(ctx, args[0], args[1:], os.Stdout); errors.Is(err, flag.ErrHelp) {
		return // the command's flags were printed
	} else if err != nil {
		fmt.Fprintln(os.Stderr, "upkeep-agent:", err)
		os.Exit(1)
	}
}

type common struct {
	state, bootKind, bootEnv, slots, slotA, slotB, healthCmd string
	installer, filePath, module, noticeCmd                   string
	window, consentCmd, ca                                   string
	poll, slowWindow, hookTimeout                            time.Duration
	push                                                     string
	inventoryDir                                             string
	inventoryInterval, inventoryTimeout                      time.Duration
	fs                                                       *flag.FlagSet
	minRate, checkpoint                                      int64
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func envDuration(k string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(k)); err == nil {
		return d
	}
	return def
}

func envInt(k string, def int64) int64 {
	var n int64
	if _, err := fmt.Sscan(os.Getenv(k), &n); err == nil {
		return n
	}
	return def
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.ca, "ca", os.Getenv("UPKEEP_CA"), "PEM file of a private CA to trust for the server's certificate, besides the system's roots (UPKEEP_CA)")
	fs.StringVar(&c.state, "state", envOr("UPKEEP_STATE", "/var/lib/upkeep"), "state directory, outside the A/B slots (UPKEEP_STATE)")
	fs.StringVar(&c.installer, "installer", envOr("UPKEEP_INSTALLER", "ab"), "ab, file or module (UPKEEP_INSTALLER)")
	fs.StringVar(&c.bootKind, "boot", os.Getenv("UPKEEP_BOOT"), "boot loader adapter: uboot, grub or sim (simulated; no default) (UPKEEP_BOOT)")
	fs.StringVar(&c.bootEnv, "boot-env", os.Getenv("UPKEEP_BOOT_ENV"), "boot environment file (default STATE/bootenv.json)")
	fs.StringVar(&c.slots, "slots", os.Getenv("UPKEEP_SLOTS"), "folder of file-backed slots (default STATE/slots)")
	fs.StringVar(&c.slotA, "slot-a", os.Getenv("UPKEEP_SLOT_A"), "slot A device or file (with --slot-b)")
	fs.StringVar(&c.slotB, "slot-b", os.Getenv("UPKEEP_SLOT_B"), "slot B device or file")
	fs.StringVar(&c.filePath, "file-path", os.Getenv("UPKEEP_FILE_PATH"), "file installer: the file to replace")
	fs.StringVar(&c.module, "module", os.Getenv("UPKEEP_MODULE"), "module installer: the update module executable")
	fs.StringVar(&c.healthCmd, "health-cmd", os.Getenv("UPKEEP_HEALTH_CMD"), "command that must exit 0 after a new image starts")
	fs.StringVar(&c.noticeCmd, "notice-cmd", os.Getenv("UPKEEP_NOTICE_CMD"), "command run when the end-of-support notice changes (UPKEEP_END_OF_SUPPORT, UPKEEP_PRODUCT set)")
	fs.StringVar(&c.window, "window", os.Getenv("UPKEEP_WINDOW"), "maintenance window HH:MM-HH:MM (UTC): install only inside it (UPKEEP_WINDOW)")
	fs.StringVar(&c.consentCmd, "consent-cmd", os.Getenv("UPKEEP_CONSENT_CMD"), "command asked for the owner's consent when an update needs it; exit 0 grants (UPKEEP_TARGET, UPKEEP_VERSION set)")
	fs.DurationVar(&c.hookTimeout, "hook-timeout", envDuration("UPKEEP_HOOK_TIMEOUT", 5*time.Minute), "how long the health, consent and notice commands may run; a health check that times out has failed (UPKEEP_HOOK_TIMEOUT)")
	fs.DurationVar(&c.poll, "poll", envDuration("UPKEEP_POLL", 5*time.Minute), "poll interval; when set (flag or UPKEEP_POLL) it is kept whatever interval the server suggests, else the server's suggestion is followed (UPKEEP_POLL)")
	fs.StringVar(&c.inventoryDir, "inventory-dir", envOr("UPKEEP_INVENTORY_DIR", "/etc/upkeep/inventory.d"), "folder of inventory scripts: executables printing key=value lines, Mender's format (UPKEEP_INVENTORY_DIR)")
	fs.DurationVar(&c.inventoryInterval, "inventory-interval", envDuration("UPKEEP_INVENTORY_INTERVAL", agent.DefaultInventoryInterval), "how often the inventory scripts run, besides at start and after each update (UPKEEP_INVENTORY_INTERVAL)")
	fs.DurationVar(&c.inventoryTimeout, "inventory-timeout", envDuration("UPKEEP_INVENTORY_TIMEOUT", agent.DefaultInventoryTimeout), "how long one inventory script may run (UPKEEP_INVENTORY_TIMEOUT)")
	c.fs = fs
	c.registerPush(fs)
	fs.Int64Var(&c.minRate, "min-rate", envInt("UPKEEP_MIN_RATE", 0), "slow-retrieval defence: minimum bytes/s (0: default 256, -1: off)")
	fs.Int64Var(&c.checkpoint, "checkpoint-bytes", envInt("UPKEEP_CHECKPOINT_BYTES", 0), "downloaded bytes between journal checkpoints (0: default 4 MiB)")
	fs.DurationVar(&c.slowWindow, "slow-window", envDuration("UPKEEP_SLOW_WINDOW", 0), "slow-retrieval window (0: default 60s)")
}

// loadConfig reads KEY=VALUE lines (the systemd EnvironmentFile format, internal/envfile) into
// the environment, without overriding variables that are already set.
func loadConfig(path string, required bool) error {
	vals, err := envfile.Read(path, required)
	if err != nil {
		return err
	}
	for k, v := range vals {
		if _, set := os.LookupEnv(k); !set {
			os.Setenv(k, v)
		}
	}
	return nil
}

// httpClient is the agent's HTTP client: the download transport's timeouts, TLS with session
// resumption, and the private CA of --ca trusted besides the system's roots.
func (c *common) httpClient() (*http.Client, error) {
	tls, err := tlsclient.Config(c.ca)
	if err != nil {
		return nil, err
	}
	hc := agent.NewDownloadClient()
	hc.Transport.(*http.Transport).TLSClientConfig = tls
	hc.Timeout = 5 * time.Minute // the download client drops it for artifacts
	return hc, nil
}

func (c *common) config(log *slog.Logger) (agent.Config, error) {
	cfg := agent.Config{StateDir: c.state, Logger: log, PollInterval: c.poll, FixedPoll: c.pollSet(), HookTimeout: c.hookTimeout, MinRate: c.minRate, SlowWindow: c.slowWindow, CheckpointEvery: c.checkpoint,
		InventoryDir: c.inventoryDir, InventoryInterval: c.inventoryInterval, InventoryTimeout: c.inventoryTimeout, Version: version}
	var err error
	if cfg.HTTP, err = c.httpClient(); err != nil {
		return cfg, err
	}
	if c.window != "" { // a mistyped window must not silently mean "install at any time"
		if _, _, err := installpolicy.ParseWindow(c.window); err != nil {
			return cfg, fmt.Errorf("maintenance window (--window, UPKEEP_WINDOW) %q: %w", c.window, err)
		}
	}
	switch c.installer {
	case "ab":
	case "file":
		if c.filePath == "" {
			return cfg, errors.New("--installer file needs --file-path")
		}
		cfg.Installer = &agent.FileInstaller{Path: c.filePath}
		return c.withHealth(cfg), nil
	case "module":
		if c.module == "" {
			return cfg, errors.New("--installer module needs --module")
		}
		cfg.Installer = &agent.ModuleInstaller{Executable: c.module, WorkDir: filepath.Join(c.state, "module")}
		return c.withHealth(cfg), nil
	default:
		return cfg, fmt.Errorf("unknown installer %q (ab, file or module)", c.installer)
	}
	switch c.bootKind {
	case "":
		return cfg, errors.New("--installer ab needs a boot loader: set --boot or UPKEEP_BOOT to uboot, grub or sim " +
			"(sim only simulates a boot loader: images go to files and a reboot edits a JSON file)")
	case "sim":
		log.Warn("simulated boot loader: no real reboot, trial boot or rollback happens on this device", "boot", "sim")
		env := c.bootEnv
		if env == "" {
			env = filepath.Join(c.state, "bootenv.json")
		}
		bl, err := boot.NewSim(env)
		if err != nil {
			return cfg, err
		}
		cfg.Bootloader = bl
	case "uboot":
		bl, err := boot.NewUBoot(boot.UBootConfig{ConfigFile: envOr("UPKEEP_UBOOT_CONFIG", "/etc/fw_env.config")})
		if err != nil {
			return cfg, err
		}
		cfg.Bootloader = bl
	case "grub":
		env := c.bootEnv
		if env == "" {
			env = "/boot/grub/grubenv"
		}
		bl, err := boot.NewGRUB(boot.GRUBConfig{EnvFile: env})
		if err != nil {
			return cfg, err
		}
		cfg.Bootloader = bl
	default:
		return cfg, fmt.Errorf("unknown boot loader %q (sim, uboot or grub)", c.bootKind)
	}
	switch {
	case c.slotA != "" && c.slotB != "":
		cfg.Slots = boot.NewDeviceSlots(c.slotA, c.slotB)
	case c.slotA != "" || c.slotB != "":
		return cfg, errors.New("--slot-a and --slot-b go together")
	default:
		dir := c.slots
		if dir == "" {
			dir = filepath.Join(c.state, "slots")
		}
		s, err := boot.NewFileSlots(dir)
		if err != nil {
			return cfg, err
		}
		cfg.Slots = s
	}
	return c.withHealth(cfg), nil
}

// version is the agent's version, reported in its inventory; release builds set it with
// -ldflags '-X main.version=...'.
var version = "dev"

// pollSet says whether the owner chose the poll interval (--poll or UPKEEP_POLL): then the
// server's suggested interval does not replace it.
func (c *common) pollSet() bool {
	if _, ok := os.LookupEnv("UPKEEP_POLL"); ok {
		return true
	}
	set := false
	if c.fs != nil {
		c.fs.Visit(func(f *flag.Flag) { set = set || f.Name == "poll" })
	}
	return set
}

func (c *common) withHealth(cfg agent.Config) agent.Config {
	cfg.Window = c.window
	if c.consentCmd != "" {
		cmdline := c.consentCmd
		cfg.Consent = func(ctx context.Context, img agent.Image) (bool, error) {
			cmd := shellCommand(ctx, cmdline)
			cmd.Env = append(os.Environ(), "UPKEEP_TARGET="+img.Target, "UPKEEP_VERSION="+img.Version, "UPKEEP_SHA256="+img.SHA256)
			err := cmd.Run()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return false, nil // the owner said no, or not yet
			}
			return err == nil, err
		}
	}
	if c.noticeCmd != "" {
		cmdline := c.noticeCmd
		cfg.NoticeHook = func(ctx context.Context, n *uptane.Notice) error {
			cmd := shellCommand(ctx, cmdline)
			cmd.Env = os.Environ()
			if n != nil {
				cmd.Env = append(cmd.Env, "UPKEEP_END_OF_SUPPORT="+n.EndOfSupport, "UPKEEP_PRODUCT="+n.Product, "UPKEEP_NOTICE_MESSAGE="+n.Message)
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("notice command %q: %w: %.200s", cmdline, err, out)
			}
			return nil
		}
	}
	if c.healthCmd != "" {
		cmdline := c.healthCmd
		cfg.Health = func(ctx context.Context) error {
			out, err := shellCommand(ctx, cmdline).CombinedOutput()
			if err != nil {
				return &agent.OutputError{Err: fmt.Errorf("health check %q: %w: %.200s", cmdline, err, out), Output: agent.Tail(out, agent.MaxOutput)}
			}
			return nil
		}
	}
	return cfg
}

func run(ctx context.Context, cmd string, args []string, out io.Writer) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	var c common
	c.register(fs)
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	switch cmd {
	case "enroll":
		var o agent.EnrollOptions
		var imageRoot, directorRoot string
		fs.StringVar(&o.Server, "server", os.Getenv("UPKEEP_SERVER"), "server URL (UPKEEP_SERVER)")
		fs.StringVar(&o.EnrollToken, "token", "", "enrolment token (env UPKEEP_ENROLL_TOKEN; none: wait for an operator)")
		fs.StringVar(&o.Identity.Serial, "serial", "", "serial number")
		fs.StringVar(&o.Identity.Product, "product", "", "product")
		fs.StringVar(&o.Identity.HardwareID, "hardware", "", "hardware id")
		fs.StringVar(&imageRoot, "image-root", envOr("UPKEEP_IMAGE_ROOT", "/etc/upkeep/root.json"), "provisioned image-repository root")
		fs.StringVar(&directorRoot, "director-root", envOr("UPKEEP_DIRECTOR_ROOT", "/etc/upkeep/director-root.json"), "provisioned director root")
		fs.StringVar(&o.Installed.Target, "installed-target", "", "target name of the factory image")
		fs.StringVar(&o.Installed.Version, "installed-version", "", "version of the factory image")
		fs.Int64Var(&o.Installed.SecurityVersion, "installed-security-version", 0, "security version of the factory image")
		fs.StringVar(&o.Installed.SHA256, "installed-sha256", "", "sha256 of the factory image")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if o.EnrollToken == "" { // not a flag default, so that -h never prints it
			o.EnrollToken = os.Getenv("UPKEEP_ENROLL_TOKEN")
		}
		if o.Server == "" {
			return errors.New("--server is required")
		}
		if err := tlsclient.CheckServerURL(o.Server); err != nil {
			return err
		}
		hc, err := c.httpClient()
		if err != nil {
			return err
		}
		if o.ImageRoot, err = os.ReadFile(imageRoot); err != nil {
			return fmt.Errorf("image root (provisioned at manufacturing): %w", err)
		}
		if o.DirectorRoot, err = os.ReadFile(directorRoot); err != nil {
			return fmt.Errorf("director root (provisioned at manufacturing): %w", err)
		}
		cfg := agent.Config{StateDir: c.state, HTTP: hc}
		st, err := agent.Enroll(ctx, cfg, o)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "device %s enrolled: %s\n", st.DeviceID, st.Status)
		if st.Status != "accepted" {
			fmt.Fprintln(out, "an operator must accept it: upkeep devices accept "+st.DeviceID)
		}
		return nil
	case "run":
		if err := fs.Parse(args); err != nil {
			return err
		}
		if st, err := agent.ReadStatus(c.state); err == nil {
			if err := tlsclient.CheckServerURL(st.Server); err != nil {
				return fmt.Errorf("enrolled with %w: enroll again with an https:// server", err)
			}
		}
		cfg, err := c.config(log)
		if err != nil {
			return err
		}
		a, err := agent.New(ctx, cfg)
		if err != nil {
			return err
		}
		if err := c.enablePush(a); err != nil {
			return err
		}
		defer a.ClosePush()
		err = a.Run(ctx)
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	case "status":
		if err := fs.Parse(args); err != nil {
			return err
		}
		st, err := agent.ReadStatus(c.state)
		if err != nil {
			return err
		}
		st.Token = "" // never print the credential
		rt, err := agent.ReadRuntime(c.state)
		if err != nil {
			return err
		}
		view := struct {
			Protocol int `json:"protocol"`
			*agent.State
			// NextCheckin is when the running agent polls next (absent: it is not running, or
			// has not gone idle yet); Push the state of its push connection ("off": polling only).
			NextCheckin     *time.Time `json:"next_checkin,omitempty"`
			PollSeconds     int        `json:"poll_seconds,omitempty"`
			Push            string     `json:"push"`
			InventoryDigest string     `json:"inventory_digest,omitempty"` // last acknowledged by the server
			// PushDetail is the push connection's broker, last nudge and last error.
			PushDetail *agent.PushStatus `json:"push_detail,omitempty"`
		}{Protocol: wire.ProtocolVersion, State: st, Push: "off", InventoryDigest: agent.AckedInventoryDigest(c.state)}
		if rt != nil {
			view.NextCheckin, view.PollSeconds = &rt.NextCheckin, rt.PollSeconds
			if rt.Push != "" {
				view.Push = rt.Push
			}
		}
		if ps := agent.ReadPushStatus(c.state); ps.State != agent.PushOff {
			view.PushDetail = &ps
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(view)
	case "inventory":
		if err := fs.Parse(args); err != nil {
			return err
		}
		cfg, err := c.config(slog.New(slog.DiscardHandler))
		if err != nil { // no installer configured: the attributes that need none
			cfg = agent.Config{StateDir: c.state, InventoryDir: c.inventoryDir, InventoryTimeout: c.inventoryTimeout, Version: version}
		}
		attrs, errs := agent.CollectInventory(ctx, cfg)
		for _, err := range errs {
			fmt.Fprintln(os.Stderr, "upkeep-agent:", err)
		}
		for _, k := range slices.Sorted(maps.Keys(attrs)) {
			for _, v := range attrs[k] {
				fmt.Fprintf(out, "%s=%s\n", k, v)
			}
		}
		return nil
	case "consent":
		if err := fs.Parse(args); err != nil {
			return err
		}
		img, err := agent.GrantConsent(c.state)
		if err != nil {
			return fmt.Errorf("consent: %w", err)
		}
		fmt.Fprintf(out, "consent recorded: %s (%s) installs at the next check\n", img.Version, img.Target)
		return nil
	case "opt-out":
		if err := fs.Parse(args); err != nil {
			return err
		}
		arg := fs.Arg(0)
		if fs.NArg() > 1 { // flags after on|off
			if err := fs.Parse(fs.Args()[1:]); err != nil {
				return err
			}
		}
		var on bool
		switch arg {
		case "on":
			on = true
		case "off":
		default:
			return errors.New("opt-out: want on or off")
		}
		if err := agent.SetOptOut(c.state, on); err != nil {
			return err
		}
		if on {
			fmt.Fprintln(out, "automatic updates off: every update waits for the owner's consent (upkeep-agent consent)")
		} else {
			fmt.Fprintln(out, "automatic updates on")
		}
		return nil
	case "tuf-client":
		return tufClient(ctx, args, out)
	default:
		return fmt.Errorf("unknown command %q\n%s", cmd, usage)
	}
}

// isHelp says whether arg asks for the usage.
func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--help", "help":
		return true
	}
	return false
}
