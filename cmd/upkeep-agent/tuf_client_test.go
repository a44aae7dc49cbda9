package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/tuf"
)

// repoServer is a TUF repository with consistent snapshots, built with go-tuf and served over
// real HTTP on loopback. Its files can be changed between client runs.
type repoServer struct {
	t                       *testing.T
	files                   map[string][]byte
	srv                     *httptest.Server
	root, targets, snap, ts *tuf.Key
	rootMeta                *metadata.Metadata[metadata.RootType]
	content                 []byte
}

func newRepoServer(t *testing.T, expires time.Time) *repoServer {
	r := &repoServer{t: t, files: map[string][]byte{}, content: []byte("target file contents\n")}
	gen := func() *tuf.Key {
		k, err := tuf.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	r.root, r.targets, r.snap, r.ts = gen(), gen(), gen(), gen()
	var err error
	if r.rootMeta, err = tuf.NewRoot([]*tuf.Key{r.root}, 1, r.targets, r.snap, r.ts, time.Now().Add(365*24*time.Hour), true); err != nil {
		t.Fatal(err)
	}
	rb, _ := r.rootMeta.ToBytes(false)
	r.files["1.root.json"] = rb
	sum := sha256.Sum256(r.content)
	r.files["targets/dir/"+hex.EncodeToString(sum[:])+".file.txt"] = r.content
	r.publish(1, expires)
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, ok := r.files[strings.TrimPrefix(req.URL.Path, "/")]
		if !ok {
			http.NotFound(w, req)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// publish writes targets, snapshot and timestamp version v.
func (r *repoServer) publish(v int64, expires time.Time) {
	tm := metadata.Targets(expires)
	tm.Signed.Version = v
	tf, err := metadata.TargetFile().FromBytes("dir/file.txt", r.content, "sha256")
	if err != nil {
		r.t.Fatal(err)
	}
	tm.Signed.Targets["dir/file.txt"] = tf
	tb, err := tuf.SignTargets(tm, r.targets)
	if err != nil {
		r.t.Fatal(err)
	}
	st, err := tuf.SignSnapshotTimestamp(r.snap, r.ts, v, v, expires, expires)
	if err != nil {
		r.t.Fatal(err)
	}
	r.files[itoa(v)+".targets.json"], r.files[itoa(v)+".snapshot.json"], r.files["timestamp.json"] = tb, st.Snapshot, st.Timestamp
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

func (r *repoServer) run(t *testing.T, dir string, args ...string) error {
	var out bytes.Buffer
	base := []string{"--metadata-dir", filepath.Join(dir, "meta"), "--metadata-url", r.srv.URL, "--target-dir", filepath.Join(dir, "targets"),
		"--target-base-url", r.srv.URL + "/targets", "--target-name", "dir/file.txt"}
	return tufClient(context.Background(), append(base, args...), &out)
}

func (r *repoServer) initClient(t *testing.T) string {
	dir := t.TempDir()
	rootFile := filepath.Join(dir, "trusted-root.json")
	os.WriteFile(rootFile, r.files["1.root.json"], 0o600)
	if err := r.run(t, dir, "init", rootFile); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestTUFClientProtocol(t *testing.T) {
	r := newRepoServer(t, time.Now().Add(30*24*time.Hour))
	dir := r.initClient(t)
	if err := r.run(t, dir, "refresh"); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	for _, f := range []string{"root.json", "timestamp.json", "snapshot.json", "targets.json"} {
		if _, err := os.Stat(filepath.Join(dir, "meta", f)); err != nil {
			t.Errorf("trusted %s not kept unversioned: %v", f, err)
		}
	}
	if err := r.run(t, dir, "download"); err != nil {
		t.Fatalf("download: %v", err)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "targets", url.PathEscape("dir/file.txt")))
	if !bytes.Equal(got, r.content) {
		t.Fatalf("downloaded %q", got)
	}

	t.Run("repeated names stop at the first failure", func(t *testing.T) {
		dir := r.initClient(t)
		var out bytes.Buffer
		base := []string{"--metadata-dir", filepath.Join(dir, "meta"), "--metadata-url", r.srv.URL, "--target-dir", filepath.Join(dir, "targets"),
			"--target-base-url", r.srv.URL + "/targets"}
		if err := tufClient(context.Background(), append(base, "--target-name", "missing", "--target-name", "dir/file.txt", "download"), &out); err == nil {
			t.Fatal("a missing first target was not an error")
		}
		if err := tufClient(context.Background(), append(base, "--target-name", "dir/file.txt", "--target-name", "dir/file.txt", "download"), &out); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "already downloaded") {
			t.Fatalf("the second copy was fetched again: %s", out.String())
		}
	})
	t.Run("tampered target", func(t *testing.T) {
		dir := r.initClient(t)
		sum := sha256.Sum256(r.content)
		key := "targets/dir/" + hex.EncodeToString(sum[:]) + ".file.txt"
		good := r.files[key]
		r.files[key] = []byte("target file contentz\n")
		defer func() { r.files[key] = good }()
		if err := r.run(t, dir, "download"); err == nil {
			t.Fatal("a tampered target was accepted")
		}
		entries, _ := os.ReadDir(filepath.Join(dir, "targets"))
		if len(entries) != 0 {
			t.Fatalf("files left behind: %v", entries)
		}
	})
	t.Run("fake time past expiry", func(t *testing.T) {
		dir := r.initClient(t)
		t.Setenv("FAKETIME", "+400d")
		if err := r.run(t, dir, "refresh"); err == nil {
			t.Fatal("refresh succeeded 400 days after expiry")
		}
	})
	t.Run("rollback of timestamp", func(t *testing.T) {
		dir := r.initClient(t)
		r.publish(2, time.Now().Add(30*24*time.Hour))
		if err := r.run(t, dir, "refresh"); err != nil {
			t.Fatal(err)
		}
		old := r.files["timestamp.json"]
		r.publish(1, time.Now().Add(30*24*time.Hour))
		defer func() { r.files["timestamp.json"] = old }()
		if err := r.run(t, dir, "refresh"); err == nil {
			t.Fatal("an older timestamp was accepted")
		}
	})
	t.Run("root rotation followed", func(t *testing.T) {
		dir := r.initClient(t)
		nk, _ := tuf.GenerateKey()
		next, err := tuf.RotateRoot(r.rootMeta, []*tuf.Key{r.root}, []*tuf.Key{nk}, 1, time.Now().Add(365*24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		r.files["2.root.json"] = next
		defer delete(r.files, "2.root.json")
		r.publish(3, time.Now().Add(30*24*time.Hour))
		if err := r.run(t, dir, "refresh"); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(filepath.Join(dir, "meta", "root.json"))
		if !bytes.Equal(b, next) {
			t.Fatal("the client did not keep root version 2")
		}
	})
}

func TestTUFClientExpiredTimestamp(t *testing.T) {
	r := newRepoServer(t, time.Now().Add(-time.Hour))
	dir := r.initClient(t)
	if err := r.run(t, dir, "refresh"); err == nil {
		t.Fatal("expired metadata accepted")
	}
	t.Setenv("FAKETIME", "-2h")
	if err := r.run(t, dir, "refresh"); err != nil {
		t.Fatalf("with the clock two hours back the metadata is valid: %v", err)
	}
}

// TestTUFClientPythonTUFRepository reads the reference implementation's test repository.
func TestTUFClientPythonTUFRepository(t *testing.T) {
	src := "../../../shared/fixtures/tuf/python-tuf/tests/repository_data/repository"
	if _, err := os.Stat(src); err != nil {
		t.Skip("python-tuf fixtures not present")
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(src)))
	defer srv.Close()
	dir := t.TempDir()
	meta := filepath.Join(dir, "meta")
	ctx := context.Background()
	var out bytes.Buffer
	if err := tufClient(ctx, []string{"--metadata-dir", meta, "init", filepath.Join(src, "metadata", "1.root.json")}, &out); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FAKETIME", "@2025-01-01 00:00:00") // its metadata expires in 2030
	args := []string{"--metadata-dir", meta, "--metadata-url", srv.URL + "/metadata", "--target-dir", filepath.Join(dir, "t"),
		"--target-base-url", srv.URL + "/targets", "--target-name", "file1.txt", "download"}
	if err := tufClient(ctx, args, &out); err != nil {
		t.Fatalf("python-tuf repository: %v", err)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "t", "file1.txt"))
	want, _ := os.ReadFile(filepath.Join(src, "targets", "file1.txt"))
	if !bytes.Equal(got, want) {
		t.Fatalf("file1.txt = %q, want %q", got, want)
	}
}

func TestFakeNow(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for spec, want := range map[string]time.Time{
		"":                     base,
		"+1d":                  base.Add(24 * time.Hour),
		"-2h":                  base.Add(-2 * time.Hour),
		"+30":                  base.Add(30 * time.Second),
		"+1y x2":               base.Add(365 * 24 * time.Hour),
		"@2030-01-01 00:00:00": time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC),
		"2031-05-06 07:08:09":  time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC),
	} {
		got, err := fakeNow(spec, base)
		if err != nil || !got.Equal(want) {
			t.Errorf("fakeNow(%q) = %v %v, want %v", spec, got, err, want)
		}
	}
	if _, err := fakeNow("tomorrow", base); err == nil {
		t.Error("garbage accepted")
	}
}
