package label

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// baseline is the verdict of every provision for testPolicy, testMechanism and testEvidence.
func baseline() map[string]string {
	const m, c, na = VerdictMet, VerdictCannotJudge, VerdictNotApplicable
	return map[string]string{
		"ETSI EN 303 645 5.2-1": m, "ETSI EN 303 645 5.2-2": m, "ETSI EN 303 645 5.2-3": m,
		"ETSI EN 303 645 5.3-1": c, "ETSI EN 303 645 5.3-2": m, "ETSI EN 303 645 5.3-3": m, "ETSI EN 303 645 5.3-4": m,
		"ETSI EN 303 645 5.3-5": c, "ETSI EN 303 645 5.3-6": m, "ETSI EN 303 645 5.3-7": m, "ETSI EN 303 645 5.3-8": m,
		"ETSI EN 303 645 5.3-9": m, "ETSI EN 303 645 5.3-10": m, "ETSI EN 303 645 5.3-11": m, "ETSI EN 303 645 5.3-12": c,
		"ETSI EN 303 645 5.3-13": m, "ETSI EN 303 645 5.3-14": na, "ETSI EN 303 645 5.3-15": na, "ETSI EN 303 645 5.3-16": m,
		"NISTIR 8259A Software Update 1": m, "NISTIR 8259A Software Update 2": m, "NISTIR 8259A Software Update 3": m,
		"EU CRA Annex I Pt I(2)(c)": m, "EU CRA Annex I Pt II(2)": m, "EU CRA Annex I Pt II(7)": m, "EU CRA Annex I Pt II(8)": m,
		"EU CRA Art.13(8)": m,
		"UK PSTI Sch.1 ¶2": m, "UK PSTI Sch.1 ¶3": m,
	}
}

