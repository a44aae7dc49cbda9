package blobtest

import (
	"testing"

	"upkeep.dev/upkeep/internal/testenv"
)

// S3URL returns UPKEEP_TEST_S3, the s3://bucket?endpoint=... of an S3-compatible server for
// tests (keys in UPKEEP_TEST_S3_ACCESS_KEY and UPKEEP_TEST_S3_SECRET_KEY); unset, the test skips,
// or fails under CI (testenv.Service).
func S3URL(t testing.TB) string {
	t.Helper()
	return testenv.Service(t, "UPKEEP_TEST_S3", "S3")
}
