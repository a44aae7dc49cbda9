package csafpub

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"upkeep.dev/upkeep/wire"
)

// Signer signs documents with the provider's OpenPGP key, as CSAF 2.0 §7.1.18 asks (a detached,
// ASCII-armored signature next to each document: NAME.asc). The key is Ed25519 (RFC 9580 /
// the draft-koch EdDSA that every OpenPGP implementation reads), generated on first use and
// kept in a file; ProtonMail/go-crypto is the maintained OpenPGP library for Go (the one gocsaf
// itself uses to check CSAF signatures).
type Signer struct {
	entity *openpgp.Entity
}

// LoadOrCreateSigner reads the armored private key at path, or creates one for name.
func LoadOrCreateSigner(path, name, email string) (*Signer, error) {
	if raw, err := os.ReadFile(path); err == nil {
		els, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(raw))
		if err != nil || len(els) != 1 {
			return nil, fmt.Errorf("CSAF signing key %s: %v", path, err)
		}
		return &Signer{entity: els[0]}, nil
	} else if !os.IsNotExist(err) {
		return nil, fmt.Errorf("CSAF signing key: %w", err)
	}
	e, err := openpgp.NewEntity(name, "CSAF provider", email, &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA, DefaultHash: 0})
	if err != nil {
		return nil, fmt.Errorf("create CSAF signing key: %w", err)
	}
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PrivateKeyType, nil)
	if err != nil {
		return nil, err
	}
	if err := e.SerializePrivate(w, nil); err != nil {
		return nil, fmt.Errorf("create CSAF signing key: %w", err)
	}
	w.Close()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create CSAF signing key: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o600); err != nil {
		return nil, fmt.Errorf("create CSAF signing key: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("create CSAF signing key: %w", err)
	}
	return &Signer{entity: e}, nil
}

// Fingerprint is the key's fingerprint, upper-case hex.
func (s *Signer) Fingerprint() string {
	return strings.ToUpper(hex.EncodeToString(s.entity.PrimaryKey.Fingerprint))
}

// PublicKey is the armored public key.
func (s *Signer) PublicKey() ([]byte, error) {
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PublicKeyType, nil)
	if err != nil {
		return nil, err
	}
	if err := s.entity.Serialize(w); err != nil {
		return nil, err
	}
	w.Close()
	return buf.Bytes(), nil
}

// Sign returns the armored detached signature of b.
func (s *Signer) Sign(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := openpgp.ArmoredDetachSign(&buf, s.entity, bytes.NewReader(b), nil); err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return buf.Bytes(), nil
}

// Hashes returns the contents of NAME.sha256 and NAME.sha512 (§7.1.18: "<hex>  <file name>").
func Hashes(name string, b []byte) (sha256sum, sha512sum []byte) {
	s256, s512 := sha256.Sum256(b), sha512.Sum512(b)
	base := filepath.Base(name)
	return []byte(hex.EncodeToString(s256[:]) + "  " + base + "\n"), []byte(hex.EncodeToString(s512[:]) + "  " + base + "\n")
}

// ProviderMetadata is provider-metadata.json (§7.1.7) for a provider at base (the server's
// public URL) with one ROLIE feed of TLP:WHITE documents.
func ProviderMetadata(pub Publisher, base, fingerprint string, updated time.Time) ([]byte, error) {
	wk := base + "/.well-known/csaf"
	pm := map[string]any{
		"canonical_url":              wk + "/provider-metadata.json",
		"distributions":              []any{map[string]any{"rolie": map[string]any{"feeds": []any{map[string]any{"summary": "Security advisories and VEX of " + pub.Name, "tlp_label": "WHITE", "url": wk + "/feed-tlp-white.json"}}}}},
		"last_updated":               updated.UTC().Format(time.RFC3339),
		"list_on_CSAF_aggregators":   true,
		"metadata_version":           "2.0",
		"mirror_on_CSAF_aggregators": true,
		"public_openpgp_keys":        []any{map[string]any{"fingerprint": fingerprint, "url": wk + "/openpgp/" + fingerprint + ".asc"}},
		"publisher":                  map[string]any{"category": "vendor", "name": pub.Name, "namespace": pub.Namespace, "contact_details": pub.Contact},
		"role":                       "csaf_provider",
	}
	return json.MarshalIndent(pm, "", "  ")
}

