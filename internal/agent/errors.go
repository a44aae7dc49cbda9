package agent

import (
	"errors"
	"net/http"

	"upkeep.dev/upkeep/internal/devclient"
)

// TransientError is a failure worth retrying later: network trouble, overload, a server error.
// Run retries it with backoff, never sooner than its RetryAfter. The device client classifies
// it; this is the same type, so that errors.As works with either name.
type TransientError = devclient.TransientError

// ServerError is an answer the server gave with an error body (devclient.ServerError).
type ServerError = devclient.ServerError

// MaxRetryAfter caps the wait a server's Retry-After can impose on the agent
// (devclient.MaxRetryAfter).
const MaxRetryAfter = devclient.MaxRetryAfter

var errNotAccepted = errors.New("device is not accepted yet: an operator must accept it")

// refused tells whether err is the server's lasting refusal of a request (403, 404, 410...):
// asking again will not help. 401 (a token to renew), 408 and 429 are not refusals.
func refused(err error) bool {
	var se *ServerError
	return errors.As(err, &se) && se.Status >= 400 && se.Status < 500 &&
		se.Status != http.StatusUnauthorized && se.Status != http.StatusRequestTimeout && se.Status != http.StatusTooManyRequests
}
