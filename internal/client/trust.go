package client

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/wire"
)

// ResignOptions renew the image targets metadata without a new release.
type ResignOptions struct {
	TargetsKey  *tuf.Key
	TrustedRoot []byte        // the release engineer's image root.json
	Expires     time.Duration // lifetime of the re-signed targets
}

// ResignTargets re-signs the server's current image targets, unchanged, as the next version with
// a new expiry, and uploads them. The current targets may have expired; their signatures must
// verify against the trusted root (followed along its rotation chain). It returns the new
// version.
func (c *Client) ResignTargets(ctx context.Context, o ResignOptions) (int64, time.Time, error) {
	for attempt := 0; ; attempt++ {
		root, err := c.LatestRoot(ctx, o.TrustedRoot)
		if err != nil {
			return 0, time.Time{}, err
		}
		var cur []byte
		if err := c.Do(ctx, http.MethodGet, "/api/v1/image/targets", nil, &cur); err != nil {
			return 0, time.Time{}, err
		}
		t, err := uptane.VerifyImageTargetsSigned(root, cur)
		if err != nil {
			return 0, time.Time{}, fmt.Errorf("the server's current targets do not verify against the trusted root; refusing to sign them: %w", err)
		}
		t.Signed.Version++
		t.Signed.Expires = time.Now().Add(o.Expires).UTC().Truncate(time.Second)
		signed, err := tuf.SignTargets(t, o.TargetsKey)
		if err != nil {
			return 0, time.Time{}, err
		}
		err = c.Do(ctx, http.MethodPut, "/api/v1/image/targets", signed, nil)
		if apperr.Is(err, apperr.Conflict) && attempt < 3 {
			continue // a release was published meanwhile: re-sign the newer targets
		}
		if err != nil {
			return 0, time.Time{}, err
		}
		return t.Signed.Version, t.Signed.Expires, nil
	}
}

// RotateDirectorRoot uploads a new director root.
func (c *Client) RotateDirectorRoot(ctx context.Context, root []byte) error {
	return c.Do(ctx, http.MethodPut, "/api/v1/director/root", root, nil)
}

// TrustExpiry lists when the offline-signed metadata expires.
func (c *Client) TrustExpiry(ctx context.Context) ([]wire.MetadataExpiry, error) {
	var out []wire.MetadataExpiry
	return out, c.Do(ctx, http.MethodGet, "/api/v1/trust/expiry", nil, &out)
}
