package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/auth"
)

// FileDeviceTokenKey is the device-token HMAC key's file: in the keys folder, with the other
// online keys, or in the data folder (0700) when the keys folder is read-only to the server (as
// the packaged service has it). Whoever reads it can mint device tokens, so it is never in the
// database and never readable by others.
const FileDeviceTokenKey = "device-token.key"

// Settings of the device-token key in the database: the key itself where versions before the
// key file kept it (moved to the file, then deleted), and the SHA-256 of the key in use (not
// secret), which every replica sharing the database compares with its own file.
const (
	settingLegacyTokenKey = "device_token_key"
	settingTokenKeySum    = "device_token_key_sha256"
)

// deviceTokenKey returns the device-token HMAC key from KEYS/device-token.key, or else
// DATA/device-token.key. Without either file, it is made from the key an earlier version kept in
// the database (so that issued tokens stay valid), or anew; the key is written (0600, in the keys
// folder, or in the data folder if the keys folder is read-only) only after the database agreed
// that it is the key of this installation (the first replica to start stores its digest; a
// replica whose key differs refuses to start rather than issue tokens the others refuse). The key
// is then removed from the database.
func deviceTokenKey(ctx context.Context, db auth.Store, keysDir, dataDir string) ([]byte, string, error) {
	path := filepath.Join(keysDir, FileDeviceTokenKey)
	key, err := readKeyFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		path = filepath.Join(dataDir, FileDeviceTokenKey)
		if key, err = readKeyFile(path); errors.Is(err, fs.ErrNotExist) {
			path = filepath.Join(keysDir, FileDeviceTokenKey)
		}
	}
	fromFile := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, "", err
	}
	legacy, lerr := db.FindSetting(ctx, settingLegacyTokenKey)
	if lerr != nil && !apperr.Is(lerr, apperr.NotFound) {
		return nil, "", lerr
	}
	if !fromFile {
		if key = legacy; key == nil {
			key = make([]byte, 32)
			rand.Read(key) //nolint:errcheck // crypto/rand does not fail
		}
	}
	sum := sha256.Sum256(key)
	stored, err := db.Setting(ctx, settingTokenKeySum, func() []byte { return sum[:] })
	if err != nil {
		return nil, "", err
	}
	// A lost key is replaced by deleting the setting: devices then ask for new tokens by themselves.
	const lost = " (if that key is lost: delete the setting " + settingTokenKeySum + " from the database's settings table; devices then fetch new tokens)"
	if !bytes.Equal(stored, sum[:]) {
		if fromFile {
			return nil, "", fmt.Errorf("%s is not the device-token key of this database (another server uses a different one): copy the file from that server's keys folder%s", path, lost)
		}
		return nil, "", fmt.Errorf("%s is missing and this database already has a device-token key: copy %s from the server that started first into %s%s", path, FileDeviceTokenKey, keysDir, lost)
	}
	if !fromFile {
		if key, err = writeKeyFile(path, key); errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
			path = filepath.Join(dataDir, FileDeviceTokenKey) // a read-only keys folder
			key, err = writeKeyFile(path, key)
		}
		if err != nil {
			return nil, "", err
		}
	}
	if legacy != nil && bytes.Equal(legacy, key) {
		if err := db.DeleteSetting(ctx, settingLegacyTokenKey); err != nil {
			return nil, "", err
		}
	}
	return key, path, nil
}

// readKeyFile reads a hex key file, refusing one that every user may read (the server's group
// may: packages give the online keys to root:upkeep, 0640).
func readKeyFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o007 != 0 {
		return nil, fmt.Errorf("%s has mode %s: every user may read it; chmod 600 it (and consider the device-token key leaked)", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) < 32 {
		return nil, fmt.Errorf("%s: want at least 32 bytes of hex", path)
	}
	return key, nil
}

// writeKeyFile writes key as hex to path (0600), without replacing a file another replica
// sharing the folder wrote meanwhile: that one is returned instead.
func writeKeyFile(path string, key []byte) ([]byte, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+FileDeviceTokenKey+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("device-token key: %w", err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("device-token key: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(hex.EncodeToString(key) + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("device-token key: %w", err)
	}
	// A link never replaces an existing file.
	if err := os.Link(tmp.Name(), path); err != nil { // 0600: CreateTemp's mode
		if errors.Is(err, fs.ErrExist) {
			return readKeyFile(path)
		}
		return nil, fmt.Errorf("device-token key: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync() //nolint:errcheck // best effort: the link is in place
		d.Close()
	}
	return key, nil
}
