package agent

import (
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/agent/boot"
	"upkeep.dev/upkeep/internal/devclient"
)

// BenchmarkHashAndWrite measures the agent's install path on a 64 MiB image file next to
// `sha256sum` reading the same file in the same run (issue figure: at least 0.8x). Both read
// the file from the page cache. The agent side is the code a download runs: fetchRange's
// 256 KiB reads, the signed digest computed on its own goroutine while the chunk is written to
// the slot file, a checkpoint (fsync of the slot, then the journal's atomic save) every 4 MiB,
// and the final digest check. "file" feeds the image from the file itself; "http" serves it
// from a loopback HTTP server, as a device downloads it. The reported sha256sum-ratio is the
// agent's throughput over sha256sum's, each the best of the iterations.
func BenchmarkHashAndWrite(b *testing.B) {
	dir := b.TempDir()
	img := filepath.Join(dir, "image.bin")
	data := make([]byte, 64<<20)
	rand.Read(data)
	if err := os.WriteFile(img, data, 0o600); err != nil {
		b.Fatal(err)
	}
	sum := sha256.Sum256(data)
	data = nil
	tf := &metadata.TargetFiles{Length: 64 << 20, Hashes: metadata.Hashes{"sha256": sum[:]}}
	ref := sha256sumBest(b, img, 3)

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, img)
	}))
	defer srv.Close()
	c := &devclient.Client{HTTP: srv.Client()}

	for _, src := range []string{"file", "http"} {
		b.Run(src, func(b *testing.B) {
			slot := filepath.Join(dir, "slot.img")
			journal := filepath.Join(dir, "journal.json")
			b.SetBytes(tf.Length)
			best := time.Duration(1 << 62)
			for b.Loop() {
				start := time.Now()
				w, err := os.Create(slot)
				if err != nil {
					b.Fatal(err)
				}
				hs, _ := newHashes(tf)
				ckpt := func(n int64) error {
					if err := w.Sync(); err != nil {
						return err
					}
					return writeJournal(journal, n)
				}
				switch src {
				case "file":
					err = copyFromFile(img, hs.tee(w), tf.Length, ckpt)
				case "http":
					_, err = fetchRange(b.Context(), c, nil, srv.URL+"/image.bin", "", 0, tf.Length, hs.tee(w), 0, 0, 4<<20, ckpt)
				}
				if err != nil {
					b.Fatal(err)
				}
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
				if err := hs.verify(tf); err != nil {
					b.Fatal(err)
				}
				best = min(best, time.Since(start))
			}
			b.ReportMetric(float64(ref)/float64(best), "sha256sum-ratio")
		})
	}
}

// copyFromFile is fetchRange's loop with the file as the body: 256 KiB reads, a checkpoint
// every 4 MiB.
func copyFromFile(path string, w io.Writer, length int64, ckpt func(int64) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 256<<10)
	var n int64
	next := int64(4 << 20)
	for n < length {
		k, err := f.Read(buf)
		if k > 0 {
			if _, err := w.Write(buf[:k]); err != nil {
				return err
			}
			n += int64(k)
			if n >= next {
				if err := ckpt(n); err != nil {
					return err
				}
				next = n + 4<<20
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// writeJournal saves a journal-sized record the way the agent saves its state.
func writeJournal(path string, staged int64) error {
	b := []byte(`{"phase":"downloading","target":"fw-1.0.1.img","staged":` + strconv.FormatInt(staged, 10) + `}`)
	return boot.WriteFileAtomic(path, b, 0o600)
}

// sha256sumBest runs Debian's sha256sum on path n times and returns its best wall time.
func sha256sumBest(b *testing.B, path string, n int) time.Duration {
	if _, err := exec.LookPath("sha256sum"); err != nil {
		b.Skip("sha256sum not installed")
	}
	best := time.Duration(1 << 62)
	for range n {
		start := time.Now()
		if out, err := exec.Command("sha256sum", path).CombinedOutput(); err != nil {
			b.Fatalf("sha256sum: %v: %s", err, out)
		}
		best = min(best, time.Since(start))
	}
	b.Logf("sha256sum of %s: best of %d %v (%.0f MB/s)", filepath.Base(path), n, best, float64(64<<20)/best.Seconds()/1e6)
	return best
}
