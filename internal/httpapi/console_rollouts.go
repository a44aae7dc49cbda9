package httpapi

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/audit"
	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/chart"
	"upkeep.dev/upkeep/internal/console"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/rollout"
	"upkeep.dev/upkeep/wire"
)

// Campaign pages and their event stream.
const (
	rolloutListShow = 100 // campaigns listed, newest first
	// A campaign page's event stream: checked every streamEvery, a heartbeat comment after
	// streamHeartbeat of silence, the credential and its role checked every
	// streamSessionEvery, at most streamMax long (the browser reconnects), at most
	// streamsPerSession open per session or token and MaxStreams on the server.
	streamEvery        = time.Second
	streamHeartbeat    = 15 * time.Second
	streamSessionEvery = 30 * time.Second
	streamMax          = time.Hour
	streamsPerSession  = 4
	timelineShow       = 50
	// allStreams is the perKey key counting every open event stream of the server.
	allStreams = "*"
)

// DefaultMaxStreams bounds the console's event streams open on a server (Server.MaxStreams):
// each reads its campaign's status every second.
const DefaultMaxStreams = 256

func (s *Server) rolloutPages(mux *router) {
	mux.page("GET /rollouts", auth.PermRolloutsRead, s.rolloutList)
	mux.page("GET /rollouts/new", auth.PermDeploy, s.rolloutNew)
	mux.page("POST /rollouts/new", auth.PermDeploy, s.rolloutCreate)
	mux.page("GET /rollouts/count", auth.PermDeploy, s.rolloutCount)
	mux.page("GET /rollouts/{id}", auth.PermRolloutsRead, s.rolloutPage)
	mux.page("GET /rollouts/{id}/events", auth.PermRolloutsRead, s.rolloutEvents)
	mux.page("GET /rollouts/{id}/{action}", auth.PermDeploy, s.confirmRolloutAction)
	mux.page("POST /rollouts/{id}/{action}", auth.PermDeploy, s.rolloutActionForm)
}

// noRollouts answers a campaign page on a server without campaigns.
func (s *Server) noRollouts(w http.ResponseWriter, r *http.Request) bool {
	if s.Rollouts != nil {
		return false
	}
	s.pageFail(w, r, apperr.E(apperr.NotFound, "rollouts are not configured on this server"))
	return true
}

// rolloutList lists campaigns, newest first, optionally of one state, a page at a time (keyset:
// the last campaign's creation time and id), with their progress counted in one query.
func (s *Server) rolloutList(w http.ResponseWriter, r *http.Request) {
	if s.noRollouts(w, r) {
		return
	}
	q := r.URL.Query()
	p := rollout.CampaignPage{Limit: rolloutListShow}
	state := q.Get("state")
	if state != "" {
		p.States = []string{state}
	}
	if q.Has("after") {
		at, err := time.Parse(time.RFC3339Nano, q.Get("after"))
		if err != nil {
			s.pageFail(w, r, apperr.E(apperr.Invalid, "after %.40q: want a time (RFC 3339)", q.Get("after")))
			return
		}
		p.After = &rollout.CampaignCursor{CreatedAt: at, ID: q.Get("after_id")}
	}
	cs, total, err := s.Rollouts.PageCampaigns(r.Context(), p)
	if err != nil {
		s.pageFail(w, r, err)
		return
	}
	v := console.RolloutList{State: state, Total: total, CanCreate: can(r, auth.PermDeploy),
		States: []string{rollout.StateRunning, rollout.StatePaused, rollout.StateScheduled, rollout.StateCreated, rollout.StateCompleted, rollout.StateCancelled}}
	rows, err := s.campaignRows(r.Context(), cs)
	if err != nil {
		s.pageFail(w, r, err)
		return
	}
	v.Rows = rows
	base := url.Values{}
	if state != "" {
		base.Set("state", state)
	}
	if p.After != nil {
		v.First = "rollouts"
		if len(base) > 0 {
			v.First += "?" + base.Encode()
		}
	}
	if len(cs) == p.Limit {
		last := cs[len(cs)-1]
		base.Set("after", last.CreatedAt.UTC().Format(time.RFC3339Nano))
		base.Set("after_id", last.ID)
		v.Next = "rollouts?" + base.Encode()
	}
	s.render(w, r, http.StatusOK, "rollouts", s.layout(r, "Rollouts", "rollouts"), v)
}

