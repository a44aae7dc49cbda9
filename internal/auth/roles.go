package auth

import (
	"fmt"
	"slices"
	"strings"
)

// Permission names one kind of management request. Every /api/v1 route declares the one it
// needs (httpapi's route table), and a role grants a set of them (RolePermissions).
type Permission string

// Permissions. The table in docs/OPERATORS.md is the same, and TestPermissionDocs keeps it so.
const (
	PermDevicesRead   Permission = "devices:read"     // list and show devices and their events
	PermDevicesAdmit  Permission = "devices:admit"    // accept, reject, decommission a device
	PermDevicesRemove Permission = "devices:remove"   // delete (simulated) devices
	PermEnrollRead    Permission = "enroll:read"      // list enrolment tokens
	PermEnrollWrite   Permission = "enroll:write"     // create and revoke enrolment tokens, DDI device credentials
	PermReleasesRead  Permission = "releases:read"    // releases, current targets, SBOMs
	PermPublish       Permission = "releases:publish" // upload artifacts, publish releases, attach SBOMs
	PermTrustRead     Permission = "trust:read"       // director root files, metadata expiry
	PermResign        Permission = "trust:resign"     // re-sign the image repository's targets
	PermRotate        Permission = "trust:rotate"     // rotate the image or director root
	PermDeploy        Permission = "deploy"           // deployments, creating and driving campaigns
	PermRolloutsRead  Permission = "rollouts:read"    // campaigns and their status
	PermGroupsRead    Permission = "groups:read"      // device groups and members
	PermGroupsWrite   Permission = "groups:write"     // create, change, delete groups and membership
	PermProductsRead  Permission = "products:read"    // products, support policy history
	PermProductsWrite Permission = "products:write"   // set a product's support policy
	PermVulnRead      Permission = "vuln:read"        // exposure, time to patch
	PermVulnWrite     Permission = "vuln:write"       // import advisories and VEX
	PermTokensRead    Permission = "tokens:read"      // list operator tokens (never their secrets)
	PermTokensWrite   Permission = "tokens:write"     // create and revoke operator tokens
	PermUsersRead     Permission = "users:read"       // list users
	PermUsersWrite    Permission = "users:write"      // add users, change their role, disable them
	PermAuditRead     Permission = "audit:read"       // read the audit trail
	PermTenantsRead   Permission = "tenants:read"     // list the tenants (default tenant only)
	PermTenantsWrite  Permission = "tenants:write"    // add a tenant (default tenant only)
	PermWebhooksRead  Permission = "webhooks:read"    // list webhooks and their deliveries (never their secrets)
	PermWebhooksWrite Permission = "webhooks:write"   // create, delete and test webhooks; allow private addresses or http
	PermSelf          Permission = "self"             // one's own session: GET /session, logout (every role)
	PermNone          Permission = "none"             // no credential needed (login)
)

// Permissions lists every permission a route may declare, PermSelf and PermNone included.
var Permissions = []Permission{
	PermDevicesRead, PermDevicesAdmit, PermDevicesRemove, PermEnrollRead, PermEnrollWrite,
	PermReleasesRead, PermPublish, PermTrustRead, PermResign, PermRotate, PermDeploy,
	PermRolloutsRead, PermGroupsRead, PermGroupsWrite, PermProductsRead, PermProductsWrite,
	PermVulnRead, PermVulnWrite, PermTokensRead, PermTokensWrite, PermUsersRead, PermUsersWrite,
	PermAuditRead, PermTenantsRead, PermTenantsWrite, PermWebhooksRead, PermWebhooksWrite, PermSelf, PermNone,
}

// ValidPermission reports whether p is one of Permissions.
func ValidPermission(p Permission) bool { return slices.Contains(Permissions, p) }

// Operator roles. A role is stored as its name; ValidRole checks a name against Roles.
const (
	RoleAdmin           = "admin"            // everything
	RoleReleaseManager  = "release-manager"  // publish, re-sign, product policies
	RoleDeployer        = "deployer"         // deployments and campaigns, optionally within groups
	RoleSecurityAnalyst = "security-analyst" // advisories, VEX, exposure
	RoleSupport         = "support"          // reads, plus accept, reject and decommission devices
	RoleViewer          = "viewer"           // reads
	RoleAuditor         = "auditor"          // reads, the audit trail, users and tokens
)

// Roles lists the operator roles, most powerful first.
var Roles = []string{RoleAdmin, RoleReleaseManager, RoleDeployer, RoleSecurityAnalyst, RoleSupport, RoleViewer, RoleAuditor}

// reads are what every role may see: the fleet, releases, campaigns, groups, products and
// exposure. Credentials (tokens, users, enrolment tokens) and the audit trail are not in it.
var reads = []Permission{PermDevicesRead, PermReleasesRead, PermTrustRead, PermRolloutsRead, PermGroupsRead, PermProductsRead, PermVulnRead, PermSelf}

func with(ps ...Permission) []Permission { return append(slices.Clone(reads), ps...) }

// RolePermissions is the written permission map: what each role is granted. Admin holds every
// permission. docs/OPERATORS.md has the same table.
var RolePermissions = map[string][]Permission{
	RoleAdmin:           slices.DeleteFunc(slices.Clone(Permissions), func(p Permission) bool { return p == PermNone }),
	RoleReleaseManager:  with(PermPublish, PermResign, PermProductsWrite),
	RoleDeployer:        with(PermDeploy),
	RoleSecurityAnalyst: with(PermVulnWrite),
	RoleSupport:         with(PermDevicesAdmit, PermEnrollRead),
	RoleViewer:          with(),
	RoleAuditor:         with(PermAuditRead, PermTokensRead, PermUsersRead, PermEnrollRead),
}

// granted is RolePermissions as sets.
var granted = func() map[string]map[Permission]bool {
	m := map[string]map[Permission]bool{}
	for role, ps := range RolePermissions {
		m[role] = map[Permission]bool{}
		for _, p := range ps {
			m[role][p] = true
		}
	}
	return m
}()

// ValidRole reports whether role names an operator role.
func ValidRole(role string) bool { return slices.Contains(Roles, role) }

// Allows reports whether role grants p. PermNone is allowed to anyone, an unknown role or
// permission to no one.
func Allows(role string, p Permission) bool {
	if p == PermNone {
		return true
	}
	return granted[role][p]
}

// CheckScope validates a group scope for role: only a deployer may be limited to groups (other
// roles' permissions are not about devices, and a scoped admin could change the groups).
func CheckScope(role string, groups []string) error {
	if len(groups) == 0 {
		return nil
	}
	if role != RoleDeployer {
		return fmt.Errorf("a group scope applies to role %s only", RoleDeployer)
	}
	for _, g := range groups {
		if g == "" || len(g) > 64 || strings.ContainsAny(g, ", \t\n") {
			return fmt.Errorf("group %.64q: want a group name", g)
		}
	}
	return nil
}

// JoinGroups and SplitGroups are the stored form of a group scope: names joined by commas.
func JoinGroups(gs []string) string { return strings.Join(gs, ",") }

// SplitGroups is the inverse of JoinGroups.
func SplitGroups(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}
