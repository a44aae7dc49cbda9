package ddi

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/limit"
	"upkeep.dev/upkeep/wire"
)

// Body limits of the device's writes. SWUpdate's "proceeding" feedback carries dozens of lines
// of its log; longer feedback gets 413.
const (
	MaxFeedbackBody = 128 << 10
	MaxConfigBody   = 16 << 10
)

// base is the DDI path under which every route of a controller lives.
const base = "/{tenant}/controller/v1/{controllerId}"

// Routes returns the DDI routes as ServeMux patterns, to be served as they are (they carry their
// own authentication).
func (s *Service) Routes() map[string]http.Handler {
	return map[string]http.Handler{
		"GET " + base: s.call(0, s.root),
		"GET " + base + "/deploymentBase/{action}":                   s.call(0, s.withDevice(s.deploymentBase)),
		"POST " + base + "/deploymentBase/{action}/feedback":         s.call(MaxFeedbackBody, s.withDevice(s.deploymentFeedback)),
		"GET " + base + "/cancelAction/{action}":                     s.call(0, s.withDevice(s.cancelAction)),
		"POST " + base + "/cancelAction/{action}/feedback":           s.call(MaxFeedbackBody, s.withDevice(s.cancelFeedback)),
		"PUT " + base + "/configData":                                s.call(MaxConfigBody, s.withDevice(s.configData)),
		"GET " + base + "/installedBase/{action}":                    s.call(0, s.withDevice(s.installedBase)),
		"GET " + base + "/confirmationBase":                          s.call(0, s.withDevice(s.confirmationRoot)),
		"GET " + base + "/confirmationBase/{action}":                 s.call(0, s.withDevice(s.confirmationBase)),
		"POST " + base + "/confirmationBase/{action}/feedback":       s.call(MaxFeedbackBody, s.withDevice(s.confirmationFeedback)),
		"GET " + base + "/softwaremodules/{module}/artifacts/{file}": s.call(0, s.withDevice(s.artifact)),
	}
}

// request is an authenticated DDI request.
type request struct {
	id     string // controller id
	how    authKind
	auth   string        // the Authorization header that authenticated it
	base   string        // absolute URL of the controller's base resource, for links
	client string        // source address (limit.ClientKey)
	body   []byte        // a write's body, read before the request took any place
	dev    *fleet.Device // the device as read to check its token for this request; nil: not read
}

type handler func(w http.ResponseWriter, r *http.Request, q *request)

type deviceHandler func(w http.ResponseWriter, r *http.Request, q *request, d *fleet.Device)

