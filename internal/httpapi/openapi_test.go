package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/invopop/jsonschema"

	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/httpapi"
	"upkeep.dev/upkeep/wire"
)

var update = flag.Bool("update", false, "rewrite internal/httpapi/openapi.json from the route table (TestOpenAPI)")

// The OpenAPI 3.1 contract of /api/v1 and /device/v1 is generated, not written by hand: the
// paths, methods and permissions come from the registered route table (Server.Registered), the
// bodies from the types of package wire, through github.com/invopop/jsonschema (reflection over
// structs and json tags to JSON Schema 2020-12, the dialect of OpenAPI 3.1). What no library can
// know is which type each route reads and writes: that is the table below, and TestOpenAPI fails
// when a registered route has no entry in it.

// binary is a body of the given media type that the contract does not describe further
// (artifacts, uploaded files); validators do not read it.
type binary string

// binaries is a body of any of these media types (a byte range, or several).
type binaries []binary

// anyJSON is a JSON body of a shape that another specification defines (an SBOM, an advisory).
type anyJSON string

// signedMetadata is a TUF metadata file: {"signed": ..., "signatures": [...]} (the TUF
// specification defines the rest).
type signedMetadata struct{}

// object is a JSON object whose fields are documented elsewhere.
type object string

type param struct{ name, typ, desc string }

// op is the contract of one route beyond what the route table says.
type op struct {
	summary string
	query   []param
	headers []param
	body    any      // request body: nil for none, a wire value, binary, anyJSON, signedMetadata, object
	bodyAlt []binary // other media types the request body may have, not validated
	// bodyOptional: the request may come without a body (the server takes the defaults)
	bodyOptional bool
	answers      map[int]any // successful answers: status -> body (nil: no body)
	// answerHeaders are headers of every successful answer that has a body; a param whose
	// description starts with "always" is required.
	answerHeaders []param
	pathSchema    map[string]map[string]any // a path parameter's schema, when more than a string
	device        bool                      // authenticated by a device token
	signed        bool                      // authenticated by the device's signature in the body
}

var (
	jsonOK = func(v any) map[int]any { return map[int]any{http.StatusOK: v} }
	noBody = map[int]any{http.StatusNoContent: nil}
)

