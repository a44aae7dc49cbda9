package server_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/store/sqlite"
	"upkeep.dev/upkeep/internal/tuf"
)

func config(t *testing.T, dir string) server.Config {
	t.Helper()
	keys := filepath.Join(dir, "keys")
	if _, err := os.Stat(keys); err != nil {
		if _, err := tuf.InitKeySet(keys, 1, 1, tuf.DefaultLifetimes(), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	cfg := server.DefaultConfig()
	cfg.Addr, cfg.DataDir, cfg.KeysDir = "127.0.0.1:0", filepath.Join(dir, "data"), keys
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return cfg
}

// TestDataFilesPrivate: under the usual umask 022, the data folder is 0700 and every file in it
// (the SQLite database, its -wal and -shm, artifacts and their side files) 0600, also when an
// earlier version left them open; the device-token key is in a 0600 file, not in the database.
func TestDataFilesPrivate(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := t.TempDir()
	cfg := config(t, dir)
	// An earlier version's data folder and database, world-readable.
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	db, err := sqlite.Open(context.Background(), filepath.Join(cfg.DataDir, "upkeep.db"))
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	os.Chmod(cfg.DataDir, 0o755)
	os.Chmod(filepath.Join(cfg.DataDir, "upkeep.db"), 0o644)

	s, err := server.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Blobs.Put(context.Background(), strings.NewReader("an image"), 1<<20, ""); err != nil {
		t.Fatal(err)
	}
	var seen []string
	err = filepath.WalkDir(cfg.DataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %s, want %s", p, fi.Mode().Perm(), want)
		}
		seen = append(seen, filepath.Base(p))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"upkeep.db", "upkeep.db-wal", "upkeep.db-shm", "artifacts"} {
		if !strings.Contains(strings.Join(seen, " "), name) {
			t.Errorf("no %s in the data folder (%v)", name, seen)
		}
	}
	key := filepath.Join(cfg.KeysDir, server.FileDeviceTokenKey)
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("device-token key file: %v %v", fi, err)
	}
	if _, err := s.DB.FindSetting(context.Background(), "device_token_key"); err == nil {
		t.Fatal("the device-token key is in the database")
	}
}

// TestDeviceTokenKeyLeavesDatabase: a database where an earlier version kept the device-token
// key has it moved to KEYS/device-token.key (so that tokens already issued stay valid) and
// removed from the database; a second server sharing the database with another key refuses to
// start.
func TestDeviceTokenKeyLeavesDatabase(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := config(t, dir)
	os.MkdirAll(cfg.DataDir, 0o700)
	db, err := sqlite.Open(ctx, filepath.Join(cfg.DataDir, "upkeep.db"))
	if err != nil {
		t.Fatal(err)
	}
	legacy := bytes.Repeat([]byte{0x5a}, 32)
	if _, err := db.Setting(ctx, "device_token_key", func() []byte { return legacy }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	issued, _ := auth.DeviceTokens{Key: legacy, TTL: time.Hour}.Issue("dev-1", time.Now())

	s, err := server.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(cfg.KeysDir, server.FileDeviceTokenKey))
	if err != nil || strings.TrimSpace(string(b)) != hex.EncodeToString(legacy) {
		t.Fatalf("key file %q %v, want the key the database held", b, err)
	}
	if id, err := s.Fleet.Authenticate(issued); err != nil || id != "dev-1" {
		t.Fatalf("a token issued before the move: %q %v", id, err)
	}
	if v, err := s.DB.FindSetting(ctx, "device_token_key"); err == nil {
		t.Fatalf("the database still holds the key: %x", v)
	}
	s.Close()

	// Another server on this database with a key of its own refuses to start.
	other := config(t, t.TempDir())
	other.DataDir = cfg.DataDir
	os.WriteFile(filepath.Join(other.KeysDir, server.FileDeviceTokenKey), []byte(hex.EncodeToString(bytes.Repeat([]byte{1}, 32))), 0o600)
	if s, err := server.Open(ctx, other); err == nil || !strings.Contains(err.Error(), "not the device-token key of this database") {
		if s != nil {
			s.Close()
		}
		t.Fatalf("a replica with another device-token key: %v", err)
	}
	// Nor does it start with a key file every user can read.
	os.Chmod(filepath.Join(cfg.KeysDir, server.FileDeviceTokenKey), 0o644)
	if s, err := server.Open(ctx, cfg); err == nil || !strings.Contains(err.Error(), "every user may read it") {
		if s != nil {
			s.Close()
		}
		t.Fatalf("a world-readable key file: %v", err)
	}
}

// TestTokenLifetimeCapped: the configured device token lifetime is at most 24 hours.
func TestTokenLifetimeCapped(t *testing.T) {
	cfg := config(t, t.TempDir())
	cfg.TokenTTL = 10 * 365 * 24 * time.Hour
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Fatalf("a ten-year token lifetime: %v", err)
	}
	cfg.TokenTTL = auth.MaxTokenTTL
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestDeviceTokenKeyReadOnlyKeys: with a keys folder the server may not write (the packaged
// service's), the key is written to the data folder, 0600, and read from there at the next start.
func TestDeviceTokenKeyReadOnlyKeys(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root writes into a read-only folder")
	}
	ctx := context.Background()
	cfg := config(t, t.TempDir())
	os.Chmod(cfg.KeysDir, 0o500)
	defer os.Chmod(cfg.KeysDir, 0o700)
	s, err := server.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	fi, err := os.Stat(filepath.Join(cfg.DataDir, server.FileDeviceTokenKey))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key in the data folder: %v %v", fi, err)
	}
	if s, err = server.Open(ctx, cfg); err != nil {
		t.Fatalf("second start: %v", err)
	}
	s.Close()
}
