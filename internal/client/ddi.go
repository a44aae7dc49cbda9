package client

import (
	"context"
	"net/http"
	"net/url"

	"upkeep.dev/upkeep/wire"
)

// CreateDDIDevice creates a hawkBit DDI device ahead of time and returns its target token.
func (c *Client) CreateDDIDevice(ctx context.Context, req wire.DDIDeviceRequest) (*wire.DDIDeviceResponse, error) {
	var out wire.DDIDeviceResponse
	return &out, c.Do(ctx, http.MethodPost, "/api/v1/ddi/devices", req, &out)
}

// DDIToken returns the target token of an existing DDI device.
func (c *Client) DDIToken(ctx context.Context, id string) (*wire.DDIDeviceResponse, error) {
	var out wire.DDIDeviceResponse
	return &out, c.Do(ctx, http.MethodGet, "/api/v1/ddi/devices/"+url.PathEscape(id)+"/token", nil, &out)
}

// Device returns one device.
func (c *Client) Device(ctx context.Context, id string) (*wire.Device, error) {
	var out wire.Device
	return &out, c.Do(ctx, http.MethodGet, "/api/v1/devices/"+url.PathEscape(id), nil, &out)
}
