package httpapi_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/wire"
)

// TestSignedRequestReplayRefused: a captured enrolment or token request that was answered with
// a token is refused when replayed within its time window: 409, code conflict. A request
// answered "pending" issued nothing and is answered "pending" again.
func TestSignedRequestReplayRefused(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	d := newDevice(t)
	enroll := d.enrollBody(t)
	hdr := map[string]string{wire.HeaderEnrollToken: s.enrollToken(srv)}
	if r := call(t, srv, http.MethodPost, "/device/v1/enroll", enroll, hdr); r.status != http.StatusOK {
		t.Fatalf("enrol: %d %s", r.status, r.body)
	}
	wantError(t, call(t, srv, http.MethodPost, "/device/v1/enroll", enroll, hdr), http.StatusConflict, apperr.Conflict, "signed request already used")
	wantError(t, call(t, srv, http.MethodPost, "/device/v1/enroll", enroll, nil), http.StatusConflict, apperr.Conflict, "signed request already used")

	tok := d.tokenBody(t)
	if r := call(t, srv, http.MethodPost, "/device/v1/token", tok, nil); r.status != http.StatusOK {
		t.Fatalf("token: %d %s", r.status, r.body)
	}
	wantError(t, call(t, srv, http.MethodPost, "/device/v1/token", tok, nil), http.StatusConflict, apperr.Conflict, "sign a new one")
	// A freshly signed request works.
	if r := call(t, srv, http.MethodPost, "/device/v1/token", d.tokenBody(t), nil); r.status != http.StatusOK {
		t.Fatalf("a new token request: %d %s", r.status, r.body)
	}

	// Pending: nothing issued, nothing spent.
	p := newDevice(t)
	pending := p.enrollBody(t)
	for range 2 {
		if r := call(t, srv, http.MethodPost, "/device/v1/enroll", pending, nil); r.status != http.StatusAccepted {
			t.Fatalf("pending enrolment: %d %s", r.status, r.body)
		}
	}
}

