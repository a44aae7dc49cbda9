package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/audit"
	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/httpapi"
	"upkeep.dev/upkeep/wire"
)

// TestAuditActions: every registered route whose calls are recorded (every state-changing
// /api/v1 route, login and logout) has an action name in the table, and no read is recorded
// but those the table names.
func TestAuditActions(t *testing.T) {
	s := newStack(t)
	api := &httpapi.Server{Fleet: s.fleet, Images: s.images, Director: s.director, Devices: s.db, Releases: s.db, Blobs: s.blobs, Admin: s.db, Audit: s.db,
		AdminRoutes: ddiAdminRoutes(), Rollouts: nil, Tenants: listTenants{}}
	api.Handler()
	n := 0
	for _, rt := range api.Registered() {
		if !strings.Contains(rt.Pattern, " /api/v1/") && !rt.Page {
			continue
		}
		method, _, _ := strings.Cut(rt.Pattern, " ")
		_, named := httpapi.AuditAction(rt.Pattern)
		switch {
		case method != http.MethodGet && !named:
			t.Errorf("%s changes state but has no audit action name", rt.Pattern)
		case method != http.MethodGet && !httpapi.Recorded(rt.Pattern):
			t.Errorf("%s changes state but is not recorded", rt.Pattern)
		case method == http.MethodGet && httpapi.Recorded(rt.Pattern) != named:
			t.Errorf("%s: recorded %v, named %v", rt.Pattern, httpapi.Recorded(rt.Pattern), named)
		}
		if httpapi.Recorded(rt.Pattern) {
			n++
		}
	}
	if n < 20 {
		t.Fatalf("only %d routes recorded", n)
	}
}

