package blobtest

import (
	"testing"
)

// recorder is a testing.TB that records whether the helper skipped or failed.
type recorder struct {
	testing.TB
	skipped, failed bool
}

func (r *recorder) Helper()               {}
func (r *recorder) Skip(...any)           { r.skipped = true }
func (r *recorder) Fatal(...any)          { r.failed = true }
func (r *recorder) Fatalf(string, ...any) { r.failed = true }

// TestS3URLRequired: without UPKEEP_TEST_S3 the S3 suites skip, unless UPKEEP_REQUIRE_SERVICES=1
// (CI), where they fail.
func TestS3URLRequired(t *testing.T) {
	t.Setenv("UPKEEP_TEST_S3", "")
	for _, c := range []struct {
		require       string
		skip, failure bool
	}{{"", true, false}, {"1", false, true}} {
		t.Setenv("UPKEEP_REQUIRE_SERVICES", c.require)
		r := &recorder{TB: t}
		S3URL(r)
		if r.skipped != c.skip || r.failed != c.failure {
			t.Errorf("UPKEEP_REQUIRE_SERVICES=%q: skipped %v failed %v, want %v %v", c.require, r.skipped, r.failed, c.skip, c.failure)
		}
	}
	t.Setenv("UPKEEP_TEST_S3", "s3://b?endpoint=http://127.0.0.1:1")
	if got := S3URL(&recorder{TB: t}); got != "s3://b?endpoint=http://127.0.0.1:1" {
		t.Errorf("S3URL = %q", got)
	}
}
