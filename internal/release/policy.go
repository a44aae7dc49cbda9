package release

import (
	"encoding/json"
	"fmt"
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

// Policy is a product's support policy, as the manufacturer sets it. The update mechanism facts
// (signed, verified on the device, rollback protection, A/B with automatic rollback) are not
// here: they are derived from the platform, never typed.
type Policy struct {
	SupportEnd       string   `json:"support_end"` // YYYY-MM-DD: last day of security updates
	Delivery         string   `json:"delivery"`
	SecuritySeparate bool     `json:"security_separate"`
	Notification     []string `json:"notification,omitempty"`
	VDPURL           string   `json:"vdp_url,omitempty"`
	VDPContact       string   `json:"vdp_contact,omitempty"`
	RemediationDays  int      `json:"remediation_days,omitempty"` // declared advisory→fix commitment
	WarnDays         int      `json:"warn_days,omitempty"`        // warn operators this long before the end
}

// Validate names the first bad field.
func (p Policy) Validate() error {
	if _, err := time.Parse(time.DateOnly, p.SupportEnd); err != nil {
		return apperr.E(apperr.Invalid, "support_end must be a date YYYY-MM-DD")
	}
	if !slices.Contains([]string{DeliveryAutomatic, DeliveryConsent, DeliveryNone}, p.Delivery) {
		return apperr.E(apperr.Invalid, "delivery must be automatic, consent or none")
	}
	if p.RemediationDays < 0 || p.WarnDays < 0 {
		return apperr.E(apperr.Invalid, "remediation_days and warn_days cannot be negative")
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
