package delta

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// mutate returns a copy of b with the kinds of change a firmware update makes: bytes changed
// here and there, a block inserted, a block removed, a block moved.
func mutate(r *rand.Rand, b []byte) []byte { return mutateN(r, b, len(b)/5000) }

func mutateN(r *rand.Rand, b []byte, flips int) []byte {
	out := append([]byte(nil), b...)
	for range flips {
		out[r.IntN(len(out))] ^= byte(1 + r.IntN(255))
	}
	ins := make([]byte, 40000)
	for i := range ins {
		ins[i] = byte(r.Uint32())
	}
	at := r.IntN(len(out))
	out = append(out[:at], append(ins, out[at:]...)...)
	cut := r.IntN(len(out) - 30000)
	out = append(out[:cut], out[cut+30000:]...)
	mv := append([]byte(nil), out[1000:21000]...)
	out = append(out, mv...)
	return out
}

func randomImage(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; {
		// compressible runs and random runs, like a file system
		k := min(n-i, 1+r.IntN(8192))
		if r.IntN(3) == 0 {
			for j := range k {
				b[i+j] = byte(r.Uint32())
			}
		} else {
			c := byte(r.IntN(4))
			for j := range k {
				b[i+j] = c + byte(j%7)
			}
		}
		i += k
	}
	return b
}

// roundTrip makes a patch both ways (whole and sampled matching), applies each and returns the
// whole one.
func roundTrip(t *testing.T, old, dst []byte) []byte {
	t.Helper()
	sampled := roundTripWith(t, old, dst, GenOptions{Sampled: true})
	whole := roundTripWith(t, old, dst, GenOptions{})
	if len(old) > 1<<20 && len(whole) > len(sampled) {
		t.Errorf("whole matching made %d bytes, sampled %d", len(whole), len(sampled))
	}
	return whole
}

func roundTripWith(t *testing.T, old, dst []byte, o GenOptions) []byte {
	t.Helper()
	var patch bytes.Buffer
	st, err := Generate(context.Background(), bytes.NewReader(old), int64(len(old)), bytes.NewReader(dst), int64(len(dst)), &patch, o)
	if err != nil {
		t.Fatal(err)
	}
	if st.PatchLength != int64(patch.Len()) {
		t.Errorf("stats say %d bytes, patch has %d", st.PatchLength, patch.Len())
	}
	a, err := NewApplier()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var out bytes.Buffer
	if _, err := a.Apply(context.Background(), bytes.NewReader(old), int64(len(old)), int64(len(dst)), bytes.NewReader(patch.Bytes()), &out, ApplyState{}, nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), dst) {
		t.Fatalf("applied patch yields %d bytes (sha %x), want %d", out.Len(), sha256.Sum256(out.Bytes()), len(dst))
	}
	return patch.Bytes()
}

func TestPatchRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	old := randomImage(r, 6<<20)
	dst := mutate(r, old)
	p := roundTrip(t, old, dst)
	if len(p) > len(dst)/10 {
		t.Errorf("patch is %d bytes for %d of image", len(p), len(dst))
	}
	t.Logf("patch %d bytes for %d", len(p), len(dst))
	for _, c := range []struct{ old, dst []byte }{
		{nil, nil}, {nil, []byte("new")}, {[]byte("old"), nil}, {old[:100], dst[:31]}, {old, old}, {randomImage(r, 1<<20), randomImage(r, 3<<20)},
	} {
		roundTrip(t, c.old, c.dst)
	}
}

// TestPatchResume cuts the patch stream after every checkpoint and resumes from the journaled
// state, as the agent does after a power cut.
func TestPatchResume(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	old := randomImage(r, 5<<20)
	dst := mutate(r, old)
	var patch bytes.Buffer
	if _, err := Generate(context.Background(), bytes.NewReader(old), int64(len(old)), bytes.NewReader(dst), int64(len(dst)), &patch, GenOptions{}); err != nil {
		t.Fatal(err)
	}
	a, _ := NewApplier()
	defer a.Close()
	var out []byte
	st := ApplyState{}
	errCut := errors.New("power cut")
	for round := 0; ; round++ {
		if round > 10 {
			t.Fatal("no progress")
		}
		w := bytes.NewBuffer(out[:st.OutOff])
		next, err := a.Apply(context.Background(), bytes.NewReader(old), int64(len(old)), int64(len(dst)), bytes.NewReader(patch.Bytes()[st.PatchOff:]), w, st, func(s ApplyState) error {
			st = s
			out = append(out[:0], w.Bytes()...)
			return errCut // cut right after each checkpoint
		})
		if err == nil {
			out = w.Bytes()
			st = next
			break
		}
		if !errors.Is(err, errCut) {
			t.Fatal(err)
		}
		if st.OutOff == int64(len(dst)) {
			break
		}
	}
	if !bytes.Equal(out, dst) {
		t.Fatal("resumed apply yields other bytes")
	}
}

