package fleet

import (
	"context"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/wire"
)

// Register stores a device that has no Upkeep identity key: a hawkBit DDI client, created by an
// operator or registered with its tenant's gateway token (internal/ddi). The caller chose its
// status; identity fields follow the enrolment rules. Returns apperr.Conflict if the id exists.
func (s *Service) Register(ctx context.Context, d *Device) error {
	if d.Kind != KindDDI {
		return apperr.E(apperr.Invalid, "only DDI devices are registered without a key")
	}
	if err := validIdentity(wire.Identity{Product: d.Product, HardwareID: d.HardwareID, Serial: d.Serial, Attributes: d.Attributes}); err != nil {
		return err
	}
	if d.EnrolledAt.IsZero() {
		d.EnrolledAt = s.now()
	}
	if d.State == "" {
		d.State = "enrolled"
	}
	if err := s.Store.CreateDevice(ctx, d); err != nil {
		return err
	}
	if s.OnEnroll != nil {
		s.OnEnroll(ctx, d)
	}
	s.logger().Info("DDI device registered", "device", d.ID, "status", d.Status, "product", d.Product)
	return nil
}

// ValidAttributes checks device attributes as enrolment does: at most 32, keys 1-64 and values
// up to 256 bytes of UTF-8 without NUL.
func ValidAttributes(attrs map[string]string) error {
	return validIdentity(wire.Identity{Product: "p", HardwareID: "h", Serial: "s", Attributes: attrs})
}
