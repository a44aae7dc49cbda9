// Package apperr defines Upkeep's application errors: a code, a message that is safe to show to a
// user, and an internal cause. Codes map to HTTP statuses in exactly one place, HTTPStatus.
package apperr

import (
	"errors"
	"fmt"
	"net/http"
)

// Code classifies an error. Codes are stable strings; clients switch on them.
type Code string

// Error codes.
const (
	Invalid      Code = "invalid"      // malformed or unacceptable input
	Unauthorized Code = "unauthorized" // missing or bad credentials
	Forbidden    Code = "forbidden"    // authenticated but not allowed
	NotFound     Code = "not_found"    // no such resource
	Conflict     Code = "conflict"     // version conflict or duplicate
	TooLarge     Code = "too_large"    // body or upload over its limit
	Unavailable  Code = "unavailable"  // not available here or now (shutting down, not configured)
	Busy         Code = "busy"         // overloaded: retry after the Retry-After the answer carries
	Timeout      Code = "timeout"      // the request (its body) did not arrive in time
	Internal     Code = "internal"     // a bug or an infrastructure failure
	Pending      Code = "pending"      // the request waits on an operator (device enrolment)
	Verification Code = "verification" // a signature or hash did not verify
)

// Error is an application error. Msg is safe to show to users; Err is internal detail.
type Error struct {
	Code Code
	Msg  string
	Err  error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Msg, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Msg)
}

func (e *Error) Unwrap() error { return e.Err }

// E builds an Error with a formatted user message.
func E(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// Wrap builds an Error with a user message and an internal cause.
func Wrap(code Code, err error, msg string) *Error {
	return &Error{Code: code, Msg: msg, Err: err}
}

// CodeOf returns the code of the first *Error in err's chain, or Internal.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Internal
}

// Message returns the user-safe message of err, or a generic one for internal errors.
func Message(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Msg
	}
	return "internal error"
}

// Is reports whether err carries code.
func Is(err error, code Code) bool { return err != nil && CodeOf(err) == code }

// HTTPStatus maps a code to its HTTP status. It is the only such mapping.
func HTTPStatus(code Code) int {
	switch code {
	case Invalid:
		return http.StatusBadRequest
	case Unauthorized:
		return http.StatusUnauthorized
	case Forbidden:
		return http.StatusForbidden
	case NotFound:
		return http.StatusNotFound
	case Conflict:
		return http.StatusConflict
	case TooLarge:
		return http.StatusRequestEntityTooLarge
	case Unavailable:
		return http.StatusServiceUnavailable
	case Busy:
		return http.StatusTooManyRequests
	case Timeout:
		return http.StatusRequestTimeout
	case Pending:
		return http.StatusAccepted
	case Verification:
		return http.StatusUnprocessableEntity
	default:
		return http.StatusInternalServerError
	}
}

// FromHTTPStatus is the inverse mapping, for clients that got an error body without a code.
func FromHTTPStatus(status int) Code {
	for _, c := range []Code{Invalid, Unauthorized, Forbidden, NotFound, Conflict, TooLarge, Unavailable, Busy, Pending, Verification} {
		if HTTPStatus(c) == status {
			return c
		}
	}
	return Internal
}
