// Package event is the port through which the domain services announce what happened (a
// campaign paused, a device rolled back, a new exposure): each service holds an Emitter that the
// server wires to the webhook outbox (internal/webhook). Standard library only, so that every
// domain package may import it.
package event

import (
	"context"
	"time"
)

// Event types, CloudEvents "type" attributes (reverse-DNS, docs/OPERATORS.md lists them).
const (
	CampaignStarted   = "dev.upkeep.campaign.started"
	CampaignPaused    = "dev.upkeep.campaign.paused"
	CampaignResumed   = "dev.upkeep.campaign.resumed"
	CampaignCompleted = "dev.upkeep.campaign.completed"
	CampaignCancelled = "dev.upkeep.campaign.cancelled"
	// DeviceFailed: a device reported a fatal failure of an update step (verify, download,
	// install, health); DeviceRolledBack: a device went back to its previous image.
	DeviceFailed     = "dev.upkeep.device.failed"
	DeviceRolledBack = "dev.upkeep.device.rolled_back"
	// ExposureNew: an imported advisory now affects a release that devices run.
	ExposureNew = "dev.upkeep.exposure.new"
	// SupportEnding: a product's security-update support ends within its warning period.
	SupportEnding = "dev.upkeep.product.support_ending"
	// MetadataExpiring: offline-signed metadata (image root or targets, director root)
	// expires within imagerepo.ExpiryWarning.
	MetadataExpiring = "dev.upkeep.metadata.expiring"
	// Ping is what `upkeep webhooks test` sends.
	Ping = "dev.upkeep.webhook.ping"
)

// Types lists every event type a webhook may subscribe to.
var Types = []string{
	CampaignStarted, CampaignPaused, CampaignResumed, CampaignCompleted, CampaignCancelled,
	DeviceFailed, DeviceRolledBack, ExposureNew, SupportEnding, MetadataExpiring, Ping,
}

// Event is one thing that happened.
type Event struct {
	// Key, if set, names the occurrence: an event emitted again with the same Type and Key
	// (by another replica, or after a restart) is queued once per webhook. Warnings that every
	// replica gives once a day set it; "" makes each Emit a new event.
	Key     string
	Type    string // one of Types
	Subject string // what it is about: "campaign/ID", "device/ID", "product/NAME", ...
	Time    time.Time
	Data    any // marshalled as JSON into the CloudEvent's data
}

// Emitter queues events for delivery. Emit never fails its caller: what happened has happened,
// and a failure to queue it is logged by the emitter. Implementations are safe for concurrent
// use.
type Emitter interface {
	Emit(ctx context.Context, e Event)
}

// Listener is what an Emitter may also implement: whether anyone receives events of a type, so
// that a caller can skip work done only to emit them.
type Listener interface {
	Listening(ctx context.Context, typ string) bool
}

// Listening reports whether events of typ emitted through em reach anyone: false for a nil
// em, true for an emitter that cannot tell.
func Listening(ctx context.Context, em Emitter, typ string) bool {
	if em == nil {
		return false
	}
	if l, ok := em.(Listener); ok {
		return l.Listening(ctx, typ)
	}
	return true
}

// Emit sends e through em; a nil em drops it (a service built without webhooks).
func Emit(ctx context.Context, em Emitter, e Event) {
	if em != nil {
		em.Emit(ctx, e)
	}
}
