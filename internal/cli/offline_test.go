package cli

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/wire"
)

// requireExpiredRefusal checks that a device refused metadata because it expired.
func requireExpiredRefusal(t *testing.T, err error) {
	t.Helper()
	var ve *uptane.VerificationError
	var exp *metadata.ErrExpiredMetadata
	if !errors.As(err, &ve) || ve.Reason != uptane.ReasonExpired || !errors.As(err, &exp) {
		t.Fatalf("device refresh: %v, want an %q verification failure wrapping go-tuf's", err, uptane.ReasonExpired)
	}
}

// TestDirectorRootResigned: once the director root expires every device fails every refresh;
// `keys resign-director-root` signs the next version offline and the devices follow it, with
// the same key or a new one.
func TestDirectorRootResigned(t *testing.T) {
	ctx := context.Background()
	e := newEnvWith(t, func(c *server.Config) {
		// A director root that has already expired, as a year-old key set would have.
		rk, err := tuf.LoadKey(filepath.Join(c.KeysDir, tuf.FileDirectorRootKey))
		if err != nil {
			t.Fatal(err)
		}
		dk, err := tuf.LoadKey(filepath.Join(c.KeysDir, tuf.FileDirectorKey))
		if err != nil {
			t.Fatal(err)
		}
		r, err := tuf.NewRoot([]*tuf.Key{rk}, 1, dk, dk, dk, time.Now().Add(-time.Hour), true)
		if err != nil {
			t.Fatal(err)
		}
		b, err := r.ToBytes(true)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(c.KeysDir, tuf.FileDirectorRoot), b, 0o644); err != nil {
			t.Fatal(err)
		}
	})
	g := []string{"--server", e.srv.URL, "--token", e.srv.AdminToken}
	v100 := image("1.0.0", 64<<10)
	r100 := e.publish("1.0.0", 1, v100)
	d := e.device("SN-1", v100, r100)
	requireExpiredRefusal(t, d.Agent.Update(ctx))
	if out := cli(t, append(g, "keys", "status")...); !strings.Contains(out, "director root") || !strings.Contains(out, "EXPIRED") || !strings.Contains(out, "resign-director-root") {
		t.Fatalf("keys status does not show the expired director root:\n%s", out)
	}

	out := cli(t, append(g, "keys", "resign-director-root", "--dir", e.keys)...)
	if !strings.Contains(out, "director root version 2 uploaded") {
		t.Fatalf("resign-director-root: %s", out)
	}
	if err := d.Agent.Update(ctx); err != nil {
		t.Fatalf("refresh after the director root was re-signed: %v", err)
	}
	r101 := e.publish("1.0.1", 2, image("1.0.1", 70<<10))
	e.deploy(r101, d.Agent.State().DeviceID)
	if err := d.Agent.Cycle(ctx); err != nil || d.Agent.State().Installed.Version != "1.0.1" {
		t.Fatalf("update under director root 2: %v, device %+v", err, d.Agent.State().Installed)
	}

	// A new director-root key: the old one is archived only after the server took the root.
	oldKey := e.read(tuf.FileDirectorRootKey)
	out = cli(t, append(g, "keys", "resign-director-root", "--dir", e.keys, "--new-key")...)
	if !strings.Contains(out, "director root version 3 uploaded") {
		t.Fatalf("resign-director-root --new-key: %s", out)
	}
	if string(e.read(tuf.FileDirectorRootKey)) == string(oldKey) {
		t.Fatal("director-root.key was not replaced")
	}
	if b, err := os.ReadFile(filepath.Join(e.keys, "retired-director-root-v2", tuf.FileDirectorRootKey)); err != nil || string(b) != string(oldKey) {
		t.Fatalf("old director-root key not archived: %v", err)
	}
	r102 := e.publish("1.0.2", 3, image("1.0.2", 72<<10))
	e.deploy(r102, d.Agent.State().DeviceID)
	if err := d.Agent.Cycle(ctx); err != nil || d.Agent.State().Installed.Version != "1.0.2" {
		t.Fatalf("update under director root 3: %v, device %+v", err, d.Agent.State().Installed)
	}
	// The next re-signing is made with the new key, along the chain 1 → 2 → 3.
	if out := cli(t, append(g, "keys", "resign-director-root", "--dir", e.keys)...); !strings.Contains(out, "version 4") {
		t.Fatalf("resign-director-root with the new key: %s", out)
	}

	// A root that does not trust the server's director key would cut every device off.
	cur, err := e.cli.LatestDirectorRoot(ctx, e.directorRoot)
	if err != nil {
		t.Fatal(err)
	}
	rk, err := tuf.LoadKey(filepath.Join(e.keys, tuf.FileDirectorRootKey))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := tuf.GenerateKey()
	cur.Signed.Roles[tuf.Targets].KeyIDs = []string{other.ID}
	cur.Signed.Keys[other.ID] = other.Public()
	bad, err := tuf.RotateRoot(cur, []*tuf.Key{rk}, []*tuf.Key{rk}, 1, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.cli.RotateDirectorRoot(ctx, bad); err == nil || !strings.Contains(err.Error(), "director key") {
		t.Fatalf("a director root without the online director key: %v, want refused", err)
	}
}

