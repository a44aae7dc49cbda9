package delta

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"testing"
)

// FuzzReadIndex: an index from the network never panics the parser, and one it accepts covers
// exactly the image.
func FuzzReadIndex(f *testing.F) {
	x, _ := MakeIndex(bytes.NewReader(randomImage(rand.New(rand.NewPCG(1, 1)), 300<<10)))
	var b bytes.Buffer
	x.WriteTo(&b) //nolint:errcheck
	f.Add(b.Bytes(), int64(300<<10))
	f.Add([]byte{}, int64(0))
	f.Fuzz(func(t *testing.T, data []byte, length int64) {
		y, err := ReadIndex(bytes.NewReader(data), length)
		if err == nil && y.Length() != length {
			t.Fatalf("accepted an index of %d bytes for %d", y.Length(), length)
		}
	})
}

// FuzzApply: a patch from the network never panics the applier nor writes more than the
// destination's length.
func FuzzApply(f *testing.F) {
	r := rand.New(rand.NewPCG(2, 2))
	old := randomImage(r, 200<<10)
	dst := mutateN(r, old, 3)
	var p bytes.Buffer
	Generate(context.Background(), bytes.NewReader(old), int64(len(old)), bytes.NewReader(dst), int64(len(dst)), &p, GenOptions{}) //nolint:errcheck
	f.Add(p.Bytes())
	a, _ := NewApplier()
	f.Fuzz(func(t *testing.T, patch []byte) {
		var n countWriter
		a.Apply(context.Background(), bytes.NewReader(old), int64(len(old)), int64(len(dst)), bytes.NewReader(patch), &n, ApplyState{}, nil) //nolint:errcheck
		if n > countWriter(len(dst)) {
			t.Fatalf("wrote %d bytes, the destination has %d", n, len(dst))
		}
	})
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

var _ io.Writer = (*countWriter)(nil)

// FuzzGenerate: any pair of images, matched whole or sampled, gives a patch that applies to
// exactly the destination.
func FuzzGenerate(f *testing.F) {
	f.Add([]byte("the quick brown fox jumps over the lazy dog, again and again"), []byte("the quick brown cat jumps over the lazy dog, again and again and again"), false)
	f.Add([]byte{}, []byte("new"), true)
	a, _ := NewApplier()
	f.Fuzz(func(t *testing.T, old, dst []byte, sampled bool) {
		var p bytes.Buffer
		if _, err := Generate(context.Background(), bytes.NewReader(old), int64(len(old)), bytes.NewReader(dst), int64(len(dst)), &p, GenOptions{Sampled: sampled}); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if _, err := a.Apply(context.Background(), bytes.NewReader(old), int64(len(old)), int64(len(dst)), bytes.NewReader(p.Bytes()), &out, ApplyState{}, nil); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), dst) {
			t.Fatalf("applied patch gives %q, want %q", out.Bytes(), dst)
		}
	})
}
