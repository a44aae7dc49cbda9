package s3_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/blob/blobtest"
	"upkeep.dev/upkeep/internal/blob/s3"
)

// TestConformance runs the artifact-store suite against the real S3-compatible server named by
// UPKEEP_TEST_S3 (s3://bucket?endpoint=...), with UPKEEP_TEST_S3_ACCESS_KEY and
// UPKEEP_TEST_S3_SECRET_KEY. CI starts one on loopback.
func TestConformance(t *testing.T) {
	raw := blobtest.S3URL(t)
	cfg, err := s3.ParseURL(raw, os.Getenv("UPKEEP_TEST_S3_ACCESS_KEY"), os.Getenv("UPKEEP_TEST_S3_SECRET_KEY"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Bucket = fmt.Sprintf("%s-%d", cfg.Bucket, time.Now().UnixNano())
	st := s3.New(cfg)
	ctx := context.Background()
	if err := st.CreateBucket(ctx); err != nil {
		t.Fatal(err)
	}
	blobtest.Run(t, st)

	// A pre-signed URL lets a device fetch the bytes, ranges included, without the server.
	b, err := st.Put(ctx, strings.NewReader("firmware bytes"), 1<<20, "")
	if err != nil {
		t.Fatal(err)
	}
	u, err := st.PresignGet(ctx, b.SHA256, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Range", "bytes=9-")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusPartialContent || string(got) != "bytes" {
		t.Fatalf("pre-signed range GET: %d %q", resp.StatusCode, got)
	}
}

// TestPrefix: stores under different prefixes of one bucket (tenants) pass the suite and do not
// see each other's blobs.
func TestPrefix(t *testing.T) {
	raw := blobtest.S3URL(t)
	ctx := context.Background()
	bucket := fmt.Sprintf("prefix-%d", time.Now().UnixNano())
	stores := map[string]*s3.Store{}
	for _, p := range []string{"tenants/a/", "tenants/b/"} {
		cfg, err := s3.ParseURL(raw+"&prefix="+p, os.Getenv("UPKEEP_TEST_S3_ACCESS_KEY"), os.Getenv("UPKEEP_TEST_S3_SECRET_KEY"))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Prefix != p {
			t.Fatalf("prefix %q, want %q", cfg.Prefix, p)
		}
		cfg.Bucket = bucket
		stores[p] = s3.New(cfg)
		if err := stores[p].CreateBucket(ctx); err != nil {
			t.Fatal(err)
		}
	}
	blobtest.Run(t, stores["tenants/a/"])
	b, err := stores["tenants/a/"].Put(ctx, strings.NewReader("tenant a's firmware"), 1<<20, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stores["tenants/b/"].Stat(ctx, b.SHA256); err == nil {
		t.Fatal("a blob of prefix tenants/a/ is found under tenants/b/")
	}
}