// TestImageTargetsResigned: expired image targets stop every device; `release resign-targets`
// renews them without a release, and a publish on top of expired targets works too.
func TestImageTargetsResigned(t *testing.T) {
	ctx := context.Background()
	clock := &shiftClock{}
	e := newEnvWith(t, func(c *server.Config) { c.Now = clock.Now })
	g := []string{"--server", e.srv.URL, "--token", e.srv.AdminToken}
	expire := func(publish func()) { // targets signed an hour ago, now expired
		t.Helper()
		clock.Shift(-2 * time.Hour)
		publish()
		clock.Shift(0)
	}
	v100 := image("1.0.0", 64<<10)
	f100 := filepath.Join(t.TempDir(), "fw-1.0.0.img")
	if err := os.WriteFile(f100, v100, 0o644); err != nil {
		t.Fatal(err)
	}
	var r100 *wire.Release
	expire(func() {
		var err error
		r100, err = e.cli.Publish(ctx, client.PublishOptions{File: f100, TargetsKey: e.targetsKey, TrustedRoot: e.imageRoot, Expires: -time.Hour,
			Custom: uptane.TargetCustom{Product: testProduct, HardwareIDs: []string{testHardware}, Version: "1.0.0", SecurityVersion: 1, Class: uptane.ClassSecurity}})
		if err != nil {
			t.Fatal(err)
		}
	})
	d := e.device("SN-1", v100, r100)
	requireExpiredRefusal(t, d.Agent.Update(ctx))
	if out := cli(t, append(g, "release", "list")...); !strings.Contains(out, "image targets version 2") || !strings.Contains(out, "EXPIRED") {
		t.Fatalf("release list does not show the expired targets:\n%s", out)
	}

	out := cli(t, append(g, "release", "resign-targets", "--key", filepath.Join(e.keys, tuf.FileTargetsKey))...)
	if !strings.Contains(out, "image targets version 3 uploaded") {
		t.Fatalf("resign-targets: %s", out)
	}
	if err := d.Agent.Update(ctx); err != nil {
		t.Fatalf("refresh after the targets were re-signed: %v", err)
	}
	if out := cli(t, append(g, "keys", "status")...); strings.Contains(out, "EXPIRED") {
		t.Fatalf("keys status after re-signing:\n%s", out)
	}

	// Expired again: a publish signs on top of them (their signatures still hold).
	expire(func() {
		if _, _, err := e.cli.ResignTargets(ctx, client.ResignOptions{TargetsKey: e.targetsKey, TrustedRoot: e.imageRoot, Expires: -time.Hour}); err != nil {
			t.Fatal(err)
		}
	})
	requireExpiredRefusal(t, d.Agent.Update(ctx))
	r101 := e.publish("1.0.1", 2, image("1.0.1", 70<<10))
	e.deploy(r101, d.Agent.State().DeviceID)
	if err := d.Agent.Cycle(ctx); err != nil || d.Agent.State().Installed.Version != "1.0.1" {
		t.Fatalf("update after publishing on top of expired targets: %v, device %+v", err, d.Agent.State().Installed)
	}

	// Re-signing may not change the targets: a release cannot be slipped in this way.
	if err := e.srv.Images.ResignTargets(ctx, []byte(`{}`)); err == nil {
		t.Fatal("ResignTargets accepted garbage")
	}
}

// lockedBuffer collects log output written from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestOfflineExpiryWarning: the server warns, once a day for each, about offline-signed metadata
// that expires within 30 days.
func TestOfflineExpiryWarning(t *testing.T) {
	ctx := context.Background()
	clock := &shiftClock{}
	var logs lockedBuffer
	e := newEnvWith(t, func(c *server.Config) {
		c.Now = clock.Now
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	const msg = "offline-signed metadata expires soon"
	warned := map[string]time.Time{}
	if err := e.srv.Images.WarnExpiring(ctx, warned); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), msg); n != 0 {
		t.Fatalf("%d warnings for a fresh key set", n)
	}
	clock.Shift(340 * 24 * time.Hour)
	for range 2 {
		if err := e.srv.Images.WarnExpiring(ctx, warned); err != nil {
			t.Fatal(err)
		}
	}
	out := logs.String()
	if n := strings.Count(out, msg); n != 3 {
		t.Fatalf("%d warnings 25 days before expiry, want 3 (image root, image targets, director root), once each:\n%s", n, out)
	}
	for _, want := range []string{"upkeep keys rotate-root", "upkeep release resign-targets", "upkeep keys resign-director-root"} {
		if !strings.Contains(out, want) {
			t.Errorf("the warnings do not name %q", want)
		}
	}
	clock.Shift(341*24*time.Hour + time.Minute)
	if err := e.srv.Images.WarnExpiring(ctx, warned); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), msg); n != 6 {
		t.Fatalf("%d warnings after another day, want 6", n)
	}
}
