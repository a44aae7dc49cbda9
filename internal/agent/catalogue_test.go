package agent

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/delta"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
)

// catalogue is an image repository as the server serves it (consistent snapshots), built with
// the same functions the server and the release CLI use: products x releases, each release an
// image target, and with index its chunk index (what `upkeep release publish` signs unless
// --no-index).
type catalogue struct {
	files  map[string][]byte // "timestamp.json", "1.snapshot.json", "1.targets.json", "1.p.P.json", ...
	root   []byte
	target string // the last release of the first product
}

func digest(s string) (string, string) {
	a, b := sha256.Sum256([]byte(s)), sha512.Sum512([]byte(s))
	return hex.EncodeToString(a[:]), hex.EncodeToString(b[:])
}

// releaseTargets adds a release's image target, and with index its chunk index target, to t.
func releaseTargets(tb testing.TB, t map[string]*metadata.TargetFiles, product string, r int, index bool) string {
	v := fmt.Sprintf("1.%d.0", r)
	img := tuf.TargetName(product, v, "firmware-"+v+".img")
	s256, s512 := digest(img)
	c := uptane.TargetCustom{Product: product, HardwareIDs: []string{"board-" + product}, Version: v, SecurityVersion: int64(r + 1), Class: uptane.ClassSecurity}
	tf, err := uptane.NewTargetFile(48<<20+int64(r), s256, s512, c)
	if err != nil {
		tb.Fatal(err)
	}
	t[img] = tf
	if !index {
		return img
	}
	i256, _ := digest(img + ".caibx")
	it, err := uptane.NewDeltaTargetFile(190<<10+int64(r), i256, &delta.Binding{Format: delta.FormatCaibx, Image: img, ImageSHA256: s256, ImageLength: tf.Length})
	if err != nil {
		tb.Fatal(err)
	}
	t[delta.IndexName(img)] = it
	return img
}

// newCatalogue builds the repository. delegated: the top-level targets delegate each product
// to its own role through the bins (tuf.BinRole), as `upkeep keys delegate` does; otherwise
// every target is in the top-level targets, as before delegations.
func newCatalogue(tb testing.TB, products, releases int, delegated, index bool) *catalogue {
	tb.Helper()
	gen := func() *tuf.Key {
		k, err := tuf.GenerateKey()
		if err != nil {
			tb.Fatal(err)
		}
		return k
	}
	exp := time.Now().Add(365 * 24 * time.Hour)
	rk, tk, sk, tsk := gen(), gen(), gen(), gen()
	root, err := tuf.NewRoot([]*tuf.Key{rk}, 1, tk, sk, tsk, exp, true)
	if err != nil {
		tb.Fatal(err)
	}
	c := &catalogue{files: map[string][]byte{}}
	if c.root, err = root.ToBytes(false); err != nil {
		tb.Fatal(err)
	}
	top := metadata.Targets(exp.UTC().Truncate(time.Second))
	bins := map[string]*metadata.Metadata[metadata.TargetsType]{}
	versions := map[string]int64{}
	put := func(role string, md *metadata.Metadata[metadata.TargetsType], keys ...*tuf.Key) {
		b, err := tuf.SignTargets(md, keys...)
		if err != nil {
			tb.Fatal(err)
		}
		c.files[fmt.Sprintf("%d.%s.json", md.Signed.Version, role)] = b
		versions[role] = md.Signed.Version
	}
	for p := range products {
		product := fmt.Sprintf("product-%03d", p)
		role := top
		if delegated {
			role = metadata.Targets(exp.UTC().Truncate(time.Second))
		}
		for r := range releases {
			name := releaseTargets(tb, role.Signed.Targets, product, r, index)
			if p == 0 {
				c.target = name
			}
		}
		if !delegated {
			continue
		}
		pk := gen()
		put(tuf.ProductRole(product), role, pk)
		bin := bins[tuf.BinRole(product)]
		if bin == nil {
			bin = metadata.Targets(exp.UTC().Truncate(time.Second))
			bins[tuf.BinRole(product)] = bin
		}
		if err := tuf.Delegate(bin, tuf.ProductRole(product), []*metadata.Key{pk.Public()}, 1, tuf.ProductPaths(product)); err != nil {
			tb.Fatal(err)
		}
	}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range bins {
			if !yield(n) {
				return
			}
		}
	}) {
		bin := bins[name]
		var paths []string
		for _, r := range bin.Signed.Delegations.Roles {
			paths = append(paths, r.Paths...)
		}
		if err := tuf.Delegate(top, name, []*metadata.Key{tk.Public()}, 1, paths); err != nil {
			tb.Fatal(err)
		}
		put(name, bin, tk)
	}
	put(tuf.Targets, top, tk)
	st, err := tuf.SignSnapshotTimestampRoles(sk, tsk, 1, versions, exp, exp)
	if err != nil {
		tb.Fatal(err)
	}
	c.files["1.snapshot.json"], c.files["timestamp.json"] = st.Snapshot, st.Timestamp
	return c
}