// TestOperatorTokenRoles: tokens are created with a role and an expiry, listed without their
// secrets, and revoked; a viewer may only GET; expired and revoked tokens are refused; the last
// admin token cannot be revoked.
func TestOperatorTokenRoles(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	create := func(req wire.OperatorTokenRequest) reply {
		return call(t, srv, http.MethodPost, "/api/v1/tokens", mustJSON(t, req), bearer(s.admin))
	}
	wantError(t, create(wire.OperatorTokenRequest{Name: "x", Role: "root"}), http.StatusBadRequest, apperr.Invalid, "want one of")
	wantError(t, create(wire.OperatorTokenRequest{Name: "x", Role: auth.RoleViewer, TTL: 400 * 24 * time.Hour}), http.StatusBadRequest, apperr.Invalid, "ttl")
	r := create(wire.OperatorTokenRequest{Name: "dashboard", Role: auth.RoleViewer})
	if r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	viewer := decodeJSON[wire.OperatorToken](t, r.body)
	if viewer.Token == "" || viewer.Role != auth.RoleViewer || viewer.ExpiresAt.Sub(time.Now()) < 89*24*time.Hour {
		t.Fatalf("created %+v: want a secret, role viewer and the 90-day default expiry", viewer)
	}
	if r := call(t, srv, http.MethodGet, "/api/v1/devices", nil, bearer(viewer.Token)); r.status != http.StatusOK {
		t.Fatalf("viewer GET: %d %s", r.status, r.body)
	}
	wantError(t, call(t, srv, http.MethodPost, "/api/v1/enroll-tokens", mustJSON(t, wire.EnrollTokenRequest{}), bearer(viewer.Token)), http.StatusForbidden, apperr.Forbidden, "role viewer")
	wantError(t, call(t, srv, http.MethodPost, "/api/v1/tokens", mustJSON(t, wire.OperatorTokenRequest{Name: "me", Role: auth.RoleAdmin}), bearer(viewer.Token)), http.StatusForbidden, apperr.Forbidden, "role viewer")

	list := decodeJSON[[]wire.OperatorToken](t, call(t, srv, http.MethodGet, "/api/v1/tokens", nil, bearer(s.admin)).body)
	if len(list) != 2 || list[0].Role != auth.RoleAdmin || !list[0].ExpiresAt.IsZero() || list[1].ID != viewer.ID || list[1].Token != "" {
		t.Fatalf("list %+v: want the first admin token (no expiry) and the viewer, without secrets", list)
	}

	// Revoked: refused at once on this server.
	if r := call(t, srv, http.MethodPost, "/api/v1/tokens/"+viewer.ID+"/revoke", nil, bearer(s.admin)); r.status != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	wantError(t, call(t, srv, http.MethodGet, "/api/v1/devices", nil, bearer(viewer.Token)), http.StatusUnauthorized, apperr.Unauthorized, "revoked")
	// The first admin token is the last active admin: not revocable.
	first := list[0].ID
	wantError(t, call(t, srv, http.MethodPost, "/api/v1/tokens/"+first+"/revoke", nil, bearer(s.admin)), http.StatusConflict, apperr.Conflict, "last active admin")
	wantError(t, call(t, srv, http.MethodPost, "/api/v1/tokens/0123456789abcdef/revoke", nil, bearer(s.admin)), http.StatusNotFound, apperr.NotFound, "no operator token")

	// Expired: refused.
	secret, hash := auth.NewSecret(auth.AdminPrefix)
	s.db.CreateOperatorToken(context.Background(), &auth.OperatorToken{ID: auth.TokenID(hash), Name: "old", Role: auth.RoleAdmin, Hash: hash, CreatedAt: time.Now().Add(-2 * time.Hour), ExpiresAt: time.Now().Add(-time.Hour)})
	wantError(t, call(t, srv, http.MethodGet, "/api/v1/devices", nil, bearer(secret)), http.StatusUnauthorized, apperr.Unauthorized, "expired")

	// Last use is recorded in batches.
	if err := s.api.FlushTokenUse(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, tok := range decodeJSON[[]wire.OperatorToken](t, call(t, srv, http.MethodGet, "/api/v1/tokens", nil, bearer(s.admin)).body) {
		if (tok.ID == first || tok.ID == viewer.ID) && tok.LastUsed.IsZero() {
			t.Errorf("last use of %s (%s) not recorded", tok.ID, tok.Name)
		}
	}
}

// TestOperatorCacheFollowsGeneration: a token revoked by another replica (here: in the store
// directly) is refused as soon as this server reads the new revocation generation, however long
// it had cached the token.
func TestOperatorCacheFollowsGeneration(t *testing.T) {
	s := newStack(t)
	var gen atomic.Int64
	s.api.Generation = gen.Load
	srv := s.serve()
	viewer := decodeJSON[wire.OperatorToken](t, call(t, srv, http.MethodPost, "/api/v1/tokens", mustJSON(t, wire.OperatorTokenRequest{Name: "ci", Role: auth.RoleViewer}), bearer(s.admin)).body)
	if r := call(t, srv, http.MethodGet, "/api/v1/releases", nil, bearer(viewer.Token)); r.status != http.StatusOK {
		t.Fatalf("viewer: %d %s", r.status, r.body)
	}
	if err := s.db.RevokeOperatorToken(context.Background(), viewer.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	if r := call(t, srv, http.MethodGet, "/api/v1/releases", nil, bearer(viewer.Token)); r.status != http.StatusOK {
		t.Fatalf("before the generation moved, the cached token still answers: %d", r.status)
	}
	g, err := s.db.RevocationGeneration(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	gen.Store(g)
	wantError(t, call(t, srv, http.MethodGet, "/api/v1/releases", nil, bearer(viewer.Token)), http.StatusUnauthorized, apperr.Unauthorized, "revoked")
}

// TestEnrollTokenLimitsAndRevocation: an enrolment token made without limits gets the defaults
// (1,000 uses, 30 days); limits beyond the bounds are refused; tokens are listed without their
// secrets and a revoked one admits nobody.
func TestEnrollTokenLimitsAndRevocation(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	wantError(t, call(t, srv, http.MethodPost, "/api/v1/enroll-tokens", mustJSON(t, wire.EnrollTokenRequest{Uses: -1}), bearer(s.admin)), http.StatusBadRequest, apperr.Invalid, "uses")
	wantError(t, call(t, srv, http.MethodPost, "/api/v1/enroll-tokens", mustJSON(t, wire.EnrollTokenRequest{TTL: 2 * fleet.MaxEnrollTTL}), bearer(s.admin)), http.StatusBadRequest, apperr.Invalid, "ttl")
	secret := s.enrollToken(srv)
	list := decodeJSON[[]wire.EnrollToken](t, call(t, srv, http.MethodGet, "/api/v1/enroll-tokens", nil, bearer(s.admin)).body)
	if len(list) != 1 || list[0].UsesLeft != fleet.DefaultEnrollUses || time.Until(list[0].ExpiresAt) < fleet.DefaultEnrollTTL-time.Minute || time.Until(list[0].ExpiresAt) > fleet.DefaultEnrollTTL {
		t.Fatalf("list %+v: want 1,000 uses and 30 days", list)
	}
	if r := call(t, srv, http.MethodPost, "/api/v1/enroll-tokens/"+list[0].ID+"/revoke", nil, bearer(s.admin)); r.status != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	d := newDevice(t)
	wantError(t, call(t, srv, http.MethodPost, "/device/v1/enroll", d.enrollBody(t), map[string]string{wire.HeaderEnrollToken: secret}), http.StatusUnauthorized, apperr.Unauthorized, "revoked")
	if n := s.deviceCount(); n != 0 {
		t.Fatalf("%d devices after a revoked token", n)
	}
	list = decodeJSON[[]wire.EnrollToken](t, call(t, srv, http.MethodGet, "/api/v1/enroll-tokens", nil, bearer(s.admin)).body)
	if list[0].RevokedAt.IsZero() {
		t.Fatalf("listed %+v, want it revoked", list[0])
	}
	wantError(t, call(t, srv, http.MethodPost, "/api/v1/enroll-tokens/nope/revoke", nil, bearer(s.admin)), http.StatusNotFound, apperr.NotFound, "no enrolment token")
}

// TestRejectAndDecommission: a pending device can be rejected; an accepted one decommissioned:
// its token stops working on every device route (check-in and director included), it cannot
// enrol or get a token again, its events stay; only accept --readmit brings it back.
func TestRejectAndDecommission(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	admin := bearer(s.admin)

	p := newDevice(t)
	if r := call(t, srv, http.MethodPost, "/device/v1/enroll", p.enrollBody(t), nil); r.status != http.StatusAccepted {
		t.Fatalf("pending enrolment: %d %s", r.status, r.body)
	}
	wantError(t, call(t, srv, http.MethodPost, "/api/v1/devices/"+p.id+"/decommission", nil, admin), http.StatusConflict, apperr.Conflict, "reject a pending one")
	if r := call(t, srv, http.MethodPost, "/api/v1/devices/"+p.id+"/reject", nil, admin); r.status != http.StatusNoContent {
		t.Fatalf("reject: %d %s", r.status, r.body)
	}
	r := call(t, srv, http.MethodPost, "/device/v1/token", p.tokenBody(t), nil)
	if resp := decodeJSON[wire.EnrollResponse](t, r.body); r.status != http.StatusAccepted || resp.Status != fleet.StatusRejected || resp.Token != "" {
		t.Fatalf("token of a rejected device: %d %s", r.status, r.body)
	}

	d, tok := s.enrolled(srv)
	wantError(t, call(t, srv, http.MethodPost, "/api/v1/devices/"+d.id+"/reject", nil, admin), http.StatusConflict, apperr.Conflict, "only a pending device")
	rep := wire.Report{State: "idle", Events: []wire.Event{{Step: wire.StepCheck, Status: wire.StatusOK}}}
	if r := call(t, srv, http.MethodPost, "/device/v1/report", mustJSON(t, rep), bearer(tok)); r.status != http.StatusNoContent {
		t.Fatalf("report: %d %s", r.status, r.body)
	}
	if r := call(t, srv, http.MethodGet, "/device/v1/director/timestamp.json", nil, bearer(tok)); r.status != http.StatusOK && r.status != http.StatusNotFound {
		t.Fatalf("director before: %d %s", r.status, r.body)
	}
	if r := call(t, srv, http.MethodPost, "/api/v1/devices/"+d.id+"/decommission", nil, admin); r.status != http.StatusNoContent {
		t.Fatalf("decommission: %d %s", r.status, r.body)
	}
	for _, path := range []string{"/device/v1/checkin", "/device/v1/report"} {
		wantError(t, call(t, srv, http.MethodPost, path, mustJSON(t, wire.Checkin{}), bearer(tok)), http.StatusUnauthorized, apperr.Unauthorized, "decommissioned")
	}
	wantError(t, call(t, srv, http.MethodGet, "/device/v1/director/1.root.json", nil, bearer(tok)), http.StatusUnauthorized, apperr.Unauthorized, "decommissioned")
	wantError(t, call(t, srv, http.MethodPost, "/device/v1/token", d.tokenBody(t), nil), http.StatusForbidden, apperr.Forbidden, "decommissioned")
	wantError(t, call(t, srv, http.MethodPost, "/device/v1/enroll", d.enrollBody(t), map[string]string{wire.HeaderEnrollToken: s.enrollToken(srv)}), http.StatusForbidden, apperr.Forbidden, "readmit")
	dev := decodeJSON[wire.Device](t, call(t, srv, http.MethodGet, "/api/v1/devices/"+d.id, nil, admin).body)
	events := decodeJSON[[]wire.Event](t, call(t, srv, http.MethodGet, "/api/v1/devices/"+d.id+"/events", nil, admin).body)
	if dev.Status != fleet.StatusDecommissioned || len(events) != 1 {
		t.Fatalf("after decommissioning: status %q, %d events; want decommissioned with its history", dev.Status, len(events))
	}

	wantError(t, call(t, srv, http.MethodPost, "/api/v1/devices/"+d.id+"/accept", nil, admin), http.StatusConflict, apperr.Conflict, "--readmit")
	if r := call(t, srv, http.MethodPost, "/api/v1/devices/"+d.id+"/accept?readmit=true", nil, admin); r.status != http.StatusNoContent {
		t.Fatalf("readmit: %d %s", r.status, r.body)
	}
	r = call(t, srv, http.MethodPost, "/device/v1/token", d.tokenBody(t), nil)
	if r.status != http.StatusOK {
		t.Fatalf("token after readmission: %d %s", r.status, r.body)
	}
	fresh := decodeJSON[wire.EnrollResponse](t, r.body).Token
	if r := call(t, srv, http.MethodPost, "/device/v1/checkin", mustJSON(t, wire.Checkin{}), bearer(fresh)); r.status != http.StatusOK {
		t.Fatalf("check-in after readmission: %d %s", r.status, r.body)
	}
}