// campaignView is a campaign's page, from its status.
func (s *Server) campaignView(r *http.Request, st *rollout.Status) console.Campaign {
	c := st.Campaign
	v := console.Campaign{CampaignRow: campaignRow(c, st.Waves), Target: c.Target, WaveSpec: c.WaveSpec, HealthGate: c.HealthGate.String(),
		Window: c.Window, Days: c.Days, Consent: c.Consent, Dynamic: c.Dynamic, Stale: c.Stale,
		SuccessThreshold: console.Percent(int(c.SuccessThreshold*1000), 1000), FailureThreshold: console.Percent(int(c.FailureThreshold*1000), 1000),
		Live: c.State != rollout.StateCompleted && c.State != rollout.StateCancelled, Stream: "rollouts/" + url.PathEscape(c.ID) + "/events"}
	v.Mode = "forced"
	if c.Consent {
		v.Mode = "soft (owner's consent)"
	}
	prev := 0
	for i, k := range st.Waves {
		size := 0
		if i < len(c.Waves) {
			size = c.Waves[i] - prev
			prev = c.Waves[i]
		}
		wr := console.WaveRow{N: i + 1, Size: size, Released: i <= c.Wave, Pending: k[rollout.MemberPending], Assigned: k[rollout.MemberAssigned],
			Waiting: k[rollout.MemberWaiting], Committed: k[rollout.MemberCommitted], Healthy: k[rollout.MemberHealthy], Failed: k[rollout.MemberFailed],
			TimedOut: k[rollout.MemberTimedOut], Superseded: k[rollout.MemberSuperseded], Cancelled: k[rollout.MemberCancelled]}
		wr.Finished = wr.Healthy + wr.Failed + wr.TimedOut + wr.Superseded + wr.Cancelled
		v.WaveRows = append(v.WaveRows, wr)
	}
	for _, m := range st.Failed {
		v.FailedMembers = append(v.FailedMembers, console.Member{DeviceID: m.DeviceID, Status: m.Status, Detail: m.Detail, Wave: m.Wave + 1, Since: m.Since})
	}
	for _, m := range st.Waiting {
		v.Waiting = append(v.Waiting, console.Member{DeviceID: m.DeviceID, Status: m.Status, Detail: m.Detail, Wave: m.Wave + 1, Since: m.Since})
	}
	tl := st.Timeline
	if len(tl) > timelineShow {
		tl = tl[len(tl)-timelineShow:]
	}
	for i := len(tl) - 1; i >= 0; i-- { // newest first
		e := tl[i]
		v.Timeline = append(v.Timeline, console.TimelineEntry{Time: e.Time, Actor: e.Actor, Action: e.Action, Detail: e.Detail})
	}
	if st.Download.Devices > 0 {
		v.Downloaded = fmt.Sprintf("%d devices downloaded %s for images of %s", st.Download.Devices, console.Size(st.Download.Bytes), console.Size(st.Download.ImageBytes))
	}
	v.Chart = campaignChart(st, s.now())
	if can(r, auth.PermDeploy) {
		for _, a := range []string{"start", "pause", "resume", "cancel"} {
			if _, err := rollout.Transition(c.State, a); err == nil {
				v.Actions = append(v.Actions, console.Link{Label: actionLabel(a), Href: "rollouts/" + url.PathEscape(c.ID) + "/" + a, Danger: a == "cancel"})
			}
		}
	}
	return v
}

// chartPoints is how many instants the campaign chart samples.
const chartPoints = 60

