package httpapi

import (
	"context"
	"io"

	"upkeep.dev/upkeep/internal/deltagen"
	"upkeep.dev/upkeep/internal/director"
	"upkeep.dev/upkeep/internal/exposure"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/imagerepo"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/rollout"
	"upkeep.dev/upkeep/wire"
)

// The services the handlers call, each as small as the handlers need. The server wires the
// domain packages' services to them; tests may wire their own.

// Tenants manages the tenants, organisations served under /t/{name}/ by server stacks of their
// own (internal/server). Only the default stack has it.
type Tenants interface {
	// AddTenant creates the tenant's stack and returns its first admin token. Returns
	// apperr.Invalid for a bad name or key set, apperr.Conflict if the name is taken.
	AddTenant(ctx context.Context, req wire.TenantRequest) (*wire.TenantCreated, error)
	// Tenants lists the tenants by name.
	Tenants(ctx context.Context) ([]wire.Tenant, error)
}

// DeviceService is the device side of the fleet; *fleet.Service implements it.
type DeviceService interface {
	Enroll(ctx context.Context, req wire.SignedRequest, enrollToken string) (*wire.EnrollResponse, error)
	Token(ctx context.Context, req wire.SignedRequest) (*wire.EnrollResponse, error)
	// Authenticate returns the device id a token was issued to, or an error if it is not valid
	// (fleet.ErrDecommissioned for a decommissioned device's token).
	Authenticate(token string) (string, error)
	Checkin(ctx context.Context, id string, c wire.Checkin) (wire.CheckinResponse, error)
	Report(ctx context.Context, id string, r wire.Report) error
	// SetInventory replaces a device's attributes (apperr.TooLarge or apperr.Invalid, and no
	// change, for an inventory that breaks a limit or a rule).
	SetInventory(ctx context.Context, id string, inv wire.Inventory) (wire.InventoryResponse, error)
	// Accept admits a pending or rejected device; a decommissioned one only with readmit.
	Accept(ctx context.Context, id string, readmit bool) error
	// Reject refuses a pending device.
	Reject(ctx context.Context, id string) error
	// Decommission takes an accepted device out of service.
	Decommission(ctx context.Context, id string) error
	// RequireAccepted returns apperr.Forbidden or apperr.NotFound unless the device is accepted.
	RequireAccepted(ctx context.Context, id string) error
	// RemoveSimulated removes every simulated device and returns how many.
	RemoveSimulated(ctx context.Context) (int, error)
}

// ImageRepository is the image repository's server side; *imagerepo.Service implements it.
type ImageRepository interface {
	Metadata(ctx context.Context, file string) ([]byte, error)
	CurrentTargets(ctx context.Context) ([]byte, error)
	CurrentRole(ctx context.Context, role string) ([]byte, error)
	// Catalogue is every target devices can find, through the delegations, as one unsigned
	// targets document.
	Catalogue(ctx context.Context) ([]byte, error)
	Delegate(ctx context.Context, roles map[string][]byte) ([]string, error)
	Publish(ctx context.Context, name string, data []byte) (*release.Release, error)
	RotateRoot(ctx context.Context, data []byte) error
	ResignTargets(ctx context.Context, data []byte) error
	AddDeltas(ctx context.Context, data []byte) ([]string, error)
	OfflineExpiries(ctx context.Context) ([]imagerepo.Expiry, error)
}

// DeltaJobs plans and lists the per-pair deltas the server generates; *deltagen.Service
// implements it.
type DeltaJobs interface {
	Plan(ctx context.Context, product, version string, top, minDevices int) ([]*deltagen.Job, error)
	Jobs(ctx context.Context, product, version string) ([]*deltagen.Job, error)
}

// Director is the director's server side; *director.Service implements it.
type Director interface {
	Metadata(ctx context.Context, deviceID, file string) ([]byte, error)
	Root(ctx context.Context, file string) ([]byte, error)
	RotateRoot(ctx context.Context, data []byte) error
	Deploy(ctx context.Context, dep director.Deployment) (*director.DeployResult, error)
	// MayFetch returns nil if the device's director view names target (the latest, or a
	// previous one not yet expired), else apperr.Forbidden.
	MayFetch(ctx context.Context, deviceID, target string) error
}

// Campaigns runs rollouts and holds groups; *rollout.Engine implements it.
type Campaigns interface {
	Create(ctx context.Context, s rollout.Spec, actor string) (*rollout.Campaign, error)
	// Preview counts the devices a campaign would take in now, creating nothing.
	Preview(ctx context.Context, s rollout.Spec) (*rollout.Preview, error)
	Act(ctx context.Context, id, action, actor string) (*rollout.Campaign, error)
	Status(ctx context.Context, id string) (*rollout.Status, error)
	Campaigns(ctx context.Context, states ...string) ([]*rollout.Campaign, error)
	// PageCampaigns is a page of campaigns, newest first, and how many p's states hold.
	PageCampaigns(ctx context.Context, p rollout.CampaignPage) ([]*rollout.Campaign, int, error)
	// Progress counts campaigns' members per wave and status, by campaign id, in one query.
	Progress(ctx context.Context, cs []*rollout.Campaign) (map[string][]rollout.Counts, error)
	Groups(ctx context.Context) ([]*rollout.Group, error)
	Group(ctx context.Context, name string) (*rollout.Group, error)
	PutGroup(ctx context.Context, g rollout.Group, actor string) (*rollout.Group, error)
	DeleteGroup(ctx context.Context, name, actor string) error
	ChangeGroupDevices(ctx context.Context, g *rollout.Group, add, remove []string) error
	GroupMembers(ctx context.Context, g *rollout.Group) ([]*fleet.Device, error)
}

// Vulnerabilities holds SBOMs and advisories and answers exposure; *exposure.Service implements
// it.
type Vulnerabilities interface {
	PutSBOM(ctx context.Context, product, version string, raw []byte) (*exposure.SBOM, error)
	SBOM(ctx context.Context, product, version string) (*exposure.SBOM, error)
	Import(ctx context.Context, name string, r io.Reader) (*exposure.ImportResult, error)
	Exposure(ctx context.Context, f exposure.ExposureFilter) (*exposure.ExposureReport, error)
	TimeToPatch(ctx context.Context, product string) (*exposure.ProductTimeToPatch, error)
	CheckRelease(ctx context.Context, product, version string, raw []byte) (*exposure.ReleaseCheck, error)
	// ReleaseCheck is CheckRelease for a release's stored SBOM (apperr.NotFound without one).
	ReleaseCheck(ctx context.Context, product, version string) (*exposure.ReleaseCheck, error)
	GatePublish(ctx context.Context, target string, targets []byte) error
	SetTriage(ctx context.Context, t exposure.Triage, actor string) (*exposure.Triage, error)
	Triage(ctx context.Context, product string) ([]exposure.Triage, error)
	CreateWaiver(ctx context.Context, w exposure.Waiver) (*exposure.Waiver, error)
	RevokeWaiver(ctx context.Context, id, by string) error
	Waivers(ctx context.Context, product string) ([]exposure.Waiver, error)
}

var (
	_ DeviceService   = (*fleet.Service)(nil)
	_ ImageRepository = (*imagerepo.Service)(nil)
	_ Director        = (*director.Service)(nil)
	_ Campaigns       = (*rollout.Engine)(nil)
	_ Vulnerabilities = (*exposure.Service)(nil)
)