// refreshBytes runs a device's full refresh against c (a new device: trusted root only) and the
// lookup of one target through the delegations, and returns the metadata bytes downloaded and
// the files fetched.
func (c *catalogue) refreshBytes(tb testing.TB) (int64, []string) {
	tb.Helper()
	var n atomic.Int64
	var mu sync.Mutex
	var fetched []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/")
		b, ok := c.files[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		fetched = append(fetched, name)
		mu.Unlock()
		n.Add(int64(len(b)))
		w.Write(b)
	}))
	defer srv.Close()
	dir := tb.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "root.json"), c.root, 0o600); err != nil {
		tb.Fatal(err)
	}
	up, err := NewUpdater(context.Background(), TUFOptions{MetadataURL: srv.URL + "/", MetadataDir: dir})
	if err != nil {
		tb.Fatal(err)
	}
	if err := tuf.Guard("refresh", up.Refresh); err != nil {
		tb.Fatal(err)
	}
	if _, err := TargetInfo(up, c.target); err != nil {
		tb.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	return n.Load(), fetched
}

// maxRefreshBytes is the budget of a device's full refresh of the image repository's metadata
// with 200 products of 50 releases each (a release being its image target).
const maxRefreshBytes = 64 << 10

// TestCatalogueRefreshBudget checks the budget: a device learns about its product by reading the
// timestamp, the snapshot, the top-level targets, its product's bin and its product's role,
// whether releases are published with their chunk index (the default) or without.
func TestCatalogueRefreshBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("signs 200 product roles")
	}
	for _, index := range []bool{false, true} {
		c := newCatalogue(t, 200, 50, true, index)
		got, files := c.refreshBytes(t)
		if got > maxRefreshBytes {
			t.Fatalf("index=%t: a full refresh downloads %d bytes (%v), budget %d", index, got, files, maxRefreshBytes)
		}
		if len(files) != 5 { // 2.root.json answered 404, not counted
			t.Errorf("index=%t: fetched %v, want timestamp, snapshot, targets, one bin and one product role", index, files)
		}
		t.Logf("200 products x 50 releases, index=%t: %d bytes, %v", index, got, files)
	}
}

// BenchmarkCatalogueRefresh measures the metadata bytes of a device's full refresh (a new
// device, trusted root only, then the lookup of its product's latest release) with 200 products
// and 1 to 1,000 releases each, delegated per product (bytes/refresh, and each file's share) and,
// for comparison, as one flat targets file (flat-bytes: timestamp, snapshot and targets, not
// downloaded, as go-tuf refuses a targets file above 5 MB). index=false: a release is its image
// target (`release publish --no-index`); index=true: its image and chunk index targets.
//
//	go test ./internal/agent -run '^$' -bench CatalogueRefresh -benchtime 1x
func BenchmarkCatalogueRefresh(b *testing.B) {
	for _, index := range []bool{false, true} {
		for _, releases := range []int{1, 10, 50, 100, 1000} {
			b.Run(fmt.Sprintf("index=%t/products=200/releases=%d", index, releases), func(b *testing.B) {
				benchCatalogue(b, releases, index)
			})
		}
	}
}

func benchCatalogue(b *testing.B, releases int, index bool) {
	c := newCatalogue(b, 200, releases, true, index)
	var got int64
	var files []string
	for b.Loop() {
		got, files = c.refreshBytes(b)
	}
	b.ReportMetric(float64(got), "bytes/refresh")
	for _, f := range files {
		kind := strings.SplitN(strings.TrimSuffix(f, ".json"), ".", 2)
		k := kind[len(kind)-1]
		switch {
		case strings.HasPrefix(k, "bin."):
			k = "bin"
		case strings.HasPrefix(k, "p."):
			k = "product"
		}
		b.ReportMetric(float64(len(c.files[f])), k+"-bytes")
	}
	if releases <= 100 {
		flat := newCatalogue(b, 200, releases, false, index)
		b.ReportMetric(float64(len(flat.files["timestamp.json"])+len(flat.files["1.snapshot.json"])+len(flat.files["1.targets.json"])), "flat-bytes")
	}
}
