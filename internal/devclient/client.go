// Package devclient is the one client of the device protocol, /device/v1 (types in wire):
// enrolment, token renewal, check-in with the server's poll hints, reports, TUF metadata for
// go-tuf and artifact downloads with Range/If-Range. The agent, the simulated devices (which run
// the agent) and every bench speak the protocol through it, so that they send the same requests
// and read the answers, Retry-After and the poll hints included, the same way.
//
// A Client holds no device state: the caller passes the device key or token to each call. It
// classifies failures: *TransientError (network trouble, 429, 5xx, an unreadable answer) is worth
// retrying later, *ServerError is the server's refusal. It never mutates http.DefaultClient.
package devclient

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"upkeep.dev/upkeep/wire"
)

// TransientError is a failure worth retrying later: network trouble, overload, a server error.
type TransientError struct {
	Err        error
	RetryAfter time.Duration // from a Retry-After header, if any (0..MaxRetryAfter)
}

func (e *TransientError) Error() string { return "transient: " + e.Err.Error() }
func (e *TransientError) Unwrap() error { return e.Err }

// ServerError is an answer the server gave with an error body.
type ServerError struct {
	Status  int
	Code    string
	Message string
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("server answered %d %s: %s", e.Status, e.Code, e.Message)
}

// TokenFunc returns a valid device token, renewing it if needed (the agent's asks the server
// with a signed request, Client.Token). Its error is returned as it is.
type TokenFunc func(ctx context.Context) (string, error)

// Client speaks the device protocol to the server at Base. It is safe for concurrent use.
type Client struct {
	// HTTP sends the requests; nil: http.DefaultClient. Artifacts want a client without a total
	// timeout (a large image over a slow link takes as long as it takes).
	HTTP *http.Client
	// Base is the server's URL without a trailing slash. Calls that take a URL (metadata,
	// artifacts) do not use it.
	Base string
}

// Paths of the device protocol.
const (
	pathEnroll  = "/device/v1/enroll"
	pathToken   = "/device/v1/token"
	pathCheckin = "/device/v1/checkin"
	pathReport  = "/device/v1/report"
	// DirectorPath and ImagePath are where the director's per-device metadata and the image
	// repository's metadata are served, below Base.
	DirectorPath = "/device/v1/director/"
	ImagePath    = "/repo/image/"
	targetsPath  = "/device/v1/targets/"
)

// TargetURL is the URL of the artifact of the named target.
func (c *Client) TargetURL(name string) string { return c.Base + targetsPath + name }

// Enroll asks the server to enrol the device whose key signs payload (payload.PublicKey must be
// key's public key). With a valid enrolToken the answer is 200 with a device token; without
// one it is 202 and the device is pending (Status "pending", no Token) until an operator
// accepts it. Returns *ServerError if the server refuses, *TransientError if it may work later.
func (c *Client) Enroll(ctx context.Context, key ed25519.PrivateKey, payload wire.EnrollPayload, enrollToken string) (*wire.EnrollResponse, error) {
	var hdr http.Header
	if enrollToken != "" {
		hdr = http.Header{wire.HeaderEnrollToken: {enrollToken}}
	}
	return c.signed(ctx, pathEnroll, key, payload, hdr)
}

// Token asks for a fresh device token (valid an hour) with a request signed by the device key.
// An answer without a token means the device is not accepted (yet): its Status says why.
func (c *Client) Token(ctx context.Context, key ed25519.PrivateKey, payload wire.TokenPayload) (*wire.EnrollResponse, error) {
	return c.signed(ctx, pathToken, key, payload, nil)
}

func (c *Client) signed(ctx context.Context, path string, key ed25519.PrivateKey, payload any, hdr http.Header) (*wire.EnrollResponse, error) {
	req, err := signRequest(key, payload)
	if err != nil {
		return nil, err
	}
	var resp wire.EnrollResponse
	if _, _, err := c.call(ctx, http.MethodPost, path, "", req, &resp, hdr); err != nil {
		return nil, err
	}
	return &resp, nil
}

// signRequest signs the JSON of payload with key (wire.SignedRequest).
func signRequest(key ed25519.PrivateKey, payload any) (wire.SignedRequest, error) {
	b, err := json.Marshal(payload)
	if err != nil {
		return wire.SignedRequest{}, err
	}
	return wire.SignedRequest{Payload: b, Signature: hex.EncodeToString(ed25519.Sign(key, b))}, nil
}

