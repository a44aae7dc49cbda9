package cli

import (
	"context"
	"testing"

	"upkeep.dev/upkeep/internal/rollout"
	"upkeep.dev/upkeep/wire"
)

// TestRolloutCancelUnpublishedFactory: a device that enrolled running a factory image that was
// never published is assigned by a running campaign. Cancelling must land whole: the campaign
// and the member cancelled, the director naming no image for the device (there is nothing
// published to point it back at), and the device, checking in, installing nothing. Before, the
// cancel marked the campaign cancelled, then failed to point the director back at the unknown
// image: the device kept the assignment and a retry was refused.
func TestRolloutCancelUnpublishedFactory(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	factory := image("0.9.0", 4<<10)
	d := e.device("SN-FACTORY", factory, &wire.Release{Target: "thermostat-0.9.0-factory.img", Version: "0.9.0", SecurityVersion: 1})
	id := d.Agent.State().DeviceID
	r110 := e.publish("1.1.0", 2, image("1.1.0", 8<<10))

	camp, err := e.cli.CreateRollout(ctx, wire.CampaignSpec{Release: "thermostat@1.1.0", Target: "product=thermostat", Start: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := e.assignedTo(id); got != r110.Target {
		t.Fatalf("after start the director names %q, want %s", got, r110.Target)
	}
	c, err := e.cli.RolloutAction(ctx, camp.ID, "cancel")
	if err != nil {
		t.Fatalf("cancel: %v", err)
	}
	if c.State != rollout.StateCancelled {
		t.Fatalf("campaign %s after cancel, want cancelled", c.State)
	}
	st, err := e.cli.RolloutStatus(ctx, camp.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.Waves[0][rollout.MemberCancelled] != 1 {
		t.Fatalf("members %v, want the one cancelled", st.Waves)
	}
	if got := e.assignedTo(id); got != "" {
		t.Fatalf("after cancel the director names %q, want nothing", got)
	}
	if err := d.Agent.Cycle(ctx); err != nil {
		t.Fatalf("check-in after the cancel: %v", err)
	}
	if got := d.Agent.State().Installed.Target; got != "thermostat-0.9.0-factory.img" {
		t.Fatalf("device runs %s after the cancel, want its factory image", got)
	}
}

// assignedTo is the target the director names for a device, as the server reports it.
func (e *env) assignedTo(id string) string {
	e.t.Helper()
	devs, err := e.cli.Devices(context.Background(), "")
	if err != nil {
		e.t.Fatal(err)
	}
	for _, d := range devs {
		if d.ID == id {
			return d.Assigned
		}
	}
	e.t.Fatalf("no device %s", id)
	return ""
}
