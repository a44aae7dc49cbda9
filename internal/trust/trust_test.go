package trust_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/json"
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

	"upkeep.dev/upkeep/internal/trust"
)

// testNow is the fixed clock of these tests; fixedExpires is well after it.
var (
	testNow      = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	fixedExpires = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
)

// seededKey is a deterministic key, so that signed seeds and corpus files stay valid across runs.
func seededKey(t testing.TB, b byte) *trust.Key {
	t.Helper()
	k, err := trust.NewKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, ed25519.SeedSize)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func genKey(t testing.TB) *trust.Key {
	t.Helper()
	k, err := trust.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// fixedRepo is an image repository with deterministic keys: root key 1, targets key 2,
// snapshot key 3, timestamp key 4.
type fixedRepo struct {
	rootKey, targetsKey *trust.Key
	root                *metadata.Metadata[metadata.RootType]
	rootJSON            []byte
}

func newFixedRepo(t testing.TB) *fixedRepo {
	t.Helper()
	r := &fixedRepo{rootKey: seededKey(t, 1), targetsKey: seededKey(t, 2)}
	root, err := trust.NewRoot([]*trust.Key{r.rootKey}, 1, r.targetsKey, seededKey(t, 3), seededKey(t, 4), fixedExpires, true)
	if err != nil {
		t.Fatal(err)
	}
	if r.rootJSON, err = root.ToBytes(false); err != nil {
		t.Fatal(err)
	}
	r.root = root
	return r
}

func digests(content string) (string, string) {
	h256 := sha256.Sum256([]byte(content))
	h512 := sha512.Sum512([]byte(content))
	return hexs(h256[:]), hexs(h512[:])
}

func hexs(b []byte) string { return metadata.HexBytes(b).String() }

func goodCustom() trust.TargetCustom {
	return trust.TargetCustom{Product: "thermostat", HardwareIDs: []string{"tstat-v2"}, Version: "1.0.0", SecurityVersion: 3, Class: trust.ClassSecurity}
}

func targetFile(t testing.TB, content string, c trust.TargetCustom) *metadata.TargetFiles {
	t.Helper()
	h256, h512 := digests(content)
	tf, err := trust.NewTargetFile(int64(len(content)), h256, h512, c)
	if err != nil {
		t.Fatal(err)
	}
	return tf
}

// signedTargets signs targets metadata naming files, with version 1 unless v is set.
func signedTargets(t testing.TB, expires time.Time, files map[string]*metadata.TargetFiles, keys ...*trust.Key) []byte {
	t.Helper()
	md := metadata.Targets(expires)
	for n, f := range files {
		md.Signed.Targets[n] = f
	}
	b, err := trust.SignTargets(md, keys...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rawCustom(s string) *json.RawMessage {
	r := json.RawMessage(s)
	return &r
}

func kindOf(err error) string {
	var ve *trust.VerificationError
	if errors.As(err, &ve) {
		return ve.Kind
	}
	return ""
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
		err := trust.ValidTargetName(tt.name)
		if got := err == nil; got != tt.ok {
			t.Errorf("ValidTargetName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, trust.ErrBadName) {
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
		err := trust.ValidIdent("product", tt.s)
		if got := err == nil; got != tt.ok {
			t.Errorf("ValidIdent(%q) = %v, want ok=%v", tt.s, err, tt.ok)
		}
		if err != nil && !strings.Contains(err.Error(), strconv.Quote(tt.s)) {
			t.Errorf("ValidIdent(%q) error %q does not quote the value", tt.s, err)
		}
	}
}

func TestTargetCustomValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*trust.TargetCustom)
		want   string // substring of the error; empty: valid
	}{
		{"good", func(*trust.TargetCustom) {}, ""},
		{"feature class with fixes", func(c *trust.TargetCustom) { c.Class = trust.ClassFeature; c.Fixes = []string{"ADV-1"} }, ""},
		{"security version zero", func(c *trust.TargetCustom) { c.SecurityVersion = 0 }, ""},
		{"several hardware ids", func(c *trust.TargetCustom) { c.HardwareIDs = []string{"a", "b"} }, ""},
		{"empty product", func(c *trust.TargetCustom) { c.Product = "" }, "product"},
		{"product with slash", func(c *trust.TargetCustom) { c.Product = "a/b" }, "product"},
		{"product dotdot", func(c *trust.TargetCustom) { c.Product = ".." }, "product"},
		{"empty version", func(c *trust.TargetCustom) { c.Version = "" }, "version"},
		{"version with space", func(c *trust.TargetCustom) { c.Version = "1 0" }, `"1 0"`},
		{"no hardware ids", func(c *trust.TargetCustom) { c.HardwareIDs = nil }, "no hardware ids"},
		{"empty hardware id", func(c *trust.TargetCustom) { c.HardwareIDs = []string{"ok", ""} }, "hardware id"},
		{"hardware id with slash", func(c *trust.TargetCustom) { c.HardwareIDs = []string{"../x"} }, "hardware id"},
		{"negative security version", func(c *trust.TargetCustom) { c.SecurityVersion = -1 }, "negative security version"},
		{"empty class", func(c *trust.TargetCustom) { c.Class = "" }, "class"},
		{"unknown class", func(c *trust.TargetCustom) { c.Class = "urgent" }, "class"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := goodCustom()
			tt.modify(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.want != "" && err == nil:
				t.Fatalf("Validate() = nil, want error containing %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("Validate() = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestParseTargetCustom(t *testing.T) {
	tf := metadata.TargetFile()
	if _, err := trust.ParseTargetCustom(tf); err == nil {
		t.Error("no custom: got nil error")
	}
	tf.Custom = rawCustom(`{"product":`)
	if _, err := trust.ParseTargetCustom(tf); err == nil {
		t.Error("truncated custom: got nil error")
	}
	tf.Custom = rawCustom(`{"product":"p","hardware_ids":["h"],"version":"1","security_version":2,"class":"feature"}`)
	got, err := trust.ParseTargetCustom(tf)
	if err != nil {
		t.Fatal(err)
	}
	if got.Product != "p" || got.Version != "1" || got.SecurityVersion != 2 || got.Class != trust.ClassFeature || !slices.Equal(got.HardwareIDs, []string{"h"}) {
		t.Errorf("ParseTargetCustom = %+v", got)
	}
}

func TestNewTargetFile(t *testing.T) {
	h256, h512 := digests("image")
	if _, err := trust.NewTargetFile(5, "zz", h512, goodCustom()); err == nil {
		t.Error("bad hex: got nil error")
	}
	if _, err := trust.NewTargetFile(5, h256, "", goodCustom()); err == nil {
		t.Error("empty sha512: got nil error")
	}
	bad := goodCustom()
	bad.Class = "x"
	if _, err := trust.NewTargetFile(5, h256, h512, bad); err == nil {
		t.Error("bad custom: got nil error")
	}
	tf, err := trust.NewTargetFile(5, h256, h512, goodCustom())
	if err != nil {
		t.Fatal(err)
	}
	if tf.Length != 5 || tf.Hashes["sha256"].String() != h256 || tf.Hashes["sha512"].String() != h512 {
		t.Errorf("NewTargetFile = length %d hashes %v", tf.Length, tf.Hashes)
	}
}

// The device of the Decide tests and the one release the image repository holds for it.
const (
	devID     = "dev-0001"
	devHW     = "tstat-v2"
	devProd   = "thermostat"
	devTarget = "thermostat/1.0.0/fw.img"
	devImage  = "firmware 1.0.0"
)

func directorEntry(t testing.TB, it *metadata.TargetFiles, deviceID, hardwareID string) *metadata.TargetFiles {
	t.Helper()
	tf := metadata.TargetFile()
	tf.Length = it.Length
	tf.Hashes = metadata.Hashes{}
	for alg, h := range it.Hashes {
		tf.Hashes[alg] = slices.Clone(h)
	}
	b, err := json.Marshal(trust.DirectorCustom{DeviceID: deviceID, HardwareID: hardwareID})
	if err != nil {
		t.Fatal(err)
	}
	tf.Custom = rawCustom(string(b))
	return tf
}

func TestDecide(t *testing.T) {
	c := goodCustom()
	c.HardwareIDs = []string{"tstat-v1", devHW}
	c.SecurityVersion = 5
	image := targetFile(t, devImage, c)
	sha := image.Hashes["sha256"].String()
	otherSHA, _ := digests("another image")
	lookup := func(repo map[string]*metadata.TargetFiles) func(string) (*metadata.TargetFiles, error) {
		return func(name string) (*metadata.TargetFiles, error) {
			if tf, ok := repo[name]; ok {
				return tf, nil
			}
			return nil, errors.New("target not found")
		}
	}

	tests := []struct {
		name      string
		installed trust.Installed
		director  func() map[string]*metadata.TargetFiles
		image     func() map[string]*metadata.TargetFiles
		wantKind  string // empty: no error
		wantNoop  bool
		wantName  string
	}{
		{
			name:     "no director targets",
			director: func() map[string]*metadata.TargetFiles { return nil },
			wantNoop: true,
		},
		{
			name:     "empty director targets",
			director: func() map[string]*metadata.TargetFiles { return map[string]*metadata.TargetFiles{} },
			wantNoop: true,
		},
		{
			name: "more than one target",
			director: func() map[string]*metadata.TargetFiles {
				return map[string]*metadata.TargetFiles{devTarget: directorEntry(t, image, devID, devHW), "thermostat/0.9.0/fw.img": directorEntry(t, image, devID, devHW)}
			},
			wantKind: trust.FailTooMany,
		},
		{
			name: "wrong device id",
			director: func() map[string]*metadata.TargetFiles {
				return map[string]*metadata.TargetFiles{devTarget: directorEntry(t, image, "dev-0002", devHW)}
			},
			wantKind: trust.FailWrongDevice,
		},
		{
			name: "empty device id",
			director: func() map[string]*metadata.TargetFiles {
				return map[string]*metadata.TargetFiles{devTarget: directorEntry(t, image, "", devHW)}
			},
			wantKind: trust.FailWrongDevice,
		},
		{
			name: "director hardware id mismatch",
			director: func() map[string]*metadata.TargetFiles {
				return map[string]*metadata.TargetFiles{devTarget: directorEntry(t, image, devID, "tstat-v9")}
			},
			wantKind: trust.FailHardware,
		},
		{
			name: "image hardware ids exclude the device",
			director: func() map[string]*metadata.TargetFiles {
				return map[string]*metadata.TargetFiles{devTarget: directorEntry(t, image, devID, devHW)}
			},
			image: func() map[string]*metadata.TargetFiles {
				other := c
				other.HardwareIDs = []string{"tstat-v1", "tstat-v3"}
				return map[string]*metadata.TargetFiles{devTarget: targetFile(t, devImage, other)}
			},
			wantKind: trust.FailHardware,
		},
		{
			name: "not in image repository",
			director: func() map[string]*metadata.TargetFiles {
				return map[string]*metadata.TargetFiles{"thermostat/6.6.6/evil.img": directorEntry(t, image, devID, devHW)}
			},
			wantKind: trust.FailNotInImage,
		},
		{
			name: "length differs",
			director: func() map[string]*metadata.TargetFiles {
				d := directorEntry(t, image, devID, devHW)
				d.Length++
				return map[string]*metadata.TargetFiles{devTarget: d}
			},
			wantKind: trust.FailMismatch,
		},
		{
			name: "sha256 differs",
			director: func() map[string]*metadata.TargetFiles {
				d := directorEntry(t, image, devID, devHW)
				d.Hashes["sha256"][0] ^= 0xff
				return map[string]*metadata.TargetFiles{devTarget: d}
			},
			wantKind: trust.FailMismatch,
		},
		{
			name: "sha512 differs",
			director: func() map[string]*metadata.TargetFiles {
				d := directorEntry(t, image, devID, devHW)
				d.Hashes["sha512"][63] ^= 0x01
				return map[string]*metadata.TargetFiles{devTarget: d}
			},
			wantKind: trust.FailMismatch,
		},
		{
			name: "extra director hash algorithm absent from image",
			director: func() map[string]*metadata.TargetFiles {
				d := directorEntry(t, image, devID, devHW)
				d.Hashes["sha384"] = bytes.Repeat([]byte{7}, 48)
				return map[string]*metadata.TargetFiles{devTarget: d}
			},
			wantKind: trust.FailMismatch,
		},
		{
			name: "director names no hashes",
			director: func() map[string]*metadata.TargetFiles {
				d := directorEntry(t, image, devID, devHW)
				d.Hashes = metadata.Hashes{}
				return map[string]*metadata.TargetFiles{devTarget: d}
			},
			wantKind: trust.FailMismatch,
		},
		{
			name: "image repository has no sha256",
			director: func() map[string]*metadata.TargetFiles {
				d := directorEntry(t, image, devID, devHW)
				delete(d.Hashes, "sha256")
				return map[string]*metadata.TargetFiles{devTarget: d}
			},
			image: func() map[string]*metadata.TargetFiles {
				i := targetFile(t, devImage, c)
				delete(i.Hashes, "sha256")
				return map[string]*metadata.TargetFiles{devTarget: i}
			},
			wantKind: trust.FailMismatch,
		},
		{
			name: "director sha256 only is enough",
			director: func() map[string]*metadata.TargetFiles {
				d := directorEntry(t, image, devID, devHW)
				delete(d.Hashes, "sha512")
				return map[string]*metadata.TargetFiles{devTarget: d}
			},
			wantName: devTarget,
		},
		{
			name:      "lower security version is a rollback",
			installed: trust.Installed{Target: "thermostat/2.0.0/fw.img", SHA256: otherSHA, SecurityVersion: 6},
			director: func() map[string]*metadata.TargetFiles {
				return map[string]*metadata.TargetFiles{devTarget: directorEntry(t, image, devID, devHW)}
			},
			wantKind: trust.FailRollback,
		},
		{
			name:      "equal security version allowed",
			installed: trust.Installed{Target: "thermostat/0.9.0/fw.img", SHA256: otherSHA, SecurityVersion: 5},
			director: func() map[string]*metadata.TargetFiles {
				return map[string]*metadata.TargetFiles{devTarget: directorEntry(t, image, devID, devHW)}
			},
			wantName: devTarget,
		},
		{
			name:      "higher security version allowed",
			installed: trust.Installed{Target: "thermostat/0.9.0/fw.img", SHA256: otherSHA, SecurityVersion: 4},
			director: func() map[string]*metadata.TargetFiles {
				return map[string]*metadata.TargetFiles{devTarget: directorEntry(t, image, devID, devHW)}
			},
			wantName: devTarget,
		},
		{
			name:      "same target and sha is a no-op",
			installed: trust.Installed{Target: devTarget, SHA256: sha, SecurityVersion: 5},
			director: func() map[string]*metadata.TargetFiles {
				return map[string]*metadata.TargetFiles{devTarget: directorEntry(t, image, devID, devHW)}
			},
			wantNoop: true,
			wantName: devTarget,
		},
		{
			name:      "same target name with another sha is an update",
			installed: trust.Installed{Target: devTarget, SHA256: otherSHA, SecurityVersion: 5},
			director: func() map[string]*metadata.TargetFiles {
				return map[string]*metadata.TargetFiles{devTarget: directorEntry(t, image, devID, devHW)}
			},
			wantName: devTarget,
		},
		{
			name: "bad target name",
			director: func() map[string]*metadata.TargetFiles {
				return map[string]*metadata.TargetFiles{"../../etc/passwd": directorEntry(t, image, devID, devHW)}
			},
			image: func() map[string]*metadata.TargetFiles {
				return map[string]*metadata.TargetFiles{"../../etc/passwd": image}
			},
			wantKind: trust.FailBadCustom,
		},
		{
			name: "director target without device binding",
			director: func() map[string]*metadata.TargetFiles {
				d := directorEntry(t, image, devID, devHW)
				d.Custom = nil
				return map[string]*metadata.TargetFiles{devTarget: d}
			},
			wantKind: trust.FailBadCustom,
		},
		{
			name: "director custom not an object",
			director: func() map[string]*metadata.TargetFiles {
				d := directorEntry(t, image, devID, devHW)
				d.Custom = rawCustom(`"dev-0001"`)
				return map[string]*metadata.TargetFiles{devTarget: d}
			},
			wantKind: trust.FailBadCustom,
		},
		{
			name: "image custom invalid",
			director: func() map[string]*metadata.TargetFiles {
				return map[string]*metadata.TargetFiles{devTarget: directorEntry(t, image, devID, devHW)}
			},
			image: func() map[string]*metadata.TargetFiles {
				i := targetFile(t, devImage, c)
				i.Custom = rawCustom(`{"product":"thermostat","hardware_ids":["tstat-v2"],"version":"1.0.0","security_version":5,"class":"nightly"}`)
				return map[string]*metadata.TargetFiles{devTarget: i}
			},
			wantKind: trust.FailBadCustom,
		},
		{
			name: "image of another product on the same hardware",
			director: func() map[string]*metadata.TargetFiles {
				return map[string]*metadata.TargetFiles{devTarget: directorEntry(t, image, devID, devHW)}
			},
			image: func() map[string]*metadata.TargetFiles {
				oc := c
				oc.Product = "doorbell"
				return map[string]*metadata.TargetFiles{devTarget: targetFile(t, devImage, oc)}
			},
			wantKind: trust.FailProduct,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := map[string]*metadata.TargetFiles{devTarget: image}
			if tt.image != nil {
				repo = tt.image()
			}
			d, err := trust.Decide(devID, devHW, devProd, tt.installed, tt.director(), lookup(repo))
			if tt.wantKind != "" {
				if err == nil {
					t.Fatalf("Decide = %+v, want %s failure", d, tt.wantKind)
				}
				if got := kindOf(err); got != tt.wantKind {
					t.Fatalf("Decide error %v has kind %q, want %q", err, got, tt.wantKind)
				}
				if d != nil {
					t.Errorf("Decide returned a decision with its error: %+v", d)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			if d.Noop != tt.wantNoop || d.Name != tt.wantName {
				t.Fatalf("Decide = {Name: %q, Noop: %v}, want {Name: %q, Noop: %v}", d.Name, d.Noop, tt.wantName, tt.wantNoop)
			}
			if d.Name != "" {
				if d.Info == nil || d.Info.Length != image.Length || d.Info.Hashes["sha256"].String() != sha {
					t.Errorf("Decide Info = %+v, want the image repository entry", d.Info)
				}
				if d.Custom.SecurityVersion != 5 || d.Custom.Product != "thermostat" {
					t.Errorf("Decide Custom = %+v", d.Custom)
				}
			}
		})
	}
}

func TestDecideSignedDirectorView(t *testing.T) {
	k := genKey(t)
	image := targetFile(t, devImage, goodCustom())
	view, err := trust.SignDirectorView(k, 3, testNow.Add(time.Hour), devID, devHW, devTarget, image)
	if err != nil {
		t.Fatal(err)
	}
	md, err := metadata.Targets().FromBytes(view.Targets)
	if err != nil {
		t.Fatal(err)
	}
	if md.Signed.Version != 3 || view.Version != 3 {
		t.Errorf("view version %d / %d, want 3", md.Signed.Version, view.Version)
	}
	d, err := trust.Decide(devID, devHW, devProd, trust.Installed{}, md.Signed.Targets, func(string) (*metadata.TargetFiles, error) { return image, nil })
	if err != nil || d.Name != devTarget || d.Noop {
		t.Fatalf("Decide = %+v, %v", d, err)
	}
	if _, err := trust.Decide("dev-other", devHW, devProd, trust.Installed{}, md.Signed.Targets, func(string) (*metadata.TargetFiles, error) { return image, nil }); kindOf(err) != trust.FailWrongDevice {
		t.Fatalf("another device: %v, want %s", err, trust.FailWrongDevice)
	}
	empty, err := trust.SignDirectorView(k, 4, testNow.Add(time.Hour), devID, devHW, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	md, err = metadata.Targets().FromBytes(empty.Targets)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := trust.Decide(devID, devHW, devProd, trust.Installed{}, md.Signed.Targets, nil); err != nil || !d.Noop || d.Name != "" {
		t.Fatalf("empty view: Decide = %+v, %v", d, err)
	}
}

func TestVerificationErrorMessage(t *testing.T) {
	err := error(&trust.VerificationError{Kind: trust.FailRollback, Msg: "older"})
	if got := err.Error(); !strings.Contains(got, trust.FailRollback) || !strings.Contains(got, "older") {
		t.Errorf("Error() = %q", got)
	}
}

func TestInitKeySet(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	lt := trust.DefaultLifetimes()
	info, err := trust.InitKeySet(dir, 3, 2, lt, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	wantOffline := []string{"root-1.key", "root-2.key", "root-3.key", trust.FileTargetsKey, trust.FileDirectorRootKey}
	if !slices.Equal(info.Offline, wantOffline) {
		t.Errorf("Offline = %v, want %v", info.Offline, wantOffline)
	}
	if !slices.Equal(info.Public, []string{trust.FileImageRoot, trust.FileDirectorRoot}) {
		t.Errorf("Public = %v", info.Public)
	}
	for _, f := range []string{trust.FileSnapshotKey, trust.FileTimestampKey, trust.FileDirectorKey, trust.FileImageRoot, trust.FileDirectorRoot, trust.FileImageTargets} {
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
			if _, err := trust.LoadKey(filepath.Join(dir, e.Name())); err != nil {
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
	rootJSON := read(trust.FileImageRoot)
	root, err := trust.ParseRoot(rootJSON)
	if err != nil {
		t.Fatalf("image root: %v", err)
	}
	if r := root.Signed.Roles[trust.Root]; r.Threshold != 2 || len(r.KeyIDs) != 3 {
		t.Errorf("image root role: threshold %d, %d keys; want 2 of 3", r.Threshold, len(r.KeyIDs))
	}
	if !root.Signed.ConsistentSnapshot || root.Signed.Version != 1 {
		t.Errorf("image root: consistent %v version %d", root.Signed.ConsistentSnapshot, root.Signed.Version)
	}
	for i := 1; i <= 3; i++ {
		k, err := trust.LoadKey(filepath.Join(dir, trust.RootKeyFile(i)))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(root.Signed.Roles[trust.Root].KeyIDs, k.ID) {
			t.Errorf("root key %d is not in the root role", i)
		}
	}
	tk, err := trust.LoadKey(filepath.Join(dir, trust.FileTargetsKey))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(root.Signed.Roles[trust.Targets].KeyIDs, []string{tk.ID}) {
		t.Errorf("targets role keys %v, want the targets key %s", root.Signed.Roles[trust.Targets].KeyIDs, tk.ID)
	}
	dirRoot, err := trust.ParseRoot(read(trust.FileDirectorRoot))
	if err != nil {
		t.Fatalf("director root: %v", err)
	}
	if r := dirRoot.Signed.Roles[trust.Root]; r.Threshold != 1 || len(r.KeyIDs) != 1 {
		t.Errorf("director root role: threshold %d, %d keys; want 1 of 1", r.Threshold, len(r.KeyIDs))
	}
	targets, err := trust.VerifyTargets(root, read(trust.FileImageTargets), time.Now())
	if err != nil {
		t.Fatalf("image targets: %v", err)
	}
	if targets.Signed.Version != 1 || len(targets.Signed.Targets) != 0 {
		t.Errorf("image targets version %d with %d targets", targets.Signed.Version, len(targets.Signed.Targets))
	}

	sk, err := trust.LoadServerKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	for role, k := range map[string]*trust.Key{trust.Snapshot: sk.Snapshot, trust.Timestamp: sk.Timestamp} {
		if !slices.Contains(root.Signed.Roles[role].KeyIDs, k.ID) {
			t.Errorf("online %s key is not trusted by the image root", role)
		}
	}
	for _, role := range []string{trust.Targets, trust.Snapshot, trust.Timestamp} {
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
	if _, err := trust.InitKeySet(dir, 1, 1, lt, time.Now()); err == nil || !strings.Contains(err.Error(), "refusing") {
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
	lt := trust.DefaultLifetimes()
	for _, tc := range []struct{ keys, threshold int }{{1, 0}, {1, 2}, {3, 4}, {3, -1}, {0, 2}, {0, 1}, {-1, 1}} {
		dir := filepath.Join(t.TempDir(), "keys")
		if _, err := trust.InitKeySet(dir, tc.keys, tc.threshold, lt, time.Now()); err == nil {
			t.Errorf("InitKeySet(%d keys, threshold %d) = nil error", tc.keys, tc.threshold)
		}
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("InitKeySet(%d keys, threshold %d) created %s", tc.keys, tc.threshold, dir)
		}
	}
	for _, tc := range []struct{ keys, threshold, wantKeys int }{{1, 1, 1}, {2, 2, 2}} {
		dir := filepath.Join(t.TempDir(), "keys")
		if _, err := trust.InitKeySet(dir, tc.keys, tc.threshold, lt, time.Now()); err != nil {
			t.Errorf("InitKeySet(%d keys, threshold %d): %v", tc.keys, tc.threshold, err)
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, trust.FileImageRoot))
		if err != nil {
			t.Fatal(err)
		}
		root, err := trust.ParseRoot(b)
		if err != nil {
			t.Fatal(err)
		}
		if r := root.Signed.Roles[trust.Root]; len(r.KeyIDs) != tc.wantKeys || r.Threshold != tc.threshold {
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
	path := filepath.Join(dir, trust.FileTargetsKey)
	if err := os.WriteFile(path, old, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := trust.InitKeySet(dir, 1, 1, trust.DefaultLifetimes(), time.Now()); err == nil {
		t.Fatal("InitKeySet over an existing key file = nil error")
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, old) {
		t.Fatal("InitKeySet overwrote an existing key file")
	}
}

func TestSaveLoadKey(t *testing.T) {
	k := genKey(t)
	path := filepath.Join(t.TempDir(), "a.key")
	if err := trust.SaveKey(path, k); err != nil {
		t.Fatal(err)
	}
	got, err := trust.LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != k.ID || !got.Private.Equal(k.Private) {
		t.Error("loaded key differs from the saved one")
	}
	if err := trust.SaveKey(path, genKey(t)); err == nil {
		t.Error("SaveKey overwrote an existing file")
	}
	if again, _ := trust.LoadKey(path); again == nil || again.ID != k.ID {
		t.Error("the existing key changed")
	}
	if _, err := trust.LoadKey(filepath.Join(t.TempDir(), "missing.key")); err == nil {
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
		if k, err := trust.ParseKey(b); err == nil {
			t.Errorf("%s: ParseKey = %v, want error", name, k)
		}
	}
	k, err := trust.ParseKey(pemOf("PRIVATE KEY", edDER))
	if err != nil || !k.Private.Equal(edPriv) {
		t.Fatalf("ParseKey of a good key = %v, %v", k, err)
	}
}

func TestParseRoot(t *testing.T) {
	r := newFixedRepo(t)
	got, err := trust.ParseRoot(r.rootJSON)
	if err != nil {
		t.Fatal(err)
	}
	if got.Signed.Version != 1 || got.Signed.Roles[trust.Root].KeyIDs[0] != r.rootKey.ID {
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
	foreign, err := trust.NewRoot([]*trust.Key{genKey(t)}, 1, r.targetsKey, r.targetsKey, r.targetsKey, fixedExpires, true)
	if err != nil {
		t.Fatal(err)
	}
	foreignJSON, err := trust.SignRoot(foreign, r.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	targets := signedTargets(t, fixedExpires, nil, r.targetsKey)
	for name, b := range map[string][]byte{
		"tampered": tampered, "unsigned": unsignedJSON, "signed by an unlisted key": foreignJSON, "targets": targets,
		"garbage": []byte("{"), "empty": nil, "null": []byte("null"),
	} {
		if _, err := trust.ParseRoot(b); err == nil {
			t.Errorf("ParseRoot(%s) = nil error", name)
		}
	}
}

// TestReferenceFixtures checks metadata written by python-tuf and go-tuf: the signatures verify,
// and Upkeep's own rules (custom fields) still apply on top.
func TestReferenceFixtures(t *testing.T) {
	for _, project := range []string{"python-tuf", "go-tuf"} {
		t.Run(project, func(t *testing.T) {
			rootJSON := readTestdata(t, project, "1.root.json")
			targetsJSON := readTestdata(t, project, "1.targets.json")
			root, err := trust.ParseRoot(rootJSON)
			if err != nil {
				t.Fatalf("ParseRoot: %v", err)
			}
			// Signed correctly, but the reference targets carry no Upkeep custom fields.
			_, err = trust.VerifyTargets(root, targetsJSON, testNow)
			if err == nil || strings.Contains(err.Error(), "not signed") || strings.Contains(err.Error(), "expired") {
				t.Fatalf("VerifyTargets = %v, want a refusal of the custom fields only", err)
			}
			// The signature covers the targets: change one and it no longer verifies.
			tampered := bytes.Replace(targetsJSON, []byte(`"length": 31`), []byte(`"length": 32`), 1)
			if project == "go-tuf" {
				tampered = bytes.Replace(targetsJSON, []byte(`"length": 596`), []byte(`"length": 597`), 1)
			}
			if bytes.Equal(tampered, targetsJSON) {
				t.Fatal("tampering did not change the targets")
			}
			if _, err := trust.VerifyTargets(root, tampered, testNow); err == nil || !strings.Contains(err.Error(), "not signed") {
				t.Fatalf("tampered VerifyTargets = %v, want a signature failure", err)
			}
			if _, err := trust.VerifyTargets(root, targetsJSON, time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC)); err == nil || !strings.Contains(err.Error(), "expired") {
				t.Fatalf("VerifyTargets after expiry = %v, want an expiry failure", err)
			}
			// Our roots do not trust their keys, nor theirs ours.
			ours := newFixedRepo(t)
			if _, err := trust.VerifyTargets(ours.root, targetsJSON, testNow); err == nil {
				t.Fatal("reference targets verified against our root")
			}
			if _, err := trust.VerifyRootUpdate(ours.root, rootJSON); err == nil {
				t.Fatal("reference root accepted as an update of ours")
			}
		})
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

func TestVerifyTargets(t *testing.T) {
	r := newFixedRepo(t)
	name := "thermostat/1.0.0/fw.img"
	good := map[string]*metadata.TargetFiles{name: targetFile(t, "image", goodCustom())}

	t.Run("good", func(t *testing.T) {
		md, err := trust.VerifyTargets(r.root, signedTargets(t, fixedExpires, good, r.targetsKey), testNow)
		if err != nil {
			t.Fatal(err)
		}
		if tf := md.Signed.Targets[name]; tf == nil || tf.Length != 5 {
			t.Fatalf("verified targets = %+v", md.Signed.Targets)
		}
	})
	t.Run("empty", func(t *testing.T) {
		if _, err := trust.VerifyTargets(r.root, signedTargets(t, fixedExpires, nil, r.targetsKey), testNow); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("signed by an extra key too", func(t *testing.T) {
		if _, err := trust.VerifyTargets(r.root, signedTargets(t, fixedExpires, good, genKey(t), r.targetsKey), testNow); err != nil {
			t.Fatal(err)
		}
	})

	bad := func(name string, data []byte, now time.Time, want string) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			_, err := trust.VerifyTargets(r.root, data, now)
			if err == nil {
				t.Fatal("VerifyTargets = nil error")
			}
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("VerifyTargets = %q, want it to contain %q", err, want)
			}
		})
	}
	bad("signed by the wrong key", signedTargets(t, fixedExpires, good, genKey(t)), testNow, "not signed")
	bad("signed by the root key", signedTargets(t, fixedExpires, good, r.rootKey), testNow, "not signed")
	bad("unsigned", signedTargets(t, fixedExpires, good), testNow, "not signed")
	goodJSON := signedTargets(t, fixedExpires, good, r.targetsKey)
	bad("tampered length", bytes.Replace(goodJSON, []byte(`"length":5`), []byte(`"length":6`), 1), testNow, "not signed")
	bad("tampered custom", bytes.Replace(goodJSON, []byte(`"security_version":3`), []byte(`"security_version":9`), 1), testNow, "not signed")
	bad("expired", signedTargets(t, testNow.Add(-time.Second), good, r.targetsKey), testNow, "expired")
	bad("expired long ago", signedTargets(t, testNow.AddDate(-1, 0, 0), good, r.targetsKey), testNow, "expired")

	noCustom := metadata.TargetFile()
	noCustom.Length = 1
	noCustom.Hashes = metadata.Hashes{"sha256": bytes.Repeat([]byte{1}, 32)}
	bad("missing custom", signedTargets(t, fixedExpires, map[string]*metadata.TargetFiles{name: noCustom}, r.targetsKey), testNow, "custom")
	badCustom := targetFile(t, "image", goodCustom())
	badCustom.Custom = rawCustom(`{"product":"thermostat","hardware_ids":[],"version":"1.0.0","security_version":3,"class":"security"}`)
	bad("custom without hardware ids", signedTargets(t, fixedExpires, map[string]*metadata.TargetFiles{name: badCustom}, r.targetsKey), testNow, "hardware ids")
	negCustom := targetFile(t, "image", goodCustom())
	negCustom.Custom = rawCustom(`{"product":"thermostat","hardware_ids":["h"],"version":"1.0.0","security_version":-4,"class":"security"}`)
	bad("custom with negative security version", signedTargets(t, fixedExpires, map[string]*metadata.TargetFiles{name: negCustom}, r.targetsKey), testNow, "negative")
	bad("bad target name", signedTargets(t, fixedExpires, map[string]*metadata.TargetFiles{"../fw.img": targetFile(t, "image", goodCustom())}, r.targetsKey), testNow, "invalid target name")

	rootAsTargets := r.rootJSON
	bad("root metadata", rootAsTargets, testNow, "parse targets")
	bad("garbage", []byte("\x00\x01garbage"), testNow, "parse targets")
	bad("empty", nil, testNow, "parse targets")

	t.Run("bad name wraps ErrBadName", func(t *testing.T) {
		_, err := trust.VerifyTargets(r.root, signedTargets(t, fixedExpires, map[string]*metadata.TargetFiles{"a//b": targetFile(t, "image", goodCustom())}, r.targetsKey), testNow)
		if !errors.Is(err, trust.ErrBadName) {
			t.Fatalf("VerifyTargets = %v, want ErrBadName", err)
		}
	})
}

func TestRotateRoot(t *testing.T) {
	old1, old2 := genKey(t), genKey(t)
	targets, snap, ts := genKey(t), genKey(t), genKey(t)
	cur, err := trust.NewRoot([]*trust.Key{old1, old2}, 2, targets, snap, ts, fixedExpires, true)
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
		data, err := trust.RotateRoot(cur, []*trust.Key{old1, old2}, []*trust.Key{new1, new2}, 2, exp)
		if err != nil {
			t.Fatal(err)
		}
		next, err := trust.VerifyRootUpdate(cur, data)
		if err != nil {
			t.Fatalf("VerifyRootUpdate: %v", err)
		}
		if next.Signed.Version != 2 {
			t.Errorf("version %d, want 2", next.Signed.Version)
		}
		if !next.Signed.Expires.Equal(exp) {
			t.Errorf("expires %v, want %v", next.Signed.Expires, exp)
		}
		rr := next.Signed.Roles[trust.Root]
		if rr.Threshold != 2 || !slices.Equal(slices.Sorted(slices.Values(rr.KeyIDs)), slices.Sorted(slices.Values([]string{new1.ID, new2.ID}))) {
			t.Errorf("new root role = %+v, want the new keys with threshold 2", rr)
		}
		for role, k := range map[string]*trust.Key{trust.Targets: targets, trust.Snapshot: snap, trust.Timestamp: ts} {
			if !slices.Equal(next.Signed.Roles[role].KeyIDs, []string{k.ID}) {
				t.Errorf("%s keys changed: %v", role, next.Signed.Roles[role].KeyIDs)
			}
			if next.Signed.Keys[k.ID] == nil {
				t.Errorf("%s key missing from the new root", role)
			}
		}
		for _, k := range []*trust.Key{old1, old2} {
			if next.Signed.Keys[k.ID] != nil {
				t.Errorf("old root key %s still listed", k.ID)
			}
		}
		if _, err := trust.ParseRoot(data); err != nil {
			t.Errorf("ParseRoot of the new root: %v", err)
		}
		// The current root is left as it was.
		if cur.Signed.Version != 1 || !slices.Contains(cur.Signed.Roles[trust.Root].KeyIDs, old1.ID) {
			t.Error("RotateRoot changed the current root")
		}
		if _, err := trust.ParseRoot(curJSON); err != nil {
			t.Errorf("current root no longer verifies: %v", err)
		}
		// The chain goes on from the new root with the new keys.
		new3 := genKey(t)
		third, err := trust.RotateRoot(next, []*trust.Key{new1, new2}, []*trust.Key{new3}, 1, exp)
		if err != nil {
			t.Fatal(err)
		}
		if v3, err := trust.VerifyRootUpdate(next, third); err != nil || v3.Signed.Version != 3 {
			t.Fatalf("third root: %v", err)
		}
		if _, err := trust.VerifyRootUpdate(cur, third); err == nil {
			t.Fatal("version 3 accepted directly over version 1")
		}
	})
	t.Run("only new signed refused", func(t *testing.T) {
		data, err := trust.RotateRoot(cur, nil, []*trust.Key{new1}, 1, exp)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := trust.VerifyRootUpdate(cur, data); err == nil || !strings.Contains(err.Error(), "current root keys") {
			t.Fatalf("VerifyRootUpdate = %v, want a refusal for the current keys", err)
		}
	})
	t.Run("below the old threshold refused", func(t *testing.T) {
		data, err := trust.RotateRoot(cur, []*trust.Key{old1}, []*trust.Key{new1}, 1, exp)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := trust.VerifyRootUpdate(cur, data); err == nil {
			t.Fatal("one of two old keys accepted")
		}
	})
	t.Run("only old signed refused", func(t *testing.T) {
		data, err := trust.RotateRoot(cur, []*trust.Key{old1, old2}, []*trust.Key{new1}, 1, exp)
		if err != nil {
			t.Fatal(err)
		}
		md, err := metadata.Root().FromBytes(data)
		if err != nil {
			t.Fatal(err)
		}
		data, err = trust.SignRoot(md, old1, old2)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := trust.VerifyRootUpdate(cur, data); err == nil || !strings.Contains(err.Error(), "its own keys") {
			t.Fatalf("VerifyRootUpdate = %v, want a refusal for the new keys", err)
		}
	})
	t.Run("version skip refused", func(t *testing.T) {
		data, err := trust.RotateRoot(cur, []*trust.Key{old1, old2}, []*trust.Key{new1}, 1, exp)
		if err != nil {
			t.Fatal(err)
		}
		md, err := metadata.Root().FromBytes(data)
		if err != nil {
			t.Fatal(err)
		}
		md.Signed.Version = 3
		data, err = trust.SignRoot(md, old1, old2, new1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := trust.VerifyRootUpdate(cur, data); err == nil || !strings.Contains(err.Error(), "version 3") {
			t.Fatalf("VerifyRootUpdate = %v, want a version refusal", err)
		}
	})
	t.Run("same version replay refused", func(t *testing.T) {
		if _, err := trust.VerifyRootUpdate(cur, curJSON); err == nil {
			t.Fatal("the current root accepted as its own successor")
		}
	})
	t.Run("tampered after signing refused", func(t *testing.T) {
		data, err := trust.RotateRoot(cur, []*trust.Key{old1, old2}, []*trust.Key{new1}, 1, exp)
		if err != nil {
			t.Fatal(err)
		}
		tampered := bytes.Replace(data, []byte(`"consistent_snapshot":true`), []byte(`"consistent_snapshot":false`), 1)
		if bytes.Equal(tampered, data) {
			t.Fatal("tampering did not change the root")
		}
		if _, err := trust.VerifyRootUpdate(cur, tampered); err == nil {
			t.Fatal("tampered root accepted")
		}
	})
	t.Run("garbage refused", func(t *testing.T) {
		for _, b := range [][]byte{nil, []byte("{}"), []byte(`{"signed":{"_type":"targets"},"signatures":[]}`)} {
			if _, err := trust.VerifyRootUpdate(cur, b); err == nil {
				t.Errorf("VerifyRootUpdate(%q) = nil error", b)
			}
		}
	})
	t.Run("threshold bounds", func(t *testing.T) {
		for _, th := range []int{0, -1, 3} {
			if _, err := trust.RotateRoot(cur, []*trust.Key{old1, old2}, []*trust.Key{new1, new2}, th, exp); err == nil {
				t.Errorf("RotateRoot threshold %d with 2 new keys = nil error", th)
			}
		}
		if _, err := trust.RotateRoot(cur, []*trust.Key{old1, old2}, nil, 1, exp); err == nil {
			t.Error("RotateRoot without new keys = nil error")
		}
	})
}

func TestNewRootThreshold(t *testing.T) {
	k := genKey(t)
	for _, th := range []int{0, 2} {
		if _, err := trust.NewRoot([]*trust.Key{k}, th, k, k, k, fixedExpires, true); err == nil {
			t.Errorf("NewRoot threshold %d of 1 key = nil error", th)
		}
	}
}

func TestSignSnapshotTimestamp(t *testing.T) {
	sk, tk := genKey(t), genKey(t)
	st, err := trust.SignSnapshotTimestamp(sk, tk, 7, 4, testNow.Add(2*time.Hour), testNow.Add(time.Hour))
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
	if got := trust.TargetName("p", "1.0", "fw.img"); got != "p/1.0/fw.img" {
		t.Errorf("TargetName = %q", got)
	}
}
