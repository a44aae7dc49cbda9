package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/envfile"
	"upkeep.dev/upkeep/internal/product"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/show"
	"upkeep.dev/upkeep/internal/sso"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/internal/webhook"
	"upkeep.dev/upkeep/wire"
)

type globals struct {
	server, token, ca string
}

// client is the management API's client with the operator token of --token (or UPKEEP_TOKEN),
// else the one `upkeep login` kept for --server.
func (g *globals) client() (*client.Client, error) {
	token := g.token
	if token == "" {
		saved, err := savedToken(g.server)
		if err != nil {
			return nil, err
		}
		token = saved
	}
	if token == "" {
		return nil, fmt.Errorf("an operator token is needed: run upkeep login --user NAME, or pass --token or set UPKEEP_TOKEN (printed once by the first `upkeep serve`)")
	}
	c := &client.Client{Base: g.server, Token: token}
	if g.ca != "" {
		hc, err := g.httpClient(false)
		if err != nil {
			return nil, err
		}
		c.HTTP = hc
	}
	return c, nil
}

func serveCmd() *cobra.Command {
	cfg := server.DefaultConfig()
	var configPath string
	var oidcSecretFile, oidcRoleMap string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the server on the embedded defaults (SQLite and a local artifacts folder)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			file, err := applyEnv(cmd)
			if err != nil {
				return err
			}
			cfg.S3AccessKey, _ = envfile.Lookup(file, "UPKEEP_S3_ACCESS_KEY")
			cfg.S3SecretKey, _ = envfile.Lookup(file, "UPKEEP_S3_SECRET_KEY")
			if err := oidcConfig(&cfg.OIDC, oidcSecretFile, oidcRoleMap); err != nil {
				return err
			}
			cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
			s, err := server.Open(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer s.Close()
			// The token first: a program reading this output knows it has all of it at the
			// "serving on" line.
			if s.AdminToken != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "operator token (shown once, keep it): %s\n", s.AdminToken)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "upkeep serving on %s\n", s.URL)
			<-cmd.Context().Done()
			fmt.Fprintln(cmd.OutOrStdout(), "shutting down: finishing in-flight requests")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "configuration file of UPKEEP_*=value lines, as packaging/server.env (env UPKEEP_CONFIG); flags win over the environment, which wins over the file")
	f.StringVar(&cfg.Addr, "addr", cfg.Addr, "listen address (env UPKEEP_ADDR)")
	f.StringVar(&cfg.DataDir, "data", cfg.DataDir, "folder for the SQLite database and artifacts (env UPKEEP_DATA)")
	f.StringVar(&cfg.KeysDir, "keys", cfg.KeysDir, "folder with the online keys and trust roots (env UPKEEP_KEYS)")
	f.StringVar(&cfg.Blobs, "blobs", "", "s3://bucket?endpoint=URL for S3-compatible artifact storage (keys in UPKEEP_S3_ACCESS_KEY, UPKEEP_S3_SECRET_KEY); empty: a folder in --data (env UPKEEP_BLOBS)")
	f.StringVar(&cfg.Database, "db", "", "postgres:// URL for the scale-out store; empty: SQLite in --data (env UPKEEP_DB)")
	f.Int64Var(&cfg.MaxArtifact, "max-artifact", cfg.MaxArtifact, "largest artifact accepted, in bytes (env UPKEEP_MAX_ARTIFACT)")
	f.IntVar(&cfg.PollSeconds, "poll-seconds", cfg.PollSeconds, "poll interval suggested to devices (env UPKEEP_POLL_SECONDS)")
	f.IntVar(&cfg.MaxCheckins, "max-checkins", cfg.MaxCheckins, "check-ins in flight before devices get 429 with a spread Retry-After (env UPKEEP_MAX_CHECKINS; 0: 4096)")
	f.IntVar(&cfg.MaxTokenRequests, "max-token-requests", cfg.MaxTokenRequests, "device token requests in flight before devices get 429 (env UPKEEP_MAX_TOKEN_REQUESTS; 0: 256)")
	f.DurationVar(&cfg.BodyTimeout, "body-timeout", cfg.BodyTimeout, "time a device request's body may take to arrive before 408 (env UPKEEP_BODY_TIMEOUT)")
	f.IntVar(&cfg.MaxPerDevice, "max-per-device", cfg.MaxPerDevice, "check-ins and reports of one device in flight (env UPKEEP_MAX_PER_DEVICE)")
	f.IntVar(&cfg.MaxPerIP, "max-per-ip", cfg.MaxPerIP, "token requests and enrolments in flight from one address, IPv6 per /64 (env UPKEEP_MAX_PER_IP)")
	f.IntVar(&cfg.EnrollPerMinute, "enroll-per-minute", cfg.EnrollPerMinute, "enrolments without an enrolment token per minute from one address (env UPKEEP_ENROLL_PER_MINUTE)")
	f.IntVar(&cfg.ReportsPerMinute, "reports-per-minute", cfg.ReportsPerMinute, "reports per minute from one device (env UPKEEP_REPORTS_PER_MINUTE)")
	f.IntVar(&cfg.MaxPending, "max-pending", cfg.MaxPending, "devices awaiting approval before enrolments without a token get 429 (env UPKEEP_MAX_PENDING)")
	f.DurationVar(&cfg.PendingTTL, "pending-ttl", cfg.PendingTTL, "time a pending enrolment waits for approval before it is removed (env UPKEEP_PENDING_TTL)")
	f.DurationVar(&cfg.EventRetention, "event-retention", cfg.EventRetention, "time device events are kept (env UPKEEP_EVENT_RETENTION)")
	f.DurationVar(&cfg.AuditRetention, "audit-retention", cfg.AuditRetention, "time audit records are kept; 0 keeps them forever (env UPKEEP_AUDIT_RETENTION)")
	f.IntVar(&cfg.MaxDeviceEvents, "max-device-events", cfg.MaxDeviceEvents, "device events kept per device, newest first (env UPKEEP_MAX_DEVICE_EVENTS)")
	f.StringVar(&cfg.PublicURL, "public-url", "", "base URL the public reaches this server at, for the labels' QR codes (env UPKEEP_PUBLIC_URL; default: the listen URL)")
	f.StringVar(&cfg.Manufacturer, "manufacturer", "", "manufacturer named in the products' declarations (env UPKEEP_MANUFACTURER; default: the public URL's host)")
	f.StringVar(&cfg.MetricsToken, "metrics-token", "", "bearer token that GET /metrics requires (env UPKEEP_METRICS_TOKEN, preferred: a flag shows in the process list); empty: /metrics is open, meant for the loopback address")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM certificate (chain) to serve HTTPS with, reloaded when the file changes (env UPKEEP_TLS_CERT; with --tls-key)")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "PEM private key of --tls-cert, reloaded with it (env UPKEEP_TLS_KEY)")
	f.BoolVar(&cfg.NoDeltaJobs, "no-delta-jobs", false, "do not generate per-pair deltas after publications (`release deltas --sign --local` makes them where the key is)")
	f.BoolVar(&cfg.BehindProxy, "behind-proxy", false, "a TLS-terminating proxy is in front: allow plain HTTP on a non-loopback --addr (env UPKEEP_BEHIND_PROXY)")
	f.StringVar(&cfg.DDI.Tenant, "ddi-tenant", "DEFAULT", "the hawkBit DDI tenant served at /{tenant}/controller/v1/ (env UPKEEP_DDI_TENANT; compared case-insensitively)")
	f.StringVar(&cfg.DDI.GatewayToken, "ddi-gateway-token", "", "DDI gateway token: authenticates any controller of the tenant (env UPKEEP_DDI_GATEWAY_TOKEN; empty: target tokens only)")
	f.StringVar(&cfg.DDI.Product, "ddi-product", "", "with --ddi-hardware: unknown controllers presenting the gateway token register as devices of this product")
	f.StringVar(&cfg.DDI.HardwareID, "ddi-hardware", "", "hardware id of DDI devices that register with the gateway token")
	f.IntVar(&cfg.TenantPoolConns, "tenant-pool-conns", server.DefaultTenantPoolConns, "PostgreSQL connections of each tenant's pool (env UPKEEP_TENANT_POOL_CONNS); every tenant's count against the database's max_connections")
	f.BoolVar(&cfg.DDI.AutoAccept, "ddi-auto-accept", false, "accept DDI devices that register with the gateway token at once (default: pending until `devices accept`)")
	pushFlags(f, &cfg)
	f.StringVar(&cfg.OIDC.Issuer, "oidc-issuer", "", "single sign-on: the OpenID Connect provider's issuer URL, as its discovery document names it (env UPKEEP_OIDC_ISSUER; docs/OPERATORS.md)")
	f.StringVar(&cfg.OIDC.ClientID, "oidc-client-id", "", "this server's client id at the provider (env UPKEEP_OIDC_CLIENT_ID)")
	f.StringVar(&cfg.OIDC.ClientSecret, "oidc-client-secret", "", "the client secret (env UPKEEP_OIDC_CLIENT_SECRET, preferred, or --oidc-client-secret-file: a flag shows in the process list)")
	f.StringVar(&oidcSecretFile, "oidc-client-secret-file", "", "file holding the client secret (env UPKEEP_OIDC_CLIENT_SECRET_FILE)")
	f.StringVar(&cfg.OIDC.RedirectURL, "oidc-redirect-url", "", "the callback URL registered at the provider (env UPKEEP_OIDC_REDIRECT_URL; default: --public-url + /api/v1/oidc/callback)")
	f.StringVar(&oidcRoleMap, "oidc-role-map", "", "claims to roles, first match wins: CLAIM:VALUE=ROLE[:GROUP+GROUP],... e.g. groups:release=release-manager,groups:eu-ops=deployer:eu (env UPKEEP_OIDC_ROLE_MAP)")
	f.StringSliceVar(&cfg.OIDC.Scopes, "oidc-scopes", nil, "scopes to request besides openid (env UPKEEP_OIDC_SCOPES; default profile,email)")
	f.StringVar(&cfg.OIDC.UsernameClaim, "oidc-username-claim", sso.DefaultUsernameClaim, "claim a new user's name is taken from, else email (env UPKEEP_OIDC_USERNAME_CLAIM)")
	for flag, env := range map[string]string{"oidc-issuer": "UPKEEP_OIDC_ISSUER", "oidc-client-id": "UPKEEP_OIDC_CLIENT_ID", "oidc-client-secret": "UPKEEP_OIDC_CLIENT_SECRET",
		"oidc-client-secret-file": "UPKEEP_OIDC_CLIENT_SECRET_FILE", "oidc-redirect-url": "UPKEEP_OIDC_REDIRECT_URL", "oidc-role-map": "UPKEEP_OIDC_ROLE_MAP",
		"oidc-scopes": "UPKEEP_OIDC_SCOPES", "oidc-username-claim": "UPKEEP_OIDC_USERNAME_CLAIM"} {
		envFlag(f, flag, env)
	}
	wd := webhook.DefaultConfig()
	f.DurationVar(&cfg.Webhooks.Timeout, "webhook-timeout", wd.Timeout, "bound on one webhook delivery attempt, connection to answer (env UPKEEP_WEBHOOK_TIMEOUT)")
	f.DurationVar(&cfg.Webhooks.RetryBase, "webhook-retry-base", wd.RetryBase, "wait after a webhook delivery's first failed attempt, doubled after each, with jitter (env UPKEEP_WEBHOOK_RETRY_BASE)")
	f.IntVar(&cfg.Webhooks.MaxAttempts, "webhook-max-attempts", wd.MaxAttempts, "attempts of a webhook delivery before it is marked failed (env UPKEEP_WEBHOOK_MAX_ATTEMPTS)")
	f.IntVar(&cfg.Webhooks.MaxQueue, "webhook-max-queue", wd.MaxQueue, "pending deliveries of one webhook; the oldest beyond are dropped (env UPKEEP_WEBHOOK_MAX_QUEUE)")
	f.DurationVar(&cfg.Webhooks.Retention, "webhook-retention", wd.Retention, "time finished webhook deliveries are kept (env UPKEEP_WEBHOOK_RETENTION)")
	for flag, env := range map[string]string{"addr": "UPKEEP_ADDR", "data": "UPKEEP_DATA", "keys": "UPKEEP_KEYS", "blobs": "UPKEEP_BLOBS", "db": "UPKEEP_DB",
		"max-artifact": "UPKEEP_MAX_ARTIFACT", "poll-seconds": "UPKEEP_POLL_SECONDS", "max-checkins": "UPKEEP_MAX_CHECKINS",
		"max-token-requests": "UPKEEP_MAX_TOKEN_REQUESTS", "body-timeout": "UPKEEP_BODY_TIMEOUT", "max-per-device": "UPKEEP_MAX_PER_DEVICE", "max-per-ip": "UPKEEP_MAX_PER_IP",
		"enroll-per-minute": "UPKEEP_ENROLL_PER_MINUTE", "reports-per-minute": "UPKEEP_REPORTS_PER_MINUTE", "max-pending": "UPKEEP_MAX_PENDING", "pending-ttl": "UPKEEP_PENDING_TTL",
		"event-retention": "UPKEEP_EVENT_RETENTION", "audit-retention": "UPKEEP_AUDIT_RETENTION", "max-device-events": "UPKEEP_MAX_DEVICE_EVENTS", "public-url": "UPKEEP_PUBLIC_URL", "manufacturer": "UPKEEP_MANUFACTURER",
		"metrics-token": "UPKEEP_METRICS_TOKEN", "tls-cert": "UPKEEP_TLS_CERT", "tls-key": "UPKEEP_TLS_KEY", "behind-proxy": "UPKEEP_BEHIND_PROXY",
		"ddi-tenant": "UPKEEP_DDI_TENANT", "ddi-gateway-token": "UPKEEP_DDI_GATEWAY_TOKEN", "ddi-product": "UPKEEP_DDI_PRODUCT", "ddi-hardware": "UPKEEP_DDI_HARDWARE", "tenant-pool-conns": "UPKEEP_TENANT_POOL_CONNS",
		"webhook-timeout": "UPKEEP_WEBHOOK_TIMEOUT", "webhook-retry-base": "UPKEEP_WEBHOOK_RETRY_BASE", "webhook-max-attempts": "UPKEEP_WEBHOOK_MAX_ATTEMPTS",
		"webhook-max-queue": "UPKEEP_WEBHOOK_MAX_QUEUE", "webhook-retention": "UPKEEP_WEBHOOK_RETENTION"} {
		envFlag(f, flag, env)
	}
	return cmd
}

