package agent

import (
	"errors"

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
