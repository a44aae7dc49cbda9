package show

import (
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/wire"
)

func TestText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"download failed: connection reset", "download failed: connection reset"},
		{"café ✓ 日本", "café ✓ 日本"},
		{"\x1b[2J\x1b[31mok", `\x1b[2J\x1b[31mok`},
		{"\x1b]0;pwned\x07title", `\x1b]0;pwned\x07title`},
		{"all good\rFAILED", `all good\x0dFAILED`},
		{"bell\a", `bell\x07`},
		{"a\tb\nc", `a\x09b\x0ac`},
		{"del\x7f", `del\x7f`},
		{"c1 \u009b31m", `c1 \x9b31m`},
		{"invoice\u202egpj.exe", `invoice\u202egpj.exe`},
		{"\u2066isolate\u2069 \u200fmark \u200bzw", `\u2066isolate\u2069 \u200fmark \u200bzw`},
		{"line\u2028sep", `line\u2028sep`},
		{"bad \xff utf8", "bad \uFFFD utf8"},
	} {
		if got := Text(tc.in); got != tc.want {
			t.Errorf("Text(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestCampaignStatusEscapesDeviceText: failure details and timeline entries carry what devices
// reported; none of it reaches the terminal as control characters.
func TestCampaignStatusEscapesDeviceText(t *testing.T) {
	evil := "health check failed\x1b[2K\r\a\u202eKO"
	var b strings.Builder
	CampaignStatus(&b, &wire.CampaignStatus{
		Campaign: wire.Campaign{ID: "c1", Release: "p@1", State: "paused", PauseReason: evil},
		Failed:   []wire.CampaignMember{{DeviceID: "d1", Wave: 1, Detail: evil}},
		Waiting:  []wire.CampaignMember{{DeviceID: "d2", Wave: 1, Detail: evil}},
		Timeline: []wire.AuditEntry{{Time: time.Now(), Actor: "engine", Action: "paused", Detail: evil}},
	})
	out := b.String()
	if strings.ContainsAny(out, "\x1b\r\a\u202e") {
		t.Fatalf("campaign status prints control characters: %q", out)
	}
	if strings.Count(out, `\x1b[2K\x0d\x07\u202eKO`) != 4 {
		t.Errorf("device text not shown escaped four times: %q", out)
	}
}

func TestSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 3 << 20: "3.0 MiB", 5 << 30: "5.0 GiB"} {
		if got := Size(n); got != want {
			t.Errorf("Size(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestCampaignDownloads: the bytes deltas saved, and no negative saving when the devices fetched
// whole images and a little more.
func TestCampaignDownloads(t *testing.T) {
	for _, tc := range []struct {
		d    wire.CampaignDownload
		want string
	}{
		{wire.CampaignDownload{Devices: 2, Bytes: 100 << 10, ImageBytes: 1 << 20}, "(90.2% saved by delta updates)"},
		{wire.CampaignDownload{Devices: 2, Bytes: 513 << 10, ImageBytes: 512 << 10}, "(nothing saved by delta updates)"},
	} {
		var b strings.Builder
		CampaignStatus(&b, &wire.CampaignStatus{Download: &tc.d})
		if !strings.Contains(b.String(), tc.want) {
			t.Errorf("%+v: want %q in\n%s", tc.d, tc.want, b.String())
		}
	}
}
