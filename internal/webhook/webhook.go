// Package webhook delivers the server's events (internal/event) to operators' HTTP endpoints:
// CloudEvents 1.0 in structured JSON mode, signed as Standard Webhooks sign (webhook-id,
// webhook-timestamp, webhook-signature "v1,<base64 HMAC-SHA256 of id.timestamp.body>").
//
// Events go through an outbox: Emit writes one pending delivery per subscribed webhook, and
// Deliver, run by the one replica holding the server's "webhooks" lease, claims due deliveries
// for a while (a claim that is not finished, because the process died, lapses and the delivery
// is claimed again), sends them and records the answer; failures are retried with exponential
// backoff and jitter up to MaxAttempts. Delivery is at least once: receivers dedupe by
// webhook-id. Addresses a webhook must not reach (loopback, private, link-local, ...) are refused
// when it is created and again, on the address actually dialled, at every connection.
package webhook

import (
	"context"
	"time"
)

// Webhook is an operator's endpoint.
type Webhook struct {
	ID          string
	URL         string
	Events      []string // event types it receives; empty: all
	Description string
	// AllowPrivate lets it reach loopback, private and other special addresses; AllowHTTP lets
	// it use plain http://. Only an admin sets either (the webhooks:write permission).
	AllowPrivate, AllowHTTP bool
	Secret                  []byte // the HMAC-SHA256 key; shown once, as whsec_<base64>
	CreatedAt               time.Time
	CreatedBy               string
}

// Wants reports whether w receives events of type typ.
func (w *Webhook) Wants(typ string) bool {
	if len(w.Events) == 0 {
		return true
	}
	for _, e := range w.Events {
		if e == typ {
			return true
		}
	}
	return false
}

// Delivery states, stored as strings.
const (
	StatePending   = "pending"   // due at NextAt, or claimed until ClaimedUntil
	StateDelivered = "delivered" // the receiver answered 2xx
	StateFailed    = "failed"    // MaxAttempts failed attempts, or an answer that will not change (410 Gone)
	StateDropped   = "dropped"   // left out: the webhook's queue was past MaxQueue
)

// Delivery is one event for one webhook.
type Delivery struct {
	ID           int64
	WebhookID    string
	EventID      string // the CloudEvent id and the webhook-id header: the same on every retry
	Type         string
	Body         []byte // the CloudEvent, exactly as signed and sent
	State        string
	Attempts     int
	NextAt       time.Time
	ClaimedUntil time.Time // zero: not claimed
	LastStatus   int       // HTTP status of the last answer, 0 if none
	LastError    string
	CreatedAt    time.Time
	DoneAt       time.Time // delivered, failed or dropped
}

// Outcome is what one attempt leaves: the delivery's new state and when to try again.
type Outcome struct {
	State  string
	Status int
	Error  string
	NextAt time.Time // for StatePending
	At     time.Time
}

// DeliveryFilter selects deliveries to list, newest first.
type DeliveryFilter struct {
	Webhook string // "" for all
	State   string // "" for all
	Limit   int
}

// Store persists webhooks and their deliveries. Implementations are safe for concurrent use.
type Store interface {
	// CreateWebhook returns apperr.Conflict if the id exists.
	CreateWebhook(ctx context.Context, w *Webhook) error
	// FindWebhooks lists every webhook, oldest first, with its secret.
	FindWebhooks(ctx context.Context) ([]*Webhook, error)
	// DeleteWebhook removes a webhook and its deliveries; apperr.NotFound if there is none.
	DeleteWebhook(ctx context.Context, id string) error
	// Enqueue adds a pending delivery of the event (id, type, body) for each of webhooks, due at
	// now, except for a webhook that already has a delivery of that event id; it returns how
	// many it added.
	Enqueue(ctx context.Context, webhooks []string, eventID, typ string, body []byte, now time.Time) (int, error)
	// ClaimDeliveries claims up to limit pending deliveries that are due at now and not claimed
	// (or whose claim lapsed), until now+claim, adding one to their attempts; oldest due first.
	// A delivery is claimed by one caller at a time.
	ClaimDeliveries(ctx context.Context, now time.Time, claim time.Duration, limit int) ([]*Delivery, error)
	// FinishAttempt records the outcome of the claimed attempt of delivery id and ends its claim.
	FinishAttempt(ctx context.Context, id int64, o Outcome) error
	// FindDeliveries lists deliveries, newest first, without their bodies.
	FindDeliveries(ctx context.Context, f DeliveryFilter) ([]*Delivery, error)
	// PruneDeliveries removes delivered, failed and dropped deliveries done before before, and
	// marks dropped, oldest first, the pending deliveries of each webhook beyond its newest
	// maxPending; it returns how many it removed and how many it dropped.
	PruneDeliveries(ctx context.Context, before time.Time, maxPending int, now time.Time) (removed, dropped int64, err error)
}
