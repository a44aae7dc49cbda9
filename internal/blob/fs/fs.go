// Package fs is the local-folder artifact store, Upkeep's embedded default. Blobs are kept by
// SHA-256 under dir/sha256/xx/<hex>, with their SHA-512 and length in a sidecar file. Writes go
// to a temporary file that is renamed into place only after the digests are known, so a
// partial upload is never visible; the temporary files a crash left behind are removed when the
// store is next opened.
package fs

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/release"
)

// Store keeps blobs in a folder. It is safe for concurrent use.
type Store struct {
	dir string
}

var _ release.BlobStore = (*Store)(nil)

// StaleTemp is how long an upload's temporary file may go unmodified before New removes it: an
// upload under way writes to its file all along, so one this old was left by a crash (or a
// killed process) in the middle of an upload, and would otherwise stay for ever.
const StaleTemp = time.Hour

// New opens (creating) the blob folder and removes the temporary files of uploads that a crash
// interrupted (unmodified for StaleTemp); a younger one may be another process's upload under
// way in a shared folder, and is left alone. The folder is the server's alone: 0700, its files
// 0600 (temporary files are created so, the side files written so), whatever the umask; a
// folder made more open by an earlier version is closed again.
func New(dir string) (*Store, error) {
	tmp := filepath.Join(dir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("blob dir: %w", err)
	}
	for _, d := range []string{dir, tmp} {
		if err := os.Chmod(d, 0o700); err != nil {
			return nil, fmt.Errorf("blob dir: %w", err)
		}
	}
	if err := removeStale(tmp, time.Now().Add(-StaleTemp)); err != nil {
		return nil, err
	}
	return &Store{dir: dir}, nil
}

// removeStale removes the files of dir last modified before cutoff.
func removeStale(dir string, cutoff time.Time) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("blob temp dir: %w", err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		if info.ModTime().Before(cutoff) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("remove stale upload: %w", err)
			}
		}
	}
	return nil
}

func validDigest(h string) error {
	if len(h) != 64 {
		return apperr.E(apperr.Invalid, "sha256 must be 64 hex characters")
	}
	if _, err := hex.DecodeString(h); err != nil {
		return apperr.E(apperr.Invalid, "sha256 must be hex")
	}
	return nil
}

func (s *Store) path(h string) string { return filepath.Join(s.dir, "sha256", h[:2], h) }

// Put implements release.BlobStore.
func (s *Store) Put(ctx context.Context, r io.Reader, maxLength int64, want string) (*release.Blob, error) {
	if want != "" {
		if err := validDigest(want); err != nil {
			return nil, err
		}
	}
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "upload-")
	if err != nil {
		return nil, fmt.Errorf("blob temp: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h256, h512 := sha256.New(), sha512.New()
	n, err := io.Copy(io.MultiWriter(tmp, h256, h512), io.LimitReader(ctxReader{ctx, r}, maxLength+1))
	if err != nil {
		return nil, fmt.Errorf("blob upload: %w", err)
	}
	if n > maxLength {
		return nil, apperr.E(apperr.TooLarge, "artifact is larger than the %d byte limit", maxLength)
	}
	b := &release.Blob{SHA256: hex.EncodeToString(h256.Sum(nil)), SHA512: hex.EncodeToString(h512.Sum(nil)), Length: n}
	if want != "" && want != b.SHA256 {
		return nil, apperr.E(apperr.Verification, "uploaded artifact has sha256 %s, expected %s (truncated or corrupted upload)", b.SHA256, want)
	}
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("blob sync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("blob close: %w", err)
	}
	dst := s.path(b.SHA256)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return nil, fmt.Errorf("blob dir: %w", err)
	}
	side, _ := json.Marshal(b)
	if err := os.WriteFile(dst+".meta", side, 0o600); err != nil {
		return nil, fmt.Errorf("blob meta: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return nil, fmt.Errorf("blob rename: %w", err)
	}
	return b, nil
}

// Stat implements release.BlobStore.
func (s *Store) Stat(ctx context.Context, h string) (*release.Blob, error) {
	if err := validDigest(h); err != nil {
		return nil, err
	}
	if _, err := os.Stat(s.path(h)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, apperr.E(apperr.NotFound, "no artifact with sha256 %s", h)
		}
		return nil, fmt.Errorf("blob stat: %w", err)
	}
	side, err := os.ReadFile(s.path(h) + ".meta")
	if err != nil {
		return nil, fmt.Errorf("blob meta: %w", err)
	}
	var b release.Blob
	if err := json.Unmarshal(side, &b); err != nil {
		return nil, fmt.Errorf("blob meta %s: %w", h, err)
	}
	return &b, nil
}

// Open implements release.BlobStore.
func (s *Store) Open(ctx context.Context, h string) (release.BlobReader, *release.Blob, error) {
	b, err := s.Stat(ctx, h)
	if err != nil {
		return nil, nil, err
	}
	f, err := os.Open(s.path(h))
	if err != nil {
		return nil, nil, fmt.Errorf("blob open: %w", err)
	}
	return f, b, nil
}

// Path returns where a blob lives on disk (for tests that tamper with artifacts).
func (s *Store) Path(h string) string { return s.path(h) }

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
