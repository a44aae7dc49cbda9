package director

import (
	"context"
	"slices"
	"strings"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/release"
)

// Deployment names a release ("product@version") and the devices to assign it to: the listed
// ones, or with All every accepted device of the release's product (of one hardware id, if
// HardwareID is set).
type Deployment struct {
	Release    string
	DeviceIDs  []string
	All        bool
	HardwareID string
}

// DeployResult is what a deployment did: the release, how many devices were assigned, and the
// reason, safe to show, each other device was skipped for.
type DeployResult struct {
	Release  *release.Release
	Assigned int
	Skipped  map[string]string
}

// deployBatch is how many devices Deploy assigns per AssignMany call.
const deployBatch = 200

// Deploy assigns a release to devices at once, in batches as campaigns do: each batch's views
// are signed a few at a time and stored in one transaction. A device that cannot take the
// release (not accepted, other hardware) is skipped; a listed device of another product fails
// the whole deployment before anything is assigned. Returns apperr.Invalid for a malformed
// deployment, apperr.NotFound for an unknown release or device, and the first internal error a
// batch met (earlier batches stay assigned).
func (s *Service) Deploy(ctx context.Context, dep Deployment) (*DeployResult, error) {
	product, version, ok := strings.Cut(dep.Release, "@")
	if !ok || product == "" || version == "" {
		return nil, apperr.E(apperr.Invalid, "release must be product@version")
	}
	rel, err := s.Releases.FindRelease(ctx, product, version)
	if err != nil {
		return nil, err
	}
	devs, err := s.deployDevices(ctx, rel, dep)
	if err != nil {
		return nil, err
	}
	res := &DeployResult{Release: rel, Skipped: map[string]string{}}
	for batch := range slices.Chunk(devs, deployBatch) {
		failed := s.AssignMany(ctx, batch, rel, nil)
		for _, d := range batch {
			err, ok := failed[d.ID]
			if !ok {
				res.Assigned++
				continue
			}
			if apperr.CodeOf(err) == apperr.Internal {
				return nil, err
			}
			res.Skipped[d.ID] = apperr.Message(err)
		}
	}
	return res, nil
}

// deployDevices finds the devices a deployment names.
func (s *Service) deployDevices(ctx context.Context, rel *release.Release, dep Deployment) ([]*fleet.Device, error) {
	switch {
	case dep.All && len(dep.DeviceIDs) > 0:
		return nil, apperr.E(apperr.Invalid, "give device ids or all, not both")
	case dep.All:
		return s.Devices.FindDevices(ctx, fleet.DeviceFilter{Product: rel.Product, HardwareID: dep.HardwareID, Status: fleet.StatusAccepted})
	case len(dep.DeviceIDs) > 0:
		devs := make([]*fleet.Device, 0, len(dep.DeviceIDs))
		for _, id := range dep.DeviceIDs {
			d, err := s.Devices.FindDevice(ctx, id)
			if err != nil {
				return nil, err
			}
			if d.Product != rel.Product {
				return nil, apperr.E(apperr.Invalid, "release %s is for product %s, device %s is a %s: nothing was deployed", rel.Ref(), rel.Product, d.ID, d.Product)
			}
			devs = append(devs, d)
		}
		return devs, nil
	default:
		return nil, apperr.E(apperr.Invalid, "name devices or set all")
	}
}
