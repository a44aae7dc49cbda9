package httpapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/audit"
	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/chart"
	"upkeep.dev/upkeep/internal/console"
	"upkeep.dev/upkeep/internal/exposure"
	"upkeep.dev/upkeep/internal/product"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/vuln"
)

// The console's releases, vulnerabilities and products pages. Each is gated by the permission
// of the /api/v1 route it mirrors (GET /api/v1/releases, GET /api/v1/exposure, GET
// /api/v1/products, PUT /api/v1/products/{name}/policy); a policy change goes through the same
// ProductService.SetPolicy as the API.

func (s *Server) catalogPages(mux *router) {
	mux.page("GET /releases", auth.PermReleasesRead, s.releasesPage)
	mux.page("GET /releases/{product}/{version}", auth.PermReleasesRead, s.releasePage)
	mux.page("GET /vulnerabilities", auth.PermVulnRead, s.vulnPage)
	mux.page("GET /products", auth.PermProductsRead, s.productsPage)
	mux.page("GET /products/{name}", auth.PermProductsRead, s.productPage)
	mux.page("POST /products/{name}/policy", auth.PermProductsWrite, s.policyForm)
	mux.page("GET /products/{name}/label-preview", auth.PermProductsWrite, s.labelPreview)
}

func releaseRow(r *release.Release, running int) console.ReleaseRow {
	return console.ReleaseRow{Product: r.Product, Version: r.Version, Class: r.Class, SecurityVersion: r.SecurityVersion,
		Fixes: r.Fixes, Running: running, PublishedAt: r.PublishedAt}
}

func (s *Server) releasesPage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	all, err := s.Releases.FindReleases(ctx, release.Filter{})
	if err != nil {
		s.pageFail(w, r, err)
		return
	}
	want := r.URL.Query().Get("product")
	v := console.ReleaseList{Product: want}
	byProduct := map[string][]*release.Release{}
	for _, rel := range all {
		if _, ok := byProduct[rel.Product]; !ok {
			v.Products = append(v.Products, rel.Product)
		}
		byProduct[rel.Product] = append(byProduct[rel.Product], rel)
	}
	sort.Strings(v.Products)
	for _, p := range v.Products {
		if want != "" && p != want {
			continue
		}
		running, err := s.Releases.CountRunning(ctx, p)
		if err != nil {
			s.pageFail(w, r, err)
			return
		}
		rels := byProduct[p]
		slices.SortFunc(rels, func(a, b *release.Release) int { return release.Compare(b, a) })
		g := console.ReleaseGroup{Product: p}
		for _, rel := range rels {
			g.Releases = append(g.Releases, releaseRow(rel, running[rel.Target]))
		}
		v.Groups = append(v.Groups, g)
	}
	s.render(w, r, http.StatusOK, "releases", s.layout(r, "Releases", "releases"), v)
}

// signedTargets is the part of the image repository's targets metadata a release page shows.
type signedTargets struct {
	Signed struct {
		Version int64 `json:"version"`
		Targets map[string]struct {
			Length int64             `json:"length"`
			Hashes map[string]string `json:"hashes"`
			Custom json.RawMessage   `json:"custom"`
		} `json:"targets"`
	} `json:"signed"`
}

