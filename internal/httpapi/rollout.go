package httpapi

import (
	"net/http"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/rollout"
	"upkeep.dev/upkeep/wire"
)

func (s *Server) rolloutRoutes(mux *router) {
	mux.api("POST /api/v1/rollouts", auth.PermDeploy, s.createRollout)
	mux.api("GET /api/v1/rollouts", auth.PermRolloutsRead, s.listRollouts)
	mux.api("GET /api/v1/rollouts/{id}", auth.PermRolloutsRead, s.rolloutStatus)
	mux.api("POST /api/v1/rollouts/{id}/{action}", auth.PermDeploy, s.rolloutAction)
	mux.api("GET /api/v1/groups", auth.PermGroupsRead, s.listGroups)
	mux.api("GET /api/v1/groups/{name}", auth.PermGroupsRead, s.getGroup)
	mux.api("PUT /api/v1/groups/{name}", auth.PermGroupsWrite, s.putGroup)
	mux.api("DELETE /api/v1/groups/{name}", auth.PermGroupsWrite, s.deleteGroup)
	mux.api("POST /api/v1/groups/{name}/devices", auth.PermGroupsWrite, s.groupDevices)
}

func campaignToWire(c *rollout.Campaign) wire.Campaign {
	return wire.Campaign{ID: c.ID, Release: c.Release, Target: c.Target, Selector: c.Selector, Class: c.Class, State: c.State,
		Wave: c.Wave + 1, Waves: c.Waves, SuccessThreshold: c.SuccessThreshold, FailureThreshold: c.FailureThreshold,
		HealthGate: c.HealthGate.String(), AssignTimeout: c.AssignTimeout.String(), Stale: c.Stale, Consent: c.Consent, Window: c.Window, IgnoreWindow: c.IgnoreWindow,
		Days: c.Days, Dynamic: c.Dynamic, Until: c.Until, StartAt: c.StartAt, PauseReason: c.PauseReason, Actor: c.Actor, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt}
}

func actorOf(r *http.Request) string {
	a, _ := r.Context().Value(keyActor).(string)
	return a
}

func parseDur(field, v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, apperr.E(apperr.Invalid, "%s %q: want a duration such as 5m", field, v)
	}
	if d == 0 {
		return -1, nil // explicitly none
	}
	return d, nil
}

func (s *Server) createRollout(w http.ResponseWriter, r *http.Request) {
	if s.Rollouts == nil {
		s.fail(w, r, apperr.E(apperr.Unavailable, "rollouts are not configured"))
		return
	}
	var spec wire.CampaignSpec
	if err := decode(w, r, wire.MaxAPIBody, &spec); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.checkCampaignScope(r, spec); err != nil {
		s.fail(w, r, err)
		return
	}
	gate, err := parseDur("health gate", spec.HealthGate)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	silent, err := parseDur("silent after", spec.SilentAfter)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if silent < 0 {
		silent = 0
	}
	timeout, err := parseDur("assign timeout", spec.AssignTimeout)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	stale, err := parseDur("stale after", spec.StaleAfter)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	rs := rollout.Spec{Release: spec.Release, Target: spec.Target, Devices: spec.Devices, Waves: spec.Waves,
		SuccessThreshold: spec.SuccessThreshold, FailureThreshold: spec.FailureThreshold, HealthGate: gate, SilentAfter: silent,
		AssignTimeout: timeout, StaleAfter: stale,
		Mode: spec.Mode, Window: spec.Window, IgnoreWindow: spec.IgnoreWindow, Fixes: spec.Fixes, Start: spec.Start,
		Days: spec.Days, Dynamic: spec.Dynamic, Until: spec.Until, StartAt: spec.StartAt}
	c, err := s.Rollouts.Create(r.Context(), rs, actorOf(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.logger().Info("campaign created", "campaign", c.ID, "release", c.Release, "target", c.Selector, "actor", actorOf(r))
	writeJSON(w, http.StatusCreated, campaignToWire(c))
}

func (s *Server) listRollouts(w http.ResponseWriter, r *http.Request) {
	if s.Rollouts == nil {
		writeJSON(w, http.StatusOK, []wire.Campaign{})
		return
	}
	var states []string
	if st := r.URL.Query().Get("state"); st != "" {
		states = append(states, st)
	}
	cs, err := s.Rollouts.Campaigns(r.Context(), states...)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]wire.Campaign, len(cs))
	for i, c := range cs {
		out[i] = campaignToWire(c)
	}
	writeJSON(w, http.StatusOK, out)
}

