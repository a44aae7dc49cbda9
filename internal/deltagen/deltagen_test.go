package deltagen_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/blob/blobtest"
	"upkeep.dev/upkeep/internal/blob/fs"
	"upkeep.dev/upkeep/internal/blob/s3"
	"upkeep.dev/upkeep/internal/delta"
	"upkeep.dev/upkeep/internal/deltagen"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/store/sqlite"
)

// TestGenerate: planning picks the sources devices run, most first, at most top; the generator
// makes a patch into the blob store that rebuilds the destination; a job whose image is missing
// from the blob store fails with the reason, and planning again queues it once more.
func TestGenerate(t *testing.T) {
	blobs, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	testGenerate(t, blobs)
}

// TestGenerateS3 is TestGenerate with the images and patches in a real S3-compatible server
// (UPKEEP_TEST_S3), where the source is copied to a temporary file for random access.
func TestGenerateS3(t *testing.T) {
	cfg, err := s3.ParseURL(blobtest.S3URL(t), os.Getenv("UPKEEP_TEST_S3_ACCESS_KEY"), os.Getenv("UPKEEP_TEST_S3_SECRET_KEY"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Bucket = fmt.Sprintf("%s-deltagen-%d", cfg.Bucket, time.Now().UnixNano())
	st := s3.New(cfg)
	if err := st.CreateBucket(context.Background()); err != nil {
		t.Fatal(err)
	}
	testGenerate(t, st)
}

func testGenerate(t *testing.T, blobs release.BlobStore) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	r := rand.New(rand.NewPCG(1, 2))
	img := make([]byte, 300<<10)
	for i := range img {
		img[i] = byte(r.IntN(256))
	}
	images := map[string][]byte{}
	put := func(version string, b []byte, store bool) *release.Release {
		sum := sha256.Sum256(b)
		rel := &release.Release{Product: "p", Version: version, HardwareIDs: []string{"hw"}, SecurityVersion: int64(len(images) + 1), Class: "security",
			Target: "p/" + version + "/img", Length: int64(len(b)), SHA256: hex.EncodeToString(sum[:]), SHA512: strings.Repeat("0", 128), PublishedAt: time.Now()}
		if store {
			if _, err := blobs.Put(ctx, bytes.NewReader(b), int64(len(b)), ""); err != nil {
				t.Fatal(err)
			}
		}
		if err := db.CreateRelease(ctx, rel); err != nil {
			t.Fatal(err)
		}
		images[version] = b
		return rel
	}
	next := func(b []byte, at int) []byte {
		n := bytes.Clone(b)
		copy(n[at:], "a changed stretch of the image")
		return n
	}
	r1 := put("1", img, true)
	r2 := put("2", next(img, 1000), false) // its image never reached the blob store
	r3 := put("3", next(img, 5000), true)
	put("4", next(img, 9000), true)
	devices := map[*release.Release]int{r1: 3, r2: 2, r3: 1}
	n := 0
	for rel, k := range devices {
		for range k {
			n++
			d := &fleet.Device{ID: "d" + string(rune('a'+n)), PublicKey: []byte{byte(n)}, Serial: "SN", Product: "p", HardwareID: "hw", Status: fleet.StatusAccepted,
				EnrolledAt: time.Now(), InstalledTarget: rel.Target, InstalledSHA256: rel.SHA256}
			if err := db.CreateDevice(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
	}
	s := &deltagen.Service{Store: db, Releases: db, Blobs: blobs, TempDir: t.TempDir()}
	jobs, err := s.Plan(ctx, "p", "4", 2, 1)
	if err != nil || len(jobs) != 2 || jobs[0].From != "1" || jobs[0].Devices != 3 || jobs[1].From != "2" {
		t.Fatalf("plan: %+v, %v", jobs, err)
	}
	if err := s.PlanLatest(ctx); err != nil { // 4 is the newest: top 3 adds the one from 3
		t.Fatal(err)
	}
	for {
		more, err := s.RunOne(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !more {
			break
		}
	}
	jobs, err = s.Jobs(ctx, "p", "4")
	if err != nil || len(jobs) != 3 {
		t.Fatalf("jobs: %+v, %v", jobs, err)
	}
	a, err := delta.NewApplier()
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		if j.From == "2" {
			if j.State != deltagen.Failed || !strings.Contains(j.Error, "source image p/2/img") {
				t.Errorf("job from 2: %s %q, want failed for its missing image", j.State, j.Error)
			}
			continue
		}
		if j.State != deltagen.Done || j.Done != j.ImageLength || j.PatchLength == 0 || j.PatchLength > 10<<10 {
			t.Fatalf("job from %s: %+v", j.From, j)
		}
		p, _, err := blobs.Open(ctx, j.PatchSHA256)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		src := images[j.From]
		if _, err := a.Apply(ctx, bytes.NewReader(src), int64(len(src)), j.ImageLength, p, &out, delta.ApplyState{}, nil); err != nil {
			t.Fatalf("apply the patch from %s: %v", j.From, err)
		}
		p.Close()
		if !bytes.Equal(out.Bytes(), images["4"]) {
			t.Fatalf("the patch from %s does not rebuild the image", j.From)
		}
	}
	if _, err := s.Plan(ctx, "p", "4", 3, 1); err != nil {
		t.Fatal(err)
	}
	if jobs, _ := s.Jobs(ctx, "p", "4"); jobs[1].State != deltagen.Queued {
		t.Fatalf("a failed job planned again: %+v", jobs[1])
	}
	if _, err := s.Plan(ctx, "p", "9", 3, 1); err == nil {
		t.Fatal("planned deltas to an unknown release")
	}
}