// call bounds a DDI request and authenticates it, in this order, as /device/v1 does:
//
//   - a write's body (maxBody > 0) is read in full within BodyTimeout before anything else, so a
//     client trickling its body holds only its own connection (408 after the deadline);
//   - the request takes a place among MaxInFlight;
//   - the tenant and the controller id are checked, then the token, while the request holds a
//     place among its source address's MaxPerIP (checking a target token may read the store:
//     a client guessing tokens for many ids holds only its address's share);
//   - an authenticated request takes a place among its device's MaxPerDevice, and a write one
//     of its device's WritesPerMinute, so that one device cannot take the others' share or
//     write without bound (429 with Retry-After).
func (s *Service) call(maxBody int64, h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body []byte
		if maxBody > 0 {
			var buf bytes.Buffer
			if err := limit.ReadBody(w, r, maxBody, cmp.Or(s.Config.BodyTimeout, limit.DefaultBodyTimeout), &buf); err != nil {
				s.fail(w, r, err)
				return
			}
			body = buf.Bytes()
		}
		max := int64(s.Config.MaxInFlight)
		if max <= 0 {
			max = 4096
		}
		if n := s.inflight.Add(1); n > max {
			s.inflight.Add(-1)
			s.fail(w, r, busy(time.Duration(30+rand.IntN(60))*time.Second, "too many requests in flight; retry later"))
			return
		}
		defer s.inflight.Add(-1)
		tenant, id := r.PathValue("tenant"), r.PathValue("controllerId")
		if !strings.EqualFold(tenant, s.tenant()) {
			s.fail(w, r, apperr.E(apperr.NotFound, "unknown tenant %.64q", tenant))
			return
		}
		if err := ValidControllerID(id); err != nil {
			s.fail(w, r, err)
			return
		}
		q := &request{id: id, auth: r.Header.Get("Authorization"), client: limit.ClientKey(r), body: body}
		if !s.perIP.Acquire(q.client, cmp.Or(s.Config.MaxPerIP, limit.DefaultMaxPerIP)) {
			s.fail(w, r, busy(time.Second, "too many requests from this address in flight; retry later"))
			return
		}
		var err error
		q.how, q.dev, err = s.authenticate(r.Context(), q.auth, id)
		s.perIP.Release(q.client)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if q.how == authNone {
			s.fail(w, r, apperr.E(apperr.Unauthorized, "a valid TargetToken or GatewayToken is required"))
			return
		}
		if !s.perDevice.Acquire(id, cmp.Or(s.Config.MaxPerDevice, limit.DefaultMaxPerDevice)) {
			s.fail(w, r, busy(time.Second, "too many requests of this controller in flight; retry later"))
			return
		}
		defer s.perDevice.Release(id)
		if maxBody > 0 {
			if ok, wait := s.writeRate.Allow(id, cmp.Or(s.Config.WritesPerMinute, DefaultWritesPerMinute), time.Now()); !ok {
				s.fail(w, r, busy(wait, "too many feedback and configData requests from this controller; send again later"))
				return
			}
		}
		pub := s.Config.PublicURL
		if pub == "" {
			scheme := "http"
			if r.TLS != nil {
				scheme = "https"
			}
			pub = scheme + "://" + r.Host
		}
		q.base = strings.TrimSuffix(pub, "/") + "/" + tenant + "/controller/v1/" + id
		h(w, r, q)
	})
}

// withDevice reads (or registers) the device. A pending device may poll and send configData,
// nothing else.
func (s *Service) withDevice(h deviceHandler) handler {
	return func(w http.ResponseWriter, r *http.Request, q *request) {
		d, err := s.device(r.Context(), q)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if d.Status != fleet.StatusAccepted && !strings.HasSuffix(r.URL.Path, "/configData") {
			s.fail(w, r, apperr.E(apperr.NotFound, "device %s is not accepted yet", d.ID))
			return
		}
		h(w, r, q, d)
	}
}

// errorBody is the error shape of hawkBit's API.
type errorBody struct {
	ErrorCode string `json:"errorCode"`
	Message   string `json:"message"`
}

func (s *Service) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := apperr.CodeOf(err)
	status := apperr.HTTPStatus(code)
	if errors.Is(err, errGone) {
		status = http.StatusGone
	}
	if rl := (*retryLater)(nil); errors.As(err, &rl) {
		limit.RetryAfter(w, rl.wait)
	}
	if code == apperr.Internal {
		s.logger().Error("DDI request failed", "path", r.URL.Path, "err", err)
	}
	writeJSON(w, status, errorBody{ErrorCode: "upkeep." + string(code), Message: apperr.Message(err)})
}

// errGone marks an action that is no longer active: its feedback gets 410, as hawkBit gives.
var errGone = errors.New("action is no longer active")

// liveAction is the {action} of a feedback route, which must not be closed (409 otherwise: the
// device's feedback comes too late).
func (s *Service) liveAction(ctx context.Context, r *http.Request, d *fleet.Device) (*Action, error) {
	a, err := s.actionOf(ctx, r, "action", d)
	if err == nil && a.Status == ActionClosed {
		err = gone(a.ID)
	}
	return a, err
}

// answerReport stores a feedback route's fleet report and answers 200, as hawkBit does.
func (s *Service) answerReport(w http.ResponseWriter, r *http.Request, d *fleet.Device, rep wire.Report) {
	if err := s.Fleet.Report(r.Context(), d.ID, rep); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func gone(id int64) error {
	return apperr.Wrap(apperr.Conflict, errGone, fmt.Sprintf("action %d is closed", id))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"errorCode":"upkeep.internal","message":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/hal+json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b) //nolint:errcheck // the client went away
}