func members(ms []rollout.Member) []wire.CampaignMember {
	out := make([]wire.CampaignMember, len(ms))
	for i, m := range ms {
		out[i] = wire.CampaignMember{DeviceID: m.DeviceID, Wave: m.Wave + 1, Status: m.Status, Since: m.Since, Detail: m.Detail}
	}
	return out
}

func (s *Server) rolloutStatus(w http.ResponseWriter, r *http.Request) {
	if s.Rollouts == nil {
		s.fail(w, r, apperr.E(apperr.NotFound, "campaign %s not found", r.PathValue("id")))
		return
	}
	st, err := s.Rollouts.Status(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := wire.CampaignStatus{Campaign: campaignToWire(st.Campaign), Waiting: members(st.Waiting), Failed: members(st.Failed)}
	if d := st.Download; d.Devices > 0 {
		out.Download = &wire.CampaignDownload{Devices: d.Devices, Bytes: d.Bytes, ImageBytes: d.ImageBytes}
	}
	for _, c := range st.Waves {
		out.Waves = append(out.Waves, map[string]int(c))
	}
	for _, e := range st.Timeline {
		out.Timeline = append(out.Timeline, wire.AuditEntry{Time: e.Time, Actor: e.Actor, Action: e.Action, Subject: e.Subject, Detail: e.Detail})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) rolloutAction(w http.ResponseWriter, r *http.Request) {
	if s.Rollouts == nil {
		s.fail(w, r, apperr.E(apperr.NotFound, "campaign %s not found", r.PathValue("id")))
		return
	}
	if err := s.checkActionScope(r, r.PathValue("id")); err != nil {
		s.fail(w, r, err)
		return
	}
	c, err := s.Rollouts.Act(r.Context(), r.PathValue("id"), r.PathValue("action"), actorOf(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.logger().Info("campaign "+r.PathValue("action"), "campaign", c.ID, "state", c.State, "actor", actorOf(r))
	writeJSON(w, http.StatusOK, campaignToWire(c))
}

func (s *Server) groupToWire(r *http.Request, g *rollout.Group, withDevices bool) (wire.Group, error) {
	out := wire.Group{Name: g.Name, Filter: g.Filter, Window: g.Window, Days: g.Days}
	devs, err := s.Rollouts.GroupMembers(r.Context(), g)
	if err != nil {
		return out, err
	}
	out.Count = len(devs)
	if withDevices {
		for _, d := range devs {
			out.Devices = append(out.Devices, d.ID)
		}
	}
	return out, nil
}

func (s *Server) listGroups(w http.ResponseWriter, r *http.Request) {
	if s.Rollouts == nil {
		writeJSON(w, http.StatusOK, []wire.Group{})
		return
	}
	gs, err := s.Rollouts.Groups(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]wire.Group, 0, len(gs))
	for _, g := range gs {
		wg, err := s.groupToWire(r, g, false)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		out = append(out, wg)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) findGroup(w http.ResponseWriter, r *http.Request) *rollout.Group {
	name := r.PathValue("name")
	if s.Rollouts == nil {
		s.fail(w, r, apperr.E(apperr.NotFound, "group %s not found", name))
		return nil
	}
	g, err := s.Rollouts.Group(r.Context(), name)
	if err != nil {
		s.fail(w, r, err)
		return nil
	}
	return g
}

func (s *Server) getGroup(w http.ResponseWriter, r *http.Request) {
	g := s.findGroup(w, r)
	if g == nil {
		return
	}
	out, err := s.groupToWire(r, g, true)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) putGroup(w http.ResponseWriter, r *http.Request) {
	if s.Rollouts == nil {
		s.fail(w, r, apperr.E(apperr.Unavailable, "rollouts are not configured"))
		return
	}
	var in wire.Group
	if err := decode(w, r, wire.MaxAPIBody, &in); err != nil {
		s.fail(w, r, err)
		return
	}
	g, err := s.Rollouts.PutGroup(r.Context(), rollout.Group{Name: r.PathValue("name"), Filter: in.Filter, Window: in.Window, Days: in.Days}, actorOf(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out, err := s.groupToWire(r, g, false)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteGroup(w http.ResponseWriter, r *http.Request) {
	g := s.findGroup(w, r)
	if g == nil {
		return
	}
	if err := s.Rollouts.DeleteGroup(r.Context(), g.Name, actorOf(r)); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) groupDevices(w http.ResponseWriter, r *http.Request) {
	g := s.findGroup(w, r)
	if g == nil {
		return
	}
	var in wire.GroupDevices
	if err := decode(w, r, wire.MaxAPIBody, &in); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.Rollouts.ChangeGroupDevices(r.Context(), g, in.Add, in.Remove); err != nil {
		s.fail(w, r, err)
		return
	}
	out, err := s.groupToWire(r, g, false)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}
