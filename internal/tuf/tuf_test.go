package tuf_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/tuf"
)

// testNow is the fixed clock of these tests; fixedExpires is well after it.
var (
	testNow      = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	fixedExpires = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
)

// seededKey is a deterministic key, so that signed seeds and corpus files stay valid across runs.
func seededKey(t testing.TB, b byte) *tuf.Key {
	t.Helper()
	k, err := tuf.NewKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, ed25519.SeedSize)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func genKey(t testing.TB) *tuf.Key {
	t.Helper()
	k, err := tuf.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// fixedRepo is an image repository with deterministic keys: root key 1, targets key 2,
// snapshot key 3, timestamp key 4.
type fixedRepo struct {
	rootKey, targetsKey *tuf.Key
	root                *metadata.Metadata[metadata.RootType]
	rootJSON            []byte
}

func newFixedRepo(t testing.TB) *fixedRepo {
	t.Helper()
	r := &fixedRepo{rootKey: seededKey(t, 1), targetsKey: seededKey(t, 2)}
	root, err := tuf.NewRoot([]*tuf.Key{r.rootKey}, 1, r.targetsKey, seededKey(t, 3), seededKey(t, 4), fixedExpires, true)
	if err != nil {
		t.Fatal(err)
	}
	if r.rootJSON, err = root.ToBytes(false); err != nil {
		t.Fatal(err)
	}
	r.root = root
	return r
}

func TestValidTargetName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"p/1.0/fw.img", true},
		{"fw.img", true},
		{"thermostat/1.0.0-rc1+build.7/firmware_v2.img", true},
		{"a/b/c/d/e/f/g/h", true},
		{strings.Repeat("a", 255), true},
		{"", false},
		{"../x", false},
		{"..", false},
		{".", false},
		{"a/..", false},
		{"a//b", false},
		{"/abs", false},
		{"trailing/", false},
		{"a/./b", false},
		{`a\b`, false},
		{`..\..\x`, false},
		{"a b", false},
		{strings.Repeat("a", 256), false},
		{"a/b/c/d/e/f/g/h/i", false},
		{"%2e%2e", false},
		{"..%2fetc%2fpasswd", false},
		{"a\x00b", false},
		{"a\nb", false},
		{"fw\u00e9.img", false},
		{"a:b", false},
		{"a?b", false},
	}
	for _, tt := range tests {
		err := tuf.ValidTargetName(tt.name)
		if got := err == nil; got != tt.ok {
			t.Errorf("ValidTargetName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, tuf.ErrBadName) {
			t.Errorf("ValidTargetName(%q) error %v does not wrap ErrBadName", tt.name, err)
		}
	}
}

func TestValidIdent(t *testing.T) {
	tests := []struct {
		s  string
		ok bool
	}{
		{"thermostat", true},
		{"tstat-v2", true},
		{"1.0.0-rc1+build_7", true},
		{strings.Repeat("x", 64), true},
		{"", false},
		{strings.Repeat("x", 65), false},
		{"a/b", false},
		{".", false},
		{"..", false},
		{"a b", false},
		{"a\\b", false},
		{"caf\u00e9", false},
		{"a\x00", false},
	}
	for _, tt := range tests {
		err := tuf.ValidIdent("product", tt.s)
		if got := err == nil; got != tt.ok {
			t.Errorf("ValidIdent(%q) = %v, want ok=%v", tt.s, err, tt.ok)
		}
		if err != nil && !strings.Contains(err.Error(), strconv.Quote(tt.s)) {
			t.Errorf("ValidIdent(%q) error %q does not quote the value", tt.s, err)
		}
	}
}

