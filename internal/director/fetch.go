package director

import (
	"context"
	"encoding/json"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/delta"
	"upkeep.dev/upkeep/internal/uptane"
)

// keptViews is how many versions of a device's view the store keeps (the latest and the two
// before it); MayFetch looks no further back.
const keptViews = 3

// MayFetch tells whether a device may download target: its latest director view names it (or
// its chunk index, or the delta the view hints at), or one of the two views before it does and
// has not expired yet. The second case covers a download that was under way when a new view
// (another assignment, or none) was signed: the agent finishes the range requests of the image
// it verified, and its next cycle verifies the new view before it fetches anything else (Uptane 5.4.4.2: the director names the images a
// device installs; an image named for another device is not this one's to fetch).
//
// Returns nil if allowed, apperr.Forbidden (HTTP 403) if not: the image repository's targets
// metadata is public, so refusing with 404 would hide nothing.
func (s *Service) MayFetch(ctx context.Context, deviceID, target string) error {
	latest, err := s.Store.FindDirectorView(ctx, deviceID, 0)
	if err != nil && !apperr.Is(err, apperr.NotFound) {
		return err
	}
	if latest != nil {
		if viewNames(latest, target) {
			return nil
		}
		now := s.now()
		for n := latest.Version - 1; n >= 1 && n > latest.Version-keptViews; n-- {
			v := s.views.get(deviceID, n)
			if v == nil {
				if v, err = s.Store.FindDirectorView(ctx, deviceID, n); apperr.Is(err, apperr.NotFound) {
					break
				} else if err != nil {
					return err
				}
				s.views.put(deviceID, v)
			}
			if now.Before(v.Expires) && viewNames(v, target) {
				return nil
			}
		}
	}
	return apperr.E(apperr.Forbidden, "target %s is not assigned to this device", target)
}

// viewNames reports whether a director view's signed targets name target.
func viewNames(v *uptane.DirectorView, target string) bool {
	md, err := metadata.Targets().FromBytes(v.Targets)
	if err != nil {
		return false
	}
	for name := range md.Signed.Targets {
		// The chunk index of an image the device may fetch tells nothing the image does not;
		// an agent whose hint starts from another image than the one it runs falls back on
		// the index of the image an earlier view named.
		if name == target || delta.IndexName(name) == target {
			return true
		}
	}
	// The delta the view hints at (and the installed image's chunk index) may be fetched too.
	h := hintOf(md)
	return h != nil && (h.Target == target || h.SourceIndex == target)
}

// hintOf returns the delta hint of a director view's signed targets, or nil.
func hintOf(md *metadata.Metadata[metadata.TargetsType]) *delta.Hint {
	for _, tf := range md.Signed.Targets {
		var c uptane.DirectorCustom
		if tf == nil || tf.Custom == nil || json.Unmarshal(*tf.Custom, &c) != nil || c.Delta == nil {
			continue
		}
		var h delta.Hint
		if json.Unmarshal(c.Delta, &h) == nil {
			return &h
		}
	}
	return nil
}
