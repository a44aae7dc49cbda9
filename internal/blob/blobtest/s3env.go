package blobtest

import (
	"os"
	"testing"
)

// S3URL returns UPKEEP_TEST_S3, the s3://bucket?endpoint=... of an S3-compatible server for
// tests (keys in UPKEEP_TEST_S3_ACCESS_KEY and UPKEEP_TEST_S3_SECRET_KEY). When it is unset the
// test skips, or fails if UPKEEP_REQUIRE_SERVICES=1 (CI sets it: there a missing server is a
// broken run, not a reason to skip).
func S3URL(t testing.TB) string {
	t.Helper()
	raw := os.Getenv("UPKEEP_TEST_S3")
	if raw == "" {
		if os.Getenv("UPKEEP_REQUIRE_SERVICES") == "1" {
			t.Fatal("UPKEEP_TEST_S3 is not set, and UPKEEP_REQUIRE_SERVICES=1 requires the S3 suites to run")
		} else {
			t.Skip("UPKEEP_TEST_S3 is not set")
		}
	}
	return raw
}
