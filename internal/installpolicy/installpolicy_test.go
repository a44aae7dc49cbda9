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

// TestWeekdayWindows: a window that recurs on chosen weekdays (UTC); the part after midnight of a
// window spanning it belongs to the day it opened.
func TestWeekdayWindows(t *testing.T) {
	// 2026-11-23 is a Monday.
	day := func(d, h, m int) time.Time { return time.Date(2026, 11, 23+d, h, m, 0, 0, time.UTC) }
	const mon, tue, wed, sat, sun = 0, 1, 2, 5, 6
	tests := []struct {
		name, window, days string
		t                  time.Time
		in                 bool
	}{
		{"allowed day, inside", "02:00-04:00", "mon,wed,sat", day(mon, 2, 30), true},
		{"allowed day, before", "02:00-04:00", "mon,wed,sat", day(mon, 1, 59), false},
		{"allowed day, at the end", "02:00-04:00", "mon,wed,sat", day(wed, 4, 0), false},
		{"other day, inside the hours", "02:00-04:00", "mon,wed,sat", day(tue, 2, 30), false},
		{"Saturday", "02:00-04:00", "mon,wed,sat", day(sat, 3, 59), true},
		{"Sunday", "02:00-04:00", "mon,wed,sat", day(sun, 3, 0), false},
		{"spanning midnight, evening of the day", "23:00-01:00", "sat", day(sat, 23, 30), true},
		{"spanning midnight, morning after", "23:00-01:00", "sat", day(sun, 0, 30), true},
		{"spanning midnight, morning of the day", "23:00-01:00", "sat", day(sat, 0, 30), false},
		{"spanning midnight, evening after", "23:00-01:00", "sat", day(sun, 23, 30), false},
		{"no days: every day", "02:00-04:00", "", day(tue, 2, 30), true},
		{"no window: the whole day", "", "tue", day(tue, 12, 0), true},
		{"no window, other day", "", "tue", day(wed, 12, 0), false},
		{"case and spaces", "02:00-04:00", " Mon , SAT ", day(sat, 2, 0), true},
		{"bad days allow nothing", "02:00-04:00", "funday", day(mon, 2, 30), false},
	}
	for _, tt := range tests {
		if got := InWindowOn(tt.window, tt.days, tt.t); got != tt.in {
			t.Errorf("%s: InWindowOn(%q, %q, %s) = %t", tt.name, tt.window, tt.days, tt.t.Format("Mon 15:04"), got)
		}
	}
	if CanonicalDays("sat, MON,wed,mon") != "mon,wed,sat" {
		t.Errorf("CanonicalDays = %q", CanonicalDays("sat, MON,wed,mon"))
	}
	if (&Policy{Window: "02:00-04:00", Days: "mon,xyz"}).Validate() == nil {
		t.Error("a policy with a bad weekday validated")
	}
	p := &Policy{Window: "02:00-04:00", Days: "sat"}
	if p.Allows(day(tue, 3, 0)) || !p.Allows(day(sat, 3, 0)) || !(&Policy{Window: "02:00-04:00", Days: "sat", IgnoreWindow: true}).Allows(day(tue, 12, 0)) {
		t.Error("Policy.Allows ignores the days or the waiver")
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