// campaignChart draws a campaign's members by state over time, stacked: healthy and failed as
// each member reached that state, the rest still under way. Empty before the campaign starts.
func campaignChart(st *rollout.Status, now time.Time) template.HTML {
	c := st.Campaign
	if c.Wave < 0 {
		return ""
	}
	total := 0
	for _, k := range st.Waves {
		total += k.Total()
	}
	end := now
	if c.State == rollout.StateCompleted || c.State == rollout.StateCancelled {
		end = c.UpdatedAt
	}
	start := c.CreatedAt
	if !end.After(start) {
		end = start.Add(time.Second)
	}
	healthy := slices.SortedFunc(slices.Values(st.Healthy), func(a, b time.Time) int { return a.Compare(b) })
	failed := make([]time.Time, 0, len(st.Failed))
	for _, m := range st.Failed {
		failed = append(failed, m.Since)
	}
	slices.SortFunc(failed, func(a, b time.Time) int { return a.Compare(b) })
	upTo := func(ts []time.Time, t time.Time) int {
		n, _ := slices.BinarySearchFunc(ts, t, func(a, b time.Time) int {
			if a.After(b) {
				return 1
			}
			return -1
		})
		return n
	}
	for _, ts := range [][]time.Time{healthy, failed} { // a member's change may be stored just after the campaign's
		if len(ts) > 0 && ts[len(ts)-1].After(end) {
			end = ts[len(ts)-1]
		}
	}
	var h, f, rest []chart.Point
	step := end.Sub(start) / chartPoints
	for i := 0; i <= chartPoints; i++ {
		t := start.Add(step * time.Duration(i))
		if i == chartPoints {
			t = end
		}
		nh, nf := upTo(healthy, t), upTo(failed, t)
		h = append(h, chart.Point{T: t, V: float64(nh)})
		f = append(f, chart.Point{T: t, V: float64(nf)})
		rest = append(rest, chart.Point{T: t, V: float64(max(total-nh-nf, 0))})
	}
	return chart.Time(chart.TimeChart{Title: "Members by state over time", Desc: fmt.Sprintf("%d members of campaign %s: healthy, failed and the others over time", total, c.ID),
		Series: []chart.Series{{Name: "healthy", Points: h, Color: "#009e73"}, {Name: "failed", Points: f, Color: "#d55e00"}, {Name: "under way or pending", Points: rest, Color: "#999999"}},
		Area:   true, Stacked: true, Unit: "devices", ID: "members-" + c.ID})
}

// rolloutPage shows a campaign: its settings, progress per wave (followed live over its event
// stream while it runs), failed and waiting members, timeline, and the actions the role may take.
func (s *Server) rolloutPage(w http.ResponseWriter, r *http.Request) {
	if s.noRollouts(w, r) {
		return
	}
	st, err := s.Rollouts.Status(r.Context(), r.PathValue("id"))
	if err != nil {
		s.pageFail(w, r, err)
		return
	}
	v := s.campaignView(r, st)
	s.render(w, r, http.StatusOK, "rollout", s.layout(r, "Campaign "+st.Campaign.ID, "rollouts"), v)
}

// streamKey names who holds an event stream: the session, or the token.
func streamKey(p *principal) string {
	if p.Session != nil { // never allStreams: an id is not "*"
		return "s:" + p.Session.ID
	}
	return "t:" + p.Token.ID
}

// rolloutEvents streams a campaign's progress as server-sent events: an "progress" event with
// the progress fragment each time it changes, a comment as heartbeat, and "end" when the
// campaign ends (the page closes the stream on it). The stream also ends when the session
// does, after streamMax, or when the server stops; each session may hold streamsPerSession.
func (s *Server) rolloutEvents(w http.ResponseWriter, r *http.Request) {
	if s.noRollouts(w, r) {
		return
	}
	p := principalOf(r)
	key := streamKey(p)
	if !s.consoleStreams.acquire(key, streamsPerSession) {
		s.pageFail(w, r, apperr.E(apperr.Busy, "too many event streams open for this session: close some console tabs"))
		return
	}
	defer s.consoleStreams.release(key)
	if !s.consoleStreams.acquire(allStreams, cmp.Or(int(s.maxStreams.Load()), s.MaxStreams, DefaultMaxStreams)) {
		s.pageFail(w, r, apperr.E(apperr.Busy, "too many event streams open on this server; the page shows the progress when reloaded"))
		return
	}
	defer s.consoleStreams.release(allStreams)
	id := r.PathValue("id")
	st, err := s.Rollouts.Status(r.Context(), id)
	if err != nil {
		s.pageFail(w, r, err)
		return
	}
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	l := s.layout(r, "", "rollouts")
	var last []byte
	// send writes the progress fragment if it changed since the last one sent.
	send := func(st *rollout.Status) (bool, error) {
		var buf bytes.Buffer
		if err := s.ui.Fragment(&buf, "rollout", "progress", &console.View{Layout: l, Data: s.campaignView(r, st)}); err != nil {
			return false, err
		}
		if bytes.Equal(buf.Bytes(), last) {
			return false, nil
		}
		last = buf.Bytes()
		if err := writeEvent(w, "progress", last); err != nil {
			return false, err
		}
		return true, rc.Flush()
	}
	if _, err := send(st); err != nil {
		return
	}
	tick := time.NewTicker(streamEvery)
	defer tick.Stop()
	deadline := time.NewTimer(streamMax)
	defer deadline.Stop()
	quiet, checked := time.Now(), time.Now()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.streamsDone():
			return
		case <-deadline.C:
			return
		case <-tick.C:
		}
		if time.Since(checked) >= cmp.Or(time.Duration(s.streamSessionEvery.Load()), streamSessionEvery) {
			checked = time.Now()
			if !s.stillAllowed(r, auth.PermRolloutsRead) {
				writeEvent(w, "end", []byte("session ended")) //nolint:errcheck // the stream ends either way
				rc.Flush()                                    //nolint:errcheck
				return
			}
		}
		st, err := s.Rollouts.Status(r.Context(), id)
		if err != nil {
			return
		}
		sent, err := send(st)
		if err != nil {
			return
		}
		if sent {
			quiet = time.Now()
		}
		if c := st.Campaign.State; c == rollout.StateCompleted || c == rollout.StateCancelled {
			writeEvent(w, "end", []byte(c)) //nolint:errcheck
			rc.Flush()                      //nolint:errcheck
			return
		}
		if time.Since(quiet) >= streamHeartbeat {
			quiet = time.Now()
			if _, err := w.Write([]byte(": heartbeat\n\n")); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}
}