// contract is every /api/v1 and /device/v1 route: what it reads and what it answers. Errors
// (wire.Error) are the default answer of every route.
var contract = map[string]op{
	// The device API.
	"POST /device/v1/enroll": {summary: "Enrol a device (signed by the device key); 200 with a token when admitted, 202 while pending",
		headers: []param{{wire.HeaderEnrollToken, "string", "an enrolment token: the device is admitted at once"}},
		body:    wire.SignedRequest{}, signed: true,
		answers: map[int]any{200: wire.EnrollResponse{}, 202: wire.EnrollResponse{}}},
	"POST /device/v1/token": {summary: "Get a fresh device token (signed by the device key)", body: wire.SignedRequest{}, signed: true,
		answers: map[int]any{200: wire.EnrollResponse{}, 202: wire.EnrollResponse{}}},
	"POST /device/v1/checkin": {summary: "Check in: has the device's director metadata changed?", device: true,
		headers: []param{{"If-None-Match", "string", "the director version the device holds: 304 when unchanged"}},
		body:    wire.Checkin{}, answers: map[int]any{200: wire.CheckinResponse{}, 304: nil},
		answerHeaders: []param{{"ETag", "string", "always: the director version, for If-None-Match"},
			{wire.HeaderPollInterval, "integer", "always: seconds until the next check-in"},
			{wire.HeaderPollJitter, "integer", "always: poll within the interval plus or minus this many seconds"}}},
	"POST /device/v1/report": {summary: "Report update events and the device's state", device: true, body: wire.Report{}, answers: noBody},
	"POST /device/v1/inventory": {summary: "Send the device's inventory attributes (sent only when their digest changes)", device: true, body: wire.Inventory{},
		answers: jsonOK(wire.InventoryResponse{})},
	"POST /device/v1/logs": {summary: "Upload a failure log bundle: gzip-compressed JSON of a LogBundle, at most 256 KiB (413 past it; 429 with Retry-After past the device's hourly allowance)",
		device: true, body: binary("application/gzip"), answers: noBody},
	"POST /device/v1/push": {summary: "The device's broker credentials for push nudges (404 when the server has no broker: poll)", device: true,
		answers: jsonOK(wire.PushCredentials{})},
	"GET /device/v1/director/{file}": {summary: "The device's director metadata (N.root.json, targets.json, ...)", device: true,
		answers: jsonOK(signedMetadata{})},
	"GET /device/v1/targets/{name...}": {summary: "Download an artifact the device's director view names (Range supported; a redirect to object storage when artifacts live in S3)",
		device: true, headers: []param{{"Range", "string", "byte ranges, to resume"}, {"If-Range", "string", ""}},
		answers: map[int]any{200: binary("application/octet-stream"), 206: binaries{"application/octet-stream", "multipart/byteranges"}, 304: nil, 307: nil,
			416: binary("text/plain")},
		answerHeaders: []param{{"ETag", "string", "always: the artifact's SHA-256, for If-Range"}}},

	// The contract itself.
	"GET /api/v1/openapi.json": {summary: "This OpenAPI document", answers: jsonOK(object("an OpenAPI 3.1 document"))},

	// Sessions, users and tokens.
	"GET /api/v1/oidc/login": {summary: "Start a single sign-on login: redirect to the OpenID provider (cli_port and cli_key: for upkeep login --sso)",
		query: []param{{"cli_port", "integer", ""}, {"cli_key", "string", ""}}, answers: map[int]any{302: nil}},
	"GET /api/v1/oidc/callback": {summary: "The OpenID provider's redirect: a session (its CSRF token in the answer), or for upkeep login --sso a redirect to its loopback port with a sealed personal token",
		query: []param{{"code", "string", ""}, {"state", "string", ""}, {"error", "string", ""}}, answers: map[int]any{200: wire.Session{}, 302: nil}},
	"POST /api/v1/session/token": {summary: "A personal operator token for the session's own user (its role and group scope); the answer carries its secret, once",
		body: wire.PersonalTokenRequest{}, bodyOptional: true, answers: map[int]any{201: wire.OperatorToken{}}},
	"POST /api/v1/session/tokens/{id}/revoke": {summary: "Revoke one of one's own tokens", answers: noBody},
	"GET /api/v1/tenants":                     {summary: "List the tenants (the default tenant's stack only)", answers: jsonOK([]wire.Tenant{})},
	"POST /api/v1/tenants": {summary: "Add a tenant with its online key files; the answer carries its first admin token, once",
		body: wire.TenantRequest{}, answers: map[int]any{201: wire.TenantCreated{}}},
	"POST /api/v1/login":                {summary: "Log in: a session cookie, and the CSRF token in the answer", body: wire.LoginRequest{}, answers: jsonOK(wire.Session{})},
	"POST /api/v1/logout":               {summary: "End the caller's login session", answers: noBody},
	"GET /api/v1/session":               {summary: "Who the caller is: user, role, permissions", answers: jsonOK(wire.Session{})},
	"GET /api/v1/users":                 {summary: "List operator users", answers: jsonOK([]wire.User{})},
	"POST /api/v1/users":                {summary: "Add an operator user", body: wire.UserRequest{}, answers: map[int]any{201: wire.User{}}},
	"POST /api/v1/users/{name}/disable": {summary: "Disable a user (ends their sessions, revokes their tokens)", answers: noBody},
	"PUT /api/v1/users/{name}/role":     {summary: "Change a user's role and group scope", body: wire.UserRoleRequest{}, answers: noBody},
	"PUT /api/v1/users/{name}/password": {summary: "Set a user's password", body: wire.PasswordRequest{}, answers: noBody},
	"GET /api/v1/tokens":                {summary: "List operator tokens (never their secrets)", answers: jsonOK([]wire.OperatorToken{})},
	"POST /api/v1/tokens":               {summary: "Create an operator token; the answer carries its secret, once", body: wire.OperatorTokenRequest{}, answers: map[int]any{201: wire.OperatorToken{}}},
	"POST /api/v1/tokens/{id}/revoke":   {summary: "Revoke an operator token", answers: noBody},

	// Webhooks.
	"GET /api/v1/webhooks": {summary: "List webhooks (never their secrets)", answers: jsonOK([]wire.Webhook{})},
	"POST /api/v1/webhooks": {summary: "Create a webhook; the answer carries its signing secret (whsec_...), once",
		body: wire.WebhookRequest{}, answers: map[int]any{201: wire.Webhook{}}},
	"DELETE /api/v1/webhooks/{id}":    {summary: "Delete a webhook and its deliveries", answers: noBody},
	"POST /api/v1/webhooks/{id}/test": {summary: "Queue a ping event for a webhook", answers: map[int]any{202: wire.WebhookTest{}}},
	"GET /api/v1/webhooks/deliveries": {summary: "List webhook deliveries, newest first: state, attempts, last answer",
		query:   []param{{"webhook", "string", ""}, {"state", "string", "pending, delivered, failed or dropped"}, {"limit", "integer", "at most 1,000; default 100"}},
		answers: jsonOK([]wire.WebhookDelivery{})},
	"POST /api/v1/enroll-tokens":             {summary: "Create an enrolment token; the answer carries its secret, once", body: wire.EnrollTokenRequest{}, answers: map[int]any{201: wire.EnrollTokenResponse{}}},
	"GET /api/v1/enroll-tokens":              {summary: "List enrolment tokens", answers: jsonOK([]wire.EnrollToken{})},
	"POST /api/v1/enroll-tokens/{id}/revoke": {summary: "Revoke an enrolment token", answers: noBody},

	// Devices.
	"GET /api/v1/devices": {summary: "List devices", query: []param{{"product", "string", ""}, {"hardware_id", "string", ""},
		{"status", "string", "pending | accepted | rejected | decommissioned"}, {"kind", "string", "upkeep | ddi"}, {"limit", "integer", ""}, {"offset", "integer", ""}},
		answers: jsonOK([]wire.Device{})},
	"DELETE /api/v1/devices": {summary: "Remove the simulated devices (simulated=true is required)", query: []param{{"simulated", "boolean", "must be true"}},
		answers: jsonOK(wire.RemoveDevicesResponse{})},
	"GET /api/v1/devices/{id}": {summary: "One device", answers: jsonOK(wire.Device{})},
	"POST /api/v1/devices/{id}/accept": {summary: "Admit a pending or rejected device; readmit=true also a decommissioned one",
		query: []param{{"readmit", "boolean", ""}}, answers: noBody},
	"POST /api/v1/devices/{id}/reject":       {summary: "Reject a device", answers: noBody},
	"POST /api/v1/devices/{id}/decommission": {summary: "Decommission a device: its token is refused from then on", answers: noBody},
	"GET /api/v1/devices/{id}/events":        {summary: "A device's latest events, newest first", answers: jsonOK([]wire.Event{})},
	"GET /api/v1/devices/{id}/logs": {summary: "A device's failure log bundles, newest first: the latest, or every one kept with all=true",
		query: []param{{"all", "boolean", "every bundle kept"}}, answers: jsonOK([]wire.DeviceLog{})},

	// Releases and metadata.
	"PUT /api/v1/blobs/{sha256}": {summary: "Upload an artifact, named by its SHA-256", body: binary("application/octet-stream"),
		pathSchema: map[string]map[string]any{"sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}},
		answers:    map[int]any{201: wire.BlobInfo{}}},
	"GET /api/v1/blobs/{sha256}": {summary: "Download an uploaded artifact, named by its SHA-256 (Range supported)",
		pathSchema: map[string]map[string]any{"sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}},
		headers:    []param{{"Range", "string", "byte ranges"}},
		answers:    map[int]any{200: binary("application/octet-stream"), 206: binaries{"application/octet-stream", "multipart/byteranges"}, 416: binary("text/plain")}},
	"POST /api/v1/deltas": {summary: "Add delta targets (patches, chunk indexes) to published releases: offline-signed targets metadata adding only deltas",
		body: wire.DeltasRequest{}, answers: jsonOK(wire.DeltasResponse{})},
	"GET /api/v1/deltas": {summary: "A release's per-pair deltas generated on the server: state, progress, patch, whether signed",
		query: []param{{"product", "string", ""}, {"version", "string", ""}}, answers: jsonOK(wire.DeltaJobs{})},
	"POST /api/v1/deltas/generate": {summary: "Plan per-pair deltas to a release now, from the releases most of its devices run; generated in the background",
		body: wire.DeltaPlanRequest{}, answers: jsonOK(wire.DeltaJobs{})},
	"GET /api/v1/audit": {summary: "The audit trail, newest first, filtered, a page at a time",
		query: []param{{"actor", "string", ""}, {"action", "string", "an action name (device.accept) or its first part (device)"}, {"target", "string", ""},
			{"outcome", "string", "ok, failed, denied or an HTTP status"}, {"since", "string", "RFC 3339"}, {"until", "string", "RFC 3339"},
			{"before", "integer", "sequence number: the page before it"}, {"limit", "integer", ""}},
		answers: jsonOK(wire.AuditPage{})},
	"GET /api/v1/audit/export": {summary: "Every kept audit record, oldest first, with the chain's checkpoint and head (JSON: wire.AuditExport; CSV: wire.AuditCSVHeader columns)",
		query: []param{{"format", "string", "json or csv"}}, answers: map[int]any{200: binaries{"application/json", "text/csv"}}},
	"GET /api/v1/audit/verify": {summary: "The server recomputes the kept chain from its checkpoint", answers: jsonOK(wire.AuditVerification{})},
	"GET /api/v1/image/targets": {summary: "The image repository's current targets metadata (top-level, or a delegated role's)",
		query: []param{{"role", "string", "a delegated role (bin.X, p.PRODUCT)"}}, answers: jsonOK(signedMetadata{})},
	"PUT /api/v1/image/delegations": {summary: "A delegation ceremony: offline-signed top-level targets, bin and product roles, by role name",
		body: wire.DelegationRequest{}, answers: jsonOK(wire.DelegationResponse{})},
	"PUT /api/v1/image/root":      {summary: "Rotate the image root: a new root.json signed by the old and new keys", body: signedMetadata{}, answers: noBody},
	"PUT /api/v1/image/targets":   {summary: "Upload re-signed image targets metadata", body: signedMetadata{}, answers: noBody},
	"GET /api/v1/director/{file}": {summary: "A director root file (N.root.json)", answers: jsonOK(signedMetadata{})},
	"PUT /api/v1/director/root":   {summary: "Rotate or renew the director root", body: signedMetadata{}, answers: noBody},
	"GET /api/v1/trust/expiry":    {summary: "When each piece of offline-signed metadata expires", answers: jsonOK([]wire.MetadataExpiry{})},
	"POST /api/v1/releases":       {summary: "Publish a release: offline-signed targets metadata naming an uploaded artifact", body: wire.PublishRequest{}, answers: map[int]any{201: wire.Release{}}},
	"GET /api/v1/releases":        {summary: "List releases", query: []param{{"product", "string", ""}}, answers: jsonOK([]wire.Release{})},
	"POST /api/v1/deployments":    {summary: "Assign a release to devices", body: wire.DeployRequest{}, answers: jsonOK(wire.DeployResponse{})},
	"PUT /api/v1/releases/{product}/{version}/sbom": {summary: "Attach a release's SBOM (CycloneDX or SPDX JSON)", body: anyJSON("a CycloneDX or SPDX JSON document"),
		bodyAlt: []binary{"application/octet-stream"}, answers: jsonOK(wire.SBOMSummary{})},
	"GET /api/v1/releases/{product}/{version}/sbom": {summary: "A release's SBOM summary", answers: jsonOK(wire.SBOMSummary{})},
	"POST /api/v1/releases/check": {summary: "Check an SBOM against the release gate, before publishing", query: []param{{"product", "string", ""}, {"version", "string", ""}},
		body: anyJSON("a CycloneDX or SPDX JSON document"), bodyAlt: []binary{"application/octet-stream"}, answers: jsonOK(wire.ReleaseCheck{})},

	// Campaigns and groups.
	"POST /api/v1/rollouts":     {summary: "Create a rollout campaign", body: wire.CampaignSpec{}, answers: map[int]any{201: wire.Campaign{}}},
	"GET /api/v1/rollouts":      {summary: "List campaigns", query: []param{{"state", "string", ""}}, answers: jsonOK([]wire.Campaign{})},
	"GET /api/v1/rollouts/{id}": {summary: "A campaign's per-wave counts, waiting and failed devices and timeline", answers: jsonOK(wire.CampaignStatus{})},
	"POST /api/v1/rollouts/{id}/{action}": {summary: "Act on a campaign: start, pause, resume, cancel", answers: jsonOK(wire.Campaign{}),
		pathSchema: map[string]map[string]any{"action": {"type": "string", "enum": []string{"start", "pause", "resume", "cancel"}}}},
	"GET /api/v1/groups":                 {summary: "List device groups", answers: jsonOK([]wire.Group{})},
	"GET /api/v1/groups/{name}":          {summary: "One group with its members", answers: jsonOK(wire.Group{})},
	"PUT /api/v1/groups/{name}":          {summary: "Create or change a group", body: wire.Group{}, answers: jsonOK(wire.Group{})},
	"DELETE /api/v1/groups/{name}":       {summary: "Delete a group", answers: noBody},
	"POST /api/v1/groups/{name}/devices": {summary: "Add or remove a group's static members", body: wire.GroupDevices{}, answers: jsonOK(wire.Group{})},

	// Products and vulnerabilities.
	"GET /api/v1/products":                {summary: "List products with their support policies", answers: jsonOK([]wire.Product{})},
	"PUT /api/v1/products/{name}/policy":  {summary: "Change a product's support policy (the fields given)", body: object("the policy fields to change (docs/TRANSPARENCY.md)"), answers: jsonOK(wire.Product{})},
	"GET /api/v1/products/{name}/history": {summary: "A product's policy history", answers: jsonOK([]wire.PolicyChange{})},
	"POST /api/v1/advisories": {summary: "Import one advisory file: OSV (JSON, zip), CSAF, KEV, EPSS, NVD", query: []param{{"name", "string", "the file's name, in errors"}},
		body: binary("application/octet-stream"), bodyAlt: []binary{"application/json"}, answers: jsonOK(wire.ImportResult{})},
	"GET /api/v1/exposure": {summary: "Which devices are exposed to which advisories", query: []param{{"severity", "string", ""}, {"product", "string", ""},
		{"all", "boolean", ""}, {"kev", "boolean", ""}, {"min_epss", "number", ""}, {"sort", "string", ""}}, answers: jsonOK(wire.ExposureReport{})},
	"GET /api/v1/products/{name}/time-to-patch": {summary: "A product's time to patch", answers: jsonOK(wire.ProductTimeToPatch{})},
	"PUT /api/v1/products/{name}/vex":           {summary: "Record an analyst's VEX statement", body: wire.Triage{}, answers: jsonOK(wire.Triage{})},
	"GET /api/v1/products/{name}/vex":           {summary: "A product's VEX statements", answers: jsonOK([]wire.Triage{})},
	"POST /api/v1/waivers":                      {summary: "Waive the release gate for one vulnerability of one release", body: wire.Waiver{}, answers: map[int]any{201: wire.Waiver{}}},
	"GET /api/v1/waivers":                       {summary: "List waivers", query: []param{{"product", "string", ""}}, answers: jsonOK([]wire.Waiver{})},
	"POST /api/v1/waivers/{id}/revoke":          {summary: "Revoke a waiver", body: wire.RevokeWaiverRequest{}, answers: noBody},

	// hawkBit DDI devices (internal/ddi's management routes).
	"POST /api/v1/ddi/devices":            {summary: "Create a DDI device; the answer carries its target token", body: wire.DDIDeviceRequest{}, answers: map[int]any{201: wire.DDIDeviceResponse{}}},
	"GET /api/v1/ddi/devices/{id}/token":  {summary: "A DDI device's target token", answers: jsonOK(wire.DDIDeviceResponse{})},
	"POST /api/v1/ddi/devices/{id}/token": {summary: "Rotate a DDI device's target token", answers: jsonOK(wire.DDIDeviceResponse{})},
}

// ddiManagementRoutes stand for internal/ddi's management routes (Service.AdminRoutes).
func ddiManagementRoutes() map[string]http.HandlerFunc {
	ok := func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }
	return map[string]http.HandlerFunc{"POST /api/v1/ddi/devices": ok, "GET /api/v1/ddi/devices/{id}/token": ok, "POST /api/v1/ddi/devices/{id}/token": ok}
}

// inContract reports whether a route pattern belongs in the document.
func inContract(pattern string) bool {
	return strings.Contains(pattern, " /api/v1/") || strings.Contains(pattern, " /device/v1/")
}

// TestOpenAPI regenerates the document and fails when it differs from the committed one, or
// when a registered route has no contract.
func TestOpenAPI(t *testing.T) {
	s := newStack(t)
	api := &httpapi.Server{Fleet: s.fleet, Images: s.images, Director: s.director, Devices: s.db, Releases: s.db, Blobs: s.blobs, Admin: s.db,
		AdminRoutes: ddiManagementRoutes(), Tenants: listTenants{}}
	api.Handler()
	var routes []httpapi.Route
	seen := map[string]bool{}
	for _, rt := range api.Registered() {
		if !inContract(rt.Pattern) {
			continue
		}
		seen[rt.Pattern] = true
		if _, ok := contract[rt.Pattern]; !ok {
			t.Errorf("route %s has no contract: add it to the table in internal/httpapi/openapi_test.go", rt.Pattern)
			continue
		}
		routes = append(routes, rt)
	}
	for p := range contract {
		if !seen[p] {
			t.Errorf("the contract table names %s, which is not a registered route", p)
		}
	}
	if t.Failed() {
		return
	}
	t.Chdir("../..") // the module root, for the comments of package wire
	got, err := generateOpenAPI(routes)
	if err != nil {
		t.Fatal(err)
	}
	const file = "internal/httpapi/openapi.json"
	if *update {
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from what the route table and package wire give: run `go test ./internal/httpapi -run TestOpenAPI -update`", file)
	}
}

// TestOpenAPIValid loads the embedded document with kin-openapi and validates it.
func TestOpenAPIValid(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(httpapi.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	if !doc.IsOpenAPI31OrLater() {
		t.Errorf("openapi %q, want 3.1", doc.OpenAPI)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := doc.Paths.Len(); n < 50 {
		t.Errorf("only %d paths", n)
	}
	for path, item := range doc.Paths.Map() {
		for method, o := range item.Operations() {
			if strings.HasPrefix(path, "/api/v1/") && o.Extensions["x-upkeep-permission"] == nil {
				t.Errorf("%s %s declares no x-upkeep-permission", method, path)
			}
		}
	}
}

// TestOpenAPIServed: GET /api/v1/openapi.json needs no credential and serves the document.
func TestOpenAPIServed(t *testing.T) {
	srv := newStack(t).serve()
	r := call(t, srv, http.MethodGet, "/api/v1/openapi.json", nil, nil)
	if r.status != http.StatusOK || !bytes.Equal(r.body, httpapi.OpenAPI()) {
		t.Fatalf("GET /api/v1/openapi.json: %d, %d bytes", r.status, len(r.body))
	}
}

var pathParam = regexp.MustCompile(`\{([A-Za-z0-9_]+)(\.\.\.)?\}`)

// generateOpenAPI builds the document of routes (all in contract).
func generateOpenAPI(routes []httpapi.Route) ([]byte, error) {
	sc := newSchemas()
	paths := map[string]map[string]any{}
	for _, rt := range routes {
		c := contract[rt.Pattern]
		method, path, _ := strings.Cut(rt.Pattern, " ")
		oaPath := pathParam.ReplaceAllString(path, "{$1}")
		o := map[string]any{
			"operationId":      operationID(method, oaPath),
			"summary":          c.summary,
			"tags":             []string{tag(oaPath)},
			"x-upkeep-pattern": rt.Pattern,
		}
		desc := c.summary + "."
		switch {
		case c.device:
			desc += "\n\nAuthentication: a device token (Authorization: Bearer)."
			o["security"] = []map[string][]string{{"deviceToken": {}}}
		case c.signed:
			desc += "\n\nAuthentication: the device's Ed25519 signature over the payload; no token."
			o["security"] = []map[string][]string{}
		case rt.Permission == auth.PermNone:
			desc += "\n\nPermission: `none` (no credential needed)."
			o["security"] = []map[string][]string{}
			o["x-upkeep-permission"] = rt.Permission
		default:
			desc += fmt.Sprintf("\n\nPermission: `%s`.", rt.Permission)
			o["x-upkeep-permission"] = rt.Permission
			if method == http.MethodGet {
				o["security"] = []map[string][]string{{"operatorToken": {}}, {"session": {}}}
			} else {
				o["security"] = []map[string][]string{{"operatorToken": {}}, {"session": {}, "csrf": {}}}
			}
		}
		o["description"] = desc
		var params []map[string]any
		for _, m := range pathParam.FindAllStringSubmatch(path, -1) {
			p := map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]any{"type": "string"}}
			if ps, ok := c.pathSchema[m[1]]; ok {
				p["schema"] = ps
			}
			if m[2] != "" {
				p["description"] = "may contain slashes"
			}
			params = append(params, p)
		}
		for _, q := range c.query {
			params = append(params, paramOf(q, "query"))
		}
		for _, h := range c.headers {
			params = append(params, paramOf(h, "header"))
		}
		if params != nil {
			o["parameters"] = params
		}
		if c.body != nil {
			content := map[string]any{}
			mt, s, err := sc.request.media(c.body)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", rt.Pattern, err)
			}
			content[mt] = s
			for _, alt := range c.bodyAlt {
				_, s, _ := sc.request.media(alt)
				content[string(alt)] = s
			}
			o["requestBody"] = map[string]any{"required": !c.bodyOptional, "content": content}
		}
		responses := map[string]any{"default": map[string]any{
			"description": "An error: the status follows the error's code (apperr.HTTPStatus).",
			"headers": map[string]any{"Retry-After": map[string]any{"schema": map[string]any{"type": "integer"},
				"description": "with 429 and 503: seconds to wait before trying again"}},
			"content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/Error"}}},
		}}
		if _, err := sc.answer.of(wire.Error{}); err != nil {
			return nil, err
		}
		for status, body := range c.answers {
			r := map[string]any{"description": http.StatusText(status)}
			if bs, ok := body.(binaries); ok {
				content := map[string]any{}
				for _, b := range bs {
					content[string(b)] = map[string]any{}
				}
				r["content"] = content
			} else if body != nil {
				mt, s, err := sc.answer.media(body)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", rt.Pattern, err)
				}
				r["content"] = map[string]any{mt: s}
			}
			if body != nil && c.answerHeaders != nil {
				hs := map[string]any{}
				for _, h := range c.answerHeaders {
					hs[h.name] = map[string]any{"schema": map[string]any{"type": h.typ}, "description": h.desc,
						"required": strings.HasPrefix(h.desc, "always")}
				}
				r["headers"] = hs
			}
			responses[fmt.Sprint(status)] = r
		}
		o["responses"] = responses
		if paths[oaPath] == nil {
			paths[oaPath] = map[string]any{}
		}
		paths[oaPath][strings.ToLower(method)] = o
	}
	doc := map[string]any{
		"openapi":           "3.1.0",
		"jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
		"info": map[string]any{
			"title":   "Upkeep",
			"version": fmt.Sprintf("device protocol %d", wire.ProtocolVersion),
			"description": "The management API (/api/v1) and the device API (/device/v1) of an Upkeep server. " +
				"Generated from the route table and package wire: `go test ./internal/httpapi -run TestOpenAPI -update`. " +
				"The hawkBit DDI routes follow hawkBit's own contract and are not here.",
		},
		"paths": paths,
		"components": map[string]any{
			"schemas": sc.defs,
			"securitySchemes": map[string]any{
				"operatorToken": map[string]any{"type": "http", "scheme": "bearer",
					"description": "An operator token (upk_admin_...): `upkeep tokens create`, or the admin's first token."},
				"session": map[string]any{"type": "apiKey", "in": "cookie", "name": wire.SessionCookie,
					"description": "A login session (POST /api/v1/login). State-changing requests also need the csrf scheme."},
				"csrf": map[string]any{"type": "apiKey", "in": "header", "name": wire.HeaderCSRF,
					"description": "The session's CSRF token (the login answer, or GET /api/v1/session)."},
				"deviceToken": map[string]any{"type": "http", "scheme": "bearer",
					"description": "A device token (POST /device/v1/token)."},
			},
		},
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

func paramOf(p param, in string) map[string]any {
	m := map[string]any{"name": p.name, "in": in, "schema": map[string]any{"type": p.typ}}
	if p.desc != "" {
		m["description"] = p.desc
	}
	return m
}

func operationID(method, path string) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(method))
	for _, seg := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		seg = strings.Trim(seg, "{}")
		for _, w := range strings.FieldsFunc(seg, func(r rune) bool { return r == '-' || r == '_' || r == '.' }) {
			b.WriteString(strings.ToUpper(w[:1]) + w[1:])
		}
	}
	return b.String()
}

