package httpapi

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/audit"
	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/wire"
)

// auditActions names the action of every recorded route: each state-changing /api/v1 route,
// login and logout, and the reads that hand out a credential. TestAuditActions fails when a
// registered route that is recorded has no name here. "rollout.*" takes the {action} path value.
var auditActions = map[string]string{
	"POST /api/v1/login":                            "login",
	"POST /api/v1/logout":                           "logout",
	"GET /api/v1/oidc/callback":                     "login.sso",
	"POST /api/v1/session/token":                    "token.personal.create",
	"POST /api/v1/session/tokens/{id}/revoke":       "token.personal.revoke",
	"POST /api/v1/users":                            "user.add",
	"POST /api/v1/users/{name}/disable":             "user.disable",
	"PUT /api/v1/users/{name}/role":                 "user.role",
	"PUT /api/v1/users/{name}/password":             "user.password",
	"POST /api/v1/tokens":                           "token.create",
	"POST /api/v1/tokens/{id}/revoke":               "token.revoke",
	"POST /api/v1/enroll-tokens":                    "enroll-token.create",
	"POST /api/v1/enroll-tokens/{id}/revoke":        "enroll-token.revoke",
	"DELETE /api/v1/devices":                        "device.remove",
	"POST /api/v1/devices/{id}/accept":              "device.accept",
	"POST /api/v1/devices/{id}/reject":              "device.reject",
	"POST /api/v1/devices/{id}/decommission":        "device.decommission",
	"PUT /api/v1/blobs/{sha256}":                    "blob.upload",
	"POST /api/v1/releases":                         "release.publish",
	"POST /api/v1/deltas":                           "release.deltas",
	"POST /api/v1/deltas/generate":                  "release.deltas.generate",
	"POST /api/v1/tenants":                          "tenant.add",
	"POST /api/v1/webhooks":                         "webhook.create",
	"DELETE /api/v1/webhooks/{id}":                  "webhook.delete",
	"POST /api/v1/webhooks/{id}/test":               "webhook.test",
	"POST /api/v1/releases/check":                   "release.check",
	"PUT /api/v1/releases/{product}/{version}/sbom": "release.sbom",
	"POST /api/v1/deployments":                      "deploy",
	"POST /api/v1/rollouts":                         "rollout.create",
	"POST /api/v1/rollouts/{id}/{action}":           "rollout.*",
	"PUT /api/v1/groups/{name}":                     "group.put",
	"DELETE /api/v1/groups/{name}":                  "group.delete",
	"POST /api/v1/groups/{name}/devices":            "group.devices",
	"PUT /api/v1/products/{name}/policy":            "product.policy",
	"PUT /api/v1/products/{name}/vex":               "product.vex",
	"POST /api/v1/advisories":                       "advisories.import",
	"POST /api/v1/waivers":                          "waiver.create",
	"POST /api/v1/waivers/{id}/revoke":              "waiver.revoke",
	"PUT /api/v1/image/root":                        "image.root.rotate",
	"PUT /api/v1/image/targets":                     "image.targets.resign",
	"PUT /api/v1/image/delegations":                 "image.delegations",
	"PUT /api/v1/director/root":                     "director.root.rotate",
	"POST /api/v1/ddi/devices":                      "ddi.device.create",
	"POST /api/v1/ddi/devices/{id}/token":           "ddi.token.rotate",
	"GET /api/v1/ddi/devices/{id}/token":            "ddi.token.read",
	// The console's forms: the same action names as the API calls they stand for.
	"POST /login":                  "login",
	"POST /logout":                 "logout",
	"POST /devices/{id}/{action}":  "device.*",
	"POST /rollouts/new":           "rollout.create",
	"POST /rollouts/{id}/{action}": "rollout.*",
	// Products and administration pages (console_catalog.go, console_admin.go).
	"POST /products/{name}/policy":          "product.policy",
	"POST /admin/users":                     "user.add",
	"POST /admin/users/{name}/role":         "user.role",
	"POST /admin/users/{name}/disable":      "user.disable",
	"POST /admin/tokens":                    "token.create",
	"POST /admin/tokens/{id}/revoke":        "token.revoke",
	"POST /admin/enroll-tokens":             "enroll-token.create",
	"POST /admin/enroll-tokens/{id}/revoke": "enroll-token.revoke",
	"POST /admin/webhooks":                  "webhook.create",
	"POST /admin/webhooks/{id}/delete":      "webhook.delete",
	"POST /admin/webhooks/{id}/test":        "webhook.test",
}

