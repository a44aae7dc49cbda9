// Package blobtest is the conformance suite every artifact store runs.
package blobtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"testing"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/release"
)

// Run runs the suite against a fresh, empty store.
func Run(t *testing.T, s release.BlobStore) {
	ctx := context.Background()
	data := bytes.Repeat([]byte("upkeep artifact "), 70000) // ~1.1 MB: more than one read
	sum := sha256.Sum256(data)
	h := hex.EncodeToString(sum[:])

	t.Run("PutStatOpen", func(t *testing.T) {
		b, err := s.Put(ctx, bytes.NewReader(data), 10<<20, h)
		if err != nil {
			t.Fatal(err)
		}
		if b.SHA256 != h || b.Length != int64(len(data)) || len(b.SHA512) != 128 {
			t.Fatalf("put: %+v", b)
		}
		st, err := s.Stat(ctx, h)
		if err != nil || *st != *b {
			t.Fatalf("stat: %+v %v, want %+v", st, err, b)
		}
		r, _, err := s.Open(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if _, err := r.Seek(int64(len(data)-5), io.SeekStart); err != nil {
			t.Fatal(err)
		}
		tail, _ := io.ReadAll(r)
		if !bytes.Equal(tail, data[len(data)-5:]) {
			t.Fatalf("seek+read: %q", tail)
		}
		r.Seek(0, io.SeekStart)
		all, _ := io.ReadAll(r)
		if !bytes.Equal(all, data) {
			t.Fatal("read back differs")
		}
	})
	t.Run("WrongDigestStoresNothing", func(t *testing.T) {
		other := bytes.Repeat([]byte{7}, 1000)
		os := sha256.Sum256(other)
		_, err := s.Put(ctx, bytes.NewReader(other), 10<<20, h[:63]+"0")
		if apperr.CodeOf(err) != apperr.Verification {
			t.Fatalf("err = %v, want verification", err)
		}
		if _, err := s.Stat(ctx, hex.EncodeToString(os[:])); apperr.CodeOf(err) != apperr.NotFound {
			t.Fatalf("a refused upload is visible: %v", err)
		}
	})
	t.Run("TooLarge", func(t *testing.T) {
		_, err := s.Put(ctx, bytes.NewReader(data), 1000, "")
		if apperr.CodeOf(err) != apperr.TooLarge {
			t.Fatalf("err = %v, want too large", err)
		}
	})
	t.Run("NotFound", func(t *testing.T) {
		_, err := s.Stat(ctx, "00"+h[2:])
		if apperr.CodeOf(err) != apperr.NotFound {
			t.Fatalf("err = %v", err)
		}
		if _, _, err := s.Open(ctx, "00"+h[2:]); apperr.CodeOf(err) != apperr.NotFound {
			t.Fatalf("open: %v", err)
		}
	})
}
