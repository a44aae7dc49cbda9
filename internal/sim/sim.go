// Package sim runs simulated devices: the real agent code with file-backed A/B slots and a
// file-backed simulated boot loader, in-process. The demo and the end-to-end tests use it.
package sim

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"upkeep.dev/upkeep/internal/agent"
	"upkeep.dev/upkeep/internal/agent/boot"
	"upkeep.dev/upkeep/internal/devclient"
	"upkeep.dev/upkeep/wire"
)

// Options describe one simulated device.
type Options struct {
	Server       string
	EnrollToken  string
	Identity     wire.Identity
	ImageRoot    []byte
	DirectorRoot []byte
	// Factory is the image in slot A at first power-on, with its facts.
	Factory        []byte
	FactoryTarget  string
	FactoryVersion string
	FactorySecVer  int64
	HTTP           *http.Client
	Logger         *slog.Logger
	// PollInterval is the agent's poll interval before the server suggests one.
	PollInterval time.Duration
	// Health is the device's post-boot health check; nil is always healthy.
	Health func(ctx context.Context) error
	// HealthImage, if set, checks the first 64 bytes of the booted image instead (a demo image
	// can carry a marker that makes it "crash").
	HealthImage func(header []byte) error
}

// Device is one simulated device.
type Device struct {
	Dir   string
	Boot  *boot.Sim
	Slots *boot.FileSlots
	Agent *agent.Agent
	cfg   agent.Config
}

// NewDevice powers on a new device in dir, enrols it and starts its agent.
func NewDevice(ctx context.Context, dir string, o Options) (*Device, error) {
	bl, err := boot.NewSim(filepath.Join(dir, "bootenv.json"))
	if err != nil {
		return nil, err
	}
	slots, err := boot.NewFileSlots(filepath.Join(dir, "slots"))
	if err != nil {
		return nil, err
	}
	w, err := slots.Create(ctx, boot.SlotA)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(w, bytes.NewReader(o.Factory)); err != nil {
		w.Abort()
		return nil, fmt.Errorf("factory image: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(o.Factory)
	d := &Device{Dir: dir, Boot: bl, Slots: slots}
	if o.HealthImage != nil {
		o.Health = func(ctx context.Context) error {
			st, err := bl.State(ctx)
			if err != nil {
				return err
			}
			r, err := slots.Open(ctx, st.Booted)
			if err != nil {
				return err
			}
			defer r.Close()
			head := make([]byte, 64)
			n, _ := io.ReadFull(r, head)
			return o.HealthImage(head[:n])
		}
	}
	d.cfg = agent.Config{StateDir: filepath.Join(dir, "state"), Bootloader: bl, Slots: slots, HTTP: o.HTTP, Logger: o.Logger, Health: o.Health, PollInterval: o.PollInterval}
	// Like a device on its first boot, enrolment is tried again while the server is busy (429
	// past the per-address bound when many devices start at once), after its Retry-After.
	for {
		_, err := agent.Enroll(ctx, d.cfg, agent.EnrollOptions{
			Server: o.Server, EnrollToken: o.EnrollToken, Identity: o.Identity, ImageRoot: o.ImageRoot, DirectorRoot: o.DirectorRoot,
			Installed: agent.Image{Target: o.FactoryTarget, Version: o.FactoryVersion, SecurityVersion: o.FactorySecVer, SHA256: hex.EncodeToString(sum[:]), Slot: boot.SlotA},
		})
		var te *devclient.TransientError
		if err == nil {
			break
		}
		if !errors.As(err, &te) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(min(max(te.RetryAfter, 100*time.Millisecond), 5*time.Second)):
		}
	}
	if d.Agent, err = agent.New(ctx, d.cfg); err != nil {
		return nil, err
	}
	return d, nil
}

// PowerCycle simulates a power cut and restart: the boot loader runs, then a fresh agent
// resumes from its journal.
func (d *Device) PowerCycle(ctx context.Context) error {
	if err := d.Boot.PowerOn(ctx); err != nil {
		return err
	}
	a, err := agent.New(ctx, d.cfg)
	if err != nil {
		return err
	}
	d.Agent = a
	return nil
}

// ActiveImageSHA256 hashes the image in the slot the device booted.
func (d *Device) ActiveImageSHA256(ctx context.Context) (string, error) {
	st, err := d.Boot.State(ctx)
	if err != nil {
		return "", err
	}
	r, err := d.Slots.Open(ctx, st.Booted)
	if err != nil {
		return "", err
	}
	defer r.Close()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Image makes a deterministic pseudo-random image of size bytes that starts with its version.
func Image(version string, size int) []byte {
	b := make([]byte, size)
	seed := uint32(2166136261)
	for _, c := range version {
		seed = (seed ^ uint32(c)) * 16777619
	}
	for i := range b {
		seed ^= seed << 13
		seed ^= seed >> 17
		seed ^= seed << 5
		b[i] = byte(seed)
	}
	copy(b, "UPKEEP-DEMO-IMAGE "+version+"\n")
	return b
}

// TempDir is /dev/shm when there is one (thousands of simulated journals then cost no disk
// syncs), else the default temporary folder.
func TempDir() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		return "/dev/shm"
	}
	return ""
}
