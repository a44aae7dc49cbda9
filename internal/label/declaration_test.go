package label

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// testPolicy is a complete policy: automatic updates, five years from placing on the market.
func testPolicy() Policy {
	return Policy{
		Product: "thermo-2", ProductName: "Thermo 2 Smart Thermostat", ModelDesignation: "TH-200",
		Manufacturer: Manufacturer{Name: "Acme Devices Ltd", Contact: "support@acme.example", Website: "https://acme.example"},
		SupportEnd:   day(2031, 3, 31), SupportStart: day(2026, 3, 1), SupportStartBasis: "placed_on_market",
		Delivery: DeliveryAutomatic, OwnerOptOut: true, SecuritySeparate: true,
		Notification: []string{"app", "email"},
		VDPURL:       "https://acme.example/security/disclosure", VDPContact: "security@acme.example",
		AdvisoriesURL: "https://acme.example/security/advisories", RemediationDays: 30,
		History: []PolicyChange{
			{At: day(2026, 2, 1), Actor: "alice@acme.example", Field: "support_end", Old: `""`, New: `"2030-12-31"`},
			{At: day(2026, 2, 1), Actor: "alice@acme.example", Field: "delivery", Old: `""`, New: `"automatic"`},
			{At: day(2026, 4, 1), Actor: "bob@acme.example", Field: "support_end", Old: `"2030-12-31"`, New: `"2031-03-31"`},
		},
		UpdatedAt: day(2026, 4, 1),
	}
}

func testMechanism() Mechanism {
	return Mechanism{SignedAndVerifiedOnDevice: true, RollbackProtection: true, AtomicAB: true, AutomaticRollback: true, OfflineSigningKeys: true,
		SignatureAlgorithm: "ed25519", HashAlgorithms: "sha256", TrustAnchor: "TUF root (offline keys) + Uptane director"}
}

func testEvidence() Evidence {
	fleet := day(2026, 3, 20)
	return ComputeEvidence(testNow,
		[]ReleaseFact{{Version: "1.3", Class: ClassSecurity, PublishedAt: day(2026, 3, 12)}, {Version: "1.2", Class: ClassFeature, PublishedAt: day(2026, 1, 5)}},
		[]DeviceFact{{InstalledVersion: "1.3", LastSeen: testNow.Add(-time.Hour)}, {InstalledVersion: "1.2", LastSeen: testNow.Add(-2 * time.Hour)}},
		[]TimeToPatch{{Advisory: "ACME-2026-001", Published: day(2026, 3, 1), FixReleased: day(2026, 3, 12), Fleet90At: &fleet}},
		supportedFrom("1.3"))
}

func mustJSON(t *testing.T, d Declaration) []byte {
	t.Helper()
	b, err := CanonicalJSON(d)
	if err != nil {
		t.Fatalf("CanonicalJSON: %v", err)
	}
	return b
}

func TestBuildDeclaration(t *testing.T) {
	d := BuildDeclaration(testPolicy(), testMechanism(), testEvidence(), testNow)
	got := struct {
		ID, Status, End, Capable string
		Mechanism                UpdateMechanism
		History                  []SupportChange
		LastUpdated              time.Time
	}{d.DeclarationID, d.Status, d.Support.EndDate, d.UpdateCapable, d.Mechanisms[0], d.Support.History, d.LastUpdated}
	want := struct {
		ID, Status, End, Capable string
		Mechanism                UpdateMechanism
		History                  []SupportChange
		LastUpdated              time.Time
	}{
		"urn:upkeep:declaration:thermo-2:20260501T120000Z", StatusSupported, "2031-03-31", "yes",
		UpdateMechanism{Delivery: "network_ota", Initiation: "automatic", Defaults: Defaults{AutoInstall: true, Notifications: true},
			UserControls: UserControls{Disable: true},
			Crypto: Crypto{SigAlg: "ed25519", HashAlg: "sha256", VerifiedOnDevice: true, AntiRollback: true, OfflineKeys: true,
				TrustAnchor: "TUF root (offline keys) + Uptane director"}, AtomicAB: true, AutomaticRollback: true},
		[]SupportChange{{At: day(2026, 2, 1), Field: "support_end", Old: "", New: "2030-12-31"}, {At: day(2026, 4, 1), Field: "support_end", Old: "2030-12-31", New: "2031-03-31"}},
		testNow,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("BuildDeclaration (-want +got):\n%s", diff)
	}
	if strings.Contains(string(mustJSON(t, d)), "alice@") {
		t.Error("the declaration publishes who changed the policy")
	}
}