func tag(path string) string {
	seg := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if seg[0] == "device" {
		return "device"
	}
	return seg[2]
}

// schemas turns Go types into JSON Schema, collecting the named ones as components. Answers
// and requests get schemas of their own: the server writes every field without omitempty, so
// an answer's are required; it reads a missing field as its zero value, so a request needs none
// (a handler that wants one refuses its absence with 400). Request types are named with the
// suffix Input.
type schemas struct {
	answer, request *reflector
	defs            map[string]json.RawMessage
}

type reflector struct {
	r      *jsonschema.Reflector
	suffix string
	defs   map[string]json.RawMessage
}

func newSchemas() *schemas {
	defs := map[string]json.RawMessage{}
	answer := &jsonschema.Reflector{Anonymous: true}
	request := &jsonschema.Reflector{Anonymous: true, RequiredFromJSONSchemaTags: true,
		Namer: func(t reflect.Type) string {
			if t.Name() == "" {
				return ""
			}
			return t.Name() + "Input"
		}}
	for _, r := range []*jsonschema.Reflector{answer, request} {
		// Field and type comments become descriptions; the working directory is the module root.
		if err := r.AddGoComments("upkeep.dev/upkeep", "wire"); err != nil {
			panic(err)
		}
	}
	return &schemas{answer: &reflector{r: answer, defs: defs}, request: &reflector{r: request, suffix: "Input", defs: defs}, defs: defs}
}

