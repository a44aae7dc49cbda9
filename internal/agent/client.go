package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/wire"
)

// TransientError is a failure worth retrying later: network trouble, overload, a server error.
type TransientError struct {
	Err        error
	RetryAfter time.Duration // from a Retry-After header, if any
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

// client talks to the device API. It never mutates http.DefaultClient.
type client struct {
	base  string
	http  *http.Client
	token func(ctx context.Context) (string, error) // nil for unauthenticated calls
}

func (c *client) do(ctx context.Context, method, path string, body any, hdr http.Header) (*http.Response, error) {
	return c.doURL(ctx, method, c.base+path, body, hdr)
}

// doURL sends a request to an absolute URL.
func (c *client) doURL(ctx context.Context, method, url string, body any, hdr http.Header) (*http.Response, error) {
	path := url
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, fmt.Errorf("request %s: %w", path, err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set(wire.HeaderProtocol, strconv.Itoa(wire.ProtocolVersion))
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != nil {
		tok, err := c.token(ctx)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.http.Do(req)
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
	json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&we)
	se := &ServerError{Status: resp.StatusCode, Code: we.Code, Message: we.Message}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		return &TransientError{Err: se, RetryAfter: retryAfter(resp.Header.Get("Retry-After"))}
	}
	return se
}

// MaxRetryAfter caps the wait a server's Retry-After can impose on the agent. A longer value,
// from a misconfigured or hostile server, would silence the device for days; past the cap the
// agent asks again and gets a fresh answer.
const MaxRetryAfter = 6 * time.Hour

// retryAfter parses a Retry-After header (RFC 9110 10.2.3: delay-seconds or an HTTP-date). It
// returns 0 for an absent, malformed, negative or past value, and at most MaxRetryAfter; a huge
// number of seconds does not overflow.
func retryAfter(v string) time.Duration {
	return retryAfterAt(v, time.Now())
}

func retryAfterAt(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if s, err := strconv.ParseInt(v, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		switch {
		case s <= 0: // negative (or a negative overflow): ignore
			return 0
		case s >= int64(MaxRetryAfter/time.Second):
			return MaxRetryAfter
		}
		d = time.Duration(s) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return max(0, min(d, MaxRetryAfter))
}

func (c *client) call(ctx context.Context, method, path string, in, out any, hdr http.Header) (int, error) {
	status, _, err := c.callHeader(ctx, method, path, in, out, hdr)
	return status, err
}

// callHeader is call that also returns the answer's headers (nil if none came).
func (c *client) callHeader(ctx context.Context, method, path string, in, out any, hdr http.Header) (int, http.Header, error) {
	resp, err := c.do(ctx, method, path, in, hdr)
	if err != nil {
		return 0, nil, err
	}
	status, err := decode(resp, path, out)
	return status, resp.Header, err
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

func signRequest(key ed25519.PrivateKey, payload any) (wire.SignedRequest, error) {
	b, err := json.Marshal(payload)
	if err != nil {
		return wire.SignedRequest{}, err
	}
	return wire.SignedRequest{Payload: b, Signature: hex.EncodeToString(ed25519.Sign(key, b))}, nil
}

// fetcher is go-tuf's metadata fetcher, bound to one context and one client.
type fetcher struct {
	ctx context.Context
	c   *client
}

// DownloadFile implements go-tuf's fetcher.Fetcher. It reads at most maxLength bytes (TUF
// "endless data" defence for metadata) and maps 404 to metadata.ErrDownloadHTTP, which go-tuf
// needs to find the newest root.
func (f fetcher) DownloadFile(url string, maxLength int64, _ time.Duration) ([]byte, error) {
	path := url
	// Metadata is small: a file that takes longer than this is a slow-retrieval attempt.
	ctx, cancel := context.WithTimeout(f.ctx, metadataTimeout)
	defer cancel()
	resp, err := f.c.doURL(ctx, http.MethodGet, url, nil, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		if resp.StatusCode == http.StatusNotFound {
			return nil, &metadata.ErrDownloadHTTP{StatusCode: resp.StatusCode, URL: url}
		}
		return nil, check(resp)
	}
	if resp.ContentLength > maxLength {
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s is %d bytes, the limit is %d", path, resp.ContentLength, maxLength)}
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxLength+1))
	if err != nil {
		return nil, &TransientError{Err: fmt.Errorf("read %s: %w", path, err)}
	}
	if int64(len(data)) > maxLength {
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s is longer than the limit %d", path, maxLength)}
	}
	return data, nil
}

// metadataTimeout bounds the download of one metadata file.
const metadataTimeout = 2 * time.Minute

var errNotAccepted = errors.New("device is not accepted yet: an operator must accept it")
