package tuf

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Key set file names inside a keys folder.
const (
	FileTargetsKey      = "targets.key"       // offline
	FileDirectorRootKey = "director-root.key" // offline
	FileSnapshotKey     = "snapshot.key"      // online
	FileTimestampKey    = "timestamp.key"     // online
	FileDirectorKey     = "director.key"      // online
	FileImageRoot       = "root.json"
	FileDirectorRoot    = "director-root.json"
	FileImageTargets    = "targets.json"
)

// RootKeyFile names the i-th (1-based) offline image root key.
func RootKeyFile(i int) string { return fmt.Sprintf("root-%d.key", i) }

// KeySetInfo says what InitKeySet wrote.
type KeySetInfo struct {
	Offline []string // files that must leave the server and stay offline
	Online  []string // files the server needs
	Public  []string // trust roots to provision into devices
}

// InitKeySet creates a new key set in dir: rootKeys offline image-root keys with the given
// threshold, an offline targets key, an offline director-root key, the online snapshot,
// timestamp and director keys, version 1 of both roots, and an empty image targets version 1.
// It refuses to overwrite an existing key set.
func InitKeySet(dir string, rootKeys, threshold int, lt Lifetimes, now time.Time) (*KeySetInfo, error) {
	if rootKeys < 1 {
		return nil, fmt.Errorf("%d root keys: at least one is needed", rootKeys)
	}
	if threshold < 1 || threshold > rootKeys {
		return nil, fmt.Errorf("root threshold %d must be between 1 and the number of root keys (%d)", threshold, rootKeys)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("keys dir: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, FileImageRoot)); err == nil {
		return nil, fmt.Errorf("%s already holds a key set; refusing to overwrite it", dir)
	}
	gen := func() *Key { k, err := GenerateKey(); must(err); return k }
	var roots []*Key
	for range rootKeys {
		roots = append(roots, gen())
	}
	targets, dirRoot, snap, ts, director := gen(), gen(), gen(), gen(), gen()
	imageRoot, err := NewRoot(roots, threshold, targets, snap, ts, now.Add(lt.Root), true)
	if err != nil {
		return nil, err
	}
	directorRoot, err := NewRoot([]*Key{dirRoot}, 1, director, director, director, now.Add(lt.Root), true)
	if err != nil {
		return nil, err
	}
	t := metadata.Targets(now.Add(lt.Targets).UTC().Truncate(time.Second))
	tb, err := SignTargets(t, targets)
	if err != nil {
		return nil, err
	}
	info := &KeySetInfo{}
	keys := map[string]*Key{FileTargetsKey: targets, FileDirectorRootKey: dirRoot, FileSnapshotKey: snap, FileTimestampKey: ts, FileDirectorKey: director}
	for i, k := range roots {
		keys[RootKeyFile(i+1)] = k
		info.Offline = append(info.Offline, RootKeyFile(i+1))
	}
	info.Offline = append(info.Offline, FileTargetsKey, FileDirectorRootKey)
	info.Online = []string{FileSnapshotKey, FileTimestampKey, FileDirectorKey, FileImageRoot, FileDirectorRoot, FileImageTargets}
	info.Public = []string{FileImageRoot, FileDirectorRoot}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range keys {
			if !yield(n) {
				return
			}
		}
	}) {
		if err := SaveKey(filepath.Join(dir, name), keys[name]); err != nil {
			return nil, err
		}
	}
	ir, err := imageRoot.ToBytes(true)
	if err != nil {
		return nil, err
	}
	dr, err := directorRoot.ToBytes(true)
	if err != nil {
		return nil, err
	}
	for name, b := range map[string][]byte{FileImageRoot: ir, FileDirectorRoot: dr, FileImageTargets: tb} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return nil, fmt.Errorf("write %s: %w", name, err)
		}
	}
	return info, nil
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

// ServerKeys are the online keys and trust files the server loads from a keys folder.
type ServerKeys struct {
	Snapshot, Timestamp, Director         *Key
	ImageRoot, DirectorRoot, ImageTargets []byte
}

// LoadServerKeys reads the online part of a key set. The bootstrap files (roots, first targets)
// are optional once the database has them.
func LoadServerKeys(dir string) (*ServerKeys, error) {
	var sk ServerKeys
	var err error
	for name, dst := range map[string]**Key{FileSnapshotKey: &sk.Snapshot, FileTimestampKey: &sk.Timestamp, FileDirectorKey: &sk.Director} {
		if *dst, err = LoadKey(filepath.Join(dir, name)); err != nil {
			return nil, fmt.Errorf("online key %s: %w", name, err)
		}
	}
	for name, dst := range map[string]*[]byte{FileImageRoot: &sk.ImageRoot, FileDirectorRoot: &sk.DirectorRoot, FileImageTargets: &sk.ImageTargets} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		*dst = b
	}
	return &sk, nil
}

// RotateRoot builds the next root: the same role keys, new root keys with a threshold, signed by
// the old root keys (a threshold of them must be given) and every new one (TUF 5.3.4).
func RotateRoot(cur *metadata.Metadata[metadata.RootType], oldKeys, newKeys []*Key, threshold int, expires time.Time) ([]byte, error) {
	if threshold < 1 || threshold > len(newKeys) {
		return nil, fmt.Errorf("root threshold %d with %d new keys", threshold, len(newKeys))
	}
	next := *cur
	next.Signed.Keys = map[string]*metadata.Key{}
	next.Signed.Roles = map[string]*metadata.Role{}
	for role, r := range cur.Signed.Roles {
		nr := &metadata.Role{Threshold: r.Threshold}
		if role != Root {
			nr.KeyIDs = slices.Clone(r.KeyIDs)
			for _, id := range r.KeyIDs {
				next.Signed.Keys[id] = cur.Signed.Keys[id]
			}
		}
		next.Signed.Roles[role] = nr
	}
	for _, k := range newKeys {
		if err := next.Signed.AddKey(k.Public(), Root); err != nil {
			return nil, err
		}
	}
	next.Signed.Roles[Root].Threshold = threshold
	next.Signed.Version = cur.Signed.Version + 1
	next.Signed.Expires = expires.UTC().Truncate(time.Second)
	next.Signatures = nil
	return SignRoot(&next, append(slices.Clone(oldKeys), newKeys...)...)
}

// LoadProductKeys reads a product's offline keys, ProductKeyFile(product, 1), 2, ... from dir up
// to the first that does not exist; none is not an error (the product is not delegated).
func LoadProductKeys(dir, product string) ([]*Key, []string, error) {
	var keys []*Key
	var files []string
	for i := 1; ; i++ {
		name := ProductKeyFile(product, i)
		k, err := LoadKey(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			return keys, files, nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", name, err)
		}
		keys, files = append(keys, k), append(files, name)
	}
}
