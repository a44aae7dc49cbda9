package uptane_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
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
	"upkeep.dev/upkeep/internal/uptane"
)

// fuzzTargetsSeeds returns good and tampered targets metadata for the fixed repository.
func fuzzTargetsSeeds(t testing.TB, r *fixedRepo) [][]byte {
	name := "thermostat/1.0.0/fw.img"
	good := map[string]*metadata.TargetFiles{name: targetFile(t, "image", goodCustom())}
	goodJSON := signedTargets(t, fixedExpires, good, r.targetsKey)
	noCustom := metadata.TargetFile()
	noCustom.Length = 1
	noCustom.Hashes = metadata.Hashes{"sha256": bytes.Repeat([]byte{1}, 32)}
	two := map[string]*metadata.TargetFiles{
		name:                      targetFile(t, "image", goodCustom()),
		"thermostat/1.0.1/fw.img": targetFile(t, "image 1.0.1", goodCustom()),
	}
	return [][]byte{
		goodJSON,
		signedTargets(t, fixedExpires, nil, r.targetsKey),
		signedTargets(t, fixedExpires, two, r.targetsKey),
		bytes.Replace(goodJSON, []byte(`"length":5`), []byte(`"length":6`), 1),
		bytes.Replace(goodJSON, []byte(`"targets"`), []byte(`"target"`), 1),
		signedTargets(t, fixedExpires, good),
		signedTargets(t, fixedExpires, good, r.rootKey),
		signedTargets(t, testNow.Add(-time.Hour), good, r.targetsKey),
		signedTargets(t, fixedExpires, map[string]*metadata.TargetFiles{name: noCustom}, r.targetsKey),
		signedTargets(t, fixedExpires, map[string]*metadata.TargetFiles{"../fw.img": targetFile(t, "image", goodCustom())}, r.targetsKey),
		r.rootJSON,
		[]byte(`{"signed":{"_type":"targets","spec_version":"1.0.31","version":1,"expires":"2030-01-01T00:00:00Z","targets":{}},"signatures":[]}`),
		[]byte(`{"signed":{"_type":"targets"},"signatures":[{"keyid":"","sig":""}]}`),
		[]byte(`{}`),
		[]byte(``),
	}
}

func FuzzVerifyTargets(f *testing.F) {
	r := newFixedRepo(f)
	for _, s := range fuzzTargetsSeeds(f, r) {
		f.Add(s)
	}
	roots := []*metadata.Metadata[metadata.RootType]{r.root}
	for _, project := range []string{"python-tuf", "go-tuf"} {
		f.Add(readTestdata(f, project, "1.targets.json"))
		root, err := tuf.ParseRoot(readTestdata(f, project, "1.root.json"))
		if err != nil {
			f.Fatal(err)
		}
		roots = append(roots, root)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, root := range roots {
			md, err := uptane.VerifyImageTargets(root, data, testNow)
			if err != nil {
				if md != nil {
					t.Fatalf("VerifyTargets returned metadata with its error %v", err)
				}
				continue
			}
			if md == nil {
				t.Fatal("VerifyTargets returned neither metadata nor an error")
			}
			if md.Signed.IsExpired(testNow) {
				t.Fatalf("accepted targets expired at %v", md.Signed.Expires)
			}
			if err := root.VerifyDelegate(tuf.Targets, md); err != nil {
				t.Fatalf("accepted targets that do not verify: %v", err)
			}
			for name, tf := range md.Signed.Targets {
				if err := tuf.ValidTargetName(name); err != nil {
					t.Fatalf("accepted target name %q: %v", name, err)
				}
				if _, err := uptane.ParseTargetCustom(tf); err != nil {
					t.Fatalf("accepted target %q with bad custom fields: %v", name, err)
				}
			}
		}
	})
}

