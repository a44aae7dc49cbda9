package agent

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
)

// TestClassifyRefresh: network trouble stays transient (keeping Retry-After); every other
// failure of a TUF refresh is a verification failure with its precise reason, wrapping go-tuf's
// typed error.
func TestClassifyRefresh(t *testing.T) {
	if classifyRefresh("director", nil) != nil {
		t.Fatal("nil error classified")
	}
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"transient", &TransientError{Err: errors.New("connection reset"), RetryAfter: time.Minute}},
		{"http status", &metadata.ErrDownloadHTTP{StatusCode: 404, URL: "/director/2.root.json"}},
	} {
		err := classifyRefresh("director", fmt.Errorf("load timestamp: %w", tc.err))
		var te *TransientError
		if !errors.As(err, &te) || uptane.ReasonOf(err) != "" {
			t.Errorf("%s: %v, want a transient error", tc.name, err)
			continue
		}
		if tc.name == "transient" && te.RetryAfter != time.Minute {
			t.Errorf("%s: Retry-After %s, want 1m", tc.name, te.RetryAfter)
		}
	}
	for _, tc := range []struct {
		err  error
		want uptane.Reason
	}{
		{&metadata.ErrBadVersionNumber{Msg: "new timestamp version 2 must be >= 3"}, uptane.ReasonVersionRollback},
		{&metadata.ErrExpiredMetadata{Msg: "timestamp.json is expired"}, uptane.ReasonExpired},
		{&metadata.ErrUnsignedMetadata{Msg: "not enough signatures"}, uptane.ReasonThreshold},
		{&metadata.ErrDownloadLengthMismatch{Msg: "timestamp.json is longer than the limit"}, uptane.ReasonLengthMismatch},
		{fmt.Errorf("%w (director): nil map", tuf.ErrMalformed), uptane.ReasonMalformed},
		{&metadata.ErrRepository{Msg: "expected snapshot, got targets"}, uptane.ReasonInvalidMetadata},
	} {
		err := classifyRefresh("image repository", tc.err)
		var ve *uptane.VerificationError
		var te *TransientError
		if !errors.As(err, &ve) || errors.As(err, &te) {
			t.Errorf("%v: %v, want a verification error", tc.err, err)
			continue
		}
		if ve.Reason != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("%v: reason %q (%v), want %q wrapping the cause", tc.err, ve.Reason, err, tc.want)
		}
	}
}
