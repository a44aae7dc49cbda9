package client

import (
	"context"
	"net/http"
	"net/url"

	"upkeep.dev/upkeep/wire"
)

// CreateRollout creates a campaign (and starts it if spec.Start).
func (c *Client) CreateRollout(ctx context.Context, spec wire.CampaignSpec) (*wire.Campaign, error) {
	var out wire.Campaign
	return &out, c.Do(ctx, http.MethodPost, "/api/v1/rollouts", spec, &out)
}

// Rollouts lists campaigns, newest first; state filters if not empty.
func (c *Client) Rollouts(ctx context.Context, state string) ([]wire.Campaign, error) {
	var out []wire.Campaign
	p := "/api/v1/rollouts"
	if state != "" {
		p += "?state=" + url.QueryEscape(state)
	}
	return out, c.Do(ctx, http.MethodGet, p, nil, &out)
}

// RolloutStatus reports a campaign with per-wave counts and its timeline.
func (c *Client) RolloutStatus(ctx context.Context, id string) (*wire.CampaignStatus, error) {
	var out wire.CampaignStatus
	return &out, c.Do(ctx, http.MethodGet, "/api/v1/rollouts/"+url.PathEscape(id), nil, &out)
}

// RolloutAction starts, pauses, resumes or cancels a campaign.
func (c *Client) RolloutAction(ctx context.Context, id, action string) (*wire.Campaign, error) {
	var out wire.Campaign
	return &out, c.Do(ctx, http.MethodPost, "/api/v1/rollouts/"+url.PathEscape(id)+"/"+url.PathEscape(action), nil, &out)
}

// Groups lists device groups with their member counts.
func (c *Client) Groups(ctx context.Context) ([]wire.Group, error) {
	var out []wire.Group
	return out, c.Do(ctx, http.MethodGet, "/api/v1/groups", nil, &out)
}

// Group shows a group with its members.
func (c *Client) Group(ctx context.Context, name string) (*wire.Group, error) {
	var out wire.Group
	return &out, c.Do(ctx, http.MethodGet, "/api/v1/groups/"+url.PathEscape(name), nil, &out)
}

// PutGroup creates or redefines a group.
func (c *Client) PutGroup(ctx context.Context, g wire.Group) (*wire.Group, error) {
	var out wire.Group
	return &out, c.Do(ctx, http.MethodPut, "/api/v1/groups/"+url.PathEscape(g.Name), wire.Group{Filter: g.Filter, Window: g.Window, Days: g.Days}, &out)
}

// DeleteGroup removes a group.
func (c *Client) DeleteGroup(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, "/api/v1/groups/"+url.PathEscape(name), nil, nil)
}

// GroupDevices adds or removes static members.
func (c *Client) GroupDevices(ctx context.Context, name string, change wire.GroupDevices) (*wire.Group, error) {
	var out wire.Group
	return &out, c.Do(ctx, http.MethodPost, "/api/v1/groups/"+url.PathEscape(name)+"/devices", change, &out)
}