// media returns the media type and the media type object of a body.
func (s *reflector) media(body any) (string, map[string]any, error) {
	switch b := body.(type) {
	case binary:
		return string(b), map[string]any{}, nil
	case anyJSON:
		return "application/json", map[string]any{"schema": map[string]any{"description": string(b)}}, nil
	case object:
		return "application/json", map[string]any{"schema": map[string]any{"type": "object", "description": string(b)}}, nil
	case signedMetadata:
		return "application/json", map[string]any{"schema": map[string]any{
			"type": "object", "required": []string{"signed", "signatures"},
			"description": "Signed TUF metadata (TUF specification, section 4.2).",
			"properties":  map[string]any{"signed": map[string]any{"type": "object"}, "signatures": map[string]any{"type": "array"}},
		}}, nil
	}
	sch, err := s.of(body)
	if err != nil {
		return "", nil, err
	}
	return "application/json", map[string]any{"schema": sch}, nil
}

// of returns the schema of v's type, with references to components.
func (s *reflector) of(v any) (json.RawMessage, error) {
	sch := s.r.Reflect(v)
	nullable(reflect.TypeOf(v), s.suffix, sch.Definitions, map[reflect.Type]bool{})
	b, err := json.Marshal(sch)
	if err != nil {
		return nil, err
	}
	b = bytes.ReplaceAll(b, []byte(`"#/$defs/`), []byte(`"#/components/schemas/`))
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, err
	}
	if d, ok := top["$defs"]; ok {
		var defs map[string]json.RawMessage
		if err := json.Unmarshal(d, &defs); err != nil {
			return nil, err
		}
		for k, v := range defs {
			if old, ok := s.defs[k]; ok && !bytes.Equal(old, v) {
				return nil, fmt.Errorf("two types named %s", k)
			}
			s.defs[k] = v
		}
	}
	delete(top, "$defs")
	delete(top, "$schema")
	delete(top, "$id")
	return json.Marshal(top)
}

