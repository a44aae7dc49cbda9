package installpolicy

import (
	"testing"
	"time"
)

func TestWindows(t *testing.T) {
	at := func(h, m int) time.Time { return time.Date(2026, 11, 25, h, m, 0, 0, time.UTC) }
	tests := []struct {
		window string
		t      time.Time
		in     bool
	}{
		{"02:00-05:00", at(1, 59), false}, {"02:00-05:00", at(2, 0), true}, {"02:00-05:00", at(4, 59), true}, {"02:00-05:00", at(5, 0), false},
		{"22:00-04:00", at(23, 30), true}, {"22:00-04:00", at(3, 59), true}, {"22:00-04:00", at(4, 0), false}, {"22:00-04:00", at(12, 0), false},
		{"not a window", at(12, 0), true}, // no valid window: no restriction
	}
	for _, tt := range tests {
		if got := InWindow(tt.window, tt.t); got != tt.in {
			t.Errorf("InWindow(%s, %s) = %t", tt.window, tt.t.Format("15:04"), got)
		}
	}
	for _, bad := range []string{"", "2-5", "02:00", "02:00-02:00", "25:00-01:00", "02:00-05:60"} {
		if ValidWindow(bad) == nil {
			t.Errorf("ValidWindow(%q) accepted", bad)
		}
		if (&Policy{Window: bad}).Validate() == nil && bad != "" {
			t.Errorf("Policy{Window: %q}.Validate() accepted", bad)
		}
	}
	if start, end, err := ParseWindow(" 22:30 - 04:15 "); err != nil || start != 22*60+30 || end != 4*60+15 {
		t.Errorf("ParseWindow = %d, %d, %v", start, end, err)
	}
	var none *Policy
	if err := none.Validate(); err != nil {
		t.Errorf("nil policy: %v", err)
	}
}

func FuzzParseWindow(f *testing.F) {
	for _, s := range []string{"02:00-05:00", "22:00-04:00", "", "-", "02:00-02:00", "24:00-01:00", "1:2-3:4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		start, end, err := ParseWindow(s)
		if err != nil {
			return
		}
		if start < 0 || start >= 24*60 || end < 0 || end >= 24*60 || start == end {
			t.Fatalf("ParseWindow(%q) = %d, %d", s, start, end)
		}
	})
}
