package devclient

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"

	"upkeep.dev/upkeep/wire"
)

const (
	pathLogs = "/device/v1/logs"
	pathPush = "/device/v1/push"
)

// UploadLog sends a failure log bundle, already gzip-compressed JSON of a wire.LogBundle
// (POST /device/v1/logs). 429 is a *TransientError with the Retry-After.
func (c *Client) UploadLog(ctx context.Context, token string, gz []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Base+pathLogs, bytes.NewReader(gz))
	if err != nil {
		return fmt.Errorf("request %s: %w", pathLogs, err)
	}
	req.Header.Set(wire.HeaderProtocol, strconv.Itoa(wire.ProtocolVersion))
	req.Header.Set("Content-Type", "application/gzip")
	req.Header.Set("Authorization", "Bearer "+token)
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return &TransientError{Err: err}
	}
	_, err = decode(resp, pathLogs, nil)
	return err
}

// PushCredentials asks for the device's broker credentials (POST /device/v1/push). A server
// without a broker answers 404: a *ServerError with Status 404.
func (c *Client) PushCredentials(ctx context.Context, token string) (*wire.PushCredentials, error) {
	var out wire.PushCredentials
	if _, _, err := c.call(ctx, http.MethodPost, pathPush, token, nil, &out, nil); err != nil {
		return nil, err
	}
	return &out, nil
}