func TestInitKeySet(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	lt := tuf.DefaultLifetimes()
	info, err := tuf.InitKeySet(dir, 3, 2, lt, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	wantOffline := []string{"root-1.key", "root-2.key", "root-3.key", tuf.FileTargetsKey, tuf.FileDirectorRootKey}
	if !slices.Equal(info.Offline, wantOffline) {
		t.Errorf("Offline = %v, want %v", info.Offline, wantOffline)
	}
	if !slices.Equal(info.Public, []string{tuf.FileImageRoot, tuf.FileDirectorRoot}) {
		t.Errorf("Public = %v", info.Public)
	}
	for _, f := range []string{tuf.FileSnapshotKey, tuf.FileTimestampKey, tuf.FileDirectorKey, tuf.FileImageRoot, tuf.FileDirectorRoot, tuf.FileImageTargets} {
		if !slices.Contains(info.Online, f) {
			t.Errorf("Online %v lacks %s", info.Online, f)
		}
	}

	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		t.Errorf("keys dir mode %v, want no group or other access", perm)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var keyFiles []string
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(e.Name(), ".key") {
			keyFiles = append(keyFiles, e.Name())
			if perm := fi.Mode().Perm(); perm != 0o600 {
				t.Errorf("%s has mode %v, want 0600", e.Name(), perm)
			}
			if _, err := tuf.LoadKey(filepath.Join(dir, e.Name())); err != nil {
				t.Errorf("%s: %v", e.Name(), err)
			}
		}
	}
	if len(keyFiles) != 8 {
		t.Errorf("key files %v, want 8 (3 root, targets, director-root, snapshot, timestamp, director)", keyFiles)
	}

	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	rootJSON := read(tuf.FileImageRoot)
	root, err := tuf.ParseRoot(rootJSON)
	if err != nil {
		t.Fatalf("image root: %v", err)
	}
	if r := root.Signed.Roles[tuf.Root]; r.Threshold != 2 || len(r.KeyIDs) != 3 {
		t.Errorf("image root role: threshold %d, %d keys; want 2 of 3", r.Threshold, len(r.KeyIDs))
	}
	if !root.Signed.ConsistentSnapshot || root.Signed.Version != 1 {
		t.Errorf("image root: consistent %v version %d", root.Signed.ConsistentSnapshot, root.Signed.Version)
	}
	for i := 1; i <= 3; i++ {
		k, err := tuf.LoadKey(filepath.Join(dir, tuf.RootKeyFile(i)))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(root.Signed.Roles[tuf.Root].KeyIDs, k.ID) {
			t.Errorf("root key %d is not in the root role", i)
		}
	}
	tk, err := tuf.LoadKey(filepath.Join(dir, tuf.FileTargetsKey))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(root.Signed.Roles[tuf.Targets].KeyIDs, []string{tk.ID}) {
		t.Errorf("targets role keys %v, want the targets key %s", root.Signed.Roles[tuf.Targets].KeyIDs, tk.ID)
	}
	dirRoot, err := tuf.ParseRoot(read(tuf.FileDirectorRoot))
	if err != nil {
		t.Fatalf("director root: %v", err)
	}
	if r := dirRoot.Signed.Roles[tuf.Root]; r.Threshold != 1 || len(r.KeyIDs) != 1 {
		t.Errorf("director root role: threshold %d, %d keys; want 1 of 1", r.Threshold, len(r.KeyIDs))
	}
	targets, err := tuf.VerifyTargets(root, read(tuf.FileImageTargets), time.Now())
	if err != nil {
		t.Fatalf("image targets: %v", err)
	}
	if targets.Signed.Version != 1 || len(targets.Signed.Targets) != 0 {
		t.Errorf("image targets version %d with %d targets", targets.Signed.Version, len(targets.Signed.Targets))
	}

	sk, err := tuf.LoadServerKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	for role, k := range map[string]*tuf.Key{tuf.Snapshot: sk.Snapshot, tuf.Timestamp: sk.Timestamp} {
		if !slices.Contains(root.Signed.Roles[role].KeyIDs, k.ID) {
			t.Errorf("online %s key is not trusted by the image root", role)
		}
	}
	for _, role := range []string{tuf.Targets, tuf.Snapshot, tuf.Timestamp} {
		if !slices.Contains(dirRoot.Signed.Roles[role].KeyIDs, sk.Director.ID) {
			t.Errorf("director key is not trusted for director %s", role)
		}
	}
	if !bytes.Equal(sk.ImageRoot, rootJSON) {
		t.Error("LoadServerKeys image root differs from root.json")
	}

	// A second run must refuse and leave everything as it was.
	before := map[string][]byte{}
	for _, e := range entries {
		before[e.Name()] = read(e.Name())
	}
	if _, err := tuf.InitKeySet(dir, 1, 1, lt, time.Now()); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Fatalf("second InitKeySet = %v, want a refusal", err)
	}
	after, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(entries) {
		t.Errorf("second run changed the file count: %d -> %d", len(entries), len(after))
	}
	for name, b := range before {
		if !bytes.Equal(read(name), b) {
			t.Errorf("second run changed %s", name)
		}
	}
}