func TestConformance(t *testing.T) {
	fix := func(days int) []TimeToPatch {
		return []TimeToPatch{{Advisory: "A-1", Published: day(2026, 1, 1), FixReleased: day(2026, 1, 1).AddDate(0, 0, days)}}
	}
	evidence := func(ttp []TimeToPatch) Evidence { return ComputeEvidence(testNow, nil, nil, ttp, nil) }
	// fixed is an advisory of severity sev published on 1 January 2026 and fixed days later;
	// days < 0 leaves it open (on testNow, 1 May 2026 12:00, it is 120.5 days old).
	fixed := func(id, sev string, published time.Time, days int) TimeToPatch {
		t := TimeToPatch{Advisory: id, Severity: sev, Published: published}
		if days >= 0 {
			t.FixReleased = published.AddDate(0, 0, days)
		}
		return t
	}
	late := map[string]string{"ETSI EN 303 645 5.3-8": VerdictNotMet, "ETSI EN 303 645 5.2-2": VerdictNotMet, "EU CRA Annex I Pt II(7)": VerdictNotMet}
	jan, apr := day(2026, 1, 1), day(2026, 4, 20)
	tests := []struct {
		name        string
		policy      func(p *Policy)
		mech        func(m *Mechanism)
		evidence    Evidence
		want        map[string]string // changes from baseline
		evidenceHas map[string]string // substrings the evidence of a provision must contain
	}{
		{name: "complete policy", want: nil,
			evidenceHas: map[string]string{"UK PSTI Sch.1 ¶3": "guaranteed until 31 March 2031", "ETSI EN 303 645 5.3-8": "11 days"}},
		{name: "fix within the commitment to the day", evidence: evidence(fix(30)), want: nil},
		{name: "time to patch over the commitment", evidence: evidence(fix(31)),
			want: map[string]string{"ETSI EN 303 645 5.3-8": VerdictNotMet, "ETSI EN 303 645 5.2-2": VerdictNotMet, "EU CRA Annex I Pt II(7)": VerdictNotMet}},
		{name: "a slow critical fix the median hides", evidence: evidence([]TimeToPatch{
			fixed("A-1", "critical", jan, 5), fixed("A-2", "high", jan, 6), fixed("A-3", "critical", jan, 45)}),
			want: late, evidenceHas: map[string]string{"ETSI EN 303 645 5.3-8": "within target: 66.7 percent (n=3)"}},
		{name: "a high advisory open longer than the commitment", evidence: evidence([]TimeToPatch{
			fixed("A-1", "high", jan, 5), fixed("A-2", "high", jan, -1)}), want: late},
		{name: "a high advisory open within the commitment", evidence: evidence([]TimeToPatch{
			fixed("A-1", "high", jan, 5), fixed("A-2", "high", apr, -1)}), want: nil},
		{name: "a slow fix of a low advisory is not covered", evidence: evidence([]TimeToPatch{
			fixed("A-1", "high", jan, 5), fixed("A-2", "low", jan, 90), fixed("A-3", "medium", jan, -1)}), want: nil},
		{name: "unknown severity is covered", evidence: evidence([]TimeToPatch{fixed("A-1", "", jan, 31)}), want: late},
		{name: "only medium advisories", evidence: evidence([]TimeToPatch{fixed("A-1", "medium", jan, 5)}),
			want: map[string]string{"ETSI EN 303 645 5.3-8": VerdictCannotJudge, "ETSI EN 303 645 5.2-2": VerdictCannotJudge, "EU CRA Annex I Pt II(7)": VerdictCannotJudge}},
		{name: "no time-to-patch data", evidence: evidence(nil),
			want: map[string]string{"ETSI EN 303 645 5.3-8": VerdictCannotJudge, "ETSI EN 303 645 5.2-2": VerdictCannotJudge,
				"ETSI EN 303 645 5.2-3": VerdictCannotJudge, "EU CRA Annex I Pt II(7)": VerdictCannotJudge}},
		{name: "no remediation commitment", policy: func(p *Policy) { p.RemediationDays = 0 },
			want: map[string]string{"ETSI EN 303 645 5.3-8": VerdictCannotJudge, "ETSI EN 303 645 5.2-2": VerdictCannotJudge, "EU CRA Annex I Pt II(7)": VerdictCannotJudge}},
		{name: "support ended", policy: func(p *Policy) {
			p.SupportStart, p.SupportEnd, p.JustificationUnder5y = day(2020, 1, 1), day(2025, 12, 31), ""
		}, want: nil, evidenceHas: map[string]string{
			"UK PSTI Sch.1 ¶3": "end_of_support: support ended on 31 December 2025", "ETSI EN 303 645 5.3-13": "end_of_support"}},
		{name: "under five years without justification", policy: func(p *Policy) { p.SupportEnd = day(2029, 3, 1) },
			want: map[string]string{"EU CRA Art.13(8)": VerdictNotMet}},
		{name: "under five years with justification", policy: func(p *Policy) { p.SupportEnd, p.JustificationUnder5y = day(2029, 3, 1), "expected use of three years" }},
		{name: "no start date", policy: func(p *Policy) { p.SupportStart = time.Time{} },
			want: map[string]string{"EU CRA Art.13(8)": VerdictCannotJudge}},
		{name: "support end shortened in the history", policy: func(p *Policy) {
			p.History = append(p.History, PolicyChange{At: day(2026, 4, 20), Field: "support_end", Old: `"2031-03-31"`, New: `"2030-03-31"`})
		}, want: map[string]string{"ETSI EN 303 645 5.3-13": VerdictNotMet, "UK PSTI Sch.1 ¶3": VerdictNotMet}},
		{name: "updates with consent", policy: func(p *Policy) { p.Delivery = DeliveryConsent },
			want: map[string]string{"ETSI EN 303 645 5.3-3": VerdictCannotJudge, "ETSI EN 303 645 5.3-4": VerdictNotMet, "ETSI EN 303 645 5.3-6": VerdictNotMet,
				"EU CRA Annex I Pt I(2)(c)": VerdictNotMet, "EU CRA Annex I Pt II(7)": VerdictNotMet}},
		{name: "automatic without opt-out", policy: func(p *Policy) { p.OwnerOptOut = false },
			want: map[string]string{"ETSI EN 303 645 5.3-6": VerdictNotMet, "NISTIR 8259A Software Update 3": VerdictNotMet, "EU CRA Annex I Pt I(2)(c)": VerdictNotMet}},
		{name: "no notification", policy: func(p *Policy) { p.Notification = nil },
			want: map[string]string{"ETSI EN 303 645 5.3-6": VerdictNotMet, "ETSI EN 303 645 5.3-11": VerdictNotMet, "EU CRA Annex I Pt I(2)(c)": VerdictNotMet}},
		{name: "no updates", policy: func(p *Policy) { p.Delivery = DeliveryNone },
			want: map[string]string{"ETSI EN 303 645 5.3-1": VerdictNotMet, "ETSI EN 303 645 5.3-2": VerdictNotMet, "ETSI EN 303 645 5.3-3": VerdictNotMet,
				"ETSI EN 303 645 5.3-4": VerdictNotMet, "ETSI EN 303 645 5.3-6": VerdictNotMet, "ETSI EN 303 645 5.3-7": VerdictNotMet,
				"ETSI EN 303 645 5.3-9": VerdictNotMet, "ETSI EN 303 645 5.3-10": VerdictNotMet, "ETSI EN 303 645 5.3-14": VerdictCannotJudge, "ETSI EN 303 645 5.3-15": VerdictCannotJudge,
				"NISTIR 8259A Software Update 1": VerdictNotMet, "NISTIR 8259A Software Update 2": VerdictNotMet, "NISTIR 8259A Software Update 3": VerdictNotMet,
				"EU CRA Annex I Pt I(2)(c)": VerdictNotMet, "EU CRA Annex I Pt II(7)": VerdictNotMet}},
		{name: "weak hash", mech: func(m *Mechanism) { m.HashAlgorithms = "sha1" },
			want: map[string]string{"ETSI EN 303 645 5.3-7": VerdictNotMet}},
		{name: "unknown signature algorithm", mech: func(m *Mechanism) { m.SignatureAlgorithm = "falcon-512" },
			want: map[string]string{"ETSI EN 303 645 5.3-7": VerdictCannotJudge}},
		{name: "not verified on the device", mech: func(m *Mechanism) { m.SignedAndVerifiedOnDevice = false },
			want: map[string]string{"ETSI EN 303 645 5.3-2": VerdictNotMet, "ETSI EN 303 645 5.3-9": VerdictNotMet, "ETSI EN 303 645 5.3-10": VerdictNotMet,
				"NISTIR 8259A Software Update 1": VerdictNotMet, "EU CRA Annex I Pt II(7)": VerdictNotMet}},
		{name: "no rollback protection", mech: func(m *Mechanism) { m.RollbackProtection = false },
			want: map[string]string{"NISTIR 8259A Software Update 2": VerdictNotMet}},
		{name: "no vulnerability contact", policy: func(p *Policy) { p.VDPURL, p.VDPContact = "", "" },
			want: map[string]string{"ETSI EN 303 645 5.2-1": VerdictNotMet, "UK PSTI Sch.1 ¶2": VerdictNotMet}},
		{name: "contact without a published policy", policy: func(p *Policy) { p.VDPURL = "" },
			want: map[string]string{"ETSI EN 303 645 5.2-1": VerdictNotMet}},
		{name: "security fixes only with features, no advisories", policy: func(p *Policy) { p.SecuritySeparate, p.AdvisoriesURL = false, "" },
			want: map[string]string{"EU CRA Annex I Pt II(2)": VerdictNotMet, "EU CRA Annex I Pt II(8)": VerdictNotMet, "ETSI EN 303 645 5.3-11": VerdictNotMet}},
		{name: "no model designation", policy: func(p *Policy) { p.ModelDesignation = "" },
			want: map[string]string{"ETSI EN 303 645 5.3-16": VerdictNotMet}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, m, e := testPolicy(), testMechanism(), tt.evidence
			if tt.policy != nil {
				tt.policy(&p)
			}
			if tt.mech != nil {
				tt.mech(&m)
			}
			if e.ComputedAt.IsZero() {
				e = testEvidence()
			}
			r := Conformance(BuildDeclaration(p, m, e, testNow), testNow)
			want := baseline()
			maps.Copy(want, tt.want)
			got := map[string]string{}
			for _, v := range r.Verdicts {
				got[v.Source+" "+v.Provision] = v.Verdict
				if v.Verdict != VerdictMet && v.Reason == "" {
					t.Errorf("%s %s is %s with no reason", v.Source, v.Provision, v.Verdict)
				}
				if v.Title == "" {
					t.Errorf("%s %s has no title", v.Source, v.Provision)
				}
				if sub, ok := tt.evidenceHas[v.Source+" "+v.Provision]; ok && !strings.Contains(v.Evidence, sub) {
					t.Errorf("%s %s evidence %q, want it to contain %q", v.Source, v.Provision, v.Evidence, sub)
				}
			}
			if len(got) != len(r.Verdicts) {
				t.Errorf("%d verdicts for %d distinct provisions", len(r.Verdicts), len(got))
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("verdicts (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReportStatus(t *testing.T) {
	d := BuildDeclaration(testPolicy(), testMechanism(), testEvidence(), testNow)
	tests := []struct {
		now  time.Time
		want string
	}{
		{testNow, StatusSupported},
		{day(2031, 3, 31).Add(23 * time.Hour), StatusSupported},
		{day(2031, 4, 1), StatusEndOfSupport},
	}
	for _, tt := range tests {
		r := Conformance(d, tt.now)
		if r.Status != tt.want {
			t.Errorf("Conformance at %v: status %q, want %q", tt.now, r.Status, tt.want)
		}
	}
	r := Conformance(d, testNow)
	if got, want := r.Count(VerdictMet)+r.Count(VerdictNotMet)+r.Count(VerdictCannotJudge)+r.Count(VerdictNotApplicable), len(r.Verdicts); got != want {
		t.Errorf("counts add up to %d, want %d", got, want)
	}
}
