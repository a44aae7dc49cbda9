package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/agent"
	"upkeep.dev/upkeep/internal/tuf"
)

// delegatedRepo serves a repository whose top-level targets delegate "a/*" to role A and "b/*"
// to role B (both signed by the targets key); A delegates X to key a for "a/*", B delegates X to
// key b for "b/*", and X, listing a/f and b/f, is signed by key a only. a/f is trusted (found
// through A, whose delegation X satisfies); b/f is not (B's delegation of X is unmet), whatever
// was loaded before.
func delegatedRepo(t *testing.T) (url string, root []byte) {
	gen := func() *tuf.Key {
		k, err := tuf.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	rk, tk, sk, tsk, ka, kb := gen(), gen(), gen(), gen(), gen(), gen()
	exp := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second)
	rm, err := tuf.NewRoot([]*tuf.Key{rk}, 1, tk, sk, tsk, exp, true)
	if err != nil {
		t.Fatal(err)
	}
	if root, err = rm.ToBytes(false); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	content := map[string][]byte{"a/f": []byte("a's file\n"), "b/f": []byte("b's file\n")}
	role := func(targets ...string) *metadata.Metadata[metadata.TargetsType] {
		md := metadata.Targets(exp)
		for _, n := range targets {
			tf, err := metadata.TargetFile().FromBytes(n, content[n], "sha256")
			if err != nil {
				t.Fatal(err)
			}
			md.Signed.Targets[n] = tf
			files["targets/"+n[:2]+tf.Hashes["sha256"].String()+"."+n[2:]] = content[n]
		}
		return md
	}
	deleg := func(from *metadata.Metadata[metadata.TargetsType], name string, k *tuf.Key, path string) {
		if err := tuf.Delegate(from, name, []*metadata.Key{k.Public()}, 1, []string{path}); err != nil {
			t.Fatal(err)
		}
	}
	top, a, b, x := role(), role(), role(), role("a/f", "b/f")
	deleg(top, "A", tk, "a/*")
	deleg(top, "B", tk, "b/*")
	deleg(a, "X", ka, "a/*")
	deleg(b, "X", kb, "b/*")
	for name, r := range map[string]struct {
		md *metadata.Metadata[metadata.TargetsType]
		k  *tuf.Key
	}{"targets": {top, tk}, "A": {a, tk}, "B": {b, tk}, "X": {x, ka}} {
		bs, err := tuf.SignTargets(r.md, r.k)
		if err != nil {
			t.Fatal(err)
		}
		files["1."+name+".json"] = bs
	}
	st, err := tuf.SignSnapshotTimestampRoles(sk, tsk, 1, map[string]int64{"targets": 1, "A": 1, "B": 1, "X": 1}, exp, exp)
	if err != nil {
		t.Fatal(err)
	}
	files["1.snapshot.json"], files["timestamp.json"] = st.Snapshot, st.Timestamp
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		bs, ok := files[strings.TrimPrefix(req.URL.Path, "/")]
		if !ok {
			http.NotFound(w, req)
			return
		}
		w.Write(bs)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, root
}

// TestTUFClientDelegations: targets are found through delegations, and a role is verified
// against the delegator of each search. go-tuf's updater alone, having trusted X through A,
// hands the same X to the search for b/f; the client refuses it.
func TestTUFClientDelegations(t *testing.T) {
	u, root := delegatedRepo(t)
	run := func(names ...string) (string, error) {
		dir := t.TempDir()
		rootFile := filepath.Join(dir, "trusted-root.json")
		os.WriteFile(rootFile, root, 0o600)
		var out bytes.Buffer
		base := []string{"--metadata-dir", filepath.Join(dir, "meta"), "--metadata-url", u, "--target-dir", filepath.Join(dir, "targets"), "--target-base-url", u + "/targets"}
		if err := tufClient(context.Background(), append(base, "init", rootFile), &out); err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			base = append(base, "--target-name", n)
		}
		err := tufClient(context.Background(), append(base, "download"), &out)
		return out.String(), err
	}
	if out, err := run("a/f"); err != nil {
		t.Fatalf("a/f through A: %v\n%s", err, out)
	}
	if _, err := run("b/f"); err == nil {
		t.Fatal("b/f through B was accepted")
	}
	out, err := run("a/f", "b/f")
	if err == nil || !strings.Contains(out, "downloaded a/f") {
		t.Fatalf("a/f then b/f: %v\n%s; want a/f downloaded and b/f refused", err, out)
	}

	// What go-tuf's updater does on its own, and what the agent's search adds.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "root.json"), root, 0o600)
	up, err := agent.NewUpdater(context.Background(), agent.TUFOptions{MetadataURL: u + "/", MetadataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Refresh(); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.TargetInfo(up, "a/f"); err != nil {
		t.Fatal(err)
	}
	if _, err := up.GetTargetInfo("b/f"); err == nil {
		t.Log("go-tuf's updater alone accepts b/f: it reuses the X it trusted through A")
	}
	var unsigned *metadata.ErrUnsignedMetadata
	if _, err := agent.TargetInfo(up, "b/f"); !errors.As(err, &unsigned) {
		t.Fatalf("agent.TargetInfo(b/f) after a/f: %v, want B's threshold unmet", err)
	}
}
