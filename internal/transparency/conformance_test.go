package transparency_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/label"
	"upkeep.dev/upkeep/internal/product"
)

// setPolicy stores the policy that a `testProduct set` with these fields (as JSON) gives: merged
// over the stored one, or over product.DefaultPolicy for a new testProduct, as the API does.
func (f *fixture) setPolicy(t *testing.T, patch string) error {
	t.Helper()
	ctx := context.Background()
	cur, err := f.db.FindProduct(ctx, testProduct)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := product.ParsePolicy(cur.Policy)
	next, err := product.MergePolicy(*old, []byte(patch))
	if err != nil {
		return err
	}
	changes, err := product.ChangePolicy(testProduct, old, next, "admin", f.clock.Now())
	if err != nil {
		return err
	}
	p := &product.Product{Name: testProduct, Policy: policyJSON(next), UpdatedAt: f.clock.Now().Add(time.Millisecond)}
	if err := f.svc.CheckPolicy(ctx, p); err != nil {
		return err
	}
	return f.db.PutProduct(ctx, p, cur.UpdatedAt, changes)
}

// TestTransparencyConformance checks, through the service, the verdicts that rest on policy
// fields an operator sets with `testProduct set`: the support start and its justification, the
// advisories address, the testProduct name and model.
func TestTransparencyConformance(t *testing.T) {
	verdict := func(r label.Report, prov string) label.Verdict {
		for _, v := range r.Verdicts {
			if v.Source+" "+v.Provision == prov {
				return v
			}
		}
		t.Fatalf("no verdict for %s", prov)
		return label.Verdict{}
	}
	const (
		art138  = "EU CRA Art.13(8)"
		pt2_8   = "EU CRA Annex I Pt II(8)"
		etsi11  = "ETSI EN 303 645 5.3-11"
		etsi16  = "ETSI EN 303 645 5.3-16"
		met     = label.VerdictMet
		notMet  = label.VerdictNotMet
		cannotJ = label.VerdictCannotJudge
	)
	tests := []struct {
		name  string
		patch string // the fields `testProduct set` sends, over the fixture's policy (ends 2031-12-31)
		want  map[string]string
	}{
		{"the fixture's policy", `{}`, map[string]string{art138: cannotJ, pt2_8: notMet, etsi11: notMet, etsi16: notMet}},
		{"five years from the start", `{"support_start":"2026-03-01","support_start_basis":"placed_on_market"}`, map[string]string{art138: met}},
		{"under five years", `{"support_start":"2027-03-01","support_start_basis":"purchase"}`, map[string]string{art138: notMet}},
		{"under five years, justified", `{"support_start":"2027-03-01","justification_lt_5y":"expected use of four years"}`, map[string]string{art138: met}},
		{"advisories published", `{"advisories_url":"https://example.com/advisories"}`, map[string]string{pt2_8: met, etsi11: met}},
		{"advisories but no notification channel", `{"advisories_url":"https://example.com/advisories","notification":[]}`, map[string]string{pt2_8: met, etsi11: notMet}},
		{"model designation", `{"model_designation":"T2-EU"}`, map[string]string{etsi16: met}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, "2031-12-31")
			if err := f.setPolicy(t, tt.patch); err != nil {
				t.Fatal(err)
			}
			p := f.publication(t)
			for prov, want := range tt.want {
				if v := verdict(p.Report, prov); v.Verdict != want {
					t.Errorf("%s: %s (%s; %s), want %s", prov, v.Verdict, v.Evidence, v.Reason, want)
				}
			}
		})
	}
}

// TestTransparencyAdvisoriesPage checks that a server that matches advisories to the testProduct
// publishes them on the testProduct's page and declares that section as the advisories address,
// unless the operator gave one.
func TestTransparencyAdvisoriesPage(t *testing.T) {
	f := newFixture(t, "2031-12-31")
	now := f.clock.Now()
	fix := now.AddDate(0, 0, -20)
	f.svc.TimeToPatch = func(context.Context, string) ([]label.TimeToPatch, error) {
		return []label.TimeToPatch{{Advisory: "CVE-2026-0001", Severity: "high", Published: fix.AddDate(0, 0, -4), FixReleased: fix}}, nil
	}
	p := f.publication(t)
	if got, want := p.Declaration.VulnerabilityHandling.AdvisoriesURL, "https://labels.example.com/p/thermostat#advisories"; got != want {
		t.Errorf("advisories_url %q, want %q", got, want)
	}
	if !strings.Contains(string(p.Page), `id="advisories"`) || !strings.Contains(string(p.Page), "CVE-2026-0001") {
		t.Error("the page does not list the advisories")
	}
	for _, v := range p.Report.Verdicts {
		if (v.Provision == "Annex I Pt II(8)" || v.Provision == "5.3-11") && v.Verdict != label.VerdictMet {
			t.Errorf("%s: %s (%s)", v.Provision, v.Verdict, v.Reason)
		}
	}
	if err := f.setPolicy(t, `{"advisories_url":"https://example.com/advisories"}`); err != nil {
		t.Fatal(err)
	}
	if got := f.publication(t).Declaration.VulnerabilityHandling.AdvisoriesURL; got != "https://example.com/advisories" {
		t.Errorf("the operator's advisories address was replaced: %q", got)
	}
}

