package sim

import (
	"context"
	"testing"

	"upkeep.dev/upkeep/internal/agent"
)

// TestMemInstallerTrialBoot: an installed image is only on trial once the device rebooted into
// it, and an image whose trial boot fails leaves the device on the previous one.
func TestMemInstallerTrialBoot(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		fail string
		want agent.Outcome
	}{{"", agent.OutcomeTrial}, {"health", agent.OutcomeTrial}, {"boot", agent.OutcomePrevious}} {
		m := &MemInstaller{current: "old", fail: func(string) string { return tc.fail }}
		img := &agent.Image{Target: "t", SHA256: "new"}
		if _, err := m.Install(ctx, img); err != nil {
			t.Fatal(err)
		}
		if o, _ := m.Outcome(ctx, img); o != agent.OutcomePrevious || m.Current() != "old" {
			t.Fatalf("fail=%q: before the reboot outcome %v, running %s; want the previous image", tc.fail, o, m.Current())
		}
		if err := m.Reboot(ctx); err != nil {
			t.Fatal(err)
		}
		if o, _ := m.Outcome(ctx, img); o != tc.want {
			t.Fatalf("fail=%q: after the reboot outcome %v, want %v", tc.fail, o, tc.want)
		}
		if (m.health(ctx) != nil) != (tc.fail == "health") {
			t.Fatalf("fail=%q: health check %v", tc.fail, m.health(ctx))
		}
	}
}