// stillAllowed reports whether the credential that opened a long-lived request still grants
// perm: its session is live (as session checks it, but without counting the check as a use: an
// open campaign page must not keep its session from idling out) and its user enabled, or its
// operator token is neither revoked nor expired; and the role it has now allows perm.
func (s *Server) stillAllowed(r *http.Request, perm auth.Permission) bool {
	ctx := r.Context()
	if secret := bearer(r); secret != "" {
		tok, err := s.operator(ctx, secret)
		return err == nil && auth.Allows(tok.Role, perm)
	}
	c, err := r.Cookie(wire.SessionCookie)
	if err != nil {
		return false
	}
	ss, err := s.Admin.FindSession(ctx, auth.HashSecret(c.Value))
	if err != nil {
		return false
	}
	u, err := s.Admin.FindUser(ctx, ss.User)
	if err != nil {
		return false
	}
	now := s.now()
	_, idle := s.sessionLimits()
	return ss.RevokedAt.IsZero() && now.Before(ss.ExpiresAt) && now.Sub(ss.LastSeen) < idle && u.DisabledAt.IsZero() && auth.Allows(u.Role, perm)
}

// writeEvent writes one server-sent event; each line of data is a data: line.
func writeEvent(w http.ResponseWriter, event string, data []byte) error {
	var b bytes.Buffer
	b.WriteString("event: " + event + "\n")
	for _, line := range bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n")) {
		b.WriteString("data: ")
		b.Write(line)
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	_, err := w.Write(b.Bytes())
	return err
}

// streamsDone is closed by EndStreams.
func (s *Server) streamsDone() chan struct{} {
	s.streamsOnce.Do(func() { s.streamsEnd = make(chan struct{}) })
	return s.streamsEnd
}

// EndStreams ends the console's event streams, so that a server shutting down does not wait
// for them. Safe to call more than once and concurrently.
func (s *Server) EndStreams() {
	ch := s.streamsDone()
	s.streamsClose.Do(func() { close(ch) })
}

var rolloutActionText = map[string]struct{ question, detail, button string }{
	"start":  {"Start campaign %s?", "Its first wave is assigned the release at once.", "Start"},
	"pause":  {"Pause campaign %s?", "No further device is assigned the release until it is resumed; devices already assigned go on.", "Pause"},
	"resume": {"Resume campaign %s?", "The failures so far are accepted: the failure threshold counts only new ones.", "Resume"},
	"cancel": {"Cancel campaign %s?", "Devices not yet updated are withdrawn from it. A cancelled campaign cannot be restarted.", "Cancel campaign"},
}

