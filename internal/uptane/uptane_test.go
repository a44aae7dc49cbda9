package uptane_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/delta"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
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

func digests(content string) (string, string) {
	h256 := sha256.Sum256([]byte(content))
	h512 := sha512.Sum512([]byte(content))
	return hexs(h256[:]), hexs(h512[:])
}

func hexs(b []byte) string { return metadata.HexBytes(b).String() }

func goodCustom() uptane.TargetCustom {
	return uptane.TargetCustom{Product: "thermostat", HardwareIDs: []string{"tstat-v2"}, Version: "1.0.0", SecurityVersion: 3, Class: uptane.ClassSecurity}
}

func targetFile(t testing.TB, content string, c uptane.TargetCustom) *metadata.TargetFiles {
	t.Helper()
	h256, h512 := digests(content)
	tf, err := uptane.NewTargetFile(int64(len(content)), h256, h512, c)
	if err != nil {
		t.Fatal(err)
	}
	return tf
}

// signedTargets signs targets metadata naming files, with version 1 unless v is set.
func signedTargets(t testing.TB, expires time.Time, files map[string]*metadata.TargetFiles, keys ...*tuf.Key) []byte {
	t.Helper()
	md := metadata.Targets(expires)
	for n, f := range files {
		md.Signed.Targets[n] = f
	}
	b, err := tuf.SignTargets(md, keys...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rawCustom(s string) *json.RawMessage {
	r := json.RawMessage(s)
	return &r
}

func kindOf(err error) uptane.Reason { return uptane.ReasonOf(err) }

func TestTargetCustomValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*uptane.TargetCustom)
		want   string // substring of the error; empty: valid
	}{
		{"good", func(*uptane.TargetCustom) {}, ""},
		{"feature class with fixes", func(c *uptane.TargetCustom) { c.Class = uptane.ClassFeature; c.Fixes = []string{"ADV-1"} }, ""},
		{"security version zero", func(c *uptane.TargetCustom) { c.SecurityVersion = 0 }, ""},
		{"several hardware ids", func(c *uptane.TargetCustom) { c.HardwareIDs = []string{"a", "b"} }, ""},
		{"empty product", func(c *uptane.TargetCustom) { c.Product = "" }, "product"},
		{"product with slash", func(c *uptane.TargetCustom) { c.Product = "a/b" }, "product"},
		{"product dotdot", func(c *uptane.TargetCustom) { c.Product = ".." }, "product"},
		{"empty version", func(c *uptane.TargetCustom) { c.Version = "" }, "version"},
		{"version with space", func(c *uptane.TargetCustom) { c.Version = "1 0" }, `"1 0"`},
		{"no hardware ids", func(c *uptane.TargetCustom) { c.HardwareIDs = nil }, "no hardware ids"},
		{"empty hardware id", func(c *uptane.TargetCustom) { c.HardwareIDs = []string{"ok", ""} }, "hardware id"},
		{"hardware id with slash", func(c *uptane.TargetCustom) { c.HardwareIDs = []string{"../x"} }, "hardware id"},
		{"negative security version", func(c *uptane.TargetCustom) { c.SecurityVersion = -1 }, "negative security version"},
		{"empty class", func(c *uptane.TargetCustom) { c.Class = "" }, "class"},
		{"unknown class", func(c *uptane.TargetCustom) { c.Class = "urgent" }, "class"},
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
	if _, err := uptane.ParseTargetCustom(tf); err == nil {
		t.Error("no custom: got nil error")
	}
	tf.Custom = rawCustom(`{"product":`)
	if _, err := uptane.ParseTargetCustom(tf); err == nil {
		t.Error("truncated custom: got nil error")
	}
	tf.Custom = rawCustom(`{"product":"p","hardware_ids":["h"],"version":"1","security_version":2,"class":"feature"}`)
	got, err := uptane.ParseTargetCustom(tf)
	if err != nil {
		t.Fatal(err)
	}
	if got.Product != "p" || got.Version != "1" || got.SecurityVersion != 2 || got.Class != uptane.ClassFeature || !slices.Equal(got.HardwareIDs, []string{"h"}) {
		t.Errorf("ParseTargetCustom = %+v", got)
	}
}