// The JSON shapes of DDI v1 (hawkBit's DDI OpenAPI document).
type (
	link struct {
		Href string `json:"href"`
	}
	links map[string]link

	rootBody struct {
		Config struct {
			Polling struct {
				Sleep string `json:"sleep"`
			} `json:"polling"`
		} `json:"config"`
		Links links `json:"_links,omitempty"`
	}

	hashes struct {
		SHA1   string `json:"sha1"`
		MD5    string `json:"md5"`
		SHA256 string `json:"sha256"`
	}
	artifactBody struct {
		Filename string `json:"filename"`
		Hashes   hashes `json:"hashes"`
		Size     int64  `json:"size"`
		Links    links  `json:"_links"`
	}
	chunk struct {
		Part      string         `json:"part"`
		Version   string         `json:"version"`
		Name      string         `json:"name"`
		Artifacts []artifactBody `json:"artifacts"`
	}
	deployment struct {
		Download          string  `json:"download"`
		Update            string  `json:"update"`
		MaintenanceWindow string  `json:"maintenanceWindow,omitempty"`
		Chunks            []chunk `json:"chunks"`
	}
	deploymentBody struct {
		ID           string      `json:"id"`
		Deployment   *deployment `json:"deployment,omitempty"`
		Confirmation *deployment `json:"confirmation,omitempty"`
	}
	cancelBody struct {
		ID           string `json:"id"`
		CancelAction struct {
			StopID string `json:"stopId"`
		} `json:"cancelAction"`
	}
	confirmationRootBody struct {
		AutoConfirm struct {
			Active bool `json:"active"`
		} `json:"autoConfirm"`
		Links links `json:"_links,omitempty"`
	}

	progress struct {
		Cnt int `json:"cnt"`
		Of  int `json:"of"`
	}
	feedbackBody struct {
		Status struct {
			Execution string `json:"execution"`
			Result    struct {
				Finished string    `json:"finished"`
				Progress *progress `json:"progress,omitempty"`
			} `json:"result"`
			Code    *int     `json:"code,omitempty"`
			Details []string `json:"details,omitempty"`
		} `json:"status"`
	}
	confirmationFeedbackBody struct {
		Confirmation string   `json:"confirmation"`
		Code         *int     `json:"code,omitempty"`
		Details      []string `json:"details,omitempty"`
	}
	configBody struct {
		Mode string            `json:"mode,omitempty"`
		Data map[string]string `json:"data"`
	}
)

// Execution statuses and results of feedback.
var (
	executions = []string{"closed", "proceeding", "canceled", "scheduled", "rejected", "resumed", "downloaded", "download"}
	finishes   = []string{"success", "failure", "none"}
)

// pollEntry is a cached answer to a device's poll.
type pollEntry struct {
	version int64 // the director version it was built at
	revs    int64 // the revocation generation it was built at
	at      time.Time
	auth    string
	base    string
	body    []byte
}

func (s *Service) invalidate(id string) { s.polls.Delete(id) }