func TestInitKeySetThreshold(t *testing.T) {
	lt := tuf.DefaultLifetimes()
	for _, tc := range []struct{ keys, threshold int }{{1, 0}, {1, 2}, {3, 4}, {3, -1}, {0, 2}, {0, 1}, {-1, 1}} {
		dir := filepath.Join(t.TempDir(), "keys")
		if _, err := tuf.InitKeySet(dir, tc.keys, tc.threshold, lt, time.Now()); err == nil {
			t.Errorf("InitKeySet(%d keys, threshold %d) = nil error", tc.keys, tc.threshold)
		}
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("InitKeySet(%d keys, threshold %d) created %s", tc.keys, tc.threshold, dir)
		}
	}
	for _, tc := range []struct{ keys, threshold, wantKeys int }{{1, 1, 1}, {2, 2, 2}} {
		dir := filepath.Join(t.TempDir(), "keys")
		if _, err := tuf.InitKeySet(dir, tc.keys, tc.threshold, lt, time.Now()); err != nil {
			t.Errorf("InitKeySet(%d keys, threshold %d): %v", tc.keys, tc.threshold, err)
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, tuf.FileImageRoot))
		if err != nil {
			t.Fatal(err)
		}
		root, err := tuf.ParseRoot(b)
		if err != nil {
			t.Fatal(err)
		}
		if r := root.Signed.Roles[tuf.Root]; len(r.KeyIDs) != tc.wantKeys || r.Threshold != tc.threshold {
			t.Errorf("InitKeySet(%d, %d): root role %d keys threshold %d", tc.keys, tc.threshold, len(r.KeyIDs), r.Threshold)
		}
	}
}

func TestInitKeySetKeepsExistingKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	old := []byte("an operator's key that must survive\n")
	path := filepath.Join(dir, tuf.FileTargetsKey)
	if err := os.WriteFile(path, old, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := tuf.InitKeySet(dir, 1, 1, tuf.DefaultLifetimes(), time.Now()); err == nil {
		t.Fatal("InitKeySet over an existing key file = nil error")
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, old) {
		t.Fatal("InitKeySet overwrote an existing key file")
	}
}

func TestSaveLoadKey(t *testing.T) {
	k := genKey(t)
	path := filepath.Join(t.TempDir(), "a.key")
	if err := tuf.SaveKey(path, k); err != nil {
		t.Fatal(err)
	}
	got, err := tuf.LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != k.ID || !got.Private.Equal(k.Private) {
		t.Error("loaded key differs from the saved one")
	}
	if err := tuf.SaveKey(path, genKey(t)); err == nil {
		t.Error("SaveKey overwrote an existing file")
	}
	if again, _ := tuf.LoadKey(path); again == nil || again.ID != k.ID {
		t.Error("the existing key changed")
	}
	if _, err := tuf.LoadKey(filepath.Join(t.TempDir(), "missing.key")); err == nil {
		t.Error("LoadKey of a missing file = nil error")
	}
}