func TestNewTargetFile(t *testing.T) {
	h256, h512 := digests("image")
	if _, err := uptane.NewTargetFile(5, "zz", h512, goodCustom()); err == nil {
		t.Error("bad hex: got nil error")
	}
	if _, err := uptane.NewTargetFile(5, h256, "", goodCustom()); err == nil {
		t.Error("empty sha512: got nil error")
	}
	bad := goodCustom()
	bad.Class = "x"
	if _, err := uptane.NewTargetFile(5, h256, h512, bad); err == nil {
		t.Error("bad custom: got nil error")
	}
	tf, err := uptane.NewTargetFile(5, h256, h512, goodCustom())
	if err != nil {
		t.Fatal(err)
	}
	if tf.Length != 5 || tf.Hashes["sha256"].String() != h256 || tf.Hashes["sha512"].String() != h512 {
		t.Errorf("NewTargetFile = length %d hashes %v", tf.Length, tf.Hashes)
	}
}

// TestDeltaTargetFile: a delta target carries its length, SHA-256 and binding only, and every
// targets check accepts it, as it accepts the older form that repeats the image's fields; a
// broken binding, or a target with neither binding nor image fields, is refused.
func TestDeltaTargetFile(t *testing.T) {
	h256, h512 := digests("image")
	b := &delta.Binding{Format: delta.FormatCaibx, Image: devTarget, ImageSHA256: h256, ImageLength: 5}
	if _, err := uptane.NewDeltaTargetFile(5, h256, &delta.Binding{Format: delta.FormatCaibx, Image: devTarget}); err == nil {
		t.Error("binding without the image's sha256: got nil error")
	}
	if _, err := uptane.NewDeltaTargetFile(5, "zz", b); err == nil {
		t.Error("bad hex: got nil error")
	}
	dt, err := uptane.NewDeltaTargetFile(7, h256, b)
	if err != nil {
		t.Fatal(err)
	}
	if len(dt.Hashes) != 1 || dt.Hashes["sha256"].String() != h256 || dt.Length != 7 {
		t.Errorf("delta target hashes %v length %d", dt.Hashes, dt.Length)
	}
	if got, want := string(*dt.Custom), `{"delta":{"format":"caibx","image":"thermostat/1.0.0/fw.img","image_sha256":"`+h256+`","image_length":5}}`; got != want {
		t.Errorf("custom %s\nwant %s", got, want)
	}
	img, err := uptane.NewTargetFile(5, h256, h512, goodCustom())
	if err != nil {
		t.Fatal(err)
	}
	old, err := delta.WithBinding(*img.Custom, b)
	if err != nil {
		t.Fatal(err)
	}
	check := func(tf *metadata.TargetFiles) error {
		md := metadata.Targets(fixedExpires)
		md.Signed.Targets[devTarget], md.Signed.Targets[delta.IndexName(devTarget)] = img, tf
		return uptane.CheckImageCustoms(md)
	}
	if err := check(dt); err != nil {
		t.Errorf("delta target: %v", err)
	}
	if err := check(&metadata.TargetFiles{Length: 7, Hashes: dt.Hashes, Custom: rawCustom(string(old))}); err != nil {
		t.Errorf("delta target of the older form: %v", err)
	}
	if err := check(&metadata.TargetFiles{Length: 7, Hashes: dt.Hashes, Custom: rawCustom(`{"delta":{"format":"caibx","image":"x"}}`)}); err == nil {
		t.Error("broken binding: got nil error")
	}
	if err := check(&metadata.TargetFiles{Length: 7, Hashes: dt.Hashes, Custom: rawCustom(`{"sbom_sha256":"x"}`)}); err == nil {
		t.Error("neither binding nor image fields: got nil error")
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
	b, err := json.Marshal(uptane.DirectorCustom{DeviceID: deviceID, HardwareID: hardwareID})
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
		installed uptane.Installed
		director  func() map[string]*metadata.TargetFiles
		image     func() map[string]*metadata.TargetFiles
		wantKind  uptane.Reason // empty: no error
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
			wantKind: uptane.ReasonTooManyTargets,
		},
		{
			name: "wrong device id",
			director: func() map[string]*metadata.TargetFiles {
				return map[string]*metadata.TargetFiles{devTarget: directorEntry(t, image, "dev-0002", devHW)}
			},
			wantKind: uptane.ReasonNotForThisDevice,
		},
		{
			name: "empty device id",
			director: func() map[string]*metadata.TargetFiles {
				return map[string]*metadata.TargetFiles{devTarget: directorEntry(t, image, "", devHW)}
			},
			wantKind: uptane.ReasonNotForThisDevice,
		},
		{
			name: "director hardware id mismatch",
			director: func() map[string]*metadata.TargetFiles {
				return map[string]*metadata.TargetFiles{devTarget: directorEntry(t, image, devID, "tstat-v9")}
			},
			wantKind: uptane.ReasonHardware,
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
			wantKind: uptane.ReasonHardware,
		},
		{
			name: "not in image repository",
			director: func() map[string]*metadata.TargetFiles {
				return map[string]*metadata.TargetFiles{"thermostat/6.6.6/evil.img": directorEntry(t, image, devID, devHW)}
			},
			wantKind: uptane.ReasonMissingTarget,
		},
		{
			name: "length differs",
			director: func() map[string]*metadata.TargetFiles {
				d := directorEntry(t, image, devID, devHW)
				d.Length++
				return map[string]*metadata.TargetFiles{devTarget: d}
			},
			wantKind: uptane.ReasonMismatchImageDirector,
		},
		{
			name: "sha256 differs",
			director: func() map[string]*metadata.TargetFiles {
				d := directorEntry(t, image, devID, devHW)
				d.Hashes["sha256"][0] ^= 0xff
				return map[string]*metadata.TargetFiles{devTarget: d}
			},
			wantKind: uptane.ReasonMismatchImageDirector,
		},
		{
			name: "sha512 differs",
			director: func() map[string]*metadata.TargetFiles {
				d := directorEntry(t, image, devID, devHW)
				d.Hashes["sha512"][63] ^= 0x01
				return map[string]*metadata.TargetFiles{devTarget: d}
			},
			wantKind: uptane.ReasonMismatchImageDirector,
		},
		{
			name: "extra director hash algorithm absent from image",
			director: func() map[string]*metadata.TargetFiles {
				d := directorEntry(t, image, devID, devHW)
				d.Hashes["sha384"] = bytes.Repeat([]byte{7}, 48)
				return map[string]*metadata.TargetFiles{devTarget: d}
			},
			wantKind: uptane.ReasonMismatchImageDirector,
		},
		{
			name: "director names no hashes",
			director: func() map[string]*metadata.TargetFiles {
				d := directorEntry(t, image, devID, devHW)
				d.Hashes = metadata.Hashes{}
				return map[string]*metadata.TargetFiles{devTarget: d}
			},
			wantKind: uptane.ReasonMismatchImageDirector,
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
			wantKind: uptane.ReasonMismatchImageDirector,
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
			installed: uptane.Installed{Target: "thermostat/2.0.0/fw.img", SHA256: otherSHA, SecurityVersion: 6},
			director: func() map[string]*metadata.TargetFiles {
				return map[string]*metadata.TargetFiles{devTarget: directorEntry(t, image, devID, devHW)}
			},
			wantKind: uptane.ReasonSecurityDowngrade,
		},
		{
			name:      "equal security version allowed",
			installed: uptane.Installed{Target: "thermostat/0.9.0/fw.img", SHA256: otherSHA, SecurityVersion: 5},
			director: func() map[string]*metadata.TargetFiles {
				return map[string]*metadata.TargetFiles{devTarget: directorEntry(t, image, devID, devHW)}
			},
			wantName: devTarget,
		},
		{
			name:      "higher security version allowed",
			installed: uptane.Installed{Target: "thermostat/0.9.0/fw.img", SHA256: otherSHA, SecurityVersion: 4},
			director: func() map[string]*metadata.TargetFiles {
				return map[string]*metadata.TargetFiles{devTarget: directorEntry(t, image, devID, devHW)}
			},
			wantName: devTarget,
		},
		{
			name:      "same target and sha is a no-op",
			installed: uptane.Installed{Target: devTarget, SHA256: sha, SecurityVersion: 5},
			director: func() map[string]*metadata.TargetFiles {
				return map[string]*metadata.TargetFiles{devTarget: directorEntry(t, image, devID, devHW)}
			},
			wantNoop: true,
			wantName: devTarget,
		},
		{
			name:      "same target name with another sha is an update",
			installed: uptane.Installed{Target: devTarget, SHA256: otherSHA, SecurityVersion: 5},
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
			wantKind: uptane.ReasonBadCustom,
		},
		{
			name: "director target without device binding",
			director: func() map[string]*metadata.TargetFiles {
				d := directorEntry(t, image, devID, devHW)
				d.Custom = nil
				return map[string]*metadata.TargetFiles{devTarget: d}
			},
			wantKind: uptane.ReasonBadCustom,
		},
		{
			name: "director custom not an object",
			director: func() map[string]*metadata.TargetFiles {
				d := directorEntry(t, image, devID, devHW)
				d.Custom = rawCustom(`"dev-0001"`)
				return map[string]*metadata.TargetFiles{devTarget: d}
			},
			wantKind: uptane.ReasonBadCustom,
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
			wantKind: uptane.ReasonBadCustom,
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
			wantKind: uptane.ReasonProduct,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := map[string]*metadata.TargetFiles{devTarget: image}
			if tt.image != nil {
				repo = tt.image()
			}
			d, err := uptane.Decide(devID, devHW, devProd, tt.installed, tt.director(), lookup(repo))
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
	view, err := uptane.SignDirectorView(k, 3, testNow.Add(time.Hour), devID, devHW, devTarget, image)
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
	d, err := uptane.Decide(devID, devHW, devProd, uptane.Installed{}, md.Signed.Targets, func(string) (*metadata.TargetFiles, error) { return image, nil })
	if err != nil || d.Name != devTarget || d.Noop {
		t.Fatalf("Decide = %+v, %v", d, err)
	}
	if _, err := uptane.Decide("dev-other", devHW, devProd, uptane.Installed{}, md.Signed.Targets, func(string) (*metadata.TargetFiles, error) { return image, nil }); kindOf(err) != uptane.ReasonNotForThisDevice {
		t.Fatalf("another device: %v, want %s", err, uptane.ReasonNotForThisDevice)
	}
	empty, err := uptane.SignDirectorView(k, 4, testNow.Add(time.Hour), devID, devHW, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	md, err = metadata.Targets().FromBytes(empty.Targets)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := uptane.Decide(devID, devHW, devProd, uptane.Installed{}, md.Signed.Targets, nil); err != nil || !d.Noop || d.Name != "" {
		t.Fatalf("empty view: Decide = %+v, %v", d, err)
	}
}

func TestVerificationErrorMessage(t *testing.T) {
	cause := &metadata.ErrBadVersionNumber{Msg: "new timestamp version 3 must be >= 4"}
	err := error(uptane.MetadataError("director", fmt.Errorf("refresh: %w", cause)))
	want := "verification failed: version rollback: director metadata: refresh: bad version number error: new timestamp version 3 must be >= 4"
	if got := err.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got := (&uptane.VerificationError{Reason: uptane.ReasonSecurityDowngrade}).Error(); got != "verification failed: security version downgrade" {
		t.Errorf("Error() without message = %q", got)
	}
}

// TestMetadataReason checks that go-tuf's typed errors keep their precise reason and stay
// reachable with errors.Is and errors.As through a VerificationError.
func TestMetadataReason(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want uptane.Reason
	}{
		{&metadata.ErrBadVersionNumber{Msg: "new timestamp version 3 must be >= 4"}, uptane.ReasonVersionRollback},
		{&metadata.ErrEqualVersionNumber{Msg: "equal"}, uptane.ReasonVersionRollback},
		{&metadata.ErrExpiredMetadata{Msg: "timestamp.json is expired"}, uptane.ReasonExpired},
		{&metadata.ErrUnsignedMetadata{Msg: "Verifying targets failed, not enough signatures, got 0, want 1"}, uptane.ReasonThreshold},
		{&metadata.ErrLengthOrHashMismatch{Msg: "hash verification failed"}, uptane.ReasonHashMismatch},
		{&metadata.ErrDownloadLengthMismatch{Msg: "too long"}, uptane.ReasonLengthMismatch},
		{&metadata.ErrValue{Msg: "multiple signatures found for key ID 1"}, uptane.ReasonMalformed},
		{fmt.Errorf("%w (targets): boom", tuf.ErrMalformed), uptane.ReasonMalformed},
		{&metadata.ErrRepository{Msg: "expected timestamp, got snapshot"}, uptane.ReasonInvalidMetadata},
		{errors.New("something else"), uptane.ReasonInvalidMetadata},
	} {
		err := fmt.Errorf("refresh: %w", uptane.MetadataError("image repository", tt.err))
		if got := uptane.ReasonOf(err); got != tt.want {
			t.Errorf("%v: reason %q, want %q", tt.err, got, tt.want)
		}
		if !errors.Is(err, tt.want) {
			t.Errorf("%v: errors.Is(err, %q) = false", tt.err, tt.want)
		}
		if errors.Is(err, uptane.ReasonProduct) {
			t.Errorf("%v: errors.Is(err, %q) = true", tt.err, uptane.ReasonProduct)
		}
		if !errors.Is(err, tt.err) {
			t.Errorf("%v: the cause is not in the chain", tt.err)
		}
	}
	var exp *metadata.ErrExpiredMetadata
	if err := error(uptane.MetadataError("director", &metadata.ErrExpiredMetadata{Msg: "x"})); !errors.As(err, &exp) || !errors.Is(err, &metadata.ErrRepository{}) {
		t.Errorf("errors.As(%v, *ErrExpiredMetadata) = false", err)
	}
	if uptane.ReasonOf(errors.New("plain")) != "" || uptane.ReasonOf(nil) != "" {
		t.Error("ReasonOf of a plain error is not empty")
	}
}

// TestReferenceFixtures checks metadata written by python-tuf and go-tuf: the signatures verify,
// and Upkeep's own rules (custom fields) still apply on top.
func TestReferenceFixtures(t *testing.T) {
	for _, project := range []string{"python-tuf", "go-tuf"} {
		t.Run(project, func(t *testing.T) {
			rootJSON := readTestdata(t, project, "1.root.json")
			targetsJSON := readTestdata(t, project, "1.targets.json")
			root, err := tuf.ParseRoot(rootJSON)
			if err != nil {
				t.Fatalf("ParseRoot: %v", err)
			}
			// Signed correctly, but the reference targets carry no Upkeep custom fields.
			_, err = uptane.VerifyImageTargets(root, targetsJSON, testNow)
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
			if _, err := uptane.VerifyImageTargets(root, tampered, testNow); err == nil || !strings.Contains(err.Error(), "not signed") {
				t.Fatalf("tampered VerifyTargets = %v, want a signature failure", err)
			}
			if _, err := uptane.VerifyImageTargets(root, targetsJSON, time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC)); err == nil || !strings.Contains(err.Error(), "expired") {
				t.Fatalf("VerifyTargets after expiry = %v, want an expiry failure", err)
			}
			// Our roots do not trust their keys, nor theirs ours.
			ours := newFixedRepo(t)
			if _, err := uptane.VerifyImageTargets(ours.root, targetsJSON, testNow); err == nil {
				t.Fatal("reference targets verified against our root")
			}
			if _, err := tuf.VerifyRootUpdate(ours.root, rootJSON); err == nil {
				t.Fatal("reference root accepted as an update of ours")
			}
		})
	}
}