// ROLIEFeed is the TLP:WHITE feed (§7.1.20, RFC 8322) listing docs, newest first.
func ROLIEFeed(pub Publisher, base string, docs []Document, updated time.Time) ([]byte, error) {
	wk := base + "/.well-known/csaf"
	docs = slices.Clone(docs)
	slices.SortFunc(docs, func(a, b Document) int { return b.Updated.Compare(a.Updated) })
	entries := []any{}
	for _, d := range docs {
		u := wk + "/white/" + d.Name
		entries = append(entries, map[string]any{
			"id": d.TrackingID, "title": d.Title,
			"link": []any{map[string]any{"rel": "self", "href": u}, map[string]any{"rel": "hash", "href": u + ".sha256"},
				map[string]any{"rel": "hash", "href": u + ".sha512"}, map[string]any{"rel": "signature", "href": u + ".asc"}},
			"published": d.Published.UTC().Format(time.RFC3339), "updated": d.Updated.UTC().Format(time.RFC3339),
			"content": map[string]any{"type": "application/json", "src": u},
			"format":  map[string]any{"schema": "https://docs.oasis-open.org/csaf/csaf/v2.0/csaf_json_schema.json", "version": "2.0"},
		})
	}
	feed := map[string]any{"feed": map[string]any{
		"id": "upkeep-csaf-feed-tlp-white", "title": pub.Name + " CSAF feed (TLP:WHITE)",
		"link":     []any{map[string]any{"rel": "self", "href": wk + "/feed-tlp-white.json"}},
		"category": []any{map[string]any{"scheme": "urn:ietf:params:rolie:category:information-type", "term": "csaf"}},
		"updated":  updated.UTC().Format(time.RFC3339),
		"entry":    entries,
	}}
	return json.MarshalIndent(feed, "", "  ")
}

// OpenVEX is the product's statements as an OpenVEX v0.2.0 document
// (https://github.com/openvex/spec/blob/v0.2.0/OPENVEX-SPEC.md): one statement per analyst
// statement, its products the releases it speaks of (generic purls), with the component as a
// subcomponent when it names one.
func OpenVEX(pub Publisher, base string, p Product) ([]byte, error) {
	var stmts []any
	last := time.Time{}
	for _, t := range p.Triage {
		var products []any
		for _, r := range p.Releases {
			if t.Version != "" && r.Version != t.Version {
				continue
			}
			prod := map[string]any{"@id": purl(p.Key, r.Version)}
			if t.Component != "" {
				prod["subcomponents"] = []any{map[string]any{"@id": t.Component}}
			}
			products = append(products, prod)
		}
		if len(products) == 0 {
			continue
		}
		s := map[string]any{"vulnerability": map[string]any{"name": t.Vuln}, "products": products, "status": t.Status,
			"timestamp": t.UpdatedAt.UTC().Format(time.RFC3339)}
		switch t.Status {
		case "not_affected":
			s["justification"] = t.Justification
			if t.Impact != "" {
				s["impact_statement"] = t.Impact
			}
		case "affected":
			s["action_statement"] = t.Action
		}
		stmts = append(stmts, s)
		if t.UpdatedAt.After(last) {
			last = t.UpdatedAt
		}
	}
	if stmts == nil {
		stmts = []any{}
	}
	doc := map[string]any{
		"@context": "https://openvex.dev/ns/v0.2.0", "@id": base + "/p/" + p.Key + "/openvex.json",
		"author": pub.Name, "role": "Document Creator", "timestamp": last.UTC().Format(time.RFC3339), "version": 1,
		"statements": stmts,
	}
	return json.MarshalIndent(doc, "", "  ")
}

// Triage is an alias for the wire type, for callers building a Product.
type Triage = wire.Triage
