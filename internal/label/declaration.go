package label

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// SchemaVersion is the version of the declaration format this package writes.
const SchemaVersion = "1.0"

// SchemaID is the $id of the declaration schema.
const SchemaID = "https://upkeep.dev/schema/declaration-v1.json"

// Schema is the JSON Schema (draft 2020-12) of the declaration, version 1. Each property's
// description names the source that asks for it. Callers must not modify it.
//
//go:embed schema/declaration-v1.json
var Schema []byte

// PostEOSBehaviour says what happens to a product once its support period has ended.
const PostEOSBehaviour = "no further security updates; the last software version stays available to install"

// Declaration is a product's update-capability declaration. Its JSON form is described by
// Schema; dates are YYYY-MM-DD and timestamps RFC 3339 in UTC.
type Declaration struct {
	SchemaVersion           string                `json:"schema_version"`
	DeclarationID           string                `json:"declaration_id"`
	LastUpdated             time.Time             `json:"last_updated"`
	Manufacturer            Manufacturer          `json:"manufacturer"`
	Product                 Product               `json:"product"`
	UpdateCapable           string                `json:"update_capable"` // "yes" or "no"
	Mechanisms              []UpdateMechanism     `json:"mechanisms"`
	SecurityUpdatesSeparate bool                  `json:"security_updates_separate"`
	SecurityUpdatesFree     bool                  `json:"security_updates_free"`
	Support                 Support               `json:"support"`
	PostEOS                 PostEOS               `json:"post_eos"`
	VulnerabilityHandling   VulnerabilityHandling `json:"vulnerability_handling"`
	Evidence                Evidence              `json:"evidence"`
	Status                  string                `json:"status"` // StatusSupported or StatusEndOfSupport
}

// Product identifies the product the declaration covers.
type Product struct {
	Name             string `json:"name"`
	ModelDesignation string `json:"model_designation,omitempty"` // empty: none declared
	ID               string `json:"id"`
}

// UpdateMechanism is one way updates reach the device.
type UpdateMechanism struct {
	Delivery          string       `json:"delivery"`   // "network_ota"
	Initiation        string       `json:"initiation"` // "automatic" or "user"
	Defaults          Defaults     `json:"defaults"`
	UserControls      UserControls `json:"user_controls"`
	Crypto            Crypto       `json:"crypto"`
	AtomicAB          bool         `json:"atomic_ab"`
	AutomaticRollback bool         `json:"automatic_rollback"`
}

// Defaults are the settings a device has out of the box.
type Defaults struct {
	AutoInstall   bool `json:"auto_install"`
	Notifications bool `json:"notifications"`
}

// UserControls are what the owner may change.
type UserControls struct {
	Disable  bool `json:"disable"`
	Postpone bool `json:"postpone"`
}

// Crypto describes how updates are secured.
type Crypto struct {
	SigAlg           string `json:"sig_alg"`
	HashAlg          string `json:"hash_alg"`
	VerifiedOnDevice bool   `json:"verified_on_device"`
	AntiRollback     bool   `json:"anti_rollback"`
	OfflineKeys      bool   `json:"offline_keys"`
	TrustAnchor      string `json:"trust_anchor"`
}

// Support is the defined support period.
type Support struct {
	EndDate           string          `json:"end_date"`
	StartBasis        string          `json:"start_basis,omitempty"`
	StartDate         string          `json:"start_date,omitempty"`
	GuaranteedMinimum bool            `json:"guaranteed_minimum"`
	JustificationLT5y string          `json:"justification_lt_5y,omitempty"`
	History           []SupportChange `json:"history"`
}

// SupportChange is a published change of the support period. The actor is not published.
type SupportChange struct {
	At    time.Time `json:"at"`
	Field string    `json:"field"`
	Old   string    `json:"old"`
	New   string    `json:"new"`
}

// PostEOS says what happens after the support period.
type PostEOS struct {
	Behaviour    string `json:"behaviour"`
	KeepsWorking bool   `json:"keeps_working"` // the device goes on working, without security updates
	OwnerNotice  string `json:"owner_notice"`  // how the owner learns that support has ended
}

// VulnerabilityHandling says how vulnerabilities are reported, fixed and announced.
type VulnerabilityHandling struct {
	VDP                   VDP      `json:"vdp"`
	AdvisoriesURL         string   `json:"advisories_url,omitempty"`
	NotificationChannels  []string `json:"notification_channels"`
	RemediationTargetDays int      `json:"remediation_target_days,omitempty"`
}

// VDP is the vulnerability disclosure policy.
type VDP struct {
	URL     string `json:"url,omitempty"`
	Contact string `json:"contact,omitempty"`
}

