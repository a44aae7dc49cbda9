package vuln

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	cyclonedx "github.com/CycloneDX/cyclonedx-go"
	spdxjson "github.com/spdx/tools-golang/json"
	"github.com/spdx/tools-golang/spdx"
)

// MaxSBOMBytes bounds the size of an SBOM that ParseSBOM accepts.
const MaxSBOMBytes = 32 << 20

// Component is one package of an SBOM, normalised from its purl.
type Component struct {
	PURL string
	// Ecosystem in OSV spelling ("Go", "npm", "PyPI", "Maven", "Debian",
	// "Alpine", "crates.io", ...), possibly with an OSV release suffix
	// ("Debian:12"); "" for generic firmware components.
	Ecosystem string
	Name      string
	Version   string
}

// SBOM is the part of a software bill of materials that matching needs.
type SBOM struct {
	Format     string // "CycloneDX 1.5", "SPDX 2.3"
	Digest     string // sha256 hex of the raw bytes
	Components []Component
	// Subject is what the SBOM describes (CycloneDX metadata.component, the
	// package an SPDX document DESCRIBES), if it names one: the product that
	// product-scoped VEX statements speak of.
	Subject *Component
}

// ErrSBOMFormat reports input that is not a supported SBOM.
var ErrSBOMFormat = errors.New("unsupported SBOM format")