func TestParseKeyGarbage(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	rsaDER, err := x509.MarshalPKCS8PrivateKey(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	edDER, err := x509.MarshalPKCS8PrivateKey(edPriv)
	if err != nil {
		t.Fatal(err)
	}
	pemOf := func(typ string, b []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}) }
	tests := map[string][]byte{
		"nil":                  nil,
		"empty":                {},
		"text":                 []byte("not a key at all"),
		"truncated pem":        pemOf("PRIVATE KEY", edDER)[:40],
		"public key block":     pemOf("PUBLIC KEY", edDER),
		"ec private key block": pemOf("EC PRIVATE KEY", edDER),
		"garbage der":          pemOf("PRIVATE KEY", []byte{0x30, 0x03, 0x02, 0x01}),
		"empty der":            pemOf("PRIVATE KEY", nil),
		"rsa pkcs8":            pemOf("PRIVATE KEY", rsaDER),
		"raw ed25519 bytes":    edPriv,
	}
	for name, b := range tests {
		if k, err := tuf.ParseKey(b); err == nil {
			t.Errorf("%s: ParseKey = %v, want error", name, k)
		}
	}
	k, err := tuf.ParseKey(pemOf("PRIVATE KEY", edDER))
	if err != nil || !k.Private.Equal(edPriv) {
		t.Fatalf("ParseKey of a good key = %v, %v", k, err)
	}
}