// oidcConfig completes the single sign-on configuration from the flags that are not its fields:
// the client secret's file and the role map.
func oidcConfig(c *sso.Config, secretFile, roleMap string) error {
	if secretFile != "" {
		if c.ClientSecret != "" {
			return fmt.Errorf("--oidc-client-secret and --oidc-client-secret-file: give one")
		}
		b, err := os.ReadFile(secretFile)
		if err != nil {
			return fmt.Errorf("oidc client secret: %w", err)
		}
		c.ClientSecret = strings.TrimSpace(string(b))
	}
	rules, err := sso.ParseRoleMap(roleMap)
	if err != nil {
		return fmt.Errorf("--oidc-role-map: %w", err)
	}
	c.RoleMap = rules
	if !c.Enabled() && (c.ClientID != "" || len(rules) > 0) {
		return fmt.Errorf("--oidc-client-id and --oidc-role-map need --oidc-issuer")
	}
	return nil
}

func keysCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Create and rotate the signing keys"}
	var dir string
	var rootKeys, threshold int
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Create the offline and online keys and the first trust roots",
		RunE: func(cmd *cobra.Command, _ []string) error {
			info, err := tuf.InitKeySet(dir, rootKeys, threshold, tuf.DefaultLifetimes(), time.Now())
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "key set written to %s\n\n", dir)
			fmt.Fprintln(w, "OFFLINE — move these off the server and keep them offline (release engineers, an HSM):")
			for _, f := range info.Offline {
				fmt.Fprintf(w, "  %s\n", filepath.Join(dir, f))
			}
			fmt.Fprintln(w, "\nONLINE — the server needs these (upkeep serve --keys):")
			for _, f := range info.Online {
				fmt.Fprintf(w, "  %s\n", filepath.Join(dir, f))
			}
			fmt.Fprintln(w, "\nPROVISION into every device at manufacturing (its trust roots):")
			for _, f := range info.Public {
				fmt.Fprintf(w, "  %s\n", filepath.Join(dir, f))
			}
			return nil
		},
	}
	initCmd.Flags().StringVar(&dir, "dir", "keys", "folder to create the key set in")
	initCmd.Flags().IntVar(&rootKeys, "root-keys", 1, "number of offline image root keys")
	initCmd.Flags().IntVar(&threshold, "root-threshold", 1, "signatures needed on a new root")

	cmd.AddCommand(initCmd, rotateRootCmd(g), resignDirectorRootCmd(g), keysStatusCmd(g), keysDelegateCmd(g))
	return cmd
}

func releaseCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "release", Short: "Publish and list releases"}
	var o client.PublishOptions
	var keyPath, rootPath string
	var fixes string
	var deltaFrom []string
	publish := &cobra.Command{
		Use:   "publish FILE",
		Short: "Sign a release locally with the offline targets key and upload it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if o.TargetsKey, err = tuf.LoadKey(keyPath); err != nil {
				return err
			}
			// A delegated product's role is signed with its own keys, next to the targets key.
			if o.ProductKeys, _, err = tuf.LoadProductKeys(filepath.Dir(keyPath), o.Custom.Product); err != nil {
				return err
			}
			if rootPath == "" {
				rootPath = filepath.Join(filepath.Dir(keyPath), tuf.FileImageRoot)
			}
			if o.TrustedRoot, err = os.ReadFile(rootPath); err != nil {
				return fmt.Errorf("trusted root: %w", err)
			}
			if fixes != "" {
				o.Custom.Fixes = splitFixes(fixes)
			}
			if o.Custom.ArtifactType == "" { // from the file name: a bundle keeps its kind
				switch strings.ToLower(filepath.Ext(args[0])) {
				case ".swu":
					o.Custom.ArtifactType = uptane.ArtifactSWU
				case ".raucb":
					o.Custom.ArtifactType = uptane.ArtifactRAUCB
				}
			}
			o.File, o.Expires = args[0], tuf.DefaultLifetimes().Targets
			o.Progress = progress(cmd.ErrOrStderr())
			for _, d := range deltaFrom {
				v, file, ok := strings.Cut(d, "=")
				if !ok || v == "" || file == "" {
					return fmt.Errorf("--delta-from %q: want VERSION=FILE", d)
				}
				o.DeltaFrom = append(o.DeltaFrom, client.DeltaSource{Version: v, File: file})
			}
			o.Checked = func(chk *client.ReleaseCheck) { printCheck(cmd.ErrOrStderr(), chk) }
			rel, err := c.Publish(cmd.Context(), o)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "published %s@%s as %s (%d bytes, sha256 %s)\n", rel.Product, rel.Version, rel.Target, rel.Length, rel.SHA256)
			return nil
		},
	}
	f := publish.Flags()
	f.StringVar(&o.Custom.Product, "product", "", "product name")
	f.StringSliceVar(&o.Custom.HardwareIDs, "hardware", nil, "hardware id the image runs on (repeatable)")
	f.StringVar(&o.Custom.Version, "version", "", "release version")
	f.Int64Var(&o.Custom.SecurityVersion, "security-version", 0, "anti-rollback counter: devices refuse anything lower than what they run (required: a forgotten 0 would protect nothing)")
	f.StringVar(&o.Custom.Class, "class", uptane.ClassSecurity, "security or feature")
	f.StringVar(&fixes, "fixes", "", "comma-separated advisory ids this release fixes")
	f.StringVar(&o.SBOM, "sbom", "", "the release's SBOM (CycloneDX or SPDX JSON): checked against the advisories and the product's release gate, its SHA-256 signed into the target, then uploaded")
	f.StringVar(&o.Custom.ArtifactType, "artifact-type", "", "swu (SWUpdate bundle), raucb (RAUC bundle) or raw, signed into the target (default: from the extension, .swu or .raucb; else none)")
	f.StringVar(&keyPath, "key", "keys/targets.key", "offline targets key")
	f.StringVar(&rootPath, "root", "", "trusted image root.json (default: root.json next to the key)")
	f.StringArrayVar(&deltaFrom, "delta-from", nil, "VERSION=FILE: an earlier release's image; a per-pair delta from it is made and signed with the release (repeatable)")
	f.BoolVar(&o.NoIndex, "no-index", false, "do not sign a chunk index (caibx) with the image")
	for _, n := range []string{"product", "hardware", "version", "security-version"} {
		publish.MarkFlagRequired(n)
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List releases",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			rels, err := c.Releases(cmd.Context(), "")
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "RELEASE\tCLASS\tSECURITY VERSION\tHARDWARE\tSIZE\tPUBLISHED")
			for _, r := range rels {
				fmt.Fprintf(tw, "%s@%s\t%s\t%d\t%s\t%d\t%s\n", r.Product, r.Version, r.Class, r.SecurityVersion, strings.Join(r.HardwareIDs, ","), r.Length, r.PublishedAt.Format(time.RFC3339))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			return targetsExpiryFooter(cmd, c)
		},
	}
	cmd.AddCommand(publish, list, resignTargetsCmd(g), releaseDeltasCmd(g))
	return cmd
}

