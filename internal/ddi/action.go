package ddi

import (
	"context"
	"time"
)

// Action statuses.
const (
	ActionOpen      = "open"      // offered as deploymentBase (or confirmationBase first)
	ActionCanceling = "canceling" // withdrawn: offered as cancelAction until the device answers
	ActionClosed    = "closed"    // finished; Result says how
)

// Action results.
const (
	ResultSuccess  = "success"
	ResultFailure  = "failure"
	ResultCanceled = "canceled"
	ResultRejected = "rejected" // the device declined (a denied confirmation, a rejected cancel)
)

// Action is one assignment as a DDI device sees it: an integer id (DDI clients parse it as a
// number) for one target the director names for the device.
type Action struct {
	ID        int64
	DeviceID  string
	Target    string
	Status    string
	Result    string
	Confirmed bool // the owner confirmed it (consent)
	CreatedAt time.Time
	UpdatedAt time.Time
}

// ActionUpdate changes the non-nil fields of an action.
type ActionUpdate struct {
	Status    *string
	Result    *string
	Confirmed *bool
	At        time.Time
}

// Store persists DDI actions. Implementations are safe for concurrent use.
type Store interface {
	// CreateAction stores a new action and sets its ID.
	CreateAction(ctx context.Context, a *Action) error
	// FindAction returns the device's action with that id, or apperr.NotFound (also when the
	// action is another device's).
	FindAction(ctx context.Context, deviceID string, id int64) (*Action, error)
	// FindActions returns the device's newest actions first, at most limit.
	FindActions(ctx context.Context, deviceID string, limit int) ([]*Action, error)
	// UpdateAction changes the device's action if its status is one of from (any status if from
	// is empty) and reports whether it did. apperr.NotFound if there is no such action.
	UpdateAction(ctx context.Context, deviceID string, id int64, from []string, u ActionUpdate) (bool, error)
}