var (
	rawMessage   = reflect.TypeOf(json.RawMessage(nil))
	durationType = reflect.TypeOf(time.Duration(0))
)

// nullable says that durations are nanoseconds, and lets a field be null where encoding/json writes null: a nil slice, map or pointer
// whose field has no omitempty. The contract then says what the server really sends.
func nullable(t reflect.Type, suffix string, defs jsonschema.Definitions, done map[reflect.Type]bool) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || done[t] {
		return
	}
	done[t] = true
	def := defs[t.Name()+suffix]
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		nullable(f.Type, suffix, defs, done)
		if def == nil || def.Properties == nil || f.Type == rawMessage {
			continue
		}
		if f.Type == durationType {
			if p, ok := def.Properties.Get(name); ok {
				p.Description = strings.TrimSpace("Nanoseconds (a Go time.Duration). " + p.Description)
			}
		}
		if slices.Contains(strings.Split(opts, ","), "omitempty") {
			continue
		}
		switch f.Type.Kind() {
		case reflect.Slice, reflect.Map, reflect.Pointer:
			if p, ok := def.Properties.Get(name); ok {
				desc := p.Description
				p.Description = ""
				def.Properties.Set(name, &jsonschema.Schema{AnyOf: []*jsonschema.Schema{p, {Type: "null"}}, Description: desc})
			}
		}
	}
}