// recorded reports whether calls of a route pattern go into the audit trail: every method but
// GET, HEAD and OPTIONS, and the reads auditActions names.
func recorded(pattern string) bool {
	method, _, _ := strings.Cut(pattern, " ")
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		_, ok := auditActions[pattern]
		return ok
	}
	return true
}

var (
	pathValue  = regexp.MustCompile(`\{([A-Za-z0-9_]+)(\.\.\.)?\}`)
	actionWord = regexp.MustCompile(`^[a-z][a-z-]{0,31}$`)
)

// auditRoute is what the recorder knows of a route before any call: its action name and the
// names of its path values.
type auditRoute struct {
	action string
	values []string
}

func newAuditRoute(pattern string) auditRoute {
	rt := auditRoute{action: auditActions[pattern]}
	if rt.action == "" { // a route added without a name: its method and literal path segments
		method, path, _ := strings.Cut(pattern, " ")
		var parts []string
		for _, seg := range strings.Split(strings.TrimPrefix(path, "/api/v1/"), "/") {
			if seg != "" && !strings.HasPrefix(seg, "{") {
				parts = append(parts, seg)
			}
		}
		rt.action = strings.Join(append(parts, strings.ToLower(method)), ".")
	}
	for _, m := range pathValue.FindAllStringSubmatch(pattern, -1) {
		rt.values = append(rt.values, m[1])
	}
	return rt
}

// actionTarget names a call: the action, with "*" replaced by the {action} path value, and the
// target, the other path values joined with "/".
func (rt auditRoute) actionTarget(r *http.Request) (action, target string) {
	action = rt.action
	var vals []string
	for _, name := range rt.values {
		v := r.PathValue(name)
		if name == "action" && strings.HasSuffix(action, ".*") {
			if !actionWord.MatchString(v) {
				v = "unknown"
			}
			action = strings.TrimSuffix(action, "*") + v
			continue
		}
		vals = append(vals, v)
	}
	return action, strings.Join(vals, "/")
}

// bufferedWriter holds a recorded call's answer until its record is stored. Answers of
// state-changing calls are small JSON documents.
type bufferedWriter struct {
	w      http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (b *bufferedWriter) Header() http.Header { return b.w.Header() }

func (b *bufferedWriter) WriteHeader(code int) {
	if b.status == 0 {
		b.status = code
	}
}

func (b *bufferedWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}

// DefaultAuditRefusalsPerMinute bounds how many refused calls without a valid credential one
// source address (IPv6: its /64) gets recorded per minute; beyond it they are answered as usual,
// not recorded, and counted (upkeep_audit_dropped_total), so that nobody without a credential
// can grow the trail at will.
const DefaultAuditRefusalsPerMinute = 60

// auditWriteTimeout bounds the write of one record; the client leaving does not cancel it.
const auditWriteTimeout = 5 * time.Second

// record wraps a recorded route: the call runs with an audit.Note in its context, its answer is
// held back, the record is appended, and only then is the answer sent. If the record cannot be
// stored the client gets 500 instead of the answer (the call may have taken effect: the message
// says so), the failure is logged at error level and counted (upkeep_audit_failures_total).
func (s *Server) record(pattern string, h http.Handler) http.Handler {
	rt := newAuditRoute(pattern)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, note := audit.WithNote(r.Context())
		r = r.WithContext(ctx)
		bw := &bufferedWriter{w: w}
		panicked := serveCatching(h, bw, r)
		if panicked != nil { // recorded as the 500 the recoverer will answer
			bw.status = http.StatusInternalServerError
			defer panic(panicked)
		}
		if bw.status == 0 {
			bw.status = http.StatusOK
		}
		action, target := rt.actionTarget(r)
		if t := note.Target(); t != "" {
			target = t
		}
		rec := &audit.Record{Time: s.now(), Action: action, Target: target, Detail: note.Detail(), IP: clientKey(r),
			UserAgent: r.Header.Get("User-Agent"), Outcome: bw.status}
		rec.ActorType, rec.Actor, rec.ActorID = note.Actor()
		authenticated := rec.ActorType == audit.ActorToken || (rec.ActorType == audit.ActorUser && rec.ActorID != "")
		if rec.ActorType == "" {
			rec.ActorType = audit.ActorAnonymous
		}
		if !authenticated && bw.status >= 400 {
			if ok, _ := s.auditRefusals.allow(clientKey(r), DefaultAuditRefusalsPerMinute, s.now()); !ok {
				s.Metrics.auditDropped.Inc()
				if panicked == nil {
					send(w, bw)
				}
				return
			}
		}
		wctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), auditWriteTimeout)
		defer cancel()
		err := s.Audit.AppendRecord(wctx, rec)
		if err != nil {
			s.Metrics.auditFailures.Inc()
			s.logger().Error("audit record not stored", LogPath, r.URL.Path, "action", action, "actor", rec.Actor, LogStatus, bw.status, LogErr, err)
		}
		switch {
		case panicked != nil:
			return // the deferred panic reaches the recoverer, which answers 500
		case err != nil:
			for k := range w.Header() {
				w.Header().Del(k)
			}
			writeJSON(w, http.StatusInternalServerError, wire.Error{Code: string(apperr.Internal),
				Message: "the audit trail could not record this call, which may have taken effect: check its result before trying again"})
			return
		}
		send(w, bw)
	})
}

