package agent

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/installpolicy"
)

// TestInstallGate: the decision whether a downloaded image may be installed now, from its
// install policy, the owner's answer, the device's own window and a fake clock.
func TestInstallGate(t *testing.T) {
	at := func(h, m int) time.Time { return time.Date(2026, 11, 25, h, m, 0, 0, time.UTC) }
	tests := []struct {
		name      string
		pol       *installpolicy.Policy
		device    string // the device's own window
		consents  bool
		granted   bool // consent written by `upkeep-agent consent`
		optOut    bool // `upkeep-agent opt-out on`
		now       time.Time
		wantBlock string // "" installs now; else a substring of why not
	}{
		{name: "no policy: install", now: at(12, 0)},
		{name: "forced security update outside any window", pol: &installpolicy.Policy{}, now: at(12, 0)},
		{name: "consent asked, owner says no", pol: &installpolicy.Policy{Consent: true}, now: at(12, 0), wantBlock: "consent"},
		{name: "consent asked, owner says yes", pol: &installpolicy.Policy{Consent: true}, consents: true, now: at(12, 0)},
		{name: "consent granted on the command line", pol: &installpolicy.Policy{Consent: true}, granted: true, now: at(12, 0)},
		{name: "campaign window, inside", pol: &installpolicy.Policy{Window: "02:00-04:00"}, now: at(2, 0)},
		{name: "campaign window, at its end", pol: &installpolicy.Policy{Window: "02:00-04:00"}, now: at(4, 0), wantBlock: "maintenance window 02:00-04:00"},
		{name: "window across midnight, inside", pol: &installpolicy.Policy{Window: "23:00-01:00"}, now: at(0, 30)},
		// 2026-11-25 is a Wednesday.
		{name: "weekday window, its day", pol: &installpolicy.Policy{Window: "02:00-04:00", Days: "mon,wed"}, now: at(2, 30)},
		{name: "weekday window, another day", pol: &installpolicy.Policy{Window: "02:00-04:00", Days: "sat"}, now: at(2, 30), wantBlock: "02:00-04:00 UTC on sat"},
		{name: "weekdays with the device's own hours", pol: &installpolicy.Policy{Days: "sat"}, device: "02:00-04:00", now: at(2, 30), wantBlock: "on sat"},
		{name: "critical campaign waives the days", pol: &installpolicy.Policy{Window: "02:00-04:00", Days: "sat", IgnoreWindow: true}, now: at(12, 0)},
		{name: "device's own window, outside", pol: &installpolicy.Policy{}, device: "02:00-04:00", now: at(12, 0), wantBlock: "maintenance window 02:00-04:00"},
		{name: "campaign window overrides the device's", pol: &installpolicy.Policy{Window: "11:00-13:00"}, device: "02:00-04:00", now: at(12, 0)},
		{name: "critical campaign waives the window", pol: &installpolicy.Policy{IgnoreWindow: true}, device: "02:00-04:00", now: at(12, 0)},
		{name: "waiver does not waive consent", pol: &installpolicy.Policy{IgnoreWindow: true, Consent: true}, device: "02:00-04:00", now: at(12, 0), wantBlock: "consent"},
		{name: "consent given, then the window", pol: &installpolicy.Policy{Consent: true}, consents: true, device: "02:00-04:00", now: at(12, 0), wantBlock: "maintenance window"},
		{name: "opted out: a security update waits for consent", pol: &installpolicy.Policy{}, optOut: true, now: at(12, 0), wantBlock: "opted out"},
		{name: "opted out: a critical campaign waits for consent too", pol: &installpolicy.Policy{IgnoreWindow: true}, optOut: true, now: at(12, 0), wantBlock: "consent"},
		{name: "opted out: no policy waits for consent", optOut: true, now: at(12, 0), wantBlock: "consent"},
		{name: "opted out, owner says yes", pol: &installpolicy.Policy{}, optOut: true, consents: true, now: at(12, 0)},
		{name: "opted out, consent granted on the command line", pol: &installpolicy.Policy{}, optOut: true, granted: true, now: at(12, 0)},
		{name: "opted out, consent given, then the window", pol: &installpolicy.Policy{}, optOut: true, consents: true, device: "02:00-04:00", now: at(12, 0), wantBlock: "maintenance window"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			img := &Image{Target: "p/1.1/fw", SHA256: "ab", Install: tt.pol}
			a := &Agent{log: slog.New(slog.NewTextHandler(io.Discard, nil)), state: &State{Pending: img, Phase: PhaseDownloaded},
				cfg: Config{StateDir: dir, Window: tt.device, Now: func() time.Time { return tt.now },
					Consent: func(context.Context, Image) (bool, error) { return tt.consents, nil }}}
			if err := saveState(dir, a.state); err != nil {
				t.Fatal(err)
			}
			if err := SetOptOut(dir, tt.optOut); err != nil {
				t.Fatal(err)
			}
			if tt.granted {
				a.cfg.Consent = nil
				if _, err := GrantConsent(dir); err != nil {
					t.Fatal(err)
				}
			}
			got := a.gate(context.Background(), img)
			if (got == "") != (tt.wantBlock == "") || tt.wantBlock != "" && !strings.Contains(got, tt.wantBlock) {
				t.Fatalf("gate = %q, want %q", got, tt.wantBlock)
			}
		})
	}
}