// releaseDeltasCmd lists a release's per-pair deltas, asks the server to generate them, and signs
// the ones it generated where the offline key is (docs/DECISIONS.md, "Delta updates").
func releaseDeltasCmd(g *globals) *cobra.Command {
	var o client.DeltasOptions
	var keyPath, rootPath string
	var generate, sign bool
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "deltas PRODUCT@VERSION",
		Short: "List, generate and sign per-pair deltas to a release from the releases most of its devices run",
		Long: `The server generates per-pair deltas by itself after each publication: to each product's newest
release, from the --top releases its devices run most. Without flags this lists them for
PRODUCT@VERSION: source, devices running it, state, progress, patch size, whether signed.

--generate asks the server to plan them now (for any release, with --top and --min-devices).
--sign downloads each finished patch with both images (checked against the offline-signed
targets), applies it here and signs only a patch that rebuilds the signed image exactly, with
the offline targets key; --local makes here the ones the server has not finished. --wait waits
that long for the server's jobs to finish first. Devices assigned the release use a signed delta
from their next view.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if o.Product, o.Version, err = splitRelease(args[0]); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, out := cmd.Context(), cmd.OutOrStdout()
			if generate {
				if _, err := c.PlanDeltas(ctx, wire.DeltaPlanRequest{Product: o.Product, Version: o.Version, Top: o.Top, MinDevices: o.MinDevices}); err != nil {
					return err
				}
			}
			jobs, err := c.DeltaJobs(ctx, o.Product, o.Version)
			for deadline := time.Now().Add(wait); err == nil && pendingDeltas(jobs) && time.Now().Before(deadline); {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(min(time.Second, time.Until(deadline))):
				}
				jobs, err = c.DeltaJobs(ctx, o.Product, o.Version)
			}
			if err != nil {
				return err
			}
			if !sign {
				return printDeltaJobs(out, o, jobs)
			}
			if !o.DryRun {
				if o.TargetsKey, err = tuf.LoadKey(keyPath); err != nil {
					return err
				}
				if o.ProductKeys, _, err = tuf.LoadProductKeys(filepath.Dir(keyPath), o.Product); err != nil {
					return err
				}
			}
			if rootPath == "" {
				rootPath = filepath.Join(filepath.Dir(keyPath), tuf.FileImageRoot)
			}
			if o.TrustedRoot, err = os.ReadFile(rootPath); err != nil {
				return fmt.Errorf("trusted root: %w", err)
			}
			o.Expires = tuf.DefaultLifetimes().Targets
			made, err := c.PublishDeltas(ctx, o)
			if err != nil {
				return err
			}
			if len(made) == 0 {
				fmt.Fprintf(out, "no delta to sign: no other release of %s run by %d or more devices has a finished, unsigned one", o.Product, o.MinDevices)
				if !o.Local {
					fmt.Fprint(out, " (--local makes them here)")
				}
				fmt.Fprintln(out)
				return nil
			}
			verb := "signed"
			if o.DryRun {
				verb = "would sign"
			}
			for _, d := range made {
				where, size := "generated by the server", ""
				if d.Local {
					where = "made here"
				}
				if d.Length > 0 {
					size = ", " + show.Size(d.Length)
				}
				fmt.Fprintf(out, "%s %s from %s@%s, run by %d devices (%s%s)\n", verb, d.Target, o.Product, d.From, d.Devices, where, size)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&generate, "generate", false, "ask the server to plan the deltas to this release now")
	f.BoolVar(&sign, "sign", false, "check the server's finished patches by applying them, and sign them with the offline key")
	f.BoolVar(&o.Local, "local", false, "with --sign: make here the deltas the server has not finished")
	f.DurationVar(&wait, "wait", 0, "wait at most this long for the server's queued and running jobs")
	f.IntVar(&o.Top, "top", 3, "deltas from at most this many releases, those most devices run")
	f.IntVar(&o.MinDevices, "min-devices", 1, "only from releases at least this many devices run")
	f.BoolVar(&o.DryRun, "dry-run", false, "with --sign: say what would be signed, sign nothing")
	f.StringVar(&keyPath, "key", "keys/targets.key", "offline targets key")
	f.StringVar(&rootPath, "root", "", "trusted image root.json (default: root.json next to the key)")
	return cmd
}

func pendingDeltas(jobs []wire.DeltaJob) bool {
	return slices.ContainsFunc(jobs, func(j wire.DeltaJob) bool { return j.State == "queued" || j.State == "running" })
}

func printDeltaJobs(w io.Writer, o client.DeltasOptions, jobs []wire.DeltaJob) error {
	if len(jobs) == 0 {
		_, err := fmt.Fprintf(w, "no delta to %s@%s generated: none of its product's other releases is run by a device yet (--generate plans them now)\n", o.Product, o.Version)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FROM\tDEVICES\tSTATE\tPROGRESS\tPATCH\tSIGNED\tTARGET")
	for _, j := range jobs {
		progress, patch, signed := "", "", "no"
		if j.ImageLength > 0 {
			progress = fmt.Sprintf("%d%%", j.Done*100/j.ImageLength)
		}
		if j.PatchLength > 0 {
			patch = fmt.Sprintf("%s (%.1f%% of %s)", show.Size(j.PatchLength), float64(j.PatchLength)*100/float64(max(j.ImageLength, 1)), show.Size(j.ImageLength))
		}
		if j.Signed {
			signed = "yes"
		}
		state := j.State
		if j.Error != "" {
			state += ": " + show.Text(j.Error)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", j.From, j.Devices, state, progress, patch, signed, j.Target)
	}
	return tw.Flush()
}

func deployCmd(g *globals) *cobra.Command {
	var req wire.DeployRequest
	cmd := &cobra.Command{
		Use:   "deploy",
		Short: "Make the director assign a release to devices",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			resp, err := c.Deploy(cmd.Context(), req)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s assigned to %d devices\n", req.Release, resp.Assigned)
			for id, why := range resp.Skipped {
				fmt.Fprintf(cmd.OutOrStdout(), "  skipped %s: %s\n", show.Text(id), show.Text(why))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Release, "release", "", "product@version")
	cmd.Flags().StringSliceVar(&req.DeviceIDs, "device", nil, "device id (repeatable)")
	cmd.Flags().BoolVar(&req.All, "all", false, "every accepted device of the product")
	cmd.Flags().StringVar(&req.HardwareID, "hardware", "", "with --all: only this hardware id")
	cmd.MarkFlagRequired("release")
	return cmd
}

func devicesCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "devices", Short: "List, inspect, accept, reject and decommission devices"}
	var product string
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List devices with their installed version, state and last check-in",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ds, err := c.Devices(cmd.Context(), product)
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(ds)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "DEVICE\tKIND\tSTATUS\tPRODUCT\tHARDWARE\tINSTALLED\tSTATE\tASSIGNED\tLAST CHECK-IN\tLAST ERROR")
			for _, d := range ds {
				seen := "never"
				if !d.LastSeen.IsZero() {
					seen = time.Since(d.LastSeen).Truncate(time.Second).String() + " ago"
				}
				installed := d.Installed.Version
				if d.Simulated {
					installed += " (simulated)"
				}
				kind := d.Kind
				if kind == "ddi" {
					kind = "ddi (bundle signature only, no Uptane)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", show.Text(d.ID), show.Text(kind), show.Text(d.Status), show.Text(d.Product), show.Text(d.HardwareID),
					show.Text(installed), show.Text(d.State), show.Text(d.Assigned), seen, show.Text(d.LastError))
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&product, "product", "", "only this product")
	list.Flags().BoolVar(&asJSON, "json", false, "JSON output")
	var readmit bool
	accept := &cobra.Command{
		Use:   "accept ID",
		Short: "Admit a device that enrolled without a token (or was rejected; --readmit: was decommissioned)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			accept := c.Accept
			if readmit {
				accept = c.Readmit
			}
			if err := accept(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "device %s accepted: it gets a token at its next request\n", args[0])
			return nil
		},
	}
	accept.Flags().BoolVar(&readmit, "readmit", false, "also readmit a decommissioned device (with the same key)")
	events := &cobra.Command{
		Use:   "events ID",
		Short: "Show the update steps a device reported",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ev, err := c.Events(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tTARGET\tSTEP\tSTATUS\tFATAL\tMESSAGE")
			for _, e := range ev {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%t\t%s\n", e.Time.Format(time.RFC3339), show.Text(e.Target), show.Text(e.Step), show.Text(e.Status), e.Fatal, show.Text(e.Message))
			}
			return tw.Flush()
		},
	}
	var simulated bool
	remove := &cobra.Command{
		Use:   "remove --simulated",
		Short: "Remove the devices `upkeep simulate` enrolled, with their events and views",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !simulated {
				return fmt.Errorf("only simulated devices can be removed: give --simulated")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			n, err := c.RemoveSimulatedDevices(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d simulated devices removed\n", n)
			return nil
		},
	}
	remove.Flags().BoolVar(&simulated, "simulated", false, "remove every device enrolled by `upkeep simulate`")
	cmd.AddCommand(list, accept, events, remove, rejectCmd(g), decommissionCmd(g), ddiCreateCmd(g), ddiTokenCmd(g), ddiTokenRotateCmd(g), logsCmd(g))
	cmd.AddCommand(deviceShowCmd(g))
	return cmd
}

func productCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "product", Short: "Set and show products' support policies"}
	var pol product.Policy
	set := &cobra.Command{
		Use:   "set PRODUCT",
		Short: "Change a product's support policy: only the flags given change (the end date may be extended, never shortened)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			p, err := c.SetPolicy(cmd.Context(), args[0], policyPatch(cmd.Flags(), pol))
			if err != nil {
				return err
			}
			end := pol.SupportEnd
			if cur, err := product.ParsePolicy(p.Policy); err == nil {
				end = cur.SupportEnd
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: security updates until %s; its devices are told\n", p.Name, end)
			if p.Warning != "" {
				fmt.Fprintln(cmd.OutOrStdout(), "WARNING:", p.Warning)
			}
			return nil
		},
	}
	policyFlags(set.Flags(), &pol)
	list := &cobra.Command{
		Use:   "list",
		Short: "List products, with end-of-support warnings",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ps, err := c.Products(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PRODUCT\tPOLICY\tWARNING")
			for _, p := range ps {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", p.Name, p.Policy, p.Warning)
			}
			return tw.Flush()
		},
	}
	history := &cobra.Command{
		Use:   "history PRODUCT",
		Short: "Show every change of a product's support policy",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			h, err := c.PolicyHistory(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tACTOR\tFIELD\tOLD\tNEW")
			for _, e := range h {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.At.Format(time.RFC3339), e.Actor, e.Field, e.Old, e.New)
			}
			return tw.Flush()
		},
	}
	cmd.AddCommand(set, list, history)
	return cmd
}

// progress shows a long read (hashing, uploading) on w: a progress bar on a terminal, else one
// line per phase, so that a 1.5 GB publish never looks stuck.
func progress(w io.Writer) func(phase string, r io.Reader, size int64) io.Reader {
	return func(phase string, r io.Reader, size int64) io.Reader {
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			pr := progressbar.NewReader(r, progressbar.NewOptions64(size, progressbar.OptionSetDescription(phase), progressbar.OptionSetWriter(w),
				progressbar.OptionShowBytes(true), progressbar.OptionSetWidth(30), progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionShowCount(),
				progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }), progressbar.OptionFullWidth()))
			return &pr
		}
		fmt.Fprintf(w, "%s %s\n", phase, show.Size(size))
		return r
	}
}
