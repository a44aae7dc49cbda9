package devclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Fetcher is go-tuf's metadata fetcher (fetcher.Fetcher) over the device client, bound to one
// context: the go-tuf Updater of each repository the agent refreshes uses one.
type Fetcher struct {
	ctx   context.Context
	c     *Client
	token TokenFunc
}

// Fetcher returns a metadata fetcher bound to ctx that sends the device token token returns
// with each request (nil: none, for a public repository).
func (c *Client) Fetcher(ctx context.Context, token TokenFunc) *Fetcher {
	return &Fetcher{ctx: ctx, c: c, token: token}
}

// metadataTimeout bounds the download of one metadata file: metadata is small, and a file that
// takes longer is a slow-retrieval attempt.
const metadataTimeout = 2 * time.Minute

// DownloadFile implements go-tuf's fetcher.Fetcher. It reads at most maxLength bytes (TUF
// "endless data" defence for metadata) and maps 404 to metadata.ErrDownloadHTTP, which go-tuf
// needs to find the newest root. Other failures are *TransientError or *ServerError.
func (f *Fetcher) DownloadFile(url string, maxLength int64, _ time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(f.ctx, metadataTimeout)
	defer cancel()
	resp, err := f.c.get(ctx, url, f.token, nil)
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
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s is %d bytes, the limit is %d", url, resp.ContentLength, maxLength)}
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxLength+1))
	if err != nil {
		return nil, &TransientError{Err: fmt.Errorf("read %s: %w", url, err)}
	}
	if int64(len(data)) > maxLength {
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s is longer than the limit %d", url, maxLength)}
	}
	return data, nil
}

// get sends a GET to url with the token from token, if any.
func (c *Client) get(ctx context.Context, url string, token TokenFunc, hdr http.Header) (*http.Response, error) {
	tok := ""
	if token != nil {
		var err error
		if tok, err = token(ctx); err != nil {
			return nil, err
		}
	}
	return c.do(ctx, http.MethodGet, url, tok, nil, hdr)
}

// ErrRangeIgnored is the cause of the *TransientError FetchArtifact returns when the server
// answered a resume with the whole artifact: the download must start over from byte 0.
var ErrRangeIgnored = errors.New("server ignored the range request; starting over")

// FetchArtifact GETs the artifact at url (TargetURL, or a URL of another repository), with the
// device token if token is not empty. From a byte off > 0 it asks for the rest with Range,
// guarded by If-Range ifRange (the artifact's ETag, if not empty): an artifact that changed
// comes whole, and FetchArtifact then returns a *TransientError wrapping ErrRangeIgnored. The
// answer is 200 (off 0) or 206 starting at off; its body is the caller's to read, bound by the
// signed length, and close. Failures are *TransientError or *ServerError.
func (c *Client) FetchArtifact(ctx context.Context, token, url string, off int64, ifRange string) (*http.Response, error) {
	return c.FetchArtifactRange(ctx, token, url, off, -1, ifRange)
}

// FetchArtifactRange is FetchArtifact for the n bytes from off (n < 0: to the end), as the
// chunked form of delta updates fetches the chunks it lacks. The body may be longer than n if
// the server ignores the end of the range; the caller reads n bytes.
func (c *Client) FetchArtifactRange(ctx context.Context, token, url string, off, n int64, ifRange string) (*http.Response, error) {
	hdr := http.Header{}
	if n >= 0 {
		hdr.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
		if ifRange != "" {
			hdr.Set("If-Range", ifRange)
		}
	} else if off > 0 {
		hdr.Set("Range", fmt.Sprintf("bytes=%d-", off))
		if ifRange != "" {
			hdr.Set("If-Range", ifRange)
		}
	}
	resp, err := c.do(ctx, http.MethodGet, url, token, nil, hdr)
	if err != nil {
		return nil, err
	}
	if err := check(resp); err != nil {
		return nil, err
	}
	var ferr error
	switch resp.StatusCode {
	case http.StatusPartialContent:
		var start int64
		if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-", &start); err != nil || start != off {
			ferr = &TransientError{Err: fmt.Errorf("server resumed at %q, asked for byte %d", resp.Header.Get("Content-Range"), off)}
		}
	case http.StatusOK:
		if off > 0 {
			ferr = &TransientError{Err: ErrRangeIgnored}
		}
	default:
		ferr = &TransientError{Err: fmt.Errorf("unexpected answer %s", resp.Status)}
	}
	if ferr != nil {
		resp.Body.Close()
		return nil, ferr
	}
	return resp, nil
}
