package fs_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/blob/blobtest"
	"upkeep.dev/upkeep/internal/blob/fs"
)

func TestConformance(t *testing.T) {
	s, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	blobtest.Run(t, s)
}

// TestStaleUploadsRemoved: an upload that a crash interrupted leaves its temporary file; the
// next New removes it once it is StaleTemp old, and leaves a younger one (an upload under way
// in another process) and the stored blobs alone.
func TestStaleUploadsRemoved(t *testing.T) {
	dir := t.TempDir()
	s, err := fs.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Put(context.Background(), strings.NewReader("firmware"), 1<<20, "")
	if err != nil {
		t.Fatal(err)
	}
	stale, fresh := filepath.Join(dir, "tmp", "upload-crashed"), filepath.Join(dir, "tmp", "upload-running")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-fs.StaleTemp - time.Minute)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	if s, err = fs.New(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale upload still there: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("an upload under way was removed: %v", err)
	}
	if _, err := s.Stat(context.Background(), b.SHA256); err != nil {
		t.Errorf("stored blob after the clean-up: %v", err)
	}
}
