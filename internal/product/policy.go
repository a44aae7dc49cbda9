package product

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
)

// Delivery modes of security updates.
const (
	DeliveryAutomatic = "automatic" // installed automatically; the owner may opt out
	DeliveryConsent   = "consent"   // installed once the owner agrees
	DeliveryNone      = "none"
)

// Support-period start bases (EU CRA Art.13(8)): what the support period counts from.
const (
	StartPlacedOnMarket = "placed_on_market"
	StartPurchase       = "purchase"
	StartActivation     = "activation"
)

// Policy is a product's support policy, as the manufacturer sets it. The update mechanism facts
// (signed, verified on the device, rollback protection, A/B with automatic rollback) are not
// here: they are derived from the platform, never typed.
//
// A stored policy is changed by merging: fields absent from an update keep their stored value
// (MergePolicy).
type Policy struct {
	SupportEnd       string   `json:"support_end"` // YYYY-MM-DD: last day of security updates
	Delivery         string   `json:"delivery"`
	SecuritySeparate bool     `json:"security_separate"`
	Notification     []string `json:"notification,omitempty"`
	VDPURL           string   `json:"vdp_url,omitempty"`
	VDPContact       string   `json:"vdp_contact,omitempty"`
	RemediationDays  int      `json:"remediation_days,omitempty"` // declared advisory→fix commitment
	WarnDays         int      `json:"warn_days,omitempty"`        // warn operators this long before the end
	// ProductName is the name an owner sees on the box; empty shows the product key.
	ProductName string `json:"product_name,omitempty"`
	// ModelDesignation is the model as printed on the device (ETSI EN 303 645 5.3-16).
	ModelDesignation string `json:"model_designation,omitempty"`
	// SupportStart (YYYY-MM-DD) and SupportStartBasis (placed_on_market, purchase or
	// activation) say when the support period starts counting (EU CRA Art.13(8)).
	SupportStart      string `json:"support_start,omitempty"`
	SupportStartBasis string `json:"support_start_basis,omitempty"`
	// JustificationUnder5y explains a support period shorter than five years (EU CRA Art.13(8)).
	JustificationUnder5y string `json:"justification_lt_5y,omitempty"`
	// AdvisoriesURL is where the product's security advisories are published (EU CRA Annex I
	// Pt II(8)).
	AdvisoriesURL string `json:"advisories_url,omitempty"`
	// ForbidDDI refuses hawkBit DDI devices of this product (they verify only their bundle's
	// signature, no Uptane metadata): none can be created or register, and existing ones are
	// answered 403.
	ForbidDDI bool `json:"forbid_ddi,omitempty"`
	// GateKEV refuses to publish, or to roll out, a release with a vulnerability in the CISA
	// Known Exploited Vulnerabilities catalog (EU CRA Annex I Pt I(2)(a)), unless a VEX
	// statement or a waiver covers it.
	GateKEV bool `json:"gate_kev,omitempty"`
	// GateSeverity ("critical", "high", "medium", "low"; "" for none) refuses a release with a
	// vulnerability of at least that severity, unless a VEX statement or a waiver covers it.
	GateSeverity string `json:"gate_severity,omitempty"`
}

// Gated reports whether the policy holds a release gate.
func (p Policy) Gated() bool { return p.GateKEV || p.GateSeverity != "" }

// DefaultPolicy is what a new product's policy starts from before the first update is merged
// into it: automatic delivery, security updates separate from feature updates.
func DefaultPolicy() Policy {
	return Policy{Delivery: DeliveryAutomatic, SecuritySeparate: true}
}

// MergePolicy returns base with the fields present in the JSON object patch replacing its own;
// absent fields keep base's value, and a field set to its empty value ("", [], 0, false) clears
// it. Unknown fields are refused with apperr.Invalid.
func MergePolicy(base Policy, patch []byte) (Policy, error) {
	next := base
	next.Notification = slices.Clone(base.Notification)
	dec := json.NewDecoder(bytes.NewReader(patch))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&next); err != nil {
		return Policy{}, apperr.Wrap(apperr.Invalid, err, "malformed policy: "+err.Error())
	}
	return next, nil
}