func readTestdata(t testing.TB, elem ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(append([]string{"..", "tuf", "testdata"}, elem...)...)) // the reference implementations' metadata
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
		md, err := uptane.VerifyImageTargets(r.root, signedTargets(t, fixedExpires, good, r.targetsKey), testNow)
		if err != nil {
			t.Fatal(err)
		}
		if tf := md.Signed.Targets[name]; tf == nil || tf.Length != 5 {
			t.Fatalf("verified targets = %+v", md.Signed.Targets)
		}
	})
	t.Run("empty", func(t *testing.T) {
		if _, err := uptane.VerifyImageTargets(r.root, signedTargets(t, fixedExpires, nil, r.targetsKey), testNow); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("signed by an extra key too", func(t *testing.T) {
		if _, err := uptane.VerifyImageTargets(r.root, signedTargets(t, fixedExpires, good, genKey(t), r.targetsKey), testNow); err != nil {
			t.Fatal(err)
		}
	})

	bad := func(name string, data []byte, now time.Time, want string) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			_, err := uptane.VerifyImageTargets(r.root, data, now)
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
		_, err := uptane.VerifyImageTargets(r.root, signedTargets(t, fixedExpires, map[string]*metadata.TargetFiles{"a//b": targetFile(t, "image", goodCustom())}, r.targetsKey), testNow)
		if !errors.Is(err, tuf.ErrBadName) {
			t.Fatalf("VerifyTargets = %v, want ErrBadName", err)
		}
	})
}