func TestParseRoot(t *testing.T) {
	r := newFixedRepo(t)
	got, err := tuf.ParseRoot(r.rootJSON)
	if err != nil {
		t.Fatal(err)
	}
	if got.Signed.Version != 1 || got.Signed.Roles[tuf.Root].KeyIDs[0] != r.rootKey.ID {
		t.Errorf("ParseRoot = version %d roles %v", got.Signed.Version, got.Signed.Roles)
	}

	tampered := bytes.Replace(r.rootJSON, []byte(`"version":1`), []byte(`"version":2`), 1)
	if bytes.Equal(tampered, r.rootJSON) {
		t.Fatal("tampering did not change the root")
	}
	unsigned, _ := metadata.Root().FromBytes(r.rootJSON)
	unsigned.ClearSignatures()
	unsignedJSON, _ := unsigned.ToBytes(false)
	// A root signed by a key it does not list.
	foreign, err := tuf.NewRoot([]*tuf.Key{genKey(t)}, 1, r.targetsKey, r.targetsKey, r.targetsKey, fixedExpires, true)
	if err != nil {
		t.Fatal(err)
	}
	foreignJSON, err := tuf.SignRoot(foreign, r.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	targets := emptyTargets(t, r.targetsKey)
	for name, b := range map[string][]byte{
		"tampered": tampered, "unsigned": unsignedJSON, "signed by an unlisted key": foreignJSON, "targets": targets,
		"garbage": []byte("{"), "empty": nil, "null": []byte("null"),
	} {
		if _, err := tuf.ParseRoot(b); err == nil {
			t.Errorf("ParseRoot(%s) = nil error", name)
		}
	}
}

func readTestdata(t testing.TB, elem ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(append([]string{"testdata"}, elem...)...))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRotateRoot(t *testing.T) {
	old1, old2 := genKey(t), genKey(t)
	targets, snap, ts := genKey(t), genKey(t), genKey(t)
	cur, err := tuf.NewRoot([]*tuf.Key{old1, old2}, 2, targets, snap, ts, fixedExpires, true)
	if err != nil {
		t.Fatal(err)
	}
	curJSON, err := cur.ToBytes(false)
	if err != nil {
		t.Fatal(err)
	}
	new1, new2 := genKey(t), genKey(t)
	exp := fixedExpires.Add(24 * time.Hour)

	t.Run("old and new signed accepted", func(t *testing.T) {
		data, err := tuf.RotateRoot(cur, []*tuf.Key{old1, old2}, []*tuf.Key{new1, new2}, 2, exp)
		if err != nil {
			t.Fatal(err)
		}
		next, err := tuf.VerifyRootUpdate(cur, data)
		if err != nil {
			t.Fatalf("VerifyRootUpdate: %v", err)
		}
		if next.Signed.Version != 2 {
			t.Errorf("version %d, want 2", next.Signed.Version)
		}
		if !next.Signed.Expires.Equal(exp) {
			t.Errorf("expires %v, want %v", next.Signed.Expires, exp)
		}
		rr := next.Signed.Roles[tuf.Root]
		if rr.Threshold != 2 || !slices.Equal(slices.Sorted(slices.Values(rr.KeyIDs)), slices.Sorted(slices.Values([]string{new1.ID, new2.ID}))) {
			t.Errorf("new root role = %+v, want the new keys with threshold 2", rr)
		}
		for role, k := range map[string]*tuf.Key{tuf.Targets: targets, tuf.Snapshot: snap, tuf.Timestamp: ts} {
			if !slices.Equal(next.Signed.Roles[role].KeyIDs, []string{k.ID}) {
				t.Errorf("%s keys changed: %v", role, next.Signed.Roles[role].KeyIDs)
			}
			if next.Signed.Keys[k.ID] == nil {
				t.Errorf("%s key missing from the new root", role)
			}
		}
		for _, k := range []*tuf.Key{old1, old2} {
			if next.Signed.Keys[k.ID] != nil {
				t.Errorf("old root key %s still listed", k.ID)
			}
		}
		if _, err := tuf.ParseRoot(data); err != nil {
			t.Errorf("ParseRoot of the new root: %v", err)
		}
		// The current root is left as it was.
		if cur.Signed.Version != 1 || !slices.Contains(cur.Signed.Roles[tuf.Root].KeyIDs, old1.ID) {
			t.Error("RotateRoot changed the current root")
		}
		if _, err := tuf.ParseRoot(curJSON); err != nil {
			t.Errorf("current root no longer verifies: %v", err)
		}
		// The chain goes on from the new root with the new keys.
		new3 := genKey(t)
		third, err := tuf.RotateRoot(next, []*tuf.Key{new1, new2}, []*tuf.Key{new3}, 1, exp)
		if err != nil {
			t.Fatal(err)
		}
		if v3, err := tuf.VerifyRootUpdate(next, third); err != nil || v3.Signed.Version != 3 {
			t.Fatalf("third root: %v", err)
		}
		if _, err := tuf.VerifyRootUpdate(cur, third); err == nil {
			t.Fatal("version 3 accepted directly over version 1")
		}
	})
	t.Run("only new signed refused", func(t *testing.T) {
		data, err := tuf.RotateRoot(cur, nil, []*tuf.Key{new1}, 1, exp)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tuf.VerifyRootUpdate(cur, data); err == nil || !strings.Contains(err.Error(), "current root keys") {
			t.Fatalf("VerifyRootUpdate = %v, want a refusal for the current keys", err)
		}
	})
	t.Run("below the old threshold refused", func(t *testing.T) {
		data, err := tuf.RotateRoot(cur, []*tuf.Key{old1}, []*tuf.Key{new1}, 1, exp)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tuf.VerifyRootUpdate(cur, data); err == nil {
			t.Fatal("one of two old keys accepted")
		}
	})
	t.Run("only old signed refused", func(t *testing.T) {
		data, err := tuf.RotateRoot(cur, []*tuf.Key{old1, old2}, []*tuf.Key{new1}, 1, exp)
		if err != nil {
			t.Fatal(err)
		}
		md, err := metadata.Root().FromBytes(data)
		if err != nil {
			t.Fatal(err)
		}
		data, err = tuf.SignRoot(md, old1, old2)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tuf.VerifyRootUpdate(cur, data); err == nil || !strings.Contains(err.Error(), "its own keys") {
			t.Fatalf("VerifyRootUpdate = %v, want a refusal for the new keys", err)
		}
	})
	t.Run("version skip refused", func(t *testing.T) {
		data, err := tuf.RotateRoot(cur, []*tuf.Key{old1, old2}, []*tuf.Key{new1}, 1, exp)
		if err != nil {
			t.Fatal(err)
		}
		md, err := metadata.Root().FromBytes(data)
		if err != nil {
			t.Fatal(err)
		}
		md.Signed.Version = 3
		data, err = tuf.SignRoot(md, old1, old2, new1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tuf.VerifyRootUpdate(cur, data); err == nil || !strings.Contains(err.Error(), "version 3") {
			t.Fatalf("VerifyRootUpdate = %v, want a version refusal", err)
		}
	})
	t.Run("same version replay refused", func(t *testing.T) {
		if _, err := tuf.VerifyRootUpdate(cur, curJSON); err == nil {
			t.Fatal("the current root accepted as its own successor")
		}
	})
	t.Run("tampered after signing refused", func(t *testing.T) {
		data, err := tuf.RotateRoot(cur, []*tuf.Key{old1, old2}, []*tuf.Key{new1}, 1, exp)
		if err != nil {
			t.Fatal(err)
		}
		tampered := bytes.Replace(data, []byte(`"consistent_snapshot":true`), []byte(`"consistent_snapshot":false`), 1)
		if bytes.Equal(tampered, data) {
			t.Fatal("tampering did not change the root")
		}
		if _, err := tuf.VerifyRootUpdate(cur, tampered); err == nil {
			t.Fatal("tampered root accepted")
		}
	})
	t.Run("garbage refused", func(t *testing.T) {
		for _, b := range [][]byte{nil, []byte("{}"), []byte(`{"signed":{"_type":"targets"},"signatures":[]}`)} {
			if _, err := tuf.VerifyRootUpdate(cur, b); err == nil {
				t.Errorf("VerifyRootUpdate(%q) = nil error", b)
			}
		}
	})
	t.Run("threshold bounds", func(t *testing.T) {
		for _, th := range []int{0, -1, 3} {
			if _, err := tuf.RotateRoot(cur, []*tuf.Key{old1, old2}, []*tuf.Key{new1, new2}, th, exp); err == nil {
				t.Errorf("RotateRoot threshold %d with 2 new keys = nil error", th)
			}
		}
		if _, err := tuf.RotateRoot(cur, []*tuf.Key{old1, old2}, nil, 1, exp); err == nil {
			t.Error("RotateRoot without new keys = nil error")
		}
	})
}

func TestNewRootThreshold(t *testing.T) {
	k := genKey(t)
	for _, th := range []int{0, 2} {
		if _, err := tuf.NewRoot([]*tuf.Key{k}, th, k, k, k, fixedExpires, true); err == nil {
			t.Errorf("NewRoot threshold %d of 1 key = nil error", th)
		}
	}
}

func TestSignSnapshotTimestamp(t *testing.T) {
	sk, tk := genKey(t), genKey(t)
	st, err := tuf.SignSnapshotTimestamp(sk, tk, 7, 4, testNow.Add(2*time.Hour), testNow.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !st.Expires.Equal(testNow.Add(time.Hour)) {
		t.Errorf("Expires %v, want the earlier timestamp expiry", st.Expires)
	}
	snap, err := metadata.Snapshot().FromBytes(st.Snapshot)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := metadata.Timestamp().FromBytes(st.Timestamp)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Signed.Version != 7 || snap.Signed.Meta["targets.json"].Version != 4 || ts.Signed.Version != 7 || ts.Signed.Meta["snapshot.json"].Version != 7 {
		t.Errorf("snapshot %d (targets %d), timestamp %d (snapshot %d)", snap.Signed.Version, snap.Signed.Meta["targets.json"].Version, ts.Signed.Version, ts.Signed.Meta["snapshot.json"].Version)
	}
}

func TestTargetName(t *testing.T) {
	if got := tuf.TargetName("p", "1.0", "fw.img"); got != "p/1.0/fw.img" {
		t.Errorf("TargetName = %q", got)
	}
}

// emptyTargets is targets metadata naming nothing, signed by keys.
func emptyTargets(t testing.TB, keys ...*tuf.Key) []byte {
	t.Helper()
	b, err := tuf.SignTargets(metadata.Targets(fixedExpires), keys...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func FuzzParseRoot(f *testing.F) {
	r := newFixedRepo(f)
	f.Add(r.rootJSON)
	f.Add(bytes.Replace(r.rootJSON, []byte(`"version":1`), []byte(`"version":2`), 1))
	f.Add(bytes.Replace(r.rootJSON, []byte(`"threshold":1`), []byte(`"threshold":0`), 1))
	rotated, err := tuf.RotateRoot(r.root, []*tuf.Key{r.rootKey}, []*tuf.Key{seededKey(f, 9)}, 1, fixedExpires)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(rotated)
	f.Add(emptyTargets(f, r.targetsKey))
	for _, project := range []string{"python-tuf", "go-tuf"} {
		f.Add(readTestdata(f, project, "1.root.json"))
	}
	f.Add([]byte(`{"signed":{"_type":"root","keys":{},"roles":{"root":{"keyids":[],"threshold":1}}},"signatures":[]}`))
	f.Add([]byte(`{"signed":{"_type":"root"},"signatures":null}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		root, err := tuf.ParseRoot(data)
		if err != nil {
			if root != nil {
				t.Fatalf("ParseRoot returned a root with its error %v", err)
			}
			return
		}
		if root.Signed.Type != metadata.ROOT {
			t.Fatalf("accepted a root of type %q", root.Signed.Type)
		}
		if err := root.VerifyDelegate(tuf.Root, root); err != nil {
			t.Fatalf("accepted a root that does not verify itself: %v", err)
		}
		// An accepted root is never its own successor.
		if _, err := tuf.VerifyRootUpdate(root, data); err == nil {
			t.Fatal("a root verified as the update of itself")
		}
	})
}

// TestVerifyTargetsErrors checks that refusals wrap go-tuf's typed errors, and that the
// reference implementations' targets verify as plain TUF.
func TestVerifyTargetsErrors(t *testing.T) {
	r := newFixedRepo(t)
	var unsigned *metadata.ErrUnsignedMetadata
	if _, err := tuf.VerifyTargets(r.root, emptyTargets(t, genKey(t)), testNow); !errors.As(err, &unsigned) {
		t.Errorf("targets signed by another key: %v, want *metadata.ErrUnsignedMetadata", err)
	}
	expired, err := tuf.SignTargets(metadata.Targets(testNow.Add(-time.Hour)), r.targetsKey)
	if err != nil {
		t.Fatal(err)
	}
	var exp *metadata.ErrExpiredMetadata
	if _, err := tuf.VerifyTargets(r.root, expired, testNow); !errors.As(err, &exp) {
		t.Errorf("expired targets: %v, want *metadata.ErrExpiredMetadata", err)
	}
	if _, err := tuf.VerifyTargets(r.root, expired, time.Time{}); err != nil {
		t.Errorf("expired targets without a clock: %v", err)
	}
	// A root that skips a version.
	next := *r.root
	next.Signed.Version = 3
	skipped, err := tuf.SignRoot(&next, r.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	var bad *metadata.ErrBadVersionNumber
	if _, err := tuf.VerifyRootUpdate(r.root, skipped); !errors.As(err, &bad) {
		t.Errorf("root version 3 after 1: %v, want *metadata.ErrBadVersionNumber", err)
	}
	for _, project := range []string{"python-tuf", "go-tuf"} {
		root, err := tuf.ParseRoot(readTestdata(t, project, "1.root.json"))
		if err != nil {
			t.Fatalf("%s: ParseRoot: %v", project, err)
		}
		if _, err := tuf.VerifyTargets(root, readTestdata(t, project, "1.targets.json"), testNow); err != nil {
			t.Errorf("%s: VerifyTargets: %v", project, err)
		}
		if _, err := tuf.VerifyTargets(root, readTestdata(t, project, "1.targets.json"), time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC)); !errors.As(err, &exp) {
			t.Errorf("%s: VerifyTargets after expiry: %v, want *metadata.ErrExpiredMetadata", project, err)
		}
	}
	var malformed error
	func() {
		malformed = tuf.Guard("targets", func() error { panic("boom") })
	}()
	if !errors.Is(malformed, tuf.ErrMalformed) {
		t.Errorf("Guard after a panic: %v, want ErrMalformed", malformed)
	}
}