// Validate names the first bad field. It applies the rules of the declaration schema to the
// fields the declaration publishes (dates, absolute URLs, non-empty channels, the enums), so that
// a policy it accepts always gives a publishable declaration.
func (p Policy) Validate() error {
	if p.SupportEnd == "" {
		return apperr.E(apperr.Invalid, "support_end is required: a product's policy states its end of support first (--support-end YYYY-MM-DD)")
	}
	if _, err := time.Parse(time.DateOnly, p.SupportEnd); err != nil {
		return apperr.E(apperr.Invalid, "support_end must be a date YYYY-MM-DD")
	}
	if !slices.Contains([]string{DeliveryAutomatic, DeliveryConsent, DeliveryNone}, p.Delivery) {
		return apperr.E(apperr.Invalid, "delivery must be automatic, consent or none")
	}
	if p.RemediationDays < 0 || p.WarnDays < 0 {
		return apperr.E(apperr.Invalid, "remediation_days and warn_days cannot be negative")
	}
	for _, c := range p.Notification {
		if strings.TrimSpace(c) == "" {
			return apperr.E(apperr.Invalid, "notification channels cannot be empty (got %q)", strings.Join(p.Notification, ","))
		}
	}
	for _, u := range []struct{ name, v string }{{"vdp_url", p.VDPURL}, {"advisories_url", p.AdvisoriesURL}} {
		if err := absoluteURL(u.v); err != nil {
			return apperr.E(apperr.Invalid, "%s must be an absolute http or https URL such as https://example.com/security: %v", u.name, err)
		}
	}
	if p.SupportStart != "" {
		start, err := time.Parse(time.DateOnly, p.SupportStart)
		if err != nil {
			return apperr.E(apperr.Invalid, "support_start must be a date YYYY-MM-DD")
		}
		if start.After(p.End()) {
			return apperr.E(apperr.Invalid, "support_start %s is after support_end %s", p.SupportStart, p.SupportEnd)
		}
	}
	if !slices.Contains([]string{"", "critical", "high", "medium", "low"}, p.GateSeverity) {
		return apperr.E(apperr.Invalid, "gate_severity must be critical, high, medium or low")
	}
	if p.SupportStartBasis != "" && !slices.Contains([]string{StartPlacedOnMarket, StartPurchase, StartActivation}, p.SupportStartBasis) {
		return apperr.E(apperr.Invalid, "support_start_basis must be placed_on_market, purchase or activation")
	}
	for _, f := range []struct{ name, v string }{{"product_name", p.ProductName}, {"model_designation", p.ModelDesignation}, {"justification_lt_5y", p.JustificationUnder5y}} {
		if f.v != "" && strings.TrimSpace(f.v) == "" {
			return apperr.E(apperr.Invalid, "%s cannot be blank", f.name)
		}
	}
	return nil
}

// absoluteURL accepts "" and absolute http(s) URLs with a host: what the schema's "uri" format
// accepts and a browser can open.
func absoluteURL(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q has no http(s) scheme and host", s)
	}
	return nil
}

// End is the support end date.
func (p Policy) End() time.Time { t, _ := time.Parse(time.DateOnly, p.SupportEnd); return t }

// ChangePolicy checks next against the stored policy (nil for a new product) and returns the
// history entries that record it. The support end may be extended, never shortened.
func ChangePolicy(product string, old *Policy, next Policy, actor string, now time.Time) ([]PolicyChange, error) {
	if err := next.Validate(); err != nil {
		return nil, err
	}
	if old != nil && next.End().Before(old.End()) {
		return nil, apperr.E(apperr.Invalid, "the support end of %s may be extended, never shortened (it is %s)", product, old.SupportEnd)
	}
	var prev Policy
	if old != nil {
		prev = *old
	}
	var out []PolicyChange
	pv, nv := reflect.ValueOf(prev), reflect.ValueOf(next)
	for i := range pv.NumField() {
		a, _ := json.Marshal(pv.Field(i).Interface())
		b, _ := json.Marshal(nv.Field(i).Interface())
		if string(a) != string(b) {
			name, _, _ := strings.Cut(pv.Type().Field(i).Tag.Get("json"), ",")
			out = append(out, PolicyChange{Product: product, At: now, Actor: actor, Field: name, Old: string(a), New: string(b)})
		}
	}
	return out, nil
}

// EndingSoon says whether operators should be warned: the end is within WarnDays (default 90)
// of now, or past.
func (p Policy) EndingSoon(now time.Time) bool {
	warn := p.WarnDays
	if warn == 0 {
		warn = 90
	}
	return now.AddDate(0, 0, warn).After(p.End())
}

// ParsePolicy reads a stored policy.
func ParsePolicy(b []byte) (*Policy, error) {
	var p Policy
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("stored policy: %w", err)
	}
	return &p, nil
}