func (s *Server) releasePage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	prod, version := r.PathValue("product"), r.PathValue("version")
	rel, err := s.Releases.FindRelease(ctx, prod, version)
	if err != nil {
		s.pageFail(w, r, err)
		return
	}
	running, err := s.Releases.CountRunning(ctx, prod)
	if err != nil {
		s.pageFail(w, r, err)
		return
	}
	v := console.ReleasePage{ReleaseRow: releaseRow(rel, running[rel.Target]), HardwareIDs: rel.HardwareIDs}
	// The target as signed: what devices verify, wherever the delegations put it.
	t := console.TargetInfo{Name: rel.Target, Length: rel.Length, TargetsVersion: rel.TargetsVersion,
		Hashes: []console.Field{{Name: "sha256", Value: rel.SHA256}, {Name: "sha512", Value: rel.SHA512}}}
	if raw, err := s.Images.Catalogue(ctx); err == nil {
		var st signedTargets
		if json.Unmarshal(raw, &st) == nil {
			if tf, ok := st.Signed.Targets[rel.Target]; ok {
				t.Length, t.Hashes = tf.Length, nil
				for _, alg := range slices.Sorted(maps.Keys(tf.Hashes)) {
					t.Hashes = append(t.Hashes, console.Field{Name: alg, Value: tf.Hashes[alg]})
				}
				var out bytes.Buffer
				if json.Indent(&out, tf.Custom, "", "  ") == nil {
					t.Custom = out.String()
				}
			}
		}
	}
	v.Targets = []console.TargetInfo{t}
	// Who published it: the audit trail's record of the publication, for roles that may read it.
	if !can(r, auth.PermAuditRead) || s.Audit == nil {
		v.PublisherHidden = true
	} else if rs, err := s.Audit.FindRecords(ctx, audit.Filter{Action: "release.publish", Target: rel.Ref(), Outcome: audit.OutcomeOK, Limit: 1}); err == nil && len(rs) > 0 {
		v.Publisher = rs[0].Actor
	}
	if s.Exposure != nil {
		sb, err := s.Exposure.SBOM(ctx, prod, version)
		switch {
		case err == nil:
			info := &console.SBOMInfo{Format: sb.Format, Digest: sb.Digest, Signed: sb.Signed, UploadedAt: sb.UploadedAt, Total: len(sb.Components)}
			for _, c := range sb.Components[:min(len(sb.Components), console.MaxComponents)] {
				info.Components = append(info.Components, console.Component{Name: c.Name, Version: c.Version, Ecosystem: c.Ecosystem, PURL: c.PURL})
			}
			v.SBOM = info
		case !apperr.Is(err, apperr.NotFound):
			s.pageFail(w, r, err)
			return
		}
		// The advisories its SBOM matches now, and the release gate's word on each: one SBOM
		// matched, not the fleet's exposure.
		if !can(r, auth.PermVulnRead) {
			v.VulnHidden = true
		} else if chk, err := s.releaseCheck(ctx, prod, version); err == nil {
			for _, f := range chk.Findings {
				if f.Status == vuln.StatusNotAffected {
					continue
				}
				if v.AdvisoriesTotal++; len(v.Advisories) == console.MaxExposureRows {
					continue
				}
				v.Advisories = append(v.Advisories, console.ReleaseAdvisory{ID: f.Advisory, Severity: f.Severity, Status: f.Status,
					FixedIn: f.FixedIn, Exploited: f.KEV != nil, Gate: f.Gate})
			}
		} else if !apperr.Is(err, apperr.NotFound) {
			s.pageFail(w, r, err)
			return
		}
	}
	s.render(w, r, http.StatusOK, "release", s.layout(r, rel.Ref(), "releases"), v)
}

// gateSeverities are the severities a filter or a release gate takes.
var gateSeverities = []string{"critical", "high", "medium", "low"}

func (s *Server) vulnPage(w http.ResponseWriter, r *http.Request) {
	if s.Exposure == nil {
		s.pageFail(w, r, apperr.E(apperr.Unavailable, "this server holds no vulnerability data"))
		return
	}
	q := r.URL.Query()
	v := console.VulnList{Severity: q.Get("severity"), Product: q.Get("product"), Sort: q.Get("sort"), KEV: q.Get("kev") == "1",
		Severities: gateSeverities, Sorts: exposure.Sorts, CanDeploy: can(r, auth.PermDeploy)}
	if v.Severity != "" && !slices.Contains(gateSeverities, v.Severity) {
		v.Severity = ""
	}
	if !slices.Contains(exposure.Sorts, v.Sort) {
		v.Sort = ""
	}
	// The product's report, reused for FleetCountsEvery as the overview does (it reads every
	// accepted device and asks which release fixes each row), narrowed to the page's filters.
	full, err := s.exposureReport(r.Context(), v.Product)
	if err != nil {
		s.pageFail(w, r, err)
		return
	}
	rep := exposure.ExposureFilter{Severity: v.Severity, Product: v.Product, KEV: v.KEV, Sort: v.Sort}.Narrow(full)
	v.At = rep.At
	if s.Products != nil {
		if ps, err := s.Products.Products(r.Context()); err == nil {
			for _, p := range ps {
				v.Products = append(v.Products, p.Name)
			}
		}
	}
	v.Total = len(rep.Exposed)
	for _, e := range rep.Exposed[:min(len(rep.Exposed), console.MaxExposureRows)] {
		row := console.ExposureRow{Advisory: e.Advisory, Severity: e.Severity, Summary: e.Summary, Product: e.Product, Release: e.Release,
			Devices: e.Devices, Days: e.DaysExposed, FixedIn: e.FixedIn, KEV: e.KEV != nil}
		if e.EPSS != nil {
			row.EPSS = e.EPSS.Score
		}
		if e.FixedIn != "" && v.CanDeploy {
			// The rollout form, prefilled as `upkeep rollout create --fixes`: the devices exposed
			// to the advisory, the release that fixes it.
			row.Fix = "rollouts/new?" + url.Values{"fixes": {e.Advisory}, "release": {e.Product + "@" + e.FixedIn}}.Encode()
		}
		v.Rows = append(v.Rows, row)
	}
	v.WithoutSBOM, v.Undecided = rep.WithoutSBOM, rep.Undecided
	s.render(w, r, http.StatusOK, "vulns", s.layout(r, "Vulnerabilities", "vulnerabilities"), v)
}

