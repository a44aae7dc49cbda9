package storetest

import (
	"fmt"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/faillog"
	"upkeep.dev/upkeep/internal/fleet"
)

// Failure log bundles: newest first, the latest alone, retention by count and age, and the
// bundles of removed devices.
func testDeviceLogs(t *testing.T, s Store) {
	for _, id := range []string{"l1", "l2"} {
		if err := s.CreateDevice(ctx, &fleet.Device{ID: id, PublicKey: []byte(id), Serial: "SN", Product: "p", HardwareID: "h", Status: fleet.StatusAccepted, EnrolledAt: t0}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		l := &faillog.Log{DeviceID: "l1", ReceivedAt: t0.Add(time.Duration(i) * time.Hour), Target: fmt.Sprintf("t%d", i), Step: "install", Data: []byte{byte(i), 0, 1}}
		if err := s.CreateDeviceLog(ctx, l); err != nil {
			t.Fatal(err)
		}
		if l.ID == 0 {
			t.Fatal("no id set")
		}
	}
	if err := s.CreateDeviceLog(ctx, &faillog.Log{DeviceID: "gone", ReceivedAt: t0.Add(4 * time.Hour), Step: "health", Data: []byte{9}}); err != nil {
		t.Fatal(err)
	}
	ls, err := s.FindDeviceLogs(ctx, "l1", 1)
	if err != nil || len(ls) != 1 || ls[0].Target != "t4" || ls[0].Data[0] != 4 || !ls[0].ReceivedAt.Equal(t0.Add(4*time.Hour)) {
		t.Fatalf("latest: %+v, %v", ls, err)
	}
	if ls, err := s.FindDeviceLogs(ctx, "l2", 0); err != nil || len(ls) != 0 {
		t.Fatalf("device without logs: %v, %v", ls, err)
	}
	// Older than t0+1h goes (t0), the orphan goes, and l1 keeps its newest 2 of the 4 left.
	n, err := s.PruneDeviceLogs(ctx, t0.Add(time.Hour), 2)
	if err != nil || n != 4 {
		t.Fatalf("pruned %d, %v; want 4", n, err)
	}
	ls, err = s.FindDeviceLogs(ctx, "l1", 0)
	if err != nil || len(ls) != 2 || ls[0].Target != "t4" || ls[1].Target != "t3" {
		t.Fatalf("left: %+v, %v", ls, err)
	}
}
