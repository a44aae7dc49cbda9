package faillog

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/wire"
)

func gz(t testing.TB, raw []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(raw)
	zw.Close()
	return buf.Bytes()
}

func bundle(t testing.TB, b wire.LogBundle) []byte {
	raw, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return gz(t, raw)
}

func TestParse(t *testing.T) {
	good := wire.LogBundle{Step: wire.StepInstall, Target: "fw-1.0.1.img", Message: "exit 1", Output: "boom\n", AgentLog: []string{"a", "b"}}
	got, err := Parse(bundle(t, good))
	if err != nil {
		t.Fatal(err)
	}
	if got.Output != "boom\n" || len(got.AgentLog) != 2 {
		t.Errorf("got %+v", got)
	}
	bomb := gz(t, append(append([]byte(`{"step":"install","output":"`), bytes.Repeat([]byte("a"), wire.MaxLogBundleExpanded)...), `"}`...))
	for name, tc := range map[string]struct {
		body []byte
		code apperr.Code
	}{
		"not gzip":     {[]byte("{}"), apperr.Invalid},
		"no step":      {bundle(t, wire.LogBundle{Output: "x"}), apperr.Invalid},
		"unknown step": {bundle(t, wire.LogBundle{Step: "nope"}), apperr.Invalid},
		"extra field":  {gz(t, []byte(`{"step":"install","x":1}`)), apperr.Invalid},
		"trailing":     {gz(t, []byte(`{"step":"install"}{}`)), apperr.Invalid},
		"too long":     {bytes.Repeat([]byte{1}, wire.MaxLogBundle+1), apperr.TooLarge},
		"bomb":         {bomb, apperr.TooLarge},
		"many lines":   {bundle(t, wire.LogBundle{Step: "health", AgentLog: make([]string, MaxLines+1)}), apperr.Invalid},
		"long line":    {bundle(t, wire.LogBundle{Step: "health", AgentLog: []string{strings.Repeat("x", MaxLineLen+1)}}), apperr.Invalid},
	} {
		_, err := Parse(tc.body)
		if !apperr.Is(err, tc.code) {
			t.Errorf("%s: %v, want %s", name, err, tc.code)
		}
	}
}

func TestAllow(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := &Service{PerHour: 2, Now: func() time.Time { return now }}
	for i := range 2 {
		if ok, _ := s.Allow("d"); !ok {
			t.Fatalf("upload %d refused", i)
		}
	}
	ok, wait := s.Allow("d")
	if ok || wait != time.Hour {
		t.Fatalf("third upload: %v %s, want refused for an hour", ok, wait)
	}
	if ok, _ := s.Allow("other"); !ok {
		t.Fatal("another device refused")
	}
	now = now.Add(time.Hour)
	if ok, _ := s.Allow("d"); !ok {
		t.Fatal("refused after an hour")
	}
}

// FuzzParse: whatever a device sends, Parse answers a bundle within the bounds or an apperr.
func FuzzParse(f *testing.F) {
	f.Add(bundle(f, wire.LogBundle{Step: wire.StepInstall, Output: "boom", AgentLog: []string{"line"}}))
	f.Add(gz(f, []byte(`{"step":"health","agent_log":["a"],"truncated":true}`)))
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff})
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, body []byte) {
		b, err := Parse(body)
		if err != nil {
			if !apperr.Is(err, apperr.Invalid) && !apperr.Is(err, apperr.TooLarge) {
				t.Fatalf("error of no apperr code: %v", err)
			}
			return
		}
		if b.Step == "" || len(b.AgentLog) > MaxLines || len(b.Output) > MaxOutput {
			t.Fatalf("out of bounds: %+v", b)
		}
	})
}