func auditRecords(t testing.TB, s *stack) []*audit.Record {
	t.Helper()
	rs, err := s.db.FindRecords(context.Background(), audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// TestAuditRecordsCalls: a state change is recorded with its principal, action, target,
// source address, user agent and outcome before it is answered; a refused one (403, 401) too;
// a login with the name it gave and never the password; reads are not. The trail verifies.
func TestAuditRecordsCalls(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	ctx := context.Background()
	viewer, hash := auth.NewSecret(auth.AdminPrefix)
	if err := s.db.CreateOperatorToken(ctx, &auth.OperatorToken{ID: auth.TokenID(hash), Name: "dash", Role: auth.RoleViewer, Hash: hash, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	hdr := bearer(s.admin)
	hdr["User-Agent"] = "upkeep-test/1"
	r := call(t, srv, http.MethodPost, "/api/v1/tokens", mustJSON(t, wire.OperatorTokenRequest{Name: "ci", Role: auth.RoleDeployer}), hdr)
	if r.status != http.StatusCreated {
		t.Fatalf("create token: %d %s", r.status, r.body)
	}
	created := decodeJSON[wire.OperatorToken](t, r.body)
	call(t, srv, http.MethodGet, "/api/v1/tokens", nil, hdr)
	if r := call(t, srv, http.MethodPost, "/api/v1/tokens/"+created.ID+"/revoke", nil, bearer(viewer)); r.status != http.StatusForbidden {
		t.Fatalf("viewer revokes: %d", r.status)
	}
	if r := call(t, srv, http.MethodPost, "/api/v1/tokens", []byte(`{}`), bearer("upk_admin_wrong")); r.status != http.StatusUnauthorized {
		t.Fatalf("bad token: %d", r.status)
	}
	if r := call(t, srv, http.MethodPost, "/api/v1/login", []byte(`{"user":"admin","password":"hunter2hunter2"}`), nil); r.status != http.StatusUnauthorized {
		t.Fatalf("login: %d %s", r.status, r.body)
	}

	rs := auditRecords(t, s)
	if len(rs) != 4 {
		for _, r := range rs {
			t.Logf("%+v", r)
		}
		t.Fatalf("%d records, want 4 (the read is not recorded)", len(rs))
	}
	want := []struct{ actorType, actor, action, target string }{
		{audit.ActorUser, "admin", "login", ""},
		{audit.ActorAnonymous, "", "token.create", ""},
		{audit.ActorToken, "dash", "token.revoke", created.ID},
		{audit.ActorToken, "admin", "token.create", created.ID},
	}
	outcomes := []int{401, 401, 403, 201}
	for i, w := range want {
		got := rs[i]
		if got.ActorType != w.actorType || got.Actor != w.actor || got.Action != w.action || got.Target != w.target || got.Outcome != outcomes[i] || got.IP != "127.0.0.1" {
			t.Errorf("record %d: %+v, want %+v outcome %d", i, got, w, outcomes[i])
		}
		if strings.Contains(fmt.Sprintf("%+v", got), "hunter2") {
			t.Errorf("record %d holds the password: %+v", i, got)
		}
	}
	if rs[3].UserAgent != "upkeep-test/1" || rs[3].Detail != "owner=admin role=deployer" || rs[3].ActorID == "" {
		t.Errorf("token creation record: %+v", rs[3])
	}

	// The audit routes: list with a filter, export, verify.
	page := decodeJSON[wire.AuditPage](t, call(t, srv, http.MethodGet, "/api/v1/audit?outcome=denied&limit=10", nil, bearer(s.admin)).body)
	if len(page.Records) != 3 {
		t.Fatalf("denied records: %+v", page)
	}
	if r := call(t, srv, http.MethodGet, "/api/v1/audit?action=DROP%20TABLE", nil, bearer(s.admin)); r.status != http.StatusBadRequest {
		t.Fatalf("bad action filter: %d", r.status)
	}
	if r := call(t, srv, http.MethodGet, "/api/v1/audit", nil, bearer(viewer)); r.status != http.StatusForbidden {
		t.Fatalf("a viewer reads the audit trail: %d", r.status)
	}
	var exp wire.AuditExport
	if err := json.Unmarshal(call(t, srv, http.MethodGet, "/api/v1/audit/export", nil, bearer(s.admin)).body, &exp); err != nil || len(exp.Records) != 4 || exp.Chain.HeadSeq != 4 {
		t.Fatalf("export: %+v %v", exp, err)
	}
	if r := call(t, srv, http.MethodGet, "/api/v1/audit/export?format=csv", nil, bearer(s.admin)); r.status != http.StatusOK || strings.Count(string(r.body), "\n") != 5 {
		t.Fatalf("csv export: %d %s", r.status, r.body)
	}
	v := decodeJSON[wire.AuditVerification](t, call(t, srv, http.MethodGet, "/api/v1/audit/verify", nil, bearer(s.admin)).body)
	if !v.OK || v.Records != 4 {
		t.Fatalf("verify: %+v", v)
	}
	if _, err := s.db.SQL().Exec(`UPDATE audit_log SET outcome = 200 WHERE seq = 3`); err != nil {
		t.Fatal(err)
	}
	v = decodeJSON[wire.AuditVerification](t, call(t, srv, http.MethodGet, "/api/v1/audit/verify", nil, bearer(s.admin)).body)
	if v.OK || v.BrokenSeq != 3 {
		t.Fatalf("verify after an edit: %+v", v)
	}
}

// TestAuditFailureAnswers500: when the record cannot be stored, the client gets 500 (not the
// handler's answer, nor its cookies), and the failure is counted.
func TestAuditFailureAnswers500(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	if _, err := s.db.SQL().Exec(`DROP TABLE audit_chain`); err != nil {
		t.Fatal(err)
	}
	r := call(t, srv, http.MethodPost, "/api/v1/enroll-tokens", mustJSON(t, wire.EnrollTokenRequest{Name: "x"}), bearer(s.admin))
	e := wantError(t, r, http.StatusInternalServerError, "internal", "audit trail could not record")
	if strings.Contains(string(r.body), "upk_enroll") || e.Message == "" {
		t.Fatalf("the answer leaked: %s", r.body)
	}
	m := call(t, srv, http.MethodGet, "/metrics", nil, nil)
	if !strings.Contains(string(m.body), "upkeep_audit_failures_total 1") {
		t.Fatal("the failure is not counted")
	}
}

// TestAuditRefusalsBounded: refused calls without a credential are recorded up to the
// per-address allowance; past it they are answered as usual, counted and not recorded.
func TestAuditRefusalsBounded(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	for range httpapi.DefaultAuditRefusalsPerMinute + 10 {
		if r := call(t, srv, http.MethodPost, "/api/v1/tokens", []byte(`{}`), bearer("nope")); r.status != http.StatusUnauthorized {
			t.Fatalf("status %d", r.status)
		}
	}
	if n := len(auditRecords(t, s)); n < httpapi.DefaultAuditRefusalsPerMinute || n > httpapi.DefaultAuditRefusalsPerMinute+1 {
		t.Fatalf("%d refusals recorded", n)
	}
	m := call(t, srv, http.MethodGet, "/metrics", nil, nil)
	if !strings.Contains(string(m.body), "upkeep_audit_dropped_total") || strings.Contains(string(m.body), "upkeep_audit_dropped_total 0") {
		t.Fatal("dropped refusals are not counted")
	}
	// An operator's calls are never dropped.
	if r := call(t, srv, http.MethodPost, "/api/v1/enroll-tokens", mustJSON(t, wire.EnrollTokenRequest{Name: "x"}), bearer(s.admin)); r.status != http.StatusCreated {
		t.Fatalf("enroll token: %d", r.status)
	}
	if rs := auditRecords(t, s); rs[0].Action != "enroll-token.create" {
		t.Fatalf("newest record %+v", rs[0])
	}
}

// BenchmarkAuditedAccept: what recording adds to a state-changing call. Each iteration
// decommissions a device and admits it again (two calls, both recorded), with and without the
// audit trail, on SQLite.
func BenchmarkAuditedAccept(b *testing.B) {
	for _, withAudit := range []bool{false, true} {
		name := "noaudit"
		if withAudit {
			name = "audit"
		}
		b.Run(name, func(b *testing.B) {
			s := newStack(b)
			if !withAudit {
				s.api.Audit = nil
				s.handler = s.api.Handler()
			}
			var gen atomic.Int64
			s.api.Generation = gen.Load
			srv := s.serve()
			d, _ := s.enrolled(srv)
			h := s.handler
			do := func(path string) {
				req := httptest.NewRequest(http.MethodPost, path, nil)
				req.Header.Set("Authorization", "Bearer "+s.admin)
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code >= 300 {
					body, _ := io.ReadAll(w.Body)
					b.Fatalf("%s: %d %s", path, w.Code, body)
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				do("/api/v1/devices/" + d.id + "/decommission")
				do("/api/v1/devices/" + d.id + "/accept?readmit=true")
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(2*b.N), "ns/call")
		})
	}
}

// TestAuditRecordsPanic: a state-changing handler that panics is recorded with the 500 the
// client gets.
func TestAuditRecordsPanic(t *testing.T) {
	s := newStack(t)
	s.api.AdminRoutes = map[string]http.HandlerFunc{"POST /api/v1/ddi/devices": func(http.ResponseWriter, *http.Request) { panic("boom") }}
	s.handler = s.api.Handler()
	srv := s.serve()
	if r := call(t, srv, http.MethodPost, "/api/v1/ddi/devices", []byte(`{}`), bearer(s.admin)); r.status != http.StatusInternalServerError {
		t.Fatalf("panicking handler: %d %s", r.status, r.body)
	}
	if rs := auditRecords(t, s); len(rs) != 1 || rs[0].Action != "ddi.device.create" || rs[0].Outcome != 500 || rs[0].Actor != "admin" {
		t.Fatalf("records: %+v", rs)
	}
}