// fuzzImageEntry is what FuzzDecide's image repository holds for every name but "missing/...":
// the device image with the given custom bytes.
func fuzzImageEntry(custom []byte) *metadata.TargetFiles {
	h256, h512 := digests(devImage)
	tf := metadata.TargetFile()
	tf.Length = int64(len(devImage))
	tf.Hashes = metadata.Hashes{}
	for alg, h := range map[string]string{"sha256": h256, "sha512": h512} {
		b, err := hex.DecodeString(h)
		if err != nil {
			panic(err)
		}
		tf.Hashes[alg] = b
	}
	tf.Custom = rawCustom(string(custom))
	return tf
}

func FuzzDecide(f *testing.F) {
	h256, h512 := digests(devImage)
	entry := func(name, dev, hw string, length int, hashes string) string {
		return `{"` + name + `":{"length":` + strconv.Itoa(length) + `,"hashes":` + hashes + `,"custom":{"device_id":"` + dev + `","hardware_id":"` + hw + `"}}}`
	}
	both := `{"sha256":"` + h256 + `","sha512":"` + h512 + `"}`
	n := len(devImage)
	imageCustom := `{"product":"thermostat","hardware_ids":["tstat-v2"],"version":"1.0.0","security_version":5,"class":"security"}`
	f.Add([]byte(entry(devTarget, devID, devHW, n, both)), []byte(imageCustom), int64(0), "")
	f.Add([]byte(entry(devTarget, devID, devHW, n, both)), []byte(imageCustom), int64(5), devTarget)
	f.Add([]byte(entry(devTarget, devID, devHW, n, both)), []byte(imageCustom), int64(9), "thermostat/2.0.0/fw.img")
	f.Add([]byte(entry(devTarget, devID, devHW, n, `{"sha256":"`+h256+`"}`)), []byte(imageCustom), int64(1), "")
	f.Add([]byte(entry(devTarget, devID, devHW, n+1, both)), []byte(imageCustom), int64(0), "")
	f.Add([]byte(entry(devTarget, devID, devHW, n, `{"sha256":"00"}`)), []byte(imageCustom), int64(0), "")
	f.Add([]byte(entry(devTarget, devID, devHW, n, `{}`)), []byte(imageCustom), int64(0), "")
	f.Add([]byte(entry(devTarget, "dev-0002", devHW, n, both)), []byte(imageCustom), int64(0), "")
	f.Add([]byte(entry(devTarget, devID, "tstat-v9", n, both)), []byte(imageCustom), int64(0), "")
	f.Add([]byte(entry("missing/1.0/fw.img", devID, devHW, n, both)), []byte(imageCustom), int64(0), "")
	f.Add([]byte(entry("../../etc/passwd", devID, devHW, n, both)), []byte(imageCustom), int64(0), "")
	f.Add([]byte(entry(devTarget, devID, devHW, n, both)), []byte(`{"product":"thermostat","hardware_ids":["other"],"version":"1.0.0","security_version":5,"class":"security"}`), int64(0), "")
	f.Add([]byte(entry(devTarget, devID, devHW, n, both)), []byte(`{"product":"thermostat"}`), int64(0), "")
	f.Add([]byte(entry(devTarget, devID, devHW, n, both)), []byte(`{"product":"doorbell","hardware_ids":["tstat-v2"],"version":"1.0.0","security_version":5,"class":"security"}`), int64(0), "")
	f.Add([]byte(entry(devTarget, devID, devHW, n, both)), []byte(`not json`), int64(0), "")
	f.Add([]byte(`{"a/1/x":{"length":1,"hashes":{}},"b/1/x":{"length":1,"hashes":{}}}`), []byte(imageCustom), int64(0), "")
	f.Add([]byte(`{"`+devTarget+`":{"length":`+strconv.Itoa(n)+`,"hashes":`+both+`}}`), []byte(imageCustom), int64(0), "")
	f.Add([]byte(`{"`+devTarget+`":{"length":`+strconv.Itoa(n)+`,"hashes":`+both+`,"custom":null}}`), []byte(imageCustom), int64(0), "")
	f.Add([]byte(`{}`), []byte(imageCustom), int64(0), "")
	f.Add([]byte(`null`), []byte(``), int64(-1), "")

	f.Fuzz(func(t *testing.T, directorJSON, custom []byte, installedSecVer int64, installedTarget string) {
		var director map[string]*metadata.TargetFiles
		if err := json.Unmarshal(directorJSON, &director); err != nil {
			return
		}
		image := func(name string) (*metadata.TargetFiles, error) {
			if strings.HasPrefix(name, "missing/") {
				return nil, errors.New("not in the image repository")
			}
			return fuzzImageEntry(custom), nil
		}
		installed := uptane.Installed{Target: installedTarget, SHA256: h256, SecurityVersion: installedSecVer}
		d, err := uptane.Decide(devID, devHW, devProd, installed, director, image)
		if err != nil {
			var ve *uptane.VerificationError
			if !errors.As(err, &ve) {
				t.Fatalf("Decide error %v is not a VerificationError", err)
			}
			if d != nil {
				t.Fatalf("Decide returned a decision with its error %v", err)
			}
			return
		}
		if d == nil {
			t.Fatal("Decide returned neither a decision nor an error")
		}
		if len(director) == 0 {
			if !d.Noop || d.Name != "" {
				t.Fatalf("no director targets gave %+v", d)
			}
			return
		}
		if len(director) != 1 {
			t.Fatalf("accepted %d director targets", len(director))
		}
		if err := tuf.ValidTargetName(d.Name); err != nil {
			t.Fatalf("accepted target name %q: %v", d.Name, err)
		}
		dt := director[d.Name]
		if dt == nil || d.Info == nil || dt.Length != d.Info.Length {
			t.Fatalf("accepted a target whose length does not match the image repository: %+v", d)
		}
		for alg, h := range dt.Hashes {
			if !slices.Equal(d.Info.Hashes[alg], h) {
				t.Fatalf("accepted a director %s hash that differs from the image repository", alg)
			}
		}
		if !slices.Contains(d.Custom.HardwareIDs, devHW) {
			t.Fatalf("accepted a target for hardware %v", d.Custom.HardwareIDs)
		}
		if d.Custom.Product != devProd {
			t.Fatalf("accepted a target for product %q", d.Custom.Product)
		}
		if !d.Noop && d.Custom.SecurityVersion < installedSecVer {
			t.Fatalf("accepted security version %d below the installed %d", d.Custom.SecurityVersion, installedSecVer)
		}
		if d.Noop && (d.Name != installedTarget || d.Info.Hashes["sha256"].String() != h256) {
			t.Fatalf("no-op for %s while %s is installed", d.Name, installedTarget)
		}
	})
}

// TestVerifyTargetsCorpus keeps the checked-in corpus meaningful: the good seeds verify against
// the fixed repository's root and the tampered ones do not.
func TestVerifyTargetsCorpus(t *testing.T) {
	r := newFixedRepo(t)
	dir := filepath.Join("testdata", "fuzz", "FuzzVerifyTargets")
	want := map[string]bool{
		"good-signed": true, "good-empty": true, "tampered-length": false, "unsigned": false,
		"expired": false, "missing-custom": false, "bad-target-name": false, "python-tuf-targets": false,
	}
	for name, ok := range want {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		header, lit, found := strings.Cut(strings.TrimSpace(string(b)), "\n")
		lit, isBytes := strings.CutPrefix(lit, "[]byte(")
		lit, closed := strings.CutSuffix(lit, ")")
		if !found || header != "go test fuzz v1" || !isBytes || !closed {
			t.Fatalf("%s is not a one-value []byte corpus file", name)
		}
		data, err := strconv.Unquote(lit)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := uptane.VerifyImageTargets(r.root, []byte(data), testNow); (err == nil) != ok {
			t.Errorf("%s: VerifyTargets = %v, want ok=%v", name, err, ok)
		}
	}
}
