package uptane

import (
	"errors"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/tuf"
)

// Reason says why verification failed. Reasons are persisted in the agent's state and reported
// to the server as part of a message, so they are readable strings. A Reason is also an error
// value, so that errors.Is(err, ReasonExpired) tells whether err is a *VerificationError for it.
type Reason string

func (r Reason) Error() string { return string(r) }

// Reasons for refusing metadata or an image. Each is fatal for the update that caused it.
const (
	// TUF metadata (TUF client workflow 5.3-5.6), from go-tuf's typed errors.
	ReasonVersionRollback Reason = "version rollback"  // a version below the trusted one, or not the one newer metadata names (*metadata.ErrBadVersionNumber)
	ReasonExpired         Reason = "expired"           // *metadata.ErrExpiredMetadata
	ReasonThreshold       Reason = "threshold not met" // missing or bad signatures (*metadata.ErrUnsignedMetadata)
	ReasonMalformed       Reason = "malformed metadata"
	ReasonInvalidMetadata Reason = "invalid metadata" // any other refusal of TUF metadata

	// The image's bytes against the signed length and hashes.
	ReasonLengthMismatch Reason = "length mismatch" // more bytes than signed (endless data), metadata too long
	ReasonHashMismatch   Reason = "hash mismatch"   // a digest differs from the signed one, or none is usable

	// The Uptane checks of Decide (Uptane Standard 5.4.4.2).
	ReasonTooManyTargets        Reason = "too many targets"
	ReasonNotForThisDevice      Reason = "not for this device"                    // the director binds the target to another device
	ReasonHardware              Reason = "wrong hardware"                         // another hardware id in the director or image custom
	ReasonProduct               Reason = "wrong product"                          // an image signed for another product
	ReasonMissingTarget         Reason = "not in the image repository"            // arbitrary software: not signed by the offline keys
	ReasonMismatchImageDirector Reason = "director and image repository disagree" // mix-and-match: other length or hashes
	ReasonSecurityDowngrade     Reason = "security version downgrade"
	ReasonBadCustom             Reason = "invalid custom fields" // also an invalid target name, notice or install policy
)

// VerificationError is a failed TUF or Uptane check. It is always fatal for the update: the
// agent reports it and does not retry the image. It wraps the error that caused it, so that
// errors.As finds go-tuf's typed errors (*metadata.ErrExpiredMetadata, ...), and errors.Is
// matches its Reason.
type VerificationError struct {
	Reason Reason
	Msg    string // what failed, for people; may be empty
	Err    error  // the underlying error, or nil
}

func (e *VerificationError) Error() string {
	s := "verification failed: " + string(e.Reason)
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the underlying error.
func (e *VerificationError) Unwrap() error { return e.Err }

// Is reports whether target is e's Reason.
func (e *VerificationError) Is(target error) bool {
	r, ok := target.(Reason)
	return ok && r == e.Reason
}

// ReasonOf returns the Reason of the first *VerificationError in err's chain, or "".
func ReasonOf(err error) Reason {
	var ve *VerificationError
	if errors.As(err, &ve) {
		return ve.Reason
	}
	return ""
}

// MetadataError turns the failure of a TUF metadata check (a go-tuf refresh, or package tuf's
// verification) into a VerificationError whose Reason is the precise one, keeping err. what names
// the metadata ("director", "image repository"). Callers decide beforehand what is transient
// (network trouble): everything given here is a verification failure.
func MetadataError(what string, err error) *VerificationError {
	return &VerificationError{Reason: MetadataReason(err), Msg: what + " metadata", Err: err}
}

// MetadataReason classifies go-tuf's typed errors, and package tuf's, into a Reason.
func MetadataReason(err error) Reason {
	switch {
	case errors.Is(err, &metadata.ErrExpiredMetadata{}):
		return ReasonExpired
	case errors.Is(err, &metadata.ErrBadVersionNumber{}): // ErrEqualVersionNumber is one too
		return ReasonVersionRollback
	case errors.Is(err, &metadata.ErrUnsignedMetadata{}):
		return ReasonThreshold
	case errors.Is(err, &metadata.ErrLengthOrHashMismatch{}):
		return ReasonHashMismatch
	case errors.Is(err, &metadata.ErrDownloadLengthMismatch{}):
		return ReasonLengthMismatch
	case errors.Is(err, tuf.ErrMalformed), errors.Is(err, &metadata.ErrValue{}), errors.Is(err, &metadata.ErrType{}):
		return ReasonMalformed
	}
	return ReasonInvalidMetadata
}

func vfail(r Reason, err error, msg string) error {
	return &VerificationError{Reason: r, Msg: msg, Err: err}
}
