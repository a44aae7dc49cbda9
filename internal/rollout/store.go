package rollout

import (
	"context"
	"time"
)

// Group is a static set of devices, or a dynamic filter over inventory.
type Group struct {
	Name      string
	Filter    string // empty for a static group
	Window    string // maintenance window for its devices, HH:MM-HH:MM UTC; empty: none
	Days      string // weekdays (UTC) the window opens on, "mon,wed,sat"; empty: every day
	CreatedAt time.Time
}

// AuditEntry is one recorded operator action or campaign transition.
type AuditEntry struct {
	Time    time.Time
	Actor   string // operator token name, "engine" for automatic transitions
	Action  string
	Subject string // "campaign:ID", "group:NAME"
	Detail  string
}

// Membership is one campaign a device belongs to.
type Membership struct {
	CampaignID string
	Target     string
	State      string // the campaign's state
	Status     string // the member's status
}

// MemberSet sets the status of a campaign's members whose status is one of From (any if empty),
// as Store.SetMembers does.
type MemberSet struct {
	IDs    []string
	From   []string
	Status string
	Detail string
}

// Change is one step of a campaign that lands whole or not at all: its new state (start, pause,
// resume, cancel, an advance, an automatic pause, completion), the member statuses that go with
// it, and the audit entries that record it.
type Change struct {
	Campaign *Campaign // written as UpdateCampaign writes it, if the campaign is still in state From
	From     string
	Members  []MemberSet // stamped Campaign.UpdatedAt
	Audit    []AuditEntry
}

// CampaignPage selects one page of campaigns, newest first (ties: the greater id first), after a
// cursor: keyset pagination, whose cost does not grow with the page's position.
type CampaignPage struct {
	States []string        // any of them; every state if empty
	After  *CampaignCursor // where the previous page ended; nil: the first page
	Limit  int             // 1 to MaxCampaignPage
}

// CampaignCursor is a position in a CampaignPage's order: a campaign's creation time and id.
type CampaignCursor struct {
	CreatedAt time.Time
	ID        string
}

// MaxCampaignPage bounds CampaignPage.Limit; MaxCountMembers the campaigns CountMembers takes.
const (
	MaxCampaignPage = 500
	MaxCountMembers = 500
)

// MemberCount counts a campaign's members of one wave in one status.
type MemberCount struct {
	Campaign string
	Wave     int
	Status   string
	N        int
}

// Store persists campaigns, members, groups and the audit trail.
type Store interface {
	// CreateCampaign stores a campaign and its members in one transaction.
	CreateCampaign(ctx context.Context, c *Campaign, members []Member) error
	// FindCampaign returns apperr.NotFound if it does not exist.
	FindCampaign(ctx context.Context, id string) (*Campaign, error)
	// FindCampaigns lists campaigns in the given states (all if none), newest first.
	FindCampaigns(ctx context.Context, states ...string) ([]*Campaign, error)
	// PageCampaigns returns the page p selects. Returns apperr.Invalid for a limit out of
	// bounds.
	PageCampaigns(ctx context.Context, p CampaignPage) ([]*Campaign, error)
	// CountCampaigns counts the campaigns in the given states (all if none).
	CountCampaigns(ctx context.Context, states ...string) (int, error)
	// CountMembers counts the members of the given campaigns (at most MaxCountMembers, else
	// apperr.Invalid) by wave and status, in one query.
	CountMembers(ctx context.Context, ids []string) ([]MemberCount, error)
	// UpdateCampaign writes state, wave, pause reason, failure baseline and update time if the
	// campaign is still in state from; apperr.Conflict otherwise.
	UpdateCampaign(ctx context.Context, c *Campaign, from string) error
	// ApplyChange writes a change in one transaction: all of it, or on any error nothing.
	// apperr.Conflict, and nothing written, if the campaign is no longer in state From.
	ApplyChange(ctx context.Context, ch Change) error
	// AddMembers adds members to a campaign; devices already members are left as they are.
	// It returns the ids it added.
	AddMembers(ctx context.Context, campaignID string, members []Member) ([]string, error)
	// FindMembers lists a campaign's members with their devices' last check-in.
	FindMembers(ctx context.Context, campaignID string) ([]Member, error)
	// SetMemberDownload records what a member's download of the campaign's image cost.
	SetMemberDownload(ctx context.Context, campaignID, deviceID string, downloaded, imageLength int64) error
	// SetMembers sets the status of members whose status is one of from (any if empty).
	SetMembers(ctx context.Context, campaignID string, ids []string, from []string, status, detail string, at time.Time) error
	// MoveMembers is SetMembers that returns the ids whose status it changed: those whose status
	// was one of from at the moment of the change.
	MoveMembers(ctx context.Context, campaignID string, ids []string, from []string, status, detail string, at time.Time) ([]string, error)
	// LockCampaign holds a lock on the campaign, across every process on the database, until
	// unlock is called; it waits while another holds it (or until ctx ends). The engine steps a
	// campaign only under it, so that two replicas never assign its members at once. Safe for
	// concurrent use; the lock is not reentrant.
	LockCampaign(ctx context.Context, id string) (unlock func(), err error)
	// FindMemberships lists the campaigns of a device, newest first.
	FindMemberships(ctx context.Context, deviceID string) ([]Membership, error)

	PutGroup(ctx context.Context, g *Group) error
	FindGroup(ctx context.Context, name string) (*Group, error)
	FindGroups(ctx context.Context) ([]*Group, error)
	DeleteGroup(ctx context.Context, name string) error
	AddGroupDevices(ctx context.Context, name string, ids []string) error
	RemoveGroupDevices(ctx context.Context, name string, ids []string) error
	GroupDevices(ctx context.Context, name string) ([]string, error)

	AddAudit(ctx context.Context, e AuditEntry) error
	// FindAudit lists entries about subject, oldest first, at most limit.
	FindAudit(ctx context.Context, subject string, limit int) ([]AuditEntry, error)
}
