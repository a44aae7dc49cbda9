package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/wire"
)

// 11. Another product's firmware: a release of another product, validly signed offline for the
// same hardware id (two products on one board). The server refuses to deploy it to the device;
// a compromised director that names it anyway is refused by the device, which checks the
// offline-signed product against its own identity.
func TestAttackOtherProductImage(t *testing.T) {
	t.Parallel()
	f := newAttackFixture(t, nil)
	file := filepath.Join(t.TempDir(), "doorbell-2.0.0.img")
	if err := os.WriteFile(file, image("2.0.0", 80<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	other, err := f.cli.Publish(f.ctx, client.PublishOptions{File: file, TargetsKey: f.targetsKey, TrustedRoot: f.imageRoot, Expires: 30 * 24 * time.Hour,
		Custom: uptane.TargetCustom{Product: "doorbell", HardwareIDs: []string{testHardware}, Version: "2.0.0", SecurityVersion: 9, Class: uptane.ClassSecurity}})
	if err != nil {
		t.Fatal(err)
	}

	_, err = f.cli.Deploy(f.ctx, wire.DeployRequest{Release: other.Product + "@" + other.Version, DeviceIDs: []string{f.id}})
	if apperr.CodeOf(err) != apperr.Invalid || !strings.Contains(apperr.Message(err), "product") {
		t.Fatalf("deploy of another product's release: %v, want a 4xx naming the product", err)
	}
	if d := f.fleetDevice(); d.Assigned != "" && d.Assigned != f.r100.Target {
		t.Fatalf("device assigned %s after a refused deploy", d.Assigned)
	}

	// Campaigns assign through the repository, which refuses too.
	rel, err := f.srv.DB.FindRelease(f.ctx, other.Product, other.Version)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.srv.Director.Assign(f.ctx, f.fleetDevice(), rel); apperr.CodeOf(err) != apperr.Invalid {
		t.Fatalf("Director.Assign of another product's release: %v, want invalid", err)
	}

	f.signDirector(other.Target, f.imageEntry(other.Target))
	err = f.dev.Agent.Cycle(f.ctx)
	f.requireRefused(err, uptane.ReasonProduct, wire.StepVerify, f.r100)
}