// CheckinResult is the server's answer to a check-in.
type CheckinResult struct {
	// Status is 200 (the answer has a body) or 304 (nothing changed).
	Status int
	// Changed: the director names something new for this device; a full refresh follows.
	Changed bool
	// Version is the director version the server states on a 200, else the one the device sent.
	Version int64
	// Poll is the poll interval the server suggests, 0 if none: the body's poll_seconds on a
	// 200, else the Upkeep-Poll-Seconds header (sent on 304 answers too). At most a week.
	Poll time.Duration
	// Jitter is the spread either way around the interval the server suggests (wider while it
	// is loaded), 0 if none: from the body on a 200, else Upkeep-Poll-Jitter-Seconds. NextPoll
	// bounds it by half the interval.
	Jitter time.Duration
}

// Checkin is the hot path: it sends the device's state with If-None-Match set to the director
// version it trusts (body.DirectorVersion), and the server answers 304 or the new version.
// Returns *ServerError (a 401 means the token is no longer good: ask for a fresh one) or
// *TransientError (its RetryAfter honours the server's Retry-After on 429 and 503).
func (c *Client) Checkin(ctx context.Context, token string, body wire.Checkin) (CheckinResult, error) {
	var resp wire.CheckinResponse
	status, hdr, err := c.call(ctx, http.MethodPost, pathCheckin, token, body, &resp,
		http.Header{"If-None-Match": {`"` + strconv.FormatInt(body.DirectorVersion, 10) + `"`}})
	if err != nil {
		return CheckinResult{Status: status}, err
	}
	r := CheckinResult{Status: status, Version: body.DirectorVersion,
		Poll:   hintSeconds(status, resp.PollSeconds, hdr, wire.HeaderPollInterval),
		Jitter: hintSeconds(status, resp.PollJitterSeconds, hdr, wire.HeaderPollJitter)}
	if status == http.StatusOK {
		r.Changed, r.Version = resp.Changed, resp.DirectorVersion
	}
	return r, nil
}

// Report sends events and the installed image. Errors as Checkin.
func (c *Client) Report(ctx context.Context, token string, rep wire.Report) error {
	_, _, err := c.call(ctx, http.MethodPost, pathReport, token, rep, nil, nil)
	return err
}

// Inventory sends the device's whole attribute set (POST /device/v1/inventory), which replaces
// the one the server holds, and returns the server's digest of what it stored.
func (c *Client) Inventory(ctx context.Context, token string, inv wire.Inventory) (wire.InventoryResponse, error) {
	var out wire.InventoryResponse
	_, _, err := c.call(ctx, http.MethodPost, wire.PathInventory, token, inv, &out, nil)
	return out, err
}

// call sends in (JSON, if not nil) to Base+path and decodes a 200 answer into out (if not nil).
// It returns the status and the answer's headers (nil if no answer came).
func (c *Client) call(ctx context.Context, method, path, token string, in, out any, hdr http.Header) (int, http.Header, error) {
	resp, err := c.do(ctx, method, c.Base+path, token, in, hdr)
	if err != nil {
		return 0, nil, err
	}
	status, err := decode(resp, path, out)
	return status, resp.Header, err
}

// do sends a request to an absolute URL with the protocol header, the JSON of body (if not
// nil) and the device token (if not empty). Network failures are *TransientError.
func (c *Client) do(ctx context.Context, method, url, token string, body any, hdr http.Header) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", url, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, fmt.Errorf("request %s: %w", url, err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set(wire.HeaderProtocol, strconv.Itoa(wire.ProtocolVersion))
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, &TransientError{Err: err}
	}
	return resp, nil
}

// check turns a non-2xx/304 answer into an error and closes its body.
func check(resp *http.Response) error {
	if resp.StatusCode < 300 || resp.StatusCode == http.StatusNotModified {
		return nil
	}
	defer resp.Body.Close()
	var we wire.Error
	json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&we) //nolint:errcheck // the status says enough
	se := &ServerError{Status: resp.StatusCode, Code: we.Code, Message: we.Message}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		return &TransientError{Err: se, RetryAfter: retryAfter(resp.Header.Get("Retry-After"))}
	}
	return se
}

func decode(resp *http.Response, path string, out any) (int, error) {
	if err := check(resp); err != nil {
		return resp.StatusCode, err
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotModified {
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out); err != nil {
			return resp.StatusCode, &TransientError{Err: fmt.Errorf("decode %s: %w", path, err)}
		}
	}
	return resp.StatusCode, nil
}
