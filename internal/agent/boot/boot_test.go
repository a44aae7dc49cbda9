package boot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestSlotOther(t *testing.T) {
	for _, tc := range []struct{ in, want Slot }{{SlotA, SlotB}, {SlotB, SlotA}, {"c", ""}, {"", ""}} {
		if got := tc.in.Other(); got != tc.want {
			t.Errorf("Slot(%q).Other() = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseSlot(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Slot
		wantErr bool
	}{
		{"a", SlotA, false}, {"A", SlotA, false}, {"b", SlotB, false}, {"B", SlotB, false},
		{"", "", true}, {"c", "", true}, {" a", "", true}, {"ab", "", true},
	} {
		got, err := ParseSlot(tc.in)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("ParseSlot(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func newSim(t *testing.T) (*Sim, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "env", "bootenv.json")
	s, err := NewSim(path)
	if err != nil {
		t.Fatalf("NewSim: %v", err)
	}
	return s, path
}

func readEnv(t *testing.T, path string) simEnv {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var e simEnv
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestNewSimDefaults(t *testing.T) {
	ctx := context.Background()
	s, path := newSim(t)
	want := simEnv{BootPart: SlotA, Committed: SlotA, Bootlimit: 1, Booted: SlotA}
	if got := readEnv(t, path); got != want {
		t.Errorf("fresh env = %+v, want %+v", got, want)
	}
	st, err := s.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := (State{Booted: SlotA, Committed: SlotA}); st != want {
		t.Errorf("fresh State = %+v, want %+v", st, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("env mode = %v, want 0600", fi.Mode().Perm())
	}
}

// step is one operation on a Sim in a scenario.
type step struct {
	op   string // "try", "power", "reboot", "commit", "abort"
	slot Slot   // for "try"
}

func run(ctx context.Context, s *Sim, st step) error {
	switch st.op {
	case "try":
		return s.TryNext(ctx, st.slot)
	case "power":
		return s.PowerOn(ctx)
	case "reboot":
		return s.Reboot(ctx)
	case "commit":
		return s.Commit(ctx)
	case "abort":
		return s.Abort(ctx)
	}
	panic("unknown op " + st.op)
}

func TestSimScenarios(t *testing.T) {
	try := func(s Slot) step { return step{"try", s} }
	power, reboot, commit, abort := step{op: "power"}, step{op: "reboot"}, step{op: "commit"}, step{op: "abort"}
	for _, tc := range []struct {
		name  string
		steps []step
		want  State
	}{
		{"fresh", nil, State{SlotA, SlotA, false}},
		{"power on without trial", []step{power, power}, State{SlotA, SlotA, false}},
		{"armed but not rebooted", []step{try(SlotB)}, State{SlotA, SlotA, false}},
		{"trial boots new slot", []step{try(SlotB), power}, State{SlotB, SlotA, true}},
		{"reboot is a power cycle", []step{try(SlotB), reboot}, State{SlotB, SlotA, true}},
		{"commit", []step{try(SlotB), power, commit}, State{SlotB, SlotB, false}},
		{"commit then power on stays", []step{try(SlotB), power, commit, power}, State{SlotB, SlotB, false}},
		{"no commit falls back", []step{try(SlotB), power, power}, State{SlotA, SlotA, false}},
		{"fallback is final", []step{try(SlotB), power, power, power, commit}, State{SlotA, SlotA, false}},
		{"abort before reboot", []step{try(SlotB), abort, power}, State{SlotA, SlotA, false}},
		{"abort during trial", []step{try(SlotB), power, abort, power}, State{SlotA, SlotA, false}},
		{"abort with nothing armed", []step{abort, power}, State{SlotA, SlotA, false}},
		{"commit before reboot is a no-op", []step{try(SlotB), commit, power}, State{SlotB, SlotA, true}},
		{"commit without trial is a no-op", []step{commit, power}, State{SlotA, SlotA, false}},
		{"second update back to a", []step{try(SlotB), power, commit, try(SlotA), power, commit, power}, State{SlotA, SlotA, false}},
		{"second update falls back to b", []step{try(SlotB), power, commit, try(SlotA), power, power}, State{SlotB, SlotB, false}},
		{"trial of committed slot", []step{try(SlotA), power}, State{SlotA, SlotA, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s, path := newSim(t)
			for i, st := range tc.steps {
				if err := run(ctx, s, st); err != nil {
					t.Fatalf("step %d %s: %v", i, st.op, err)
				}
			}
			got, err := s.State(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("State = %+v, want %+v", got, tc.want)
			}
			// The state survives reopening the environment file.
			s2, err := NewSim(path)
			if err != nil {
				t.Fatal(err)
			}
			if got2, err := s2.State(ctx); err != nil || got2 != got {
				t.Errorf("reopened State = %+v, %v; want %+v", got2, err, got)
			}
		})
	}
}

func TestSimBootlimit(t *testing.T) {
	ctx := context.Background()
	s, path := newSim(t)
	e := readEnv(t, path)
	e.Bootlimit = 3
	b, _ := json.Marshal(e)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.TryNext(ctx, SlotB); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if err := s.PowerOn(ctx); err != nil {
			t.Fatal(err)
		}
		if st, _ := s.State(ctx); st != (State{SlotB, SlotA, true}) {
			t.Fatalf("boot %d: State = %+v, want trial of b", i, st)
		}
		if got := readEnv(t, path).Bootcount; got != i {
			t.Errorf("boot %d: bootcount = %d", i, got)
		}
	}
	if err := s.PowerOn(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.State(ctx); st != (State{SlotA, SlotA, false}) {
		t.Errorf("after boot limit: State = %+v, want fallback to a", st)
	}
	if got, want := readEnv(t, path), (simEnv{BootPart: SlotA, Committed: SlotA, Bootlimit: 3, Booted: SlotA}); got != want {
		t.Errorf("env after fallback = %+v, want %+v", got, want)
	}
}

func TestSimErrors(t *testing.T) {
	s, _ := newSim(t)
	if err := s.TryNext(context.Background(), "c"); err == nil {
		t.Error("TryNext(c): no error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.State(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("State with canceled context: %v", err)
	}
	if err := s.PowerOn(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("PowerOn with canceled context: %v", err)
	}
}

func TestNewSimCorrupt(t *testing.T) {
	for _, tc := range []struct{ name, content string }{
		{"empty", ""},
		{"not json", "boot_part=a"},
		{"truncated", `{"boot_part":"a","comm`},
		{"bad slot", `{"boot_part":"c","committed":"a","upgrade_available":0,"bootcount":0,"bootlimit":1,"booted":"a"}`},
		{"missing slot", `{"committed":"a","upgrade_available":0,"bootcount":0,"bootlimit":1,"booted":"a"}`},
		{"bad upgrade_available", `{"boot_part":"a","committed":"a","upgrade_available":2,"bootcount":0,"bootlimit":1,"booted":"a"}`},
		{"bad bootlimit", `{"boot_part":"a","committed":"a","upgrade_available":0,"bootcount":0,"bootlimit":0,"booted":"a"}`},
		{"negative bootcount", `{"boot_part":"a","committed":"a","upgrade_available":0,"bootcount":-1,"bootlimit":1,"booted":"a"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bootenv.json")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := NewSim(path)
			if err == nil || !strings.Contains(err.Error(), path) {
				t.Errorf("NewSim = %v, want an error naming %s", err, path)
			}
			if b, _ := os.ReadFile(path); string(b) != tc.content {
				t.Error("NewSim changed a corrupt file")
			}
		})
	}
}

func TestSimConcurrent(t *testing.T) {
	ctx := context.Background()
	s, _ := newSim(t)
	if err := s.TryNext(ctx, SlotB); err != nil {
		t.Fatal(err)
	}
	if err := s.PowerOn(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := s.State(ctx); err != nil {
				t.Error(err)
			}
			if err := s.Commit(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if st, _ := s.State(ctx); st != (State{SlotB, SlotB, false}) {
		t.Errorf("State = %+v, want b committed", st)
	}
}

func readSlot(t *testing.T, s Slots, slot Slot) []byte {
	t.Helper()
	r, err := s.Open(context.Background(), slot)
	if err != nil {
		t.Fatalf("Open(%s): %v", slot, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeSlot(t *testing.T, s Slots, slot Slot, data []byte) {
	t.Helper()
	w, err := s.Create(context.Background(), slot)
	if err != nil {
		t.Fatalf("Create(%s): %v", slot, err)
	}
	defer w.Abort()
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestFileSlotsRoundTrip(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "slots")
	s, err := NewFileSlots(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("slot dir: %v, %v; want mode 0700", fi, err)
	}
	for _, slot := range []Slot{SlotA, SlotB} {
		if _, err := s.Open(ctx, slot); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Open(%s) of a never-written slot: %v, want fs.ErrNotExist", slot, err)
		}
	}
	writeSlot(t, s, SlotA, []byte("image a, long version"))
	writeSlot(t, s, SlotB, []byte("image b"))
	writeSlot(t, s, SlotA, []byte("image a2")) // Create truncates
	if got := string(readSlot(t, s, SlotA)); got != "image a2" {
		t.Errorf("slot a = %q", got)
	}
	if got := string(readSlot(t, s, SlotB)); got != "image b" {
		t.Errorf("slot b = %q", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "slot-b.img")); err != nil {
		t.Errorf("slot b file: %v", err)
	}

	// An aborted image leaves the slot empty; Abort after Close is a no-op.
	w, err := s.Create(ctx, SlotB)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("partial")); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("x")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Write after Abort: %v", err)
	}
	if err := w.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Close after Abort: %v", err)
	}
	if _, err := s.Open(ctx, SlotB); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open after Abort: %v, want fs.ErrNotExist", err)
	}
	if got := string(readSlot(t, s, SlotA)); got != "image a2" {
		t.Errorf("slot a after deferred Abort = %q", got)
	}

	if _, err := s.Create(ctx, "c"); err == nil {
		t.Error("Create(c): no error")
	}
	if _, err := s.Open(ctx, ""); err == nil {
		t.Error("Open(\"\"): no error")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Create(cctx, SlotA); !errors.Is(err, context.Canceled) {
		t.Errorf("Create with canceled context: %v", err)
	}
}

func TestFileSlotsLargeImage(t *testing.T) {
	const size = 8 << 20
	ctx := context.Background()
	s, err := NewFileSlots(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.Create(ctx, SlotB)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	want := sha256.New()
	src := io.LimitReader(rand.NewChaCha8([32]byte{1}), size)
	n, err := io.CopyBuffer(w, io.TeeReader(src, want), make([]byte, 64<<10))
	if err != nil || n != size {
		t.Fatalf("copy: %d, %v", n, err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := s.Open(ctx, SlotB)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := sha256.New()
	if n, err := io.Copy(got, r); err != nil || n != size {
		t.Fatalf("read back: %d, %v", n, err)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Error("8 MiB image read back differs")
	}
}

func TestDeviceSlots(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.raw"), filepath.Join(dir, "b.raw")
	if err := os.WriteFile(b, []byte("old image, longer"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := NewDeviceSlots(a, b)
	writeSlot(t, s, SlotA, []byte("new a"))
	writeSlot(t, s, SlotB, []byte("new b")) // a regular file is truncated
	if got := string(readSlot(t, s, SlotA)); got != "new a" {
		t.Errorf("slot a = %q", got)
	}
	if got := string(readSlot(t, s, SlotB)); got != "new b" {
		t.Errorf("slot b = %q", got)
	}
	// Aborting leaves a caller-owned file in place.
	w, err := s.Create(context.Background(), SlotA)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(a); err != nil {
		t.Errorf("slot a file after Abort: %v", err)
	}
}

func TestDeviceSlotsCharDevice(t *testing.T) {
	const dev = "/dev/null"
	if fi, err := os.Stat(dev); err != nil || fi.Mode()&os.ModeDevice == 0 {
		t.Skipf("%s is not a device here", dev)
	}
	s := NewDeviceSlots(dev, dev)
	writeSlot(t, s, SlotA, []byte("discarded")) // opened without O_TRUNC; fsync EINVAL tolerated
	if got := readSlot(t, s, SlotB); len(got) != 0 {
		t.Errorf("read %d bytes from %s", len(got), dev)
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	for _, content := range []string{"first", "second, longer", ""} {
		if err := WriteFileAtomic(path, []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(path); err != nil || string(b) != content {
			t.Errorf("content = %q, %v; want %q", b, err, content)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("mode = %v, want 0640", fi.Mode().Perm())
	}
	// A failed write (target is a folder) leaves no temp file either.
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(filepath.Join(dir, "sub"), []byte("x"), 0o600); err == nil {
		t.Error("WriteFileAtomic over a folder: no error")
	}
	if err := WriteFileAtomic(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600); err == nil {
		t.Error("WriteFileAtomic into a missing folder: no error")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != "state.json,sub" {
		t.Errorf("folder holds %v, want only state.json and sub", names)
	}
}
