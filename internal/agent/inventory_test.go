package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"upkeep.dev/upkeep/internal/inventory"
	"upkeep.dev/upkeep/wire"
)

func writeScript(t *testing.T, dir, name, body string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), mode); err != nil {
		t.Fatal(err)
	}
}

// Scripts in the inventory folder: Mender's format, a repeated key gives a list, a failing,
// slow or oversized script is named and left out, the others kept; a file that is not
// executable is not run.
func TestCollectInventory(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("inventory scripts are shell scripts")
	}
	dir := t.TempDir()
	osrel := filepath.Join(t.TempDir(), "os-release")
	os.WriteFile(osrel, []byte("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID='12'\n"), 0o644)
	oldPaths := osReleasePaths
	osReleasePaths = []string{osrel}
	t.Cleanup(func() { osReleasePaths = oldPaths })

	writeScript(t, dir, "mender-inventory-region", "echo region=eu-west\necho ipv4=10.0.0.2/24\necho ipv4=192.168.1.9/24", 0o755)
	writeScript(t, dir, "mender-inventory-broken", "echo partial=1; echo oops >&2; exit 3", 0o755)
	writeScript(t, dir, "mender-inventory-slow", "sleep 5; echo slow=1", 0o755)
	writeScript(t, dir, "mender-inventory-huge", "i=0; while [ $i -lt 40 ]; do printf 'k=%01000d\\n' $i; i=$((i+1)); done", 0o755)
	writeScript(t, dir, "mender-inventory-badkey", "echo 'bad key=1'", 0o755)
	writeScript(t, dir, "README", "echo readme=1", 0o644)

	start := time.Now()
	attrs, errs := CollectInventory(context.Background(), Config{InventoryDir: dir, InventoryTimeout: 500 * time.Millisecond, Version: "1.2.3"})
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("collecting took %s: the slow script was not stopped", d)
	}
	want := inventory.Attributes{
		"region": {"eu-west"}, "ipv4": {"10.0.0.2/24", "192.168.1.9/24"},
		AttrOS: {"Debian GNU/Linux 12 (bookworm)"}, AttrOSID: {"debian"}, AttrOSVersionID: {"12"},
		AttrArch: {runtime.GOARCH}, AttrAgent: {"1.2.3"},
	}
	delete(attrs, AttrKernel) // the machine's own
	if diff := cmp.Diff(want, attrs); diff != "" {
		t.Errorf("attributes (-want +got):\n%s", diff)
	}
	var msgs []string
	for _, err := range errs {
		msgs = append(msgs, err.Error())
	}
	all := strings.Join(msgs, "\n")
	for _, w := range []string{"mender-inventory-broken: exit status 3: oops", "mender-inventory-slow: limit exceeded: ran longer than 500ms",
		"mender-inventory-huge: inventory: limit exceeded: more than 32768 bytes", "mender-inventory-badkey: inventory key \"bad key\""} {
		if !strings.Contains(all, w) {
			t.Errorf("errors do not say %q:\n%s", w, all)
		}
	}
	if len(errs) != 4 {
		t.Errorf("%d errors, want 4:\n%s", len(errs), all)
	}
}

// SyncInventory sends the inventory only when its digest differs from the one the server last
// acknowledged, which it keeps in the state folder.
func TestSyncInventoryOnlyOnChange(t *testing.T) {
	var mu sync.Mutex
	var got []wire.Inventory
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != wire.PathInventory || r.Header.Get("Authorization") != "Bearer tok" {
			http.NotFound(w, r)
			return
		}
		var inv wire.Inventory
		json.NewDecoder(r.Body).Decode(&inv)
		mu.Lock()
		got = append(got, inv)
		mu.Unlock()
		json.NewEncoder(w).Encode(wire.InventoryResponse{Digest: inventory.Attributes(inv.Attributes).Digest(), Attributes: len(inv.Attributes)})
	}))
	defer srv.Close()
	dir := t.TempDir()
	writeScript(t, dir, "region", "echo region=eu-west", 0o755)
	a := testAgent(t, srv, Config{InventoryDir: dir})
	ctx := context.Background()
	for i, want := range []bool{true, false, false} {
		sent, err := a.SyncInventory(ctx)
		if err != nil || sent != want {
			t.Fatalf("sync %d: sent %v, %v; want %v", i, sent, err, want)
		}
	}
	writeScript(t, dir, "region", "echo region=eu-north", 0o755)
	if sent, err := a.SyncInventory(ctx); err != nil || !sent {
		t.Fatalf("after a change: sent %v, %v", sent, err)
	}
	if len(got) != 2 || got[1].Attributes["region"][0] != "eu-north" {
		t.Fatalf("server got %+v", got)
	}
	if AckedInventoryDigest(a.cfg.StateDir) != inventory.Attributes(got[1].Attributes).Digest() {
		t.Error("the acknowledged digest is not kept")
	}

	// Attributes stated at enrolment stay in the set, under keys the scripts do not give.
	a.state.Identity.Attributes = map[string]string{"site": "plant-7", "region": "eu-old"}
	if sent, err := a.SyncInventory(ctx); err != nil || !sent {
		t.Fatalf("with enrolment attributes: sent %v, %v", sent, err)
	}
	last := got[len(got)-1].Attributes
	if !cmp.Equal(last["site"], []string{"plant-7"}) || !cmp.Equal(last["region"], []string{"eu-north"}) {
		t.Errorf("site %q region %q: want the enrolment's site and the script's region", last["site"], last["region"])
	}
}

// The run loop records when it checks in next, for `upkeep-agent status`.
func TestRuntimeNextCheckin(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == wire.PathInventory {
			json.NewEncoder(w).Encode(wire.InventoryResponse{})
			return
		}
		w.Header().Set(wire.HeaderPollInterval, "3600")
		w.WriteHeader(http.StatusNotModified)
	}))
	defer srv.Close()
	a := testAgent(t, srv, Config{PollInterval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	var rt *Runtime
	for time.Now().Before(deadline) {
		if rt, _ = ReadRuntime(a.cfg.StateDir); rt != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if rt == nil {
		t.Fatal("no runtime status written")
	}
	if in := time.Until(rt.NextCheckin); in < 30*time.Minute || in > 90*time.Minute || rt.PollSeconds != 3600 {
		t.Errorf("next check-in in %s, poll %ds; want about an hour", in, rt.PollSeconds)
	}
}