func productRow(p *product.Product, now time.Time) console.ProductRow {
	row := console.ProductRow{Name: p.Name, Display: p.Name, UpdatedAt: p.UpdatedAt, Warning: product.Warning(p, now)}
	if pol, err := product.ParsePolicy(p.Policy); err == nil {
		row.SupportEnd, row.Delivery = pol.SupportEnd, pol.Delivery
		if pol.ProductName != "" {
			row.Display = pol.ProductName
		}
	}
	return row
}

var errNoProducts = apperr.E(apperr.Unavailable, "this server keeps no product policies")

func (s *Server) productsPage(w http.ResponseWriter, r *http.Request) {
	if s.Products == nil {
		s.pageFail(w, r, errNoProducts)
		return
	}
	ps, err := s.Products.Products(r.Context())
	if err != nil {
		s.pageFail(w, r, err)
		return
	}
	var v console.ProductList
	for _, p := range ps {
		v.Products = append(v.Products, productRow(p, s.now()))
	}
	s.render(w, r, http.StatusOK, "products", s.layout(r, "Products", "products"), v)
}

func (s *Server) findProduct(r *http.Request, name string) (*product.Product, error) {
	if s.Products == nil {
		return nil, errNoProducts
	}
	ps, err := s.Products.Products(r.Context())
	if err != nil {
		return nil, err
	}
	for _, p := range ps {
		if p.Name == name {
			return p, nil
		}
	}
	return nil, apperr.E(apperr.NotFound, "no product %.64q with a support policy", name)
}

func (s *Server) productPage(w http.ResponseWriter, r *http.Request) {
	s.showProduct(w, r, http.StatusOK, nil, "")
}

// showProduct renders a product's page; form and msg are a refused change to show again.
func (s *Server) showProduct(w http.ResponseWriter, r *http.Request, status int, form *console.PolicyForm, msg string) {
	name := r.PathValue("name")
	p, err := s.findProduct(r, name)
	if err != nil {
		s.pageFail(w, r, err)
		return
	}
	pol, err := product.ParsePolicy(p.Policy)
	if err != nil {
		s.pageFail(w, r, err)
		return
	}
	v := console.ProductPage{ProductRow: productRow(p, s.now()), Error: msg,
		LabelURL: "p/" + url.PathEscape(p.Name) + "/label.svg?v=" + strconv.FormatInt(p.UpdatedAt.UnixNano(), 36),
		Public:   "p/" + url.PathEscape(p.Name)}
	v.Policy = policyFields(pol)
	if can(r, auth.PermProductsWrite) {
		if form == nil {
			form = policyForm(pol)
		}
		v.Edit = form
	}
	h, err := s.Products.History(r.Context(), p.Name)
	if err != nil {
		s.pageFail(w, r, err)
		return
	}
	for i := len(h) - 1; i >= 0 && len(v.History) < 50; i-- { // newest first
		c := h[i]
		v.History = append(v.History, console.PolicyChangeRow{At: c.At, Actor: c.Actor, Field: c.Field, Old: c.Old, New: c.New})
	}
	if s.Exposure != nil && can(r, auth.PermVulnRead) {
		if ttp, err := s.Exposure.TimeToPatch(r.Context(), p.Name); err == nil && len(ttp.Advisories) > 0 {
			bc := chart.BarChart{Title: "Days to a fix, per advisory", ID: "ttp",
				Desc: fmt.Sprintf("Days from each advisory's publication to the release that fixes it, for %s; an open advisory counts its age so far.", p.Name), Unit: "days"}
			for _, a := range ttp.Advisories {
				label := a.Advisory
				b := chart.Bar{Label: label, Value: float64(int(a.VendorDays*10)) / 10}
				if a.VendorOpen {
					b.Label, b.Color = label+" (open)", "#a4161a"
				}
				bc.Bars = append(bc.Bars, b)
			}
			v.Chart, v.ChartTable = chart.Bars(bc), bc.Table()
		}
	}
	l := s.layout(r, v.Display, "products")
	if r.Method == http.MethodGet && r.URL.Query().Get("saved") == "1" {
		l.Notice = "Policy saved. The label, the public page and the devices' end-of-support notices follow it."
	}
	s.render(w, r, status, "product", l, v)
}