func TestPatchCorrupt(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	old := randomImage(r, 3<<20)
	dst := mutate(r, old)
	var patch bytes.Buffer
	if _, err := Generate(context.Background(), bytes.NewReader(old), int64(len(old)), bytes.NewReader(dst), int64(len(dst)), &patch, GenOptions{}); err != nil {
		t.Fatal(err)
	}
	a, _ := NewApplier()
	defer a.Close()
	for i := 0; i < 200; i++ {
		p := append([]byte(nil), patch.Bytes()...)
		p[r.IntN(len(p))] ^= byte(1 + r.IntN(255))
		var out bytes.Buffer
		_, err := a.Apply(context.Background(), bytes.NewReader(old), int64(len(old)), int64(len(dst)), bytes.NewReader(p), &out, ApplyState{}, nil)
		if err == nil && !bytes.Equal(out.Bytes(), dst) {
			t.Fatalf("flip %d: corrupt patch applied without an error", i)
		}
	}
	// another source of the same length: applies, yields other bytes (caught by the image hash)
	var out bytes.Buffer
	if _, err := a.Apply(context.Background(), bytes.NewReader(make([]byte, len(old))), int64(len(old)), int64(len(dst)), bytes.NewReader(patch.Bytes()), &out, ApplyState{}, nil); err == nil && bytes.Equal(out.Bytes(), dst) {
		t.Fatal("wrong source yields the right image")
	}
	if _, err := a.Apply(context.Background(), bytes.NewReader(old[1:]), int64(len(old)-1), int64(len(dst)), bytes.NewReader(patch.Bytes()), io.Discard, ApplyState{}, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("source of another length: %v", err)
	}
}

func TestIndexRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	img := randomImage(r, 3<<20)
	x, err := MakeIndex(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := x.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	y, err := ReadIndex(bytes.NewReader(b.Bytes()), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	if len(y.Chunks) != len(x.Chunks) || y.Length() != int64(len(img)) {
		t.Fatalf("read %d chunks, %d bytes", len(y.Chunks), y.Length())
	}
	for i, c := range y.Chunks {
		if c != x.Chunks[i] || c.Size > ChunkMax || (c.Size < ChunkMin && i != len(y.Chunks)-1) {
			t.Fatalf("chunk %d: %+v", i, c)
		}
	}
	if _, err := ReadIndex(bytes.NewReader(b.Bytes()), int64(len(img))-1); err == nil {
		t.Error("an index naming bytes past the image was accepted")
	}
	if _, err := ReadIndex(bytes.NewReader(b.Bytes()), int64(len(img))+1); err == nil {
		t.Error("an index covering less than the image was accepted")
	}
	// a local change moves few chunk boundaries
	img2 := append([]byte(nil), img...)
	copy(img2[1<<20:], "changed")
	x2, _ := MakeIndex(bytes.NewReader(img2))
	have := map[ChunkID]bool{}
	for _, c := range x.Chunks {
		have[c.ID] = true
	}
	missing := 0
	for _, c := range x2.Chunks {
		if !have[c.ID] {
			missing++
		}
	}
	if missing > 2 {
		t.Errorf("%d chunks differ after a one-place change", missing)
	}
}

func TestAssemble(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	old := randomImage(r, 4<<20)
	dst := mutateN(r, old, 5)
	src, _ := MakeIndex(bytes.NewReader(old))
	dx, _ := MakeIndex(bytes.NewReader(dst))
	fetch := func(tamper bool) Fetch {
		return func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
			b := append([]byte(nil), dst[off:off+n]...)
			if tamper {
				b[len(b)/2] ^= 1
			}
			return io.NopCloser(bytes.NewReader(b)), nil
		}
	}
	a := &Assembler{Dst: dx, Src: src, Active: bytes.NewReader(old), CkptEvery: 1 << 20}
	var out bytes.Buffer
	st, err := a.Assemble(context.Background(), fetch(false), &out, ChunkState{}, nil)
	if err != nil || !bytes.Equal(out.Bytes(), dst) {
		t.Fatalf("assemble: %v, equal %v", err, bytes.Equal(out.Bytes(), dst))
	}
	if st.Downloaded > int64(len(dst))/3 || st.Downloaded != a.NeedBytes() {
		t.Errorf("downloaded %d of %d (need %d)", st.Downloaded, len(dst), a.NeedBytes())
	}
	t.Logf("downloaded %d, reused %d of %d", st.Downloaded, st.Reused, len(dst))
	// a tampered chunk
	a = &Assembler{Dst: dx, Src: src, Active: bytes.NewReader(old)}
	if _, err := a.Assemble(context.Background(), fetch(true), io.Discard, ChunkState{}, nil); !errors.Is(err, ErrChunk) {
		t.Fatalf("tampered chunk: %v", err)
	}
	// an active image that differs from its index: the chunks are fetched instead
	bad := append([]byte(nil), old...)
	for i := range bad {
		bad[i] ^= 0x55
	}
	a = &Assembler{Dst: dx, Src: src, Active: bytes.NewReader(bad)}
	out.Reset()
	if st, err := a.Assemble(context.Background(), fetch(false), &out, ChunkState{}, nil); err != nil || !bytes.Equal(out.Bytes(), dst) || st.Downloaded != int64(len(dst)) {
		t.Fatalf("wrong active image: %v", err)
	}
	// resume after every checkpoint
	errCut := errors.New("cut")
	var got []byte
	st = ChunkState{}
	for range 100 {
		a = &Assembler{Dst: dx, Src: src, Active: bytes.NewReader(old), CkptEvery: 1 << 20}
		w := bytes.NewBuffer(got[:st.OutOff])
		_, err := a.Assemble(context.Background(), fetch(false), w, st, func(s ChunkState) error { st = s; got = append(got[:0], w.Bytes()...); return errCut })
		if err == nil {
			got = w.Bytes()
			break
		}
	}
	if !bytes.Equal(got, dst) {
		t.Fatal("resumed assembly differs")
	}
}