// BuildDeclaration assembles the declaration of p at now. It does not validate: a policy
// without a support end date gives a declaration that Validate rejects. The status is
// StatusEndOfSupport once now's UTC date is after the end date.
func BuildDeclaration(p Policy, m Mechanism, e Evidence, now time.Time) Declaration {
	now = now.UTC().Truncate(time.Second)
	last := now
	if !p.UpdatedAt.IsZero() || !e.ComputedAt.IsZero() {
		last = maxTime(p.UpdatedAt, e.ComputedAt).UTC().Truncate(time.Second)
	}
	d := Declaration{
		SchemaVersion:           SchemaVersion,
		DeclarationID:           "urn:upkeep:declaration:" + p.Product + ":" + now.Format("20060102T150405Z"),
		LastUpdated:             last,
		Manufacturer:            p.Manufacturer,
		Product:                 Product{Name: p.ProductName, ModelDesignation: p.ModelDesignation, ID: p.Product},
		UpdateCapable:           "yes",
		Mechanisms:              []UpdateMechanism{},
		SecurityUpdatesSeparate: p.SecuritySeparate,
		SecurityUpdatesFree:     true,
		Support: Support{
			EndDate:           date(p.SupportEnd),
			StartBasis:        p.SupportStartBasis,
			StartDate:         date(p.SupportStart),
			GuaranteedMinimum: true,
			JustificationLT5y: p.JustificationUnder5y,
			History:           []SupportChange{},
		},
		PostEOS: PostEOS{
			Behaviour:    PostEOSBehaviour,
			KeepsWorking: true,
			OwnerNotice:  "the device is told in its signed update information and can tell its owner",
		},
		VulnerabilityHandling: VulnerabilityHandling{
			VDP:                   VDP{URL: p.VDPURL, Contact: p.VDPContact},
			AdvisoriesURL:         p.AdvisoriesURL,
			NotificationChannels:  append([]string{}, p.Notification...),
			RemediationTargetDays: p.RemediationDays,
		},
		Evidence: e,
		Status:   status(p.SupportEnd, now),
	}
	d.Evidence.WithinTarget = withinTarget(e.Advisories, p.RemediationDays, now)
	for _, c := range p.History {
		if strings.HasPrefix(c.Field, "support_") {
			d.Support.History = append(d.Support.History, SupportChange{At: c.At.UTC(), Field: c.Field, Old: unquote(c.Old), New: unquote(c.New)})
		}
	}
	if p.Delivery == DeliveryNone {
		d.UpdateCapable = "no"
		return d
	}
	auto := p.Delivery != DeliveryConsent
	initiation := "user"
	if auto {
		initiation = "automatic"
	}
	d.Mechanisms = append(d.Mechanisms, UpdateMechanism{
		Delivery:   "network_ota",
		Initiation: initiation,
		Defaults:   Defaults{AutoInstall: auto, Notifications: len(p.Notification) > 0},
		// With consent the owner decides each time, which is both turning updates off and
		// putting them off.
		UserControls: UserControls{Disable: !auto || p.OwnerOptOut, Postpone: !auto},
		Crypto: Crypto{
			SigAlg: m.SignatureAlgorithm, HashAlg: m.HashAlgorithms, VerifiedOnDevice: m.SignedAndVerifiedOnDevice,
			AntiRollback: m.RollbackProtection, OfflineKeys: m.OfflineSigningKeys, TrustAnchor: m.TrustAnchor,
		},
		AtomicAB:          m.AtomicAB,
		AutomaticRollback: m.AutomaticRollback,
	})
	return d
}

// CanonicalJSON returns the bytes that Sign signs: the declaration's JSON with object keys
// sorted, no insignificant whitespace and no HTML escaping. The same declaration always gives
// the same bytes.
func CanonicalJSON(d Declaration) ([]byte, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("encode declaration: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // numbers keep the text encoding/json gave them
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("decode declaration: %w", err)
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil { // maps encode with sorted keys
		return nil, fmt.Errorf("canonicalise declaration: %w", err)
	}
	return bytes.TrimSuffix(out.Bytes(), []byte("\n")), nil
}

// Validate checks a declaration's JSON against Schema, formats included. The error names the
// failing location. The schema is compiled once, on first use.
func Validate(doc []byte) error {
	sch, err := compiledSchema()
	if err != nil {
		return err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return fmt.Errorf("read declaration: %w", err)
	}
	if err := sch.Validate(inst); err != nil {
		return fmt.Errorf("declaration does not match schema %s: %w", SchemaVersion, err)
	}
	return nil
}

// compiledSchema compiles Schema once; a compiled jsonschema.Schema is safe for concurrent use.
var compiledSchema = sync.OnceValues(func() (*jsonschema.Schema, error) {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	s, err := jsonschema.UnmarshalJSON(bytes.NewReader(Schema))
	if err != nil {
		return nil, fmt.Errorf("read declaration schema: %w", err)
	}
	if err := c.AddResource(SchemaID, s); err != nil {
		return nil, fmt.Errorf("add declaration schema: %w", err)
	}
	sch, err := c.Compile(SchemaID)
	if err != nil {
		return nil, fmt.Errorf("compile declaration schema: %w", err)
	}
	return sch, nil
})

// status is StatusEndOfSupport once now's UTC date is past end's, or when there is no end.
func status(end, now time.Time) string {
	if end.IsZero() || date(now) > date(end) {
		return StatusEndOfSupport
	}
	return StatusSupported
}

// date formats t's UTC date as YYYY-MM-DD, or "" for the zero time.
func date(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.DateOnly)
}

// unquote returns a history value as plain text: a JSON string loses its quotes.
func unquote(s string) string {
	var v string
	if json.Unmarshal([]byte(s), &v) == nil {
		return v
	}
	return s
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