func policyFields(p *product.Policy) []console.Field {
	f := []console.Field{
		{Name: "Support ends", Value: p.SupportEnd},
		{Name: "Support starts", Value: strings.TrimSpace(p.SupportStart + " " + p.SupportStartBasis)},
		{Name: "Delivery", Value: p.Delivery},
		{Name: "Security updates separate", Value: strconv.FormatBool(p.SecuritySeparate)},
		{Name: "Product name", Value: p.ProductName},
		{Name: "Model", Value: p.ModelDesignation},
		{Name: "Vulnerability disclosure", Value: strings.TrimSpace(p.VDPURL + " " + p.VDPContact)},
		{Name: "Advisories", Value: p.AdvisoriesURL},
		{Name: "Remediation commitment (days)", Value: strconv.Itoa(p.RemediationDays)},
		{Name: "Release gate", Value: gateText(p)},
	}
	return slices.DeleteFunc(f, func(x console.Field) bool { return x.Value == "" || x.Value == "0" })
}

func gateText(p *product.Policy) string {
	var g []string
	if p.GateKEV {
		g = append(g, "known exploited")
	}
	if p.GateSeverity != "" {
		g = append(g, p.GateSeverity+" and above")
	}
	return strings.Join(g, ", ")
}

func policyForm(p *product.Policy) *console.PolicyForm {
	f := &console.PolicyForm{SupportEnd: p.SupportEnd, SupportStart: p.SupportStart, SupportStartBasis: p.SupportStartBasis,
		Delivery: p.Delivery, ProductName: p.ProductName, ModelDesignation: p.ModelDesignation, VDPURL: p.VDPURL,
		VDPContact: p.VDPContact, AdvisoriesURL: p.AdvisoriesURL, RemediationDays: p.RemediationDays, WarnDays: p.WarnDays,
		SecuritySeparate: p.SecuritySeparate, GateKEV: p.GateKEV, GateSeverity: p.GateSeverity}
	policyChoices(f)
	return f
}

// policyChoices fills in the choices the editor offers.
func policyChoices(f *console.PolicyForm) {
	f.Deliveries = []string{product.DeliveryAutomatic, product.DeliveryConsent, product.DeliveryNone}
	f.Bases = []string{"", product.StartPlacedOnMarket, product.StartPurchase, product.StartActivation}
	f.GateSeverities = append([]string{""}, gateSeverities...)
}

// policyForm changes a product's support policy from the editor: the form becomes the same
// JSON patch `upkeep product set` sends, applied by ProductService.SetPolicy (validation,
// history, re-signing of the devices' views when the end date moves).
func (s *Server) policyForm(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if s.Products == nil {
		s.pageFail(w, r, errNoProducts)
		return
	}
	if err := r.ParseForm(); err != nil {
		s.pageFail(w, r, apperr.E(apperr.Invalid, "unreadable form"))
		return
	}
	f, raw, err := readPolicyForm(r.PostForm)
	if err != nil {
		s.showProduct(w, r, http.StatusBadRequest, f, apperr.Message(err))
		return
	}
	audit.SetTarget(r.Context(), name)
	if _, err := s.Products.SetPolicy(r.Context(), name, raw, actorOf(r)); err != nil {
		var ae *apperr.Error
		if errors.As(err, &ae) && ae.Code != apperr.Internal {
			s.showProduct(w, r, apperr.HTTPStatus(ae.Code), f, apperr.Message(err))
			return
		}
		s.pageFail(w, r, err)
		return
	}
	http.Redirect(w, r, s.base()+"products/"+url.PathEscape(name)+"?saved=1", http.StatusSeeOther)
}