// serveCatching serves the request and returns what the handler panicked with, if it did.
func serveCatching(h http.Handler, w http.ResponseWriter, r *http.Request) (panicked any) {
	defer func() { panicked = recover() }()
	h.ServeHTTP(w, r)
	return nil
}

func send(w http.ResponseWriter, bw *bufferedWriter) {
	w.WriteHeader(bw.status)
	w.Write(bw.body.Bytes()) //nolint:errcheck // the client went away
}

func (s *Server) auditRoutes(mux *router) {
	mux.api("GET /api/v1/audit", auth.PermAuditRead, s.listAudit)
	mux.api("GET /api/v1/audit/export", auth.PermAuditRead, s.exportAudit)
	mux.api("GET /api/v1/audit/verify", auth.PermAuditRead, s.verifyAudit)
}

func recordToWire(r *audit.Record) wire.AuditRecord {
	return wire.AuditRecord{Seq: r.Seq, Time: r.Time, ActorType: r.ActorType, Actor: r.Actor, ActorID: r.ActorID, Action: r.Action, Target: r.Target,
		Detail: r.Detail, IP: r.IP, UserAgent: r.UserAgent, Outcome: r.Outcome, PrevHash: r.PrevHash, Hash: r.Hash}
}

func chainToWire(c audit.Chain) wire.AuditChain {
	return wire.AuditChain{CheckpointSeq: c.CheckpointSeq, CheckpointHash: c.CheckpointHash, HeadSeq: c.HeadSeq, HeadHash: c.HeadHash}
}

var (
	auditActionFilter  = regexp.MustCompile(`^[a-z][a-z0-9.-]{0,63}$`)
	auditOutcomeFilter = regexp.MustCompile(`^(ok|failed|denied|[1-5][0-9][0-9])$`)
)

