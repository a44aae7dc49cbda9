package httpapi

import (
	"cmp"
	"context"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/console"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/inventory"
	"upkeep.dev/upkeep/internal/product"
	"upkeep.dev/upkeep/internal/rollout"
)

// Devices pages.
const (
	devicePageSize   = 50
	deviceEventsShow = 100
	logLinesShow     = 40
)

func (s *Server) devicePages(mux *router) {
	mux.page("GET /devices", auth.PermDevicesRead, s.deviceList)
	mux.page("GET /devices/{id}", auth.PermDevicesRead, s.devicePage)
	mux.page("GET /devices/{id}/exposure", auth.PermVulnRead, s.deviceExposurePart)
	mux.page("GET /devices/{id}/{action}", auth.PermDevicesAdmit, s.confirmDeviceAction)
	mux.page("POST /devices/{id}/{action}", auth.PermDevicesAdmit, s.deviceActionForm)
}

// deviceQuery reads the devices page's query into the store's page and the form's fields.
func deviceQuery(q url.Values) (fleet.DevicePage, console.DeviceQuery, error) {
	dq := console.DeviceQuery{Q: q.Get("q"), Product: q.Get("product"), Version: q.Get("version"), Status: q.Get("status"), State: q.Get("state"),
		Group: q.Get("group"), Attr: q.Get("attr"), Sort: q.Get("sort")}
	dq.Desc, _ = strconv.ParseBool(q.Get("desc"))
	p := fleet.DevicePage{Product: dq.Product, Version: dq.Version, Status: dq.Status, State: dq.State, Search: dq.Q, Sort: dq.Sort, Desc: dq.Desc, Limit: devicePageSize}
	// The search box takes KEY=VALUE terms as well, the attribute filter's syntax; anything
	// else is a prefix of the id or serial (fleet.DevicePage.Search).
	attrs := dq.Attr
	if strings.Contains(dq.Q, "=") {
		attrs += "," + dq.Q
		p.Search = ""
	}
	if strings.TrimSpace(strings.ReplaceAll(attrs, ",", "")) != "" {
		p.Attributes = map[string]string{}
		for _, term := range strings.FieldsFunc(attrs, func(r rune) bool { return r == ',' || r == '\n' }) {
			k, v, ok := strings.Cut(strings.TrimSpace(term), "=")
			if !ok || strings.TrimSpace(k) == "" {
				return p, dq, apperr.E(apperr.Invalid, "attribute filter %.64q: want KEY=VALUE, several separated by commas", term)
			}
			p.Attributes[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	if q.Has("after") {
		p.After = &fleet.DeviceCursor{Key: q.Get("after"), ID: q.Get("after_id")}
	}
	return p, dq, p.Check()
}

// deviceQueryValues is the query of a devices page, without its cursor.
func deviceQueryValues(dq console.DeviceQuery) url.Values {
	v := url.Values{}
	for k, x := range map[string]string{"q": dq.Q, "product": dq.Product, "version": dq.Version, "status": dq.Status, "state": dq.State, "group": dq.Group, "attr": dq.Attr, "sort": dq.Sort} {
		if x != "" {
			v.Set(k, x)
		}
	}
	if dq.Desc {
		v.Set("desc", "true")
	}
	return v
}

// deviceList is the devices page: filters, free-text search, sorting and keyset pagination.
func (s *Server) deviceList(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	now := s.now()
	p, dq, err := deviceQuery(r.URL.Query())
	view := console.DeviceList{Query: dq, Total: -1, Statuses: []string{fleet.StatusAccepted, fleet.StatusPending, fleet.StatusRejected, fleet.StatusDecommissioned}}
	for _, so := range fleet.Sorts {
		view.Sorts = append(view.Sorts, console.Option{Value: so, Label: so})
	}
	if err != nil {
		view.FilterErr = apperr.Message(err)
		s.render(w, r, http.StatusBadRequest, "devices", s.layout(r, "Devices", "devices"), view)
		return
	}
	if dq.Group != "" && (s.Rollouts == nil || !can(r, auth.PermGroupsRead)) {
		s.pageFail(w, r, apperr.E(apperr.Forbidden, "forbidden: filtering by group needs %s", auth.PermGroupsRead))
		return
	}
	if s.Rollouts != nil && can(r, auth.PermGroupsRead) {
		gs, err := s.Rollouts.Groups(ctx)
		if err != nil {
			s.pageFail(w, r, err)
			return
		}
		for _, g := range gs {
			view.Groups = append(view.Groups, g.Name)
		}
		if dq.Group != "" {
			g, err := s.Rollouts.Group(ctx, dq.Group)
			if err != nil {
				view.FilterErr = apperr.Message(err)
				s.render(w, r, apperr.HTTPStatus(apperr.CodeOf(err)), "devices", s.layout(r, "Devices", "devices"), view)
				return
			}
			ms, err := s.Rollouts.GroupMembers(ctx, g)
			if err != nil {
				s.pageFail(w, r, err)
				return
			}
			p.IDs = make([]string, 0, len(ms))
			for _, d := range ms {
				p.IDs = append(p.IDs, d.ID)
			}
		}
	}
	ends := s.supportEnds(ctx, r)
	view.Products = slices.Sorted(maps.Keys(ends))
	p.Limit = devicePageSize + 1 // one more says whether a next page exists
	devs, err := s.Devices.PageDevices(ctx, p)
	if err != nil {
		if apperr.CodeOf(err) == apperr.Invalid {
			view.FilterErr = apperr.Message(err)
			s.render(w, r, http.StatusBadRequest, "devices", s.layout(r, "Devices", "devices"), view)
			return
		}
		s.pageFail(w, r, err)
		return
	}
	more := len(devs) > devicePageSize
	if more {
		devs = devs[:devicePageSize]
	}
	for _, d := range devs {
		view.Rows = append(view.Rows, console.DeviceRow{ID: d.ID, Serial: d.Serial, Product: d.Product, Version: d.InstalledVer, Status: d.Status,
			State: d.State, Hardware: d.HardwareID, LastSeen: d.LastSeen, Attention: attention(d, ends, now)})
	}
	base := deviceQueryValues(dq)
	if more {
		next := maps.Clone(base)
		c := fleet.CursorOf(devs[len(devs)-1], p.Sort)
		next.Set("after", c.Key)
		next.Set("after_id", c.ID)
		view.Next = "devices?" + next.Encode()
	}
	if p.After != nil {
		view.First = "devices"
		if len(base) > 0 {
			view.First += "?" + base.Encode()
		}
	}
	if len(p.Attributes) == 0 && p.Search == "" && p.IDs == nil && p.Version == "" && p.State == "" {
		if view.Total, err = s.Devices.CountDevices(ctx, fleet.DeviceFilter{Product: p.Product, Status: p.Status}); err != nil {
			s.pageFail(w, r, err)
			return
		}
	}
	s.render(w, r, http.StatusOK, "devices", s.layout(r, "Devices", "devices"), view)
}

// supportEnds maps each product with a support policy to the end of its last day of support;
// empty if the role may not read products.
func (s *Server) supportEnds(ctx context.Context, r *http.Request) map[string]time.Time {
	ends := map[string]time.Time{}
	if s.Products == nil || !can(r, auth.PermProductsRead) {
		return ends
	}
	ps, err := s.Products.Products(ctx)
	if err != nil {
		s.logger().Error("console products", LogErr, err)
		return ends
	}
	for _, p := range ps {
		if pol, err := product.ParsePolicy(p.Policy); err == nil && pol.SupportEnd != "" {
			ends[p.Name] = pol.End().Add(24*time.Hour - time.Nanosecond)
		}
	}
	return ends
}

// attention says why a device needs an operator's attention, or "".
func attention(d *fleet.Device, ends map[string]time.Time, now time.Time) string {
	if d.Status != fleet.StatusAccepted {
		return ""
	}
	switch {
	case d.State == deviceStateFailed:
		return "failed"
	case d.State == deviceStateRollingBack:
		return "rolled back"
	case d.LastError != "":
		return "error reported"
	case d.LastSeen.IsZero() || now.Sub(d.LastSeen) > rollout.DefaultStaleAfter:
		return "not seen for 7 days"
	}
	if end, ok := ends[d.Product]; ok && end.Before(now) {
		return "past end of support"
	}
	return ""
}

// deviceActions are the status changes the console offers, by the device's status.
var deviceActions = map[string][]string{
	fleet.StatusPending:        {"accept", "reject"},
	fleet.StatusRejected:       {"accept"},
	fleet.StatusAccepted:       {"decommission"},
	fleet.StatusDecommissioned: {"readmit"},
}

// devicePage shows one device: identity, attributes, software, support, timeline, failure
// logs, exposure, and the actions the role may take.
func (s *Server) devicePage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	now := s.now()
	d, err := s.Devices.FindDevice(ctx, r.PathValue("id"))
	if err != nil {
		s.pageFail(w, r, err)
		return
	}
	v := console.Device{ID: d.ID, Kind: cmp.Or(d.Kind, fleet.KindAgent), Serial: d.Serial, Product: d.Product, Hardware: d.HardwareID, Status: d.Status,
		State: d.State, LastError: d.LastError, Installed: d.InstalledTarget, InstalledVer: d.InstalledVer, Assigned: d.Assigned,
		InstalledSHA256: d.InstalledSHA256, SecurityVersion: d.SecurityVersion, LastSeen: d.LastSeen, EnrolledAt: d.EnrolledAt, Simulated: d.Simulated}
	for _, k := range slices.Sorted(maps.Keys(d.Attributes)) {
		v.Attributes = append(v.Attributes, console.Field{Name: k, Value: strings.Join(inventory.Values(d.Attributes[k]), ", ")})
	}
	if end, ok := s.supportEnds(ctx, r)[d.Product]; ok {
		v.SupportEnd, v.PastSupport = end, end.Before(now)
	}
	evs, err := s.Devices.FindEvents(ctx, d.ID, deviceEventsShow)
	if err != nil {
		s.pageFail(w, r, err)
		return
	}
	for _, e := range evs {
		v.Events = append(v.Events, console.Event{Time: e.Time, Target: e.Target, Step: e.Step, Status: e.Status, Message: e.Message, Fatal: e.Fatal})
	}
	if s.Logs != nil {
		logs, err := s.Logs.Logs(ctx, d.ID, true)
		if err != nil {
			s.pageFail(w, r, err)
			return
		}
		for _, l := range logs {
			lines := l.AgentLog
			if l.Output != "" {
				lines = append(strings.Split(l.Output, "\n"), lines...)
			}
			if len(lines) > logLinesShow {
				lines = lines[len(lines)-logLinesShow:]
			}
			v.Logs = append(v.Logs, console.Log{ID: strconv.FormatInt(l.ID, 10), Target: l.Target, Reason: l.Step + ": " + l.Message, At: l.ReceivedAt, Size: int64(l.Size), Lines: lines})
		}
	}
	if v.CanVulns = can(r, auth.PermVulnRead); v.CanVulns {
		if r.URL.Query().Get("exposure") != "" {
			s.deviceExposure(ctx, r, d, &v)
		} else {
			v.ExposureLazy = true // fetched after the page loads: the report may take seconds
		}
	}
	if can(r, auth.PermDevicesAdmit) {
		for _, a := range deviceActions[d.Status] {
			v.Actions = append(v.Actions, console.Link{Label: actionLabel(a), Href: "devices/" + url.PathEscape(d.ID) + "/" + a, Danger: a != "accept" && a != "readmit"})
		}
	}
	s.render(w, r, http.StatusOK, "device", s.layout(r, "Device "+d.ID, "devices"), v)
}

func actionLabel(a string) string { return strings.ToUpper(a[:1]) + a[1:] }

// deviceExposure lists the advisories the device's installed release is exposed to.
func (s *Server) deviceExposure(ctx context.Context, r *http.Request, d *fleet.Device, v *console.Device) {
	switch {
	case !can(r, auth.PermVulnRead):
		return
	case s.Exposure == nil:
		v.ExposureNote = "Vulnerability tracking is not configured on this server."
		return
	case d.InstalledVer == "":
		v.ExposureNote = "The device has not reported an installed release."
		return
	}
	rep, err := s.exposureReport(ctx, d.Product)
	if err != nil {
		s.logger().Error("console device exposure", LogDevice, d.ID, LogErr, err)
		v.ExposureNote = "The exposure report failed: see the server log."
		return
	}
	for _, e := range rep.Exposed {
		if e.Release == d.InstalledVer {
			v.Exposure = append(v.Exposure, console.Exposed{Advisory: e.Advisory, Severity: e.Severity, Summary: e.Summary, FixedIn: e.FixedIn})
		}
	}
	if slices.Contains(rep.WithoutSBOM, d.Product+"@"+d.InstalledVer) || slices.Contains(rep.WithoutSBOM, d.InstalledVer) {
		v.ExposureNote = "The installed release has no SBOM: its exposure is unknown."
	}
}

// deviceExposurePart is a device page's exposure part, fetched by the page.
func (s *Server) deviceExposurePart(w http.ResponseWriter, r *http.Request) {
	d, err := s.Devices.FindDevice(r.Context(), r.PathValue("id"))
	if err != nil {
		s.pageFail(w, r, err)
		return
	}
	v := console.Device{ID: d.ID, CanVulns: true}
	s.deviceExposure(r.Context(), r, d, &v)
	s.fragment(w, r, "device", "exposure", s.layout(r, "", "devices"), v)
}

var deviceActionText = map[string]struct{ question, detail string }{
	"accept":       {"Accept device %s?", "It may then fetch metadata and updates, and campaigns may target it."},
	"reject":       {"Reject device %s?", "Its enrolment is refused; it can be accepted later."},
	"decommission": {"Decommission device %s?", "Its token stops working at once, the director serves it nothing, and it cannot enrol again with the same key until readmitted. Its history stays."},
	"readmit":      {"Readmit device %s?", "The decommissioned device is accepted again and may fetch updates."},
}

// confirmDeviceAction is the confirmation step of a device action.
func (s *Server) confirmDeviceAction(w http.ResponseWriter, r *http.Request) {
	id, action := r.PathValue("id"), r.PathValue("action")
	text, ok := deviceActionText[action]
	if !ok {
		s.pageFail(w, r, apperr.E(apperr.NotFound, "no such device action: accept, reject, decommission or readmit"))
		return
	}
	d, err := s.Devices.FindDevice(r.Context(), id)
	if err != nil {
		s.pageFail(w, r, err)
		return
	}
	back := "devices/" + url.PathEscape(d.ID)
	c := console.Confirm{Question: strings.Replace(text.question, "%s", d.ID, 1), Detail: text.detail, Action: back + "/" + action, Button: actionLabel(action),
		Cancel: back, Danger: action == "decommission" || action == "reject"}
	s.render(w, r, http.StatusOK, "confirm", s.layout(r, c.Question, "devices"), c)
}

// deviceActionForm accepts, rejects, decommissions or readmits a device through the fleet
// service, as the API does, then shows the device.
func (s *Server) deviceActionForm(w http.ResponseWriter, r *http.Request) {
	id, action := r.PathValue("id"), r.PathValue("action")
	ctx := r.Context()
	var err error
	switch action {
	case "accept":
		err = s.Fleet.Accept(ctx, id, false)
	case "readmit":
		err = s.Fleet.Accept(ctx, id, true)
	case "reject":
		err = s.Fleet.Reject(ctx, id)
	case "decommission":
		err = s.Fleet.Decommission(ctx, id)
	default:
		err = apperr.E(apperr.NotFound, "no such device action: accept, reject, decommission or readmit")
	}
	back := "devices/" + url.PathEscape(id)
	if err != nil {
		s.formError(w, r, err, back)
		return
	}
	s.logger().Info("device "+action, LogDevice, id, "actor", actorOf(r))
	http.Redirect(w, r, s.base()+back, http.StatusSeeOther)
}