// confirmRolloutAction is the confirmation step of a campaign action.
func (s *Server) confirmRolloutAction(w http.ResponseWriter, r *http.Request) {
	if s.noRollouts(w, r) {
		return
	}
	id, action := r.PathValue("id"), r.PathValue("action")
	text, ok := rolloutActionText[action]
	if !ok {
		s.pageFail(w, r, apperr.E(apperr.NotFound, "no such campaign action: start, pause, resume or cancel"))
		return
	}
	st, err := s.Rollouts.Status(r.Context(), id)
	if err != nil {
		s.pageFail(w, r, err)
		return
	}
	back := "rollouts/" + url.PathEscape(st.Campaign.ID)
	c := console.Confirm{Question: strings.Replace(text.question, "%s", st.Campaign.ID, 1), Detail: text.detail, Action: back + "/" + action,
		Button: text.button, Cancel: back, Danger: action == "cancel"}
	s.render(w, r, http.StatusOK, "confirm", s.layout(r, c.Question, "rollouts"), c)
}

// rolloutActionForm starts, pauses, resumes or cancels a campaign through the engine, within
// the deployer's group scope, as the API does.
func (s *Server) rolloutActionForm(w http.ResponseWriter, r *http.Request) {
	if s.noRollouts(w, r) {
		return
	}
	id, action := r.PathValue("id"), r.PathValue("action")
	back := "rollouts/" + url.PathEscape(id)
	if _, ok := rolloutActionText[action]; !ok {
		s.formError(w, r, apperr.E(apperr.NotFound, "no such campaign action: start, pause, resume or cancel"), back)
		return
	}
	if err := s.checkActionScope(r, id); err != nil {
		s.formError(w, r, err, back)
		return
	}
	c, err := s.Rollouts.Act(r.Context(), id, action, actorOf(r))
	if err != nil {
		s.formError(w, r, err, back)
		return
	}
	s.logger().Info("campaign "+action, "campaign", c.ID, "actor", actorOf(r))
	http.Redirect(w, r, s.base()+back, http.StatusSeeOther)
}

// rolloutForm reads the creation form.
func rolloutForm(r *http.Request) console.RolloutForm {
	f := r.Form
	b := func(k string) bool { v, _ := strconv.ParseBool(f.Get(k)); return v }
	return console.RolloutForm{Release: f.Get("release"), Target: f.Get("target"), Waves: f.Get("waves"), Success: f.Get("success"),
		Failure: f.Get("failure"), HealthGate: f.Get("health_gate"), Window: f.Get("window"), Days: f.Get("days"), Mode: f.Get("mode"),
		Consent: b("consent"), Start: b("start"), IgnoreWindow: b("ignore_window"), Fixes: f.Get("fixes")}
}

// spec turns the form into the engine's campaign spec; percentages are shares in percent.
func (s *Server) spec(f console.RolloutForm) (rollout.Spec, error) {
	sp := rollout.Spec{Release: strings.TrimSpace(f.Release), Target: strings.TrimSpace(f.Target), Waves: strings.TrimSpace(f.Waves),
		Window: strings.TrimSpace(f.Window), Days: strings.TrimSpace(f.Days), IgnoreWindow: f.IgnoreWindow, Mode: f.Mode, Start: f.Start,
		Fixes: strings.TrimSpace(f.Fixes)}
	if f.Consent {
		sp.Mode = "soft"
	}
	share := func(name, v string) (float64, error) {
		x, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), "%"), 64)
		if err != nil || x < 0 || x > 100 {
			return 0, apperr.E(apperr.Invalid, "%s %.16q: want a percentage from 0 to 100", name, v)
		}
		return x / 100, nil
	}
	if strings.TrimSpace(f.Success) != "" {
		x, err := share("success threshold", f.Success)
		if err != nil {
			return sp, err
		}
		sp.SuccessThreshold = x
	}
	if strings.TrimSpace(f.Failure) != "" {
		x, err := share("failure threshold", f.Failure)
		if err != nil {
			return sp, err
		}
		sp.FailureThreshold = &x
	}
	gate, err := parseDur("health gate", strings.TrimSpace(f.HealthGate))
	if err != nil {
		return sp, err
	}
	sp.HealthGate = gate
	return sp, nil
}