// ParseSBOM reads a CycloneDX JSON (spec 1.2 to 1.6) or SPDX JSON (2.2, 2.3)
// document. The CycloneDX metadata.component (the SBOM's subject) is the
// first component, followed by components and their nested components;
// every SPDX package is a component. Components without a purl get pkg:generic/name@version when they
// have a name; components with neither are dropped. Components are returned
// in document order, duplicates (same purl) removed. Errors wrap
// ErrSBOMFormat when the input is of another kind or version.
//
// ParseSBOM is safe for concurrent use and for untrusted input.
func ParseSBOM(raw []byte) (sb *SBOM, err error) {
	if len(raw) > MaxSBOMBytes {
		return nil, fmt.Errorf("%w: %d bytes is over the %d byte limit", ErrSBOMFormat, len(raw), MaxSBOMBytes)
	}
	var head struct {
		BOMFormat   string `json:"bomFormat"`
		SpecVersion string `json:"specVersion"`
		SPDXVersion string `json:"spdxVersion"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		if t := bytes.TrimSpace(raw); len(t) > 0 && t[0] == '<' {
			return nil, fmt.Errorf("%w: XML SBOMs are not supported, send JSON", ErrSBOMFormat)
		}
		return nil, fmt.Errorf("%w: not a JSON object: %w", ErrSBOMFormat, err)
	}
	// The libraries below are not hardened against hostile input; a panic in
	// them must not take the server down.
	defer func() {
		if r := recover(); r != nil {
			sb, err = nil, fmt.Errorf("%w: malformed document (%v)", ErrSBOMFormat, r)
		}
	}()
	sum := sha256.Sum256(raw)
	sb = &SBOM{Digest: hex.EncodeToString(sum[:])}
	switch {
	case head.BOMFormat == cyclonedx.BOMFormat:
		switch head.SpecVersion {
		case "1.2", "1.3", "1.4", "1.5", "1.6":
		default:
			return nil, fmt.Errorf("%w: CycloneDX %q (want 1.2 to 1.6)", ErrSBOMFormat, head.SpecVersion)
		}
		var bom cyclonedx.BOM
		if err := cyclonedx.NewBOMDecoder(bytes.NewReader(raw), cyclonedx.BOMFileFormatJSON).Decode(&bom); err != nil {
			return nil, fmt.Errorf("decode CycloneDX %s: %w", head.SpecVersion, err)
		}
		sb.Format = "CycloneDX " + head.SpecVersion
		// The subject of the SBOM (the firmware or binary itself) comes
		// first: VEX statements and product advisories name it.
		if bom.Metadata != nil && bom.Metadata.Component != nil {
			mc := bom.Metadata.Component
			sb.Components = cdxComponents([]cyclonedx.Component{*mc}, nil, 0)
			if c, ok := toComponent(mc.PackageURL, mc.Name, mc.Version, mc.Group); ok {
				sb.Subject = &c
			}
		}
		if bom.Components != nil {
			sb.Components = cdxComponents(*bom.Components, sb.Components, 0)
		}
	case head.SPDXVersion != "":
		switch head.SPDXVersion {
		case "SPDX-2.2", "SPDX-2.3":
		default:
			return nil, fmt.Errorf("%w: %q (want SPDX-2.2 or SPDX-2.3)", ErrSBOMFormat, head.SPDXVersion)
		}
		doc, err := spdxjson.Read(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("decode %s: %w", head.SPDXVersion, err)
		}
		sb.Format = "SPDX " + strings.TrimPrefix(head.SPDXVersion, "SPDX-")
		sb.Components = spdxComponents(doc)
		sb.Subject = spdxSubject(doc)
	default:
		return nil, fmt.Errorf("%w: neither CycloneDX (bomFormat) nor SPDX (spdxVersion)", ErrSBOMFormat)
	}
	sb.Components = dedupe(sb.Components)
	return sb, nil
}

// maxComponentDepth bounds recursion into nested CycloneDX components.
const maxComponentDepth = 64

func cdxComponents(cs []cyclonedx.Component, out []Component, depth int) []Component {
	if depth > maxComponentDepth {
		return out
	}
	for _, c := range cs {
		if comp, ok := toComponent(c.PackageURL, c.Name, c.Version, c.Group); ok {
			out = append(out, comp)
		}
		if c.Components != nil {
			out = cdxComponents(*c.Components, out, depth+1)
		}
	}
	return out
}

func spdxComponents(doc *spdx.Document) []Component {
	var out []Component
	for _, p := range doc.Packages {
		if p == nil {
			continue
		}
		purl := ""
		for _, ref := range p.PackageExternalReferences {
			if ref != nil && strings.EqualFold(ref.RefType, "purl") {
				purl = ref.Locator
				break
			}
		}
		if comp, ok := toComponent(purl, p.PackageName, p.PackageVersion, ""); ok {
			out = append(out, comp)
		}
	}
	return out
}

// toComponent prefers the purl; a missing or unparsable purl falls back to
// pkg:generic built from name and version.
func toComponent(purl, name, version, group string) (Component, bool) {
	if purl != "" {
		if c, err := ComponentFromPURL(purl); err == nil {
			return c, true
		}
	}
	if group != "" && name != "" {
		name = group + "/" + name
	}
	g := genericPURL(name, version)
	if g == "" {
		return Component{}, false
	}
	c, err := ComponentFromPURL(g)
	if err != nil {
		return Component{}, false
	}
	return c, true
}

func dedupe(cs []Component) []Component {
	seen := make(map[string]bool, len(cs))
	out := cs[:0]
	for _, c := range cs {
		if seen[c.PURL] {
			continue
		}
		seen[c.PURL] = true
		out = append(out, c)
	}
	return out
}

// spdxSubject is the one package the document DESCRIBES (documentDescribes
// is read as such relationships); nil if none or several.
func spdxSubject(doc *spdx.Document) *Component {
	var described []string
	for _, r := range doc.Relationships {
		if r != nil && strings.EqualFold(r.Relationship, "DESCRIBES") && string(r.RefA.ElementRefID) == "DOCUMENT" {
			described = append(described, string(r.RefB.ElementRefID))
		}
	}
	if len(described) != 1 {
		return nil
	}
	for _, p := range doc.Packages {
		if p == nil || string(p.PackageSPDXIdentifier) != described[0] {
			continue
		}
		one := &spdx.Document{Packages: []*spdx.Package{p}}
		if cs := spdxComponents(one); len(cs) == 1 {
			return &cs[0]
		}
	}
	return nil
}