// root answers a poll. It is the hot path: while the device's director version (from the
// fleet's memory), its token and the link base are unchanged, and for at most CacheFor, the
// previous answer is sent again without reading the database.
func (s *Service) root(w http.ResponseWriter, r *http.Request, q *request) {
	ctx := r.Context()
	revs := s.revocations() // before the device is read: a revocation after it is seen next time
	if v, ok := s.polls.Load(q.id); ok {
		e := v.(*pollEntry)
		if e.auth == q.auth && e.base == q.base && time.Since(e.at) < s.cacheFor() && e.revs == s.revocations() {
			if c, err := s.Fleet.Checkin(ctx, q.id, wire.Checkin{}); err == nil && c.DirectorVersion == e.version {
				w.Header().Set("Content-Type", "application/hal+json")
				w.Header().Set("Content-Length", strconv.Itoa(len(e.body)))
				w.Write(e.body) //nolint:errcheck // the client went away
				return
			}
		}
	}
	d, err := s.device(ctx, q)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	c, err := s.Fleet.Checkin(ctx, d.ID, wire.Checkin{}) // last seen: the health gate counts polls
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if c.DirectorVersion > d.DirectorVersion { // the assignment changed after the device was read
		if d, err = s.device(ctx, q); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	active, installed, err := s.current(ctx, d)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var body rootBody
	body.Config.Polling.Sleep = sleep(s.Config.PollSeconds)
	body.Links = links{}
	if active != nil {
		id := strconv.FormatInt(active.ID, 10)
		p := policyOf(d, active.Target)
		switch {
		case active.Status == ActionCanceling:
			body.Links["cancelAction"] = link{q.base + "/cancelAction/" + id}
		case p.Consent && !active.Confirmed:
			body.Links["confirmationBase"] = link{q.base + "/confirmationBase/" + id + "?c=" + actionHash(active, "")}
		default:
			// Outside its maintenance window the action is held back: not offered at all. (A
			// deployment with update "skip", as hawkBit gives, makes SWUpdate 2022.12 report the
			// action closed with success without installing anything.)
			if _, _, window := s.modes(p); window != "unavailable" {
				body.Links["deploymentBase"] = link{q.base + "/deploymentBase/" + id + "?c=" + actionHash(active, window)}
			}
		}
	}
	if len(d.Attributes) == 0 { // asked for until the device sent its attributes once
		body.Links["configData"] = link{q.base + "/configData"}
	}
	if installed != nil {
		body.Links["installedBase"] = link{q.base + "/installedBase/" + strconv.FormatInt(installed.ID, 10)}
	}
	if len(body.Links) == 0 {
		body.Links = nil
	}
	b, _ := json.Marshal(body)
	if active == nil || active.Status != ActionOpen || !policyOf(d, active.Target).Consent || active.Confirmed {
		// An answer whose maintenance window may open is not cached past a minute boundary;
		// CacheFor (5 s) is short enough.
		s.polls.Store(d.ID, &pollEntry{version: c.DirectorVersion, revs: revs, at: time.Now(), auth: q.auth, base: q.base, body: b})
	}
	w.Header().Set("Content-Type", "application/hal+json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b) //nolint:errcheck // the client went away
}

// actionOf returns the device's action named in the path, or apperr.NotFound.
func (s *Service) actionOf(ctx context.Context, r *http.Request, name string, d *fleet.Device) (*Action, error) {
	id, err := parseActionID(r.PathValue(name))
	if err != nil {
		return nil, err
	}
	return s.Actions.FindAction(ctx, d.ID, id)
}

// deploymentOf builds the deployment of an action.
func (s *Service) deploymentOf(ctx context.Context, q *request, d *fleet.Device, a *Action) (*deployment, error) {
	art, err := s.artifactOf(ctx, a.Target)
	if err != nil {
		if apperr.Is(err, apperr.NotFound) {
			return nil, apperr.E(apperr.NotFound, "the release of action %d is no longer published", a.ID)
		}
		return nil, err
	}
	dep := &deployment{}
	dep.Download, dep.Update, dep.MaintenanceWindow = s.modes(policyOf(d, a.Target))
	href := q.base + "/softwaremodules/" + strconv.FormatInt(a.ID, 10) + "/artifacts/" + art.Filename
	ls := links{}
	if strings.HasPrefix(href, "https://") {
		ls["download"], ls["md5sum"] = link{href}, link{href + ".MD5SUM"}
	} else {
		ls["download-http"], ls["md5sum-http"] = link{href}, link{href + ".MD5SUM"}
	}
	dep.Chunks = []chunk{{Part: "os", Version: art.Custom.Version, Name: art.Custom.Product, Artifacts: []artifactBody{{
		Filename: art.Filename, Size: art.Size, Hashes: hashes{SHA1: art.SHA1, MD5: art.MD5, SHA256: art.SHA256}, Links: ls,
	}}}}
	return dep, nil
}

func (s *Service) deploymentBase(w http.ResponseWriter, r *http.Request, q *request, d *fleet.Device) {
	ctx := r.Context()
	a, err := s.actionOf(ctx, r, "action", d)
	if err == nil && (a.Status == ActionCanceling || a.Result == ResultCanceled) {
		err = apperr.E(apperr.NotFound, "action %d was cancelled", a.ID)
	}
	if err == nil && a.Status == ActionOpen && policyOf(d, a.Target).Consent && !a.Confirmed {
		err = apperr.E(apperr.NotFound, "action %d waits for confirmation (confirmationBase)", a.ID)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	dep, err := s.deploymentOf(ctx, q, d, a)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, deploymentBody{ID: strconv.FormatInt(a.ID, 10), Deployment: dep})
}

func (s *Service) installedBase(w http.ResponseWriter, r *http.Request, q *request, d *fleet.Device) {
	ctx := r.Context()
	a, err := s.actionOf(ctx, r, "action", d)
	if err == nil && (a.Status != ActionClosed || a.Result != ResultSuccess) {
		err = apperr.E(apperr.NotFound, "action %d was not installed", a.ID)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	dep, err := s.deploymentOf(ctx, q, d, a)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, deploymentBody{ID: strconv.FormatInt(a.ID, 10), Deployment: dep})
}

func (s *Service) cancelAction(w http.ResponseWriter, r *http.Request, q *request, d *fleet.Device) {
	a, err := s.actionOf(r.Context(), r, "action", d)
	if err == nil && a.Status != ActionCanceling {
		err = apperr.E(apperr.NotFound, "action %d is not being cancelled", a.ID)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var b cancelBody
	b.ID = strconv.FormatInt(a.ID, 10)
	b.CancelAction.StopID = b.ID
	writeJSON(w, http.StatusOK, b)
}

func (s *Service) confirmationRoot(w http.ResponseWriter, r *http.Request, q *request, d *fleet.Device) {
	var b confirmationRootBody
	active, _, err := s.current(r.Context(), d)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if active != nil && active.Status == ActionOpen && policyOf(d, active.Target).Consent && !active.Confirmed {
		b.Links = links{"confirmationBase": {q.base + "/confirmationBase/" + strconv.FormatInt(active.ID, 10) + "?c=" + actionHash(active, "")}}
	}
	writeJSON(w, http.StatusOK, b)
}

func (s *Service) confirmationBase(w http.ResponseWriter, r *http.Request, q *request, d *fleet.Device) {
	ctx := r.Context()
	a, err := s.actionOf(ctx, r, "action", d)
	if err == nil && (a.Status != ActionOpen || !policyOf(d, a.Target).Consent || a.Confirmed) {
		err = apperr.E(apperr.NotFound, "action %d awaits no confirmation", a.ID)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	dep, err := s.deploymentOf(ctx, q, d, a)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, deploymentBody{ID: strconv.FormatInt(a.ID, 10), Confirmation: dep})
}

// decode parses a JSON body (its size was bounded when it was read). Unknown fields are allowed:
// DDI clients send id, time and other fields this server does not use. One JSON value only.
func decode(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return apperr.Wrap(apperr.Invalid, err, "malformed JSON body: "+err.Error())
	}
	if dec.More() {
		return apperr.E(apperr.Invalid, "malformed JSON body: more than one value")
	}
	return nil
}

// message joins feedback details for the device's event log, error lines first (SWUpdate gives
// the reason for a refused bundle among dozens of log lines; the stored message is cut at 1 KiB).
func message(prefix string, f *feedbackBody) string {
	var b strings.Builder
	b.WriteString(prefix)
	if p := f.Status.Result.Progress; p != nil {
		fmt.Fprintf(&b, " (%d/%d)", p.Cnt, p.Of)
	}
	lines := slices.Clone(f.Status.Details)
	slices.SortStableFunc(lines, func(x, y string) int {
		ex, ey := strings.Contains(strings.ToLower(x), "error"), strings.Contains(strings.ToLower(y), "error")
		switch {
		case ex && !ey:
			return -1
		case ey && !ex:
			return 1
		}
		return 0
	})
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != "" {
			b.WriteString("; ")
			b.WriteString(l)
		}
		if b.Len() > 1024 {
			break
		}
	}
	return b.String()
}

// parseFeedback parses the body of a deployment or cancel feedback: status.execution one of
// executions, status.result.finished success, failure or none (none if absent), at most 256
// detail lines.
func parseFeedback(body []byte) (*feedbackBody, error) {
	var f feedbackBody
	if err := decode(body, &f); err != nil {
		return nil, err
	}
	if !slices.Contains(executions, f.Status.Execution) {
		return nil, apperr.E(apperr.Invalid, "status.execution %.32q: want one of %s", f.Status.Execution, strings.Join(executions, ", "))
	}
	if f.Status.Result.Finished == "" {
		f.Status.Result.Finished = "none"
	}
	if !slices.Contains(finishes, f.Status.Result.Finished) {
		return nil, apperr.E(apperr.Invalid, "status.result.finished %.32q: want success, failure or none", f.Status.Result.Finished)
	}
	if len(f.Status.Details) > 256 {
		return nil, apperr.E(apperr.Invalid, "at most 256 detail lines")
	}
	return &f, nil
}

// parseConfirmation parses the body of a confirmation feedback: confirmed or denied, at most 256
// detail lines.
func parseConfirmation(body []byte) (*confirmationFeedbackBody, error) {
	var f confirmationFeedbackBody
	if err := decode(body, &f); err != nil {
		return nil, err
	}
	if f.Confirmation != "confirmed" && f.Confirmation != "denied" {
		return nil, apperr.E(apperr.Invalid, "confirmation %.32q: want confirmed or denied", f.Confirmation)
	}
	if len(f.Details) > 256 {
		return nil, apperr.E(apperr.Invalid, "at most 256 detail lines")
	}
	return &f, nil
}

// configDataAttrs applies a configData body to a device's attributes and returns the new ones: merge
// (the default) adds and replaces keys, replace sets exactly these, remove deletes the keys
// given. The result follows the enrolment rules (fleet.ValidAttributes).
func configDataAttrs(old map[string]string, body []byte) (map[string]string, error) {
	var c configBody
	if err := decode(body, &c); err != nil {
		return nil, err
	}
	attrs := map[string]string{}
	switch c.Mode {
	case "", "merge":
		for k, v := range old {
			attrs[k] = v
		}
		for k, v := range c.Data {
			attrs[k] = v
		}
	case "replace":
		for k, v := range c.Data {
			attrs[k] = v
		}
	case "remove":
		for k, v := range old {
			if _, ok := c.Data[k]; !ok {
				attrs[k] = v
			}
		}
	default:
		return nil, apperr.E(apperr.Invalid, "mode %.32q: want merge, replace or remove", c.Mode)
	}
	if err := fleet.ValidAttributes(attrs); err != nil {
		return nil, err
	}
	return attrs, nil
}

// parseActionID parses an action id of a path: a positive decimal integer, else apperr.NotFound.
func parseActionID(v string) (int64, error) {
	id, err := strconv.ParseInt(v, 10, 64)
	if err != nil || id <= 0 {
		return 0, apperr.E(apperr.NotFound, "no action %.32q", v)
	}
	return id, nil
}

// close ends an action if it is still active; errGone if it was not.
func (s *Service) close(ctx context.Context, d *fleet.Device, a *Action, result string) error {
	closed := ActionClosed
	ok, err := s.Actions.UpdateAction(ctx, d.ID, a.ID, []string{ActionOpen, ActionCanceling}, ActionUpdate{Status: &closed, Result: &result, At: s.now()})
	if err != nil {
		return err
	}
	if !ok {
		return gone(a.ID)
	}
	s.invalidate(d.ID)
	return nil
}

// deploymentFeedback turns the device's feedback on an action into a fleet report: closed with
// success is a commit of the action's image (the campaign counts it committed, then healthy
// once the device polls past the health gate), closed with failure a fatal install failure
// (it counts against the campaign's failure threshold), the other executions progress events.
func (s *Service) deploymentFeedback(w http.ResponseWriter, r *http.Request, q *request, d *fleet.Device) {
	ctx := r.Context()
	f, err := parseFeedback(q.body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	a, err := s.liveAction(ctx, r, d)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	now := s.now()
	ev := wire.Event{Time: now, Target: a.Target}
	rep := wire.Report{}
	exec, fin := f.Status.Execution, f.Status.Result.Finished
	switch exec {
	case "closed":
		if fin == "failure" {
			if err := s.close(ctx, d, a, ResultFailure); err != nil {
				s.fail(w, r, err)
				return
			}
			ev.Step, ev.Status, ev.Fatal, ev.Message = wire.StepInstall, wire.StatusFailed, true, message("DDI closed/failure", f)
			rep.State = "failed"
		} else { // hawkBit counts closed with any other result as finished
			art, err := s.artifactOf(ctx, a.Target)
			if err != nil {
				s.fail(w, r, err)
				return
			}
			if err := s.close(ctx, d, a, ResultSuccess); err != nil {
				s.fail(w, r, err)
				return
			}
			rep.State = "committed"
			rep.Installed = wire.Installed{Target: a.Target, Version: art.Custom.Version, SecurityVersion: art.Custom.SecurityVersion, SHA256: art.SHA256}
			rep.Events = append(rep.Events, wire.Event{Time: now, Target: a.Target, Step: wire.StepInstall, Status: wire.StatusOK, Message: message("DDI closed/"+fin, f)})
			ev.Step, ev.Status = wire.StepCommit, wire.StatusOK
		}
	case "canceled":
		if err := s.close(ctx, d, a, ResultCanceled); err != nil {
			s.fail(w, r, err)
			return
		}
		ev.Step, ev.Status, ev.Message = wire.StepInstall, "canceled", message("DDI canceled by the device", f)
		rep.State = "idle"
	case "rejected": // hawkBit keeps the action open (a warning)
		ev.Step, ev.Status, ev.Message = wire.StepInstall, wire.StatusWaiting, message("DDI rejected by the device", f)
		rep.State = "waiting"
	case "scheduled":
		ev.Step, ev.Status, ev.Message = wire.StepInstall, wire.StatusWaiting, message("DDI scheduled", f)
		rep.State = "waiting"
	case "download":
		ev.Step, ev.Status, ev.Message = wire.StepDownload, wire.StatusStarted, message("DDI download", f)
		rep.State = "downloading"
	case "downloaded":
		ev.Step, ev.Status, ev.Message = wire.StepDownload, wire.StatusOK, message("DDI downloaded", f)
		rep.State = "downloaded"
	default: // proceeding, resumed
		ev.Step, ev.Status, ev.Message = wire.StepInstall, wire.StatusStarted, message("DDI "+exec, f)
		rep.State = "installing"
	}
	rep.Events = append(rep.Events, ev)
	s.answerReport(w, r, d, rep)
}

// cancelFeedback takes the device's answer to a cancel: canceled or closed ends the action; a
// rejection (or a failure to cancel) leaves it being cancelled, and the device's later feedback
// on the deployment still counts.
func (s *Service) cancelFeedback(w http.ResponseWriter, r *http.Request, q *request, d *fleet.Device) {
	ctx := r.Context()
	f, err := parseFeedback(q.body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	a, err := s.liveAction(ctx, r, d)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ev := wire.Event{Time: s.now(), Target: a.Target, Step: wire.StepInstall}
	switch exec, fin := f.Status.Execution, f.Status.Result.Finished; {
	case exec == "canceled" || exec == "closed" && fin != "failure":
		if err := s.close(ctx, d, a, ResultCanceled); err != nil {
			s.fail(w, r, err)
			return
		}
		ev.Status, ev.Message = "canceled", message("DDI cancel confirmed", f)
	case exec == "rejected" || exec == "closed":
		ev.Status, ev.Message = "cancel_rejected", message("DDI cancel rejected", f)
	default:
		ev.Status, ev.Message = "canceling", message("DDI cancel "+exec, f)
	}
	s.answerReport(w, r, d, wire.Report{State: "idle", Events: []wire.Event{ev}})
}

// confirmationFeedback takes the owner's answer: confirmed lets the deployment through, denied
// leaves the action waiting, as hawkBit does.
func (s *Service) confirmationFeedback(w http.ResponseWriter, r *http.Request, q *request, d *fleet.Device) {
	ctx := r.Context()
	f, err := parseConfirmation(q.body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	a, err := s.liveAction(ctx, r, d)
	if err == nil && a.Status != ActionOpen {
		err = apperr.E(apperr.NotFound, "action %d awaits no confirmation", a.ID)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	fb := &feedbackBody{}
	fb.Status.Details = f.Details
	ev := wire.Event{Time: s.now(), Target: a.Target, Step: wire.StepInstall}
	state := "waiting"
	if f.Confirmation == "confirmed" {
		yes := true
		if _, err := s.Actions.UpdateAction(ctx, d.ID, a.ID, []string{ActionOpen}, ActionUpdate{Confirmed: &yes, At: s.now()}); err != nil {
			s.fail(w, r, err)
			return
		}
		s.invalidate(d.ID)
		ev.Status, ev.Message, state = wire.StatusStarted, message("DDI confirmed by the owner", fb), "confirmed"
	} else {
		ev.Status, ev.Message = wire.StatusWaiting, message("DDI denied by the owner", fb)
	}
	s.answerReport(w, r, d, wire.Report{State: state, Events: []wire.Event{ev}})
}

// configData stores the device's attributes (hawkBit's controller attributes), which groups and
// campaign filters then select on: merge (the default) adds and replaces keys, replace sets
// exactly these, remove deletes the keys given.
func (s *Service) configData(w http.ResponseWriter, r *http.Request, q *request, d *fleet.Device) {
	attrs, err := configDataAttrs(d.Attributes, q.body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.Devices.UpdateDevice(r.Context(), d.ID, fleet.DeviceUpdate{Attributes: &attrs}); err != nil {
		s.fail(w, r, err)
		return
	}
	s.invalidate(d.ID)
	w.WriteHeader(http.StatusOK)
}

// artifact serves an action's artifact (with Range and an ETag, the SHA-1 that DDI clients
// know) or its .MD5SUM, only to the device the action belongs to.
func (s *Service) artifact(w http.ResponseWriter, r *http.Request, q *request, d *fleet.Device) {
	ctx := r.Context()
	a, err := s.actionOf(ctx, r, "module", d)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	art, err := s.artifactOf(ctx, a.Target)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	file := r.PathValue("file")
	switch file {
	case art.Filename + ".MD5SUM":
		b := []byte(art.MD5 + "  " + art.Filename)
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Disposition", "attachment; filename="+art.Filename+".MD5SUM")
		serveFile(w, r, bytes.NewReader(b), "")
	case art.Filename:
		rd, _, err := s.Blobs.Open(ctx, art.SHA256)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		defer rd.Close()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", "attachment; filename="+art.Filename)
		serveFile(w, r, rd, `"`+art.SHA1+`"`)
	default:
		s.fail(w, r, apperr.E(apperr.NotFound, "action %d has no artifact %.64q", a.ID, file))
	}
}

// serveFile serves an artifact with Range and If-Range (http.ServeContent). A Range header of
// more than limit.MaxRanges ranges is ignored and the whole file is served, as /repo/image does:
// RFC 9110 14.2 allows it, and a multipart answer to many tiny ranges would be many times the
// file's size.
func serveFile(w http.ResponseWriter, r *http.Request, content io.ReadSeeker, etag string) {
	if limit.TooManyRanges(r.Header.Get("Range")) {
		r.Header.Del("Range")
	}
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	http.ServeContent(w, r, "", time.Time{}, content)
}