// TestTransparencyProductName checks that the label and the page show the testProduct's name and
// model, and fall back to the testProduct key without a name.
func TestTransparencyProductName(t *testing.T) {
	f := newFixture(t, "2031-12-31")
	if p := f.publication(t); p.Declaration.Product.Name != testProduct || p.Declaration.Product.ModelDesignation != "" {
		t.Errorf("without a name: %+v", p.Declaration.Product)
	}
	if err := f.setPolicy(t, `{"product_name":"Acme Smart Thermostat","model_designation":"T2-EU"}`); err != nil {
		t.Fatal(err)
	}
	p := f.publication(t)
	if p.Declaration.Product.Name != "Acme Smart Thermostat" || p.Declaration.Product.ID != testProduct || p.Declaration.Product.ModelDesignation != "T2-EU" {
		t.Errorf("declaration testProduct %+v", p.Declaration.Product)
	}
	for what, b := range map[string][]byte{"label": p.LabelSVG, "page": p.Page} {
		if !strings.Contains(string(b), "Acme Smart Thermostat") || !strings.Contains(string(b), "T2-EU") {
			t.Errorf("the %s does not show the testProduct name and model", what)
		}
	}
}

// TestCheckPolicy checks that a policy whose declaration the schema refuses is refused when it
// is set, naming the field, and that a partial change keeps the other fields.
func TestCheckPolicy(t *testing.T) {
	f := newFixture(t, "2031-12-31")
	for _, patch := range []string{
		`{"vdp_url":"security.example.com"}`,
		`{"advisories_url":"/advisories"}`,
		`{"notification":["app","","email"]}`,
		`{"support_start_basis":"birthday"}`,
		`{"support_start":"2032-01-01"}`,
		`{"product_name":"  "}`,
		`{"colour":"red"}`,
	} {
		if err := f.setPolicy(t, patch); !apperr.Is(err, apperr.Invalid) {
			t.Errorf("%s: %v, want invalid", patch, err)
		}
	}
	if err := f.setPolicy(t, `{"support_end":"2032-06-30"}`); err != nil {
		t.Fatal(err)
	}
	cur, _ := f.db.FindProduct(context.Background(), testProduct)
	pol, _ := product.ParsePolicy(cur.Policy)
	if pol.SupportEnd != "2032-06-30" || pol.VDPURL != "https://example.com/vdp" || pol.VDPContact != "security@example.com" ||
		len(pol.Notification) != 1 || pol.RemediationDays != 30 || pol.Delivery != product.DeliveryAutomatic {
		t.Errorf("extending the end changed other fields: %+v", pol)
	}
}

// TestTransparencyCompletePolicy checks that a testProduct whose operator gave every flag of
// `testProduct set`, on a server that matches advisories and fixes them within the commitment,
// meets every provision that platform data can judge.
func TestTransparencyCompletePolicy(t *testing.T) {
	f := newFixture(t, "2031-12-31")
	now := f.clock.Now()
	f.release(t, "1.0.0", "security", 1, now.AddDate(0, -1, 0))
	f.device(t, "d1", "1.0.0", now.Add(-time.Hour))
	fix, at90 := now.AddDate(0, -1, 0), now.AddDate(0, 0, -20)
	f.svc.TimeToPatch = func(context.Context, string) ([]label.TimeToPatch, error) {
		return []label.TimeToPatch{{Advisory: "CVE-2026-0001", Severity: "critical", Published: fix.AddDate(0, 0, -3), FixReleased: fix, Fleet90At: &at90}}, nil
	}
	if err := f.setPolicy(t, `{"product_name":"Acme Thermostat","model_designation":"T2-EU","support_start":"2026-03-01",
		"support_start_basis":"placed_on_market","notification":["app","email"],"advisories_url":"https://example.com/advisories"}`); err != nil {
		t.Fatal(err)
	}
	r := f.publication(t).Report
	for _, v := range r.Verdicts {
		if v.Verdict == label.VerdictNotMet {
			t.Errorf("%s %s: not met (%s)", v.Source, v.Provision, v.Reason)
		}
	}
	if r.Count(label.VerdictMet) < 20 {
		t.Errorf("only %d provisions met", r.Count(label.VerdictMet))
	}
}
