package csafpub

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/gocsaf/csaf/v3/csaf"

	"upkeep.dev/upkeep/wire"
)

func sample() (Publisher, Product) {
	t0 := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	fix := t0.Add(40 * 24 * time.Hour)
	return Publisher{Name: "Acme Devices", Namespace: "https://acme.example", Contact: "psirt@acme.example"},
		Product{Key: "thermostat", Name: "Acme Thermostat", Releases: []Release{{"1.0.0", t0}, {"1.1.0", fix}, {"1.2.0", fix.Add(24 * time.Hour)}},
			Triage: []wire.Triage{
				{Product: "thermostat", Vuln: "CVE-2023-48795", Status: "not_affected", Justification: "vulnerable_code_not_in_execute_path", Impact: "No SSH server runs.", Analyst: "Ada", UpdatedAt: t0},
				{Product: "thermostat", Version: "1.0.0", Vuln: "GO-2024-3321", Component: "pkg:golang/golang.org/x/crypto@v0.16.0", Status: "affected", Action: "Update to 1.1.0.", Analyst: "Ada", UpdatedAt: t0.Add(time.Hour)},
				{Product: "thermostat", Vuln: "CVE-2025-0001", Status: "under_investigation", Analyst: "Ada", UpdatedAt: t0.Add(2 * time.Hour)},
			},
			Fixed: []wire.TimeToPatch{{Advisory: "GO-2024-3321", Aliases: []string{"CVE-2024-45337", "GHSA-v778-237x-gjrc"}, Severity: "high",
				Affected: []string{"1.0.0"}, FixedIn: "1.1.0", FixPublished: &fix, Exploited: true}}}
}

// validate checks a generated document against the CSAF 2.0 JSON schema with gocsaf's
// validator, and decodes it with gocsaf's model.
func validate(t *testing.T, name string, raw []byte) {
	t.Helper()
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	errs, err := csaf.ValidateCSAF(doc)
	if err != nil || len(errs) > 0 {
		t.Errorf("%s: schema: %v %v\n%s", name, errs, err, raw)
	}
	var adv csaf.Advisory
	if err := json.Unmarshal(raw, &adv); err != nil {
		t.Errorf("%s: gocsaf model: %v", name, err)
	} else if err := adv.Validate(); err != nil {
		t.Errorf("%s: gocsaf Validate: %v", name, err)
	}
}

// TestCSAFDocumentsValidate: the VEX document and the security advisory of a product, the
// provider metadata and the ROLIE feed pass gocsaf's schema validation; signatures verify with
// the published key; file names follow CSAF 2.0 §5.1.
func TestCSAFDocumentsValidate(t *testing.T) {
	pub, p := sample()
	base := "https://updates.acme.example"
	docs, err := Build(pub, p, base+"/.well-known/csaf/white")
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 2 || docs[0].Category != "csaf_vex" || docs[1].Category != "csaf_security_advisory" {
		t.Fatalf("documents %+v", docs)
	}
	if docs[0].Name != "2025/upkeep-thermostat-vex.json" || docs[1].Name != "2025/upkeep-thermostat-go-2024-3321.json" {
		t.Errorf("names %q %q", docs[0].Name, docs[1].Name)
	}
	for _, d := range docs {
		validate(t, d.Name, d.JSON)
	}
	vex := string(docs[0].JSON)
	for _, want := range []string{`"known_not_affected"`, `"vulnerable_code_not_in_execute_path"`, `"known_affected"`, `"Update to 1.1.0."`, `"under_investigation"`, `"thermostat-1.2.0"`} {
		if !strings.Contains(vex, want) {
			t.Errorf("VEX document lacks %s", want)
		}
	}
	if adv := string(docs[1].JSON); !strings.Contains(adv, `"cve": "CVE-2024-45337"`) || !strings.Contains(adv, `"vendor_fix"`) || !strings.Contains(adv, "CISA KEV") {
		t.Errorf("advisory:\n%s", adv)
	}

	s, err := LoadOrCreateSigner(filepath.Join(t.TempDir(), "csaf", "provider.asc"), pub.Name, "psirt@acme.example")
	if err != nil {
		t.Fatal(err)
	}
	pm, err := ProviderMetadata(pub, base, s.Fingerprint(), time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	var pmDoc any
	json.Unmarshal(pm, &pmDoc)
	if errs, err := csaf.ValidateProviderMetadata(pmDoc); err != nil || len(errs) > 0 {
		t.Errorf("provider metadata: %v %v\n%s", errs, err, pm)
	}
	feed, err := ROLIEFeed(pub, base, docs, time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	var feedDoc any
	json.Unmarshal(feed, &feedDoc)
	if errs, err := csaf.ValidateROLIE(feedDoc); err != nil || len(errs) > 0 {
		t.Errorf("ROLIE feed: %v %v\n%s", errs, err, feed)
	}
	sig, err := s.Sign(docs[0].JSON)
	if err != nil {
		t.Fatal(err)
	}
	pubKey, _ := s.PublicKey()
	ring, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(pubKey))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openpgp.CheckArmoredDetachedSignature(ring, bytes.NewReader(docs[0].JSON), bytes.NewReader(sig), nil); err != nil {
		t.Errorf("signature: %v", err)
	}
	if _, err := openpgp.CheckArmoredDetachedSignature(ring, bytes.NewReader(append(docs[0].JSON, ' ')), bytes.NewReader(sig), nil); err == nil {
		t.Error("a changed document verifies")
	}
	sum256, sum512 := Hashes(docs[0].Name, docs[0].JSON)
	if !strings.HasSuffix(string(sum256), "  upkeep-thermostat-vex.json\n") || len(sum512) != 128+2+len("upkeep-thermostat-vex.json")+1 {
		t.Errorf("hash files %q %q", sum256, sum512)
	}
}

// TestOpenVEX: the OpenVEX v0.2.0 document carries each statement with its status,
// justification or action, and the releases as products.
func TestOpenVEX(t *testing.T) {
	pub, p := sample()
	raw, err := OpenVEX(pub, "https://updates.acme.example", p)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Context    string `json:"@context"`
		ID         string `json:"@id"`
		Author     string `json:"author"`
		Timestamp  string `json:"timestamp"`
		Version    int    `json:"version"`
		Statements []struct {
			Vulnerability struct{ Name string } `json:"vulnerability"`
			Products      []map[string]any      `json:"products"`
			Status        string                `json:"status"`
			Justification string                `json:"justification"`
			Action        string                `json:"action_statement"`
		} `json:"statements"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Context != "https://openvex.dev/ns/v0.2.0" || doc.Author == "" || doc.Version != 1 || len(doc.Statements) != 3 || doc.ID != "https://updates.acme.example/p/thermostat/openvex.json" {
		t.Fatalf("document %+v", doc)
	}
	s := doc.Statements[0]
	if s.Status != "not_affected" || s.Justification != "vulnerable_code_not_in_execute_path" || len(s.Products) != 3 {
		t.Errorf("statement %+v", s)
	}
	if s := doc.Statements[1]; s.Status != "affected" || s.Action != "Update to 1.1.0." || len(s.Products) != 1 || s.Products[0]["subcomponents"] == nil {
		t.Errorf("statement %+v", s)
	}
}
