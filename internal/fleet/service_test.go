package fleet_test

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/store/postgres"
	"upkeep.dev/upkeep/internal/store/sqlite"
	"upkeep.dev/upkeep/internal/store/storetest"
	"upkeep.dev/upkeep/wire"
)

func TestReportTextSQLite(t *testing.T) {
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "upkeep.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	testReportText(t, db)
}

func TestReportTextPostgres(t *testing.T) {
	db, err := postgres.Open(context.Background(), storetest.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	testReportText(t, db)
}

// testReportText: device-supplied text with NUL bytes, invalid UTF-8, or a multi-byte
// character across the message limit is stored (cleaned), not refused by the database, which
// the device would take as a reason to resend the report for ever.
func testReportText(t *testing.T, st fleet.Store) {
	ctx := context.Background()
	s := &fleet.Service{Store: st, Tokens: auth.DeviceTokens{Key: make([]byte, 32), TTL: time.Hour}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	pub, priv, _ := ed25519.GenerateKey(nil)
	payload, _ := json.Marshal(wire.EnrollPayload{PublicKey: hex.EncodeToString(pub), Time: time.Now(),
		Identity:  wire.Identity{Serial: "SN-1", Product: "thermostat", HardwareID: "tstat-v2"},
		Installed: wire.Installed{Target: "thermostat/1.0.0/fw\x00.img", Version: "1.0\xff", SecurityVersion: 1}})
	resp, err := s.Enroll(ctx, wire.SignedRequest{Payload: payload, Signature: hex.EncodeToString(ed25519.Sign(priv, payload))}, "")
	if err != nil {
		t.Fatalf("enrol with NUL and invalid UTF-8 in installed fields: %v", err)
	}
	long := strings.Repeat("a", 1023) + "é and more" // é straddles byte 1024
	err = s.Report(ctx, resp.DeviceID, wire.Report{State: "idle\x00", Installed: wire.Installed{Target: "t\xc3", Version: "1.0.1\x00"},
		Events: []wire.Event{
			{Step: wire.StepVerify, Status: wire.StatusFailed, Message: long},
			{Step: "down\x00load", Status: "ok\xfe", Target: "thermostat/1.0.1/fw\x00.img", Message: "bad \xff byte and \x00 NUL"},
		}})
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	ev, err := st.FindEvents(ctx, resp.DeviceID, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(ev) != 2 {
		t.Fatalf("%d events stored, want 2", len(ev))
	}
	d, err := st.FindDevice(ctx, resp.DeviceID)
	if err != nil {
		t.Fatal(err)
	}
	texts := []string{d.State, d.InstalledTarget, d.InstalledVer, d.LastError}
	for _, e := range ev {
		texts = append(texts, e.Step, e.Status, e.Target, e.Message)
		if len(e.Message) > 1024 {
			t.Errorf("message of %d bytes stored", len(e.Message))
		}
	}
	for _, s := range texts {
		if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
			t.Errorf("stored %q: invalid UTF-8 or NUL", s)
		}
	}
	want := map[string]bool{strings.Repeat("a", 1023): true, "bad \uFFFD byte and  NUL": true}
	for _, e := range ev {
		if !want[e.Message] {
			t.Errorf("stored message %.40q..., want it cut on a character boundary or cleaned", e.Message)
		}
	}
	if d.State != "idle" || d.InstalledVer != "1.0.1" {
		t.Errorf("device state %q installed version %q", d.State, d.InstalledVer)
	}
}
