package cli

import (
	"github.com/spf13/pflag"
	"upkeep.dev/upkeep/internal/product"
)

// policyFlag ties a `product set` flag to the policy field (its JSON name) it sets.
type policyFlag struct{ flag, field string }

// policyFlagFields lists every `product set` flag with its policy field.
var policyFlagFields = []policyFlag{
	{"support-end", "support_end"},
	{"support-start", "support_start"},
	{"support-start-basis", "support_start_basis"},
	{"justification", "justification_lt_5y"},
	{"delivery", "delivery"},
	{"security-separate", "security_separate"},
	{"notify", "notification"},
	{"vdp-url", "vdp_url"},
	{"vdp-contact", "vdp_contact"},
	{"advisories-url", "advisories_url"},
	{"remediation-days", "remediation_days"},
	{"warn-days", "warn_days"},
	{"name", "product_name"},
	{"model", "model_designation"},
	{"forbid-ddi", "forbid_ddi"},
	{"gate-kev", "gate_kev"},
	{"gate-severity", "gate_severity"},
}

// policyFlags registers the `product set` flags. Their defaults are those of a new product
// (product.DefaultPolicy); only the flags given on the command line are sent (policyPatch).
func policyFlags(f *pflag.FlagSet, pol *product.Policy) {
	def := product.DefaultPolicy()
	f.StringVar(&pol.SupportEnd, "support-end", "", "last day of security updates, YYYY-MM-DD (required for a new product)")
	f.StringVar(&pol.SupportStart, "support-start", "", "first day of the support period, YYYY-MM-DD (EU CRA Art.13(8))")
	f.StringVar(&pol.SupportStartBasis, "support-start-basis", "", "what the support period counts from: placed_on_market, purchase or activation")
	f.StringVar(&pol.JustificationUnder5y, "justification", "", "why the support period is shorter than five years")
	f.StringVar(&pol.Delivery, "delivery", def.Delivery, "automatic (owner may opt out), consent or none")
	f.BoolVar(&pol.SecuritySeparate, "security-separate", def.SecuritySeparate, "security updates are delivered separately from feature updates")
	f.StringSliceVar(&pol.Notification, "notify", nil, "how owners are notified (comma-separated or repeated): app, email, device")
	f.StringVar(&pol.VDPURL, "vdp-url", "", "vulnerability-disclosure policy URL (absolute, https://...)")
	f.StringVar(&pol.VDPContact, "vdp-contact", "", "vulnerability-report contact")
	f.StringVar(&pol.AdvisoriesURL, "advisories-url", "", "where the product's security advisories are published (absolute, https://...)")
	f.IntVar(&pol.RemediationDays, "remediation-days", 0, "declared days from advisory to fixed release for high and critical vulnerabilities")
	f.IntVar(&pol.WarnDays, "warn-days", 0, "warn operators this many days before the end (0: 90)")
	f.StringVar(&pol.ProductName, "name", "", "product name as the owner sees it (default: the product key)")
	f.StringVar(&pol.ModelDesignation, "model", "", "model designation as printed on the device")
	f.BoolVar(&pol.ForbidDDI, "forbid-ddi", false, "refuse hawkBit DDI devices (bundle signature only, no Uptane) for this product")
	f.BoolVar(&pol.GateKEV, "gate-kev", false, "release gate: refuse to publish or roll out a release with a known exploited vulnerability (CISA KEV) that no VEX statement or waiver covers")
	f.StringVar(&pol.GateSeverity, "gate-severity", "", "release gate: refuse a release with a vulnerability of at least this severity (critical, high, medium, low; \"\" for none)")
}

// policyPatch returns the policy fields whose flags were given, for a partial update: the
// server keeps every other field as stored. An empty value given explicitly (--vdp-url "")
// clears the field.
func policyPatch(f *pflag.FlagSet, pol product.Policy) map[string]any {
	vals := map[string]any{
		"support_end": pol.SupportEnd, "support_start": pol.SupportStart, "support_start_basis": pol.SupportStartBasis,
		"justification_lt_5y": pol.JustificationUnder5y, "delivery": pol.Delivery, "security_separate": pol.SecuritySeparate,
		"notification": pol.Notification, "vdp_url": pol.VDPURL, "vdp_contact": pol.VDPContact, "advisories_url": pol.AdvisoriesURL,
		"remediation_days": pol.RemediationDays, "warn_days": pol.WarnDays, "product_name": pol.ProductName,
		"model_designation": pol.ModelDesignation, "forbid_ddi": pol.ForbidDDI, "gate_kev": pol.GateKEV, "gate_severity": pol.GateSeverity,
	}
	out := map[string]any{}
	for _, pf := range policyFlagFields {
		if f.Changed(pf.flag) {
			v := vals[pf.field]
			if s, ok := v.([]string); ok && s == nil {
				v = []string{}
			}
			out[pf.field] = v
		}
	}
	return out
}
