package agent

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// BenchmarkHashAndWrite measures the install path without the network: every signed hash plus
// the write to a slot file, as the agent does while downloading. scripts/agent-install-bench.sh
// sets it against sha256sum on the same machine.
func BenchmarkHashAndWrite(b *testing.B) {
	data := make([]byte, 64<<20)
	rand.Read(data)
	s256, s512 := sha256.Sum256(data), sha512.Sum512(data)
	tf := &metadata.TargetFiles{Length: int64(len(data)), Hashes: metadata.Hashes{"sha256": s256[:], "sha512": s512[:]}}
	path := filepath.Join(b.TempDir(), "slot.img")
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		hs, _ := newHashes(tf)
		buf := make([]byte, 256<<10)
		if _, err := io.CopyBuffer(hs.tee(f), struct{ io.Reader }{bytes.NewReader(data)}, buf); err != nil {
			b.Fatal(err)
		}
		f.Close()
		if err := hs.verify(tf); err != nil {
			b.Fatal(err)
		}
	}
}
