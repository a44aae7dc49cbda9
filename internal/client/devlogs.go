package client

import (
	"context"
	"net/http"
	"net/url"

	"upkeep.dev/upkeep/wire"
)

// DeviceLogs returns a device's failure log bundles, newest first: the latest only unless all.
func (c *Client) DeviceLogs(ctx context.Context, id string, all bool) ([]wire.DeviceLog, error) {
	path := "/api/v1/devices/" + url.PathEscape(id) + "/logs"
	if all {
		path += "?all=true"
	}
	var out []wire.DeviceLog
	return out, c.Do(ctx, http.MethodGet, path, nil, &out)
}