// ParseAuditFilter reads the query of GET /api/v1/audit: actor, action, target, outcome (ok,
// failed, denied or a status), since and until (RFC 3339), before (a sequence number) and limit.
func ParseAuditFilter(q map[string][]string) (audit.Filter, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	f := audit.Filter{Actor: get("actor"), Action: get("action"), Target: get("target"), Outcome: get("outcome")}
	switch {
	case len(f.Actor) > audit.MaxActor || len(f.Target) > audit.MaxTarget:
		return f, apperr.E(apperr.Invalid, "actor or target filter too long")
	case f.Action != "" && !auditActionFilter.MatchString(f.Action):
		return f, apperr.E(apperr.Invalid, "action %.64q: an action name such as device.accept, or its first part (device)", f.Action)
	case f.Outcome != "" && !auditOutcomeFilter.MatchString(f.Outcome):
		return f, apperr.E(apperr.Invalid, "outcome %.16q: ok, failed, denied or an HTTP status", f.Outcome)
	}
	for _, t := range []struct {
		key string
		to  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if v := get(t.key); v != "" {
			at, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return f, apperr.E(apperr.Invalid, "%s %.40q: want an RFC 3339 time", t.key, v)
			}
			*t.to = at
		}
	}
	for _, n := range []struct {
		key string
		to  *int64
	}{{"before", &f.Before}} {
		if v := get(n.key); v != "" {
			x, err := strconv.ParseInt(v, 10, 64)
			if err != nil || x < 0 {
				return f, apperr.E(apperr.Invalid, "%s %.24q: want a sequence number", n.key, v)
			}
			*n.to = x
		}
	}
	if v := get("limit"); v != "" {
		x, err := strconv.Atoi(v)
		if err != nil || x < 1 || x > audit.MaxLimit {
			return f, apperr.E(apperr.Invalid, "limit %.24q: want 1 to %d", v, audit.MaxLimit)
		}
		f.Limit = x
	}
	return f, nil
}

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) {
	if s.Audit == nil {
		s.fail(w, r, apperr.E(apperr.Unavailable, "no audit trail on this server"))
		return
	}
	f, err := ParseAuditFilter(r.URL.Query())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	limit := f.Limit
	if limit == 0 {
		limit, f.Limit = 100, 100
	}
	rs, err := s.Audit.FindRecords(r.Context(), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := wire.AuditPage{Records: make([]wire.AuditRecord, len(rs))}
	for i, rec := range rs {
		out.Records[i] = recordToWire(rec)
	}
	if len(rs) == limit && rs[len(rs)-1].Seq > 1 {
		out.Next = rs[len(rs)-1].Seq
	}
	writeJSON(w, http.StatusOK, out)
}

// exportAudit streams the whole kept chain in order, as JSON (wire.AuditExport: the chain's
// state first, so that a client verifies from the checkpoint) or CSV. An error after the first
// byte aborts the connection, so a client never takes a cut export for a whole one.
func (s *Server) exportAudit(w http.ResponseWriter, r *http.Request) {
	if s.Audit == nil {
		s.fail(w, r, apperr.E(apperr.Unavailable, "no audit trail on this server"))
		return
	}
	format := r.URL.Query().Get("format")
	if format == "" {
		format = "json"
	}
	if format != "json" && format != "csv" {
		s.fail(w, r, apperr.E(apperr.Invalid, "format %.16q: json or csv", format))
		return
	}
	started := false
	var start func(audit.Chain) error
	var each func(*audit.Record) error
	var finish func() error
	if format == "json" {
		enc := json.NewEncoder(w)
		first := true
		start = func(c audit.Chain) error {
			started = true
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Disposition", `attachment; filename="audit.json"`)
			b, _ := json.Marshal(chainToWire(c))
			_, err := w.Write(append(append([]byte(`{"chain":`), b...), []byte(`,"records":[`+"\n")...))
			return err
		}
		each = func(rec *audit.Record) error {
			if !first {
				if _, err := w.Write([]byte(",")); err != nil {
					return err
				}
			}
			first = false
			return enc.Encode(recordToWire(rec))
		}
		finish = func() error { _, err := w.Write([]byte("]}\n")); return err }
	} else {
		cw := csv.NewWriter(w)
		start = func(audit.Chain) error {
			started = true
			w.Header().Set("Content-Type", "text/csv; charset=utf-8")
			w.Header().Set("Content-Disposition", `attachment; filename="audit.csv"`)
			return cw.Write(wire.AuditCSVHeader)
		}
		each = func(rec *audit.Record) error {
			return cw.Write([]string{strconv.FormatInt(rec.Seq, 10), rec.Time.Format(time.RFC3339Nano), rec.ActorType, csvCell(rec.Actor), rec.ActorID, rec.Action,
				csvCell(rec.Target), csvCell(rec.Detail), rec.IP, csvCell(rec.UserAgent), strconv.Itoa(rec.Outcome), rec.PrevHash, rec.Hash})
		}
		finish = func() error { cw.Flush(); return cw.Error() }
	}
	err := s.Audit.ExportRecords(r.Context(), start, each)
	if err == nil {
		err = finish()
	}
	if err != nil {
		if !started {
			s.fail(w, r, err)
			return
		}
		if r.Context().Err() == nil {
			s.logger().Error("audit export failed", LogErr, err)
		}
		panic(http.ErrAbortHandler)
	}
}

// csvCell keeps a spreadsheet from taking a cell that a client chose (a user agent, a login
// name) for a formula: such a cell gets a leading apostrophe. The JSON export is the one to
// verify; the CSV is for reading.
func csvCell(v string) string {
	if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
		return "'" + v
	}
	return v
}

func (s *Server) verifyAudit(w http.ResponseWriter, r *http.Request) {
	if s.Audit == nil {
		s.fail(w, r, apperr.E(apperr.Unavailable, "no audit trail on this server"))
		return
	}
	c, n, err := audit.VerifyStore(r.Context(), s.Audit)
	out := wire.AuditVerification{OK: err == nil, Records: n, Chain: chainToWire(c)}
	var be *audit.BrokenError
	switch {
	case errors.As(err, &be):
		out.BrokenSeq, out.Reason = be.Seq, be.Reason
		s.logger().Error("audit chain broken", "seq", be.Seq, "reason", be.Reason, "actor", actorOf(r))
	case err != nil:
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}
