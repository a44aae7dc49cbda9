package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"upkeep.dev/upkeep/internal/agent/boot"
	"upkeep.dev/upkeep/internal/inventory"
	"upkeep.dev/upkeep/wire"
)

// Inventory defaults.
const (
	DefaultInventoryInterval = 24 * time.Hour
	DefaultInventoryTimeout  = 30 * time.Second
	// inventoryDigestFile holds the digest of the last inventory the server acknowledged.
	inventoryDigestFile = "inventory.digest"
)

// Built-in attribute keys (docs/OPERATIONS.md, "Inventory").
const (
	AttrOS          = "os"            // os-release PRETTY_NAME
	AttrOSID        = "os_id"         // os-release ID
	AttrOSVersionID = "os_version_id" // os-release VERSION_ID
	AttrKernel      = "kernel"        // the running kernel's release
	AttrArch        = "arch"          // GOARCH of the agent
	AttrAgent       = "agent_version" // Config.Version
	// AttrSlotFree is how many bytes an image written to the inactive slot may take (A/B
	// installer on slots it can measure).
	AttrSlotFree = "inactive_slot_free_bytes"
)

// osReleasePaths are read in turn for the OS release (os-release(5)); the kernel's release is
// read from kernelRelease. Tests point them elsewhere.
var (
	osReleasePaths = []string{"/etc/os-release", "/usr/lib/os-release"}
	kernelRelease  = "/proc/sys/kernel/osrelease"
)

// CollectInventory gathers the device's attributes: the built-in ones, then the output of every
// executable in cfg.InventoryDir, in name order (Mender's inventory-script format,
// internal/inventory). A script that fails, runs longer than cfg.InventoryTimeout, prints
// something unparsable or breaks a limit is left out and named in the errors; the others are
// kept. Non-executable files and folders are skipped.
func CollectInventory(ctx context.Context, cfg Config) (inventory.Attributes, []error) {
	cfg = cfg.withDefaults()
	attrs := builtinInventory(ctx, cfg)
	var errs []error
	if cfg.InventoryDir == "" {
		return attrs, nil
	}
	entries, err := os.ReadDir(cfg.InventoryDir)
	if errors.Is(err, fs.ErrNotExist) {
		return attrs, nil
	}
	if err != nil {
		return attrs, []error{fmt.Errorf("inventory scripts: %w", err)}
	}
	for _, e := range entries { // ReadDir sorts by name
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0 {
			continue
		}
		path := filepath.Join(cfg.InventoryDir, e.Name())
		got, err := runInventoryScript(ctx, path, cfg.InventoryTimeout)
		if err == nil {
			merged := cloneAttrs(attrs)
			if err = merged.Merge(got); err == nil {
				attrs = merged
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("inventory script %s: %w", path, err))
		}
	}
	return attrs, errs
}

func cloneAttrs(a inventory.Attributes) inventory.Attributes {
	out := make(inventory.Attributes, len(a))
	for k, v := range a {
		out[k] = slices.Clone(v)
	}
	return out
}

// limitedBuffer keeps at most max bytes and remembers that more came.
type limitedBuffer struct {
	bytes.Buffer
	max  int
	over bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); len(p) > room {
		b.over = true
		b.Buffer.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return b.Buffer.Write(p)
}

// runInventoryScript runs one script within timeout and parses what it prints.
func runInventoryScript(ctx context.Context, path string, timeout time.Duration) (inventory.Attributes, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path)
	cmd.WaitDelay = time.Second // a child that keeps the pipes open does not hold the agent
	out := &limitedBuffer{max: inventory.MaxScriptOutput}
	stderr := &limitedBuffer{max: 300}
	cmd.Stdout, cmd.Stderr = out, stderr
	err := cmd.Run()
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		return nil, fmt.Errorf("%w: ran longer than %s (the agent's --inventory-timeout)", inventory.ErrLimit, timeout)
	case err != nil && strings.TrimSpace(stderr.String()) != "":
		return nil, fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	case err != nil:
		return nil, err
	case out.over:
		return nil, fmt.Errorf("%w: printed more than %d bytes", inventory.ErrLimit, inventory.MaxTotal)
	}
	return inventory.Parse(&out.Buffer)
}