// rolloutChoices fills the form's choices: the newest releases and the groups.
func (s *Server) rolloutChoices(ctx context.Context, f *console.RolloutForm) error {
	rels, err := s.Releases.FindReleases(ctx, release.Filter{})
	if err != nil {
		return err
	}
	slices.SortFunc(rels, func(a, b *release.Release) int { return b.PublishedAt.Compare(a.PublishedAt) })
	for i, rel := range rels {
		if i == 200 {
			break
		}
		f.Releases = append(f.Releases, rel.Ref())
	}
	gs, err := s.Rollouts.Groups(ctx)
	if err != nil {
		return err
	}
	for _, g := range gs {
		f.Groups = append(f.Groups, g.Name)
	}
	return nil
}

// rolloutNew is the creation form.
func (s *Server) rolloutNew(w http.ResponseWriter, r *http.Request) {
	if s.noRollouts(w, r) {
		return
	}
	f := console.RolloutForm{Release: r.URL.Query().Get("release"), Target: r.URL.Query().Get("target"), Fixes: r.URL.Query().Get("fixes"), Start: true, Count: console.DeviceCount{Empty: true}}
	if err := s.rolloutChoices(r.Context(), &f); err != nil {
		s.pageFail(w, r, err)
		return
	}
	if f.Release != "" && f.Target != "" {
		f.Count = s.deviceCount(r.Context(), f)
	}
	s.render(w, r, http.StatusOK, "rollout_new", s.layout(r, "New campaign", "rollouts"), f)
}

// deviceCount previews a form's target.
func (s *Server) deviceCount(ctx context.Context, f console.RolloutForm) console.DeviceCount {
	dc := console.DeviceCount{Target: f.Target}
	if strings.TrimSpace(f.Release) == "" || strings.TrimSpace(f.Target) == "" {
		dc.Empty = true
		return dc
	}
	p, err := s.Rollouts.Preview(ctx, rollout.Spec{Release: strings.TrimSpace(f.Release), Target: strings.TrimSpace(f.Target)})
	if err != nil {
		if apperr.CodeOf(err) == apperr.Internal {
			s.logger().Error("campaign preview", LogErr, err)
		}
		dc.Err = apperr.Message(err)
		return dc
	}
	dc.N, dc.Stale = p.Devices, p.Stale
	return dc
}

// rolloutCount is the form's live device count: an htmx fragment.
func (s *Server) rolloutCount(w http.ResponseWriter, r *http.Request) {
	if s.noRollouts(w, r) {
		return
	}
	if err := r.ParseForm(); err != nil {
		s.pageFail(w, r, apperr.E(apperr.Invalid, "bad query"))
		return
	}
	f := rolloutForm(r)
	s.fragment(w, r, "rollout_new", "count", s.layout(r, "", "rollouts"), s.deviceCount(r.Context(), f))
}

// rolloutCreate creates a campaign through the same engine as the API, within the deployer's
// scope, and starts it when asked; then shows it.
func (s *Server) rolloutCreate(w http.ResponseWriter, r *http.Request) {
	if s.noRollouts(w, r) {
		return
	}
	if err := r.ParseForm(); err != nil {
		s.pageFail(w, r, apperr.E(apperr.Invalid, "bad form"))
		return
	}
	f := rolloutForm(r)
	again := func(err error) {
		if apperr.CodeOf(err) == apperr.Internal {
			s.pageFail(w, r, err)
			return
		}
		f.Error = apperr.Message(err)
		if cerr := s.rolloutChoices(r.Context(), &f); cerr != nil {
			s.pageFail(w, r, cerr)
			return
		}
		f.Count = s.deviceCount(r.Context(), f)
		s.render(w, r, apperr.HTTPStatus(apperr.CodeOf(err)), "rollout_new", s.layout(r, "New campaign", "rollouts"), f)
	}
	sp, err := s.spec(f)
	if err != nil {
		again(err)
		return
	}
	audit.AddDetail(r.Context(), "release", sp.Release)
	if err := s.checkCampaignScope(r, wire.CampaignSpec{Target: sp.Target, Fixes: sp.Fixes}); err != nil {
		again(err)
		return
	}
	c, err := s.Rollouts.Create(r.Context(), sp, actorOf(r))
	if err != nil {
		again(err)
		return
	}
	audit.SetTarget(r.Context(), c.ID)
	s.logger().Info("campaign created", "campaign", c.ID, "release", c.Release, "target", c.Selector, "actor", actorOf(r))
	http.Redirect(w, r, s.base()+"rollouts/"+url.PathEscape(c.ID), http.StatusSeeOther)
}