func TestStatusAndDelivery(t *testing.T) {
	tests := []struct {
		name                string
		end                 time.Time
		delivery            string
		optOut              bool
		wantStatus, capable string
		wantInit            string
		wantDisable         bool
	}{
		{"last day of support is still supported", day(2026, 5, 1), DeliveryAutomatic, false, StatusSupported, "yes", "automatic", false},
		{"day after the end", day(2026, 4, 30), DeliveryAutomatic, true, StatusEndOfSupport, "yes", "automatic", true},
		{"default delivery is automatic", day(2030, 1, 1), "", false, StatusSupported, "yes", "automatic", false},
		{"consent", day(2030, 1, 1), DeliveryConsent, false, StatusSupported, "yes", "user", true},
		{"none", day(2030, 1, 1), DeliveryNone, false, StatusSupported, "no", "", false},
		{"no end date", time.Time{}, DeliveryAutomatic, false, StatusEndOfSupport, "yes", "automatic", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPolicy()
			p.SupportEnd, p.Delivery, p.OwnerOptOut = tt.end, tt.delivery, tt.optOut
			d := BuildDeclaration(p, testMechanism(), testEvidence(), testNow)
			var init string
			var disable bool
			if len(d.Mechanisms) > 0 {
				init, disable = d.Mechanisms[0].Initiation, d.Mechanisms[0].UserControls.Disable
			}
			got := []any{d.Status, d.UpdateCapable, init, disable}
			want := []any{tt.wantStatus, tt.capable, tt.wantInit, tt.wantDisable}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// declarations returns declarations the code emits for a range of policies and evidence.
func declarations() map[string]Declaration {
	out := map[string]Declaration{}
	out["complete"] = BuildDeclaration(testPolicy(), testMechanism(), testEvidence(), testNow)

	p := testPolicy()
	p.SupportEnd, p.SupportStart, p.JustificationUnder5y = day(2025, 12, 31), day(2023, 1, 1), "seasonal product replaced every two years"
	out["end of support"] = BuildDeclaration(p, testMechanism(), testEvidence(), testNow)

	out["no data"] = BuildDeclaration(testPolicy(), testMechanism(), ComputeEvidence(testNow, nil, nil, nil, nil), testNow)

	p = testPolicy()
	p.Delivery, p.Notification, p.History, p.RemediationDays = DeliveryConsent, nil, nil, 0
	p.SupportStart, p.SupportStartBasis, p.AdvisoriesURL, p.VDPURL = time.Time{}, "", "", ""
	p.Manufacturer = Manufacturer{Name: "Acme"}
	out["consent, minimal policy"] = BuildDeclaration(p, Mechanism{}, ComputeEvidence(testNow, nil, nil, nil, nil), testNow)

	p = testPolicy()
	p.Delivery = DeliveryNone
	out["not updatable"] = BuildDeclaration(p, testMechanism(), testEvidence(), testNow)
	return out
}

func TestDeclarationsMatchSchema(t *testing.T) {
	for name, d := range declarations() {
		t.Run(name, func(t *testing.T) {
			if err := Validate(mustJSON(t, d)); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestSchemaRejects(t *testing.T) {
	tests := []struct {
		name   string
		change func(m map[string]any)
	}{
		{"missing status", func(m map[string]any) { delete(m, "status") }},
		{"missing support end date", func(m map[string]any) { delete(m["support"].(map[string]any), "end_date") }},
		{"missing evidence method", func(m map[string]any) {
			delete(m["evidence"].(map[string]any)["devices"].(map[string]any), "method")
		}},
		{"unknown status", func(m map[string]any) { m["status"] = "maybe" }},
		{"end date not a date", func(m map[string]any) { m["support"].(map[string]any)["end_date"] = "03/2031" }},
		{"unknown field", func(m map[string]any) { m["warranty"] = true }},
		{"updatable without a mechanism", func(m map[string]any) { m["mechanisms"] = []any{} }},
		{"unavailable figure without a note", func(m map[string]any) {
			f := m["evidence"].(map[string]any)["median_days_fix_to_90pct_fleet"].(map[string]any)
			f["value"] = nil
			delete(f, "note")
		}},
		{"wrong schema version", func(m map[string]any) { m["schema_version"] = "2.0" }},
	}
	base := mustJSON(t, BuildDeclaration(testPolicy(), testMechanism(), testEvidence(), testNow))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m map[string]any
			if err := json.Unmarshal(base, &m); err != nil {
				t.Fatal(err)
			}
			tt.change(m)
			b, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			if err := Validate(b); err == nil {
				t.Error("Validate accepted an invalid declaration")
			}
		})
	}
}

// TestSchemaDescriptions checks that every property in the schema says what it is and which
// source asks for it.
func TestSchemaDescriptions(t *testing.T) {
	source := regexp.MustCompile(`NTIA|ETSI EN 303 645|NISTIR 8259A|EU CRA (Annex|Art)|UK PSTI (Sch|Reg)|FCC 24-26|OpenEoX`)
	var schema map[string]any
	if err := json.Unmarshal(Schema, &schema); err != nil {
		t.Fatalf("schema is not JSON: %v", err)
	}
	count := 0
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if props, ok := v["properties"].(map[string]any); ok {
				for name, p := range props {
					count++
					desc, _ := p.(map[string]any)["description"].(string)
					if !source.MatchString(desc) {
						t.Errorf("%s/%s: description %q names no source", path, name, desc)
					}
				}
			}
			for k, c := range v {
				walk(path+"/"+k, c)
			}
		case []any:
			for _, c := range v {
				walk(path, c)
			}
		}
	}
	walk("", schema)
	if count < 60 {
		t.Errorf("found %d properties, want the whole declaration covered", count)
	}
	// Every field the code emits is described by the schema: additionalProperties is false
	// throughout, so TestDeclarationsMatchSchema would fail otherwise.
}

func TestCanonicalJSON(t *testing.T) {
	d := BuildDeclaration(testPolicy(), testMechanism(), testEvidence(), testNow)
	d.Product.Name = `Thermo <2> & "friends"`
	a, b := mustJSON(t, d), mustJSON(t, d)
	if !bytes.Equal(a, b) {
		t.Fatal("two encodings of one declaration differ")
	}
	if !bytes.Contains(a, []byte(`"name":"Thermo <2> & \"friends\""`)) {
		t.Errorf("canonical JSON escapes HTML or adds space: %s", a)
	}
	if bytes.IndexByte(a, '\n') >= 0 || !bytes.HasPrefix(a, []byte(`{"declaration_id":`)) {
		t.Errorf("canonical JSON is not compact with sorted keys: %.80s", a)
	}
	var back Declaration
	if err := json.Unmarshal(a, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(d, back); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

// TestExampleDeclaration keeps testdata/declaration-example.json, the example published beside
// the schema, equal to what the code emits. UPKEEP_UPDATE_GOLDEN=1 rewrites it.
func TestExampleDeclaration(t *testing.T) {
	got, err := json.MarshalIndent(BuildDeclaration(testPolicy(), testMechanism(), testEvidence(), testNow), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", "declaration-example.json")
	if os.Getenv("UPKEEP_UPDATE_GOLDEN") == "1" {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (UPKEEP_UPDATE_GOLDEN=1 writes it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s is stale (-file +code), rerun with UPKEEP_UPDATE_GOLDEN=1:\n%s", path, diff)
	}
	if err := Validate(want); err != nil {
		t.Errorf("%s: %v", path, err)
	}
}