// builtinInventory is what the agent knows of its device without scripts.
func builtinInventory(ctx context.Context, cfg Config) inventory.Attributes {
	a := inventory.Attributes{}
	add := func(k, v string) {
		if v != "" {
			a.Add(k, v) //nolint:errcheck // a value that breaks a rule (too long) is left out
		}
	}
	for _, p := range osReleasePaths {
		if b, err := os.ReadFile(p); err == nil {
			rel := parseOSRelease(b)
			add(AttrOS, rel["PRETTY_NAME"])
			add(AttrOSID, rel["ID"])
			add(AttrOSVersionID, rel["VERSION_ID"])
			break
		}
	}
	if b, err := os.ReadFile(kernelRelease); err == nil {
		add(AttrKernel, strings.TrimSpace(string(b)))
	}
	add(AttrArch, runtime.GOARCH)
	add(AttrAgent, cfg.Version)
	if ab, ok := cfg.Installer.(*ABInstaller); ok {
		if fsl, ok := ab.Slots.(*boot.FileSlots); ok {
			if st, err := ab.Boot.State(ctx); err == nil {
				if n, err := fsl.Capacity(st.Booted.Other()); err == nil {
					add(AttrSlotFree, strconv.FormatInt(n, 10))
				}
			}
		}
	}
	return a
}

// parseOSRelease reads os-release(5): KEY=value lines, values optionally quoted.
func parseOSRelease(b []byte) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			if v[0] == '"' {
				if u, err := strconv.Unquote(v); err == nil {
					v = u
				} else {
					v = v[1 : len(v)-1]
				}
			} else {
				v = v[1 : len(v)-1]
			}
		}
		out[k] = v
	}
	return out
}

// AckedInventoryDigest is the digest of the last inventory the server acknowledged; empty if
// none was.
func AckedInventoryDigest(stateDir string) string {
	b, err := os.ReadFile(filepath.Join(stateDir, inventoryDigestFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// SyncInventory collects the inventory and sends it if its digest differs from the last one the
// server acknowledged. Failing scripts are logged and left out. It returns whether it sent.
//
// The attributes the device stated at enrolment (its identity) are kept in the set, under any
// key the probes and scripts do not give, since the inventory replaces the server's attributes.
func (a *Agent) SyncInventory(ctx context.Context) (bool, error) {
	attrs, errs := CollectInventory(ctx, a.cfg)
	for _, err := range errs {
		a.log.Warn("inventory script left out", "err", err)
	}
	for _, k := range slices.Sorted(maps.Keys(a.state.Identity.Attributes)) {
		if _, ok := attrs[k]; ok {
			continue // the scripts and built-in probes say what holds now
		}
		if err := attrs.Add(k, a.state.Identity.Attributes[k]); err != nil {
			a.log.Warn("enrolment attribute left out of the inventory", "key", k, "err", err)
		}
	}
	digest := attrs.Digest()
	if digest == AckedInventoryDigest(a.cfg.StateDir) {
		return false, nil
	}
	tok, err := a.token(ctx)
	if err != nil {
		return false, fmt.Errorf("inventory: %w", err)
	}
	resp, err := a.api.Inventory(ctx, tok, wire.Inventory{Attributes: attrs})
	if err != nil {
		return false, fmt.Errorf("inventory: %w", err)
	}
	if resp.Digest != digest {
		// The server stored something else (an older server that cleans values differently):
		// remember its digest, so the same set is not sent at every interval.
		a.log.Warn("inventory digest differs from the server's", "ours", digest, "server", resp.Digest)
	}
	if err := boot.WriteFileAtomic(filepath.Join(a.cfg.StateDir, inventoryDigestFile), []byte(digest+"\n"), 0o600); err != nil {
		return true, err
	}
	a.log.Info("inventory sent", "attributes", len(attrs), "digest", digest[:12])
	return true, nil
}

// inventoryTurn runs SyncInventory when it is due: at start, after an update, and every
// InventoryInterval. A failure to send is tried again at the next check-in (not before a
// Retry-After the server gave).
func (a *Agent) inventoryTurn(ctx context.Context) {
	t := time.Now()
	if a.cfg.Lightweight || t.Before(a.inventoryNext) || a.state.Status != "" && a.state.Status != "accepted" {
		return // off, not due, or pending: sent once the device is accepted
	}
	_, err := a.SyncInventory(ctx)
	if err == nil {
		a.inventoryNext = t.Add(a.cfg.InventoryInterval)
		return
	}
	var te *TransientError
	switch {
	case errors.Is(err, errNotAccepted):
		return // pending: sent once accepted
	case errors.As(err, &te):
		a.inventoryNext = t.Add(te.RetryAfter)
		a.log.Warn("inventory not sent, trying again at a later check-in", "err", err)
	default: // refused: the same set would be refused again
		a.inventoryNext = t.Add(a.cfg.InventoryInterval)
		a.log.Error("inventory refused", "err", err)
	}
}