// readPolicyForm reads the editor's fields: the form to show again, and the JSON patch of the
// policy that `upkeep product set` would send.
func readPolicyForm(form url.Values) (*console.PolicyForm, []byte, error) {
	atoi := func(k string) (int, error) {
		v := strings.TrimSpace(form.Get(k))
		if v == "" {
			return 0, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, apperr.E(apperr.Invalid, "%s: want a number of days", k)
		}
		return n, nil
	}
	f := &console.PolicyForm{SupportEnd: form.Get("support_end"), SupportStart: form.Get("support_start"),
		SupportStartBasis: form.Get("support_start_basis"), Delivery: form.Get("delivery"),
		ProductName: form.Get("product_name"), ModelDesignation: form.Get("model_designation"),
		VDPURL: form.Get("vdp_url"), VDPContact: form.Get("vdp_contact"), AdvisoriesURL: form.Get("advisories_url"),
		SecuritySeparate: form.Get("security_separate") == "on", GateKEV: form.Get("gate_kev") == "on",
		GateSeverity: form.Get("gate_severity")}
	policyChoices(f)
	var err error
	if f.RemediationDays, err = atoi("remediation_days"); err == nil {
		f.WarnDays, err = atoi("warn_days")
	}
	if err != nil {
		return f, nil, err
	}
	patch := map[string]any{
		"support_end": f.SupportEnd, "support_start": f.SupportStart, "support_start_basis": f.SupportStartBasis,
		"delivery": f.Delivery, "product_name": f.ProductName, "model_designation": f.ModelDesignation,
		"vdp_url": f.VDPURL, "vdp_contact": f.VDPContact, "advisories_url": f.AdvisoriesURL,
		"remediation_days": f.RemediationDays, "warn_days": f.WarnDays, "security_separate": f.SecuritySeparate,
		"gate_kev": f.GateKEV, "gate_severity": f.GateSeverity,
	}
	raw, _ := json.Marshal(patch)
	return f, raw, nil
}

// labelPreview renders, for the editor, the label the form's policy would publish: merged into
// the stored policy and validated as SetPolicy would, then drawn by the transparency service,
// with nothing saved. An htmx fragment: the label as an image, or why the policy is refused.
func (s *Server) labelPreview(w http.ResponseWriter, r *http.Request) {
	p, err := s.findProduct(r, r.PathValue("name"))
	if err != nil {
		s.pageFail(w, r, err)
		return
	}
	if s.Transparency == nil {
		s.pageFail(w, r, apperr.E(apperr.NotFound, "this server publishes no labels"))
		return
	}
	var v console.LabelPreview
	old, err := product.ParsePolicy(p.Policy)
	if err != nil {
		s.pageFail(w, r, err)
		return
	}
	_, patch, err := readPolicyForm(r.URL.Query())
	var next product.Policy
	if err == nil {
		next, err = product.MergePolicy(*old, patch)
	}
	if err == nil {
		_, err = product.ChangePolicy(p.Name, old, next, "", s.now())
	}
	if err == nil {
		b, _ := json.Marshal(next)
		preview := *p
		preview.Policy = b
		var svg []byte
		if svg, err = s.Transparency.PreviewLabel(r.Context(), &preview); err == nil {
			v.Image = template.URL("data:image/svg+xml;base64," + base64.StdEncoding.EncodeToString(svg))
			v.Alt = "Label preview: security updates until " + next.SupportEnd + ", delivery " + next.Delivery
		}
	}
	if err != nil {
		if apperr.CodeOf(err) == apperr.Internal {
			s.pageFail(w, r, err)
			return
		}
		v.Error = apperr.Message(err)
	}
	s.fragment(w, r, "product", "preview", s.layout(r, "", "products"), v)
}
