package vuln

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/gocsaf/csaf/v3/csaf"
)

// MaxCSAFBytes bounds a CSAF document. Red Hat's VEX files for widely
// shipped components run to a few tens of MiB.
const MaxCSAFBytes = 64 << 20

// ParseCSAF reads a CSAF 2.0 JSON document of any category, the VEX profile
// (csaf_vex) included, and returns one Advisory per vulnerability that names
// an affected product and the VEX statements its product_status lists make.
//
// An Advisory is the word of one document about one vulnerability: its ID is
// "<tracking id>/<CVE>" (or "<tracking id>#<n>" for a vulnerability with no
// id), and the CVE and the other ids are its aliases, so that two vendors'
// documents about one CVE are two records and both are found by the CVE. VEX
// statements name the CVE (the first id).
//
// Products are identified by product_identification_helper.purl. A product
// without a purl under a product_name branch gets pkg:generic/<product
// name>@<product_version>; relationships (a component "default_component_of"
// a product) resolve to the purl of the component, and their statements keep
// the related product's purl as VEX.Product, so that they speak of the
// component in that product only; product groups are expanded.
//
// An Advisory's Affected lists, per package, the exact versions named by
// known_affected, first_affected and last_affected products; a product
// without a version affects every version; a product_version_range branch
// becomes an ECOSYSTEM range of its intervals and versions (vers: syntax or
// the informal "<=1.14.0", ">=1.0 <2.0"; a range with ">" or "!=" bounds
// cannot be written as OSV events and is left out). Fixed products give VEX
// statements but no fixed events, because CSAF does not say which affected
// line they close.
//
// The VEX statement of a product_version_range product carries the range
// (VEX.Range) as well as the version-less purl, so that it speaks only of
// the versions inside the range: "fixed" for ">=2.4" says nothing of 2.1.
//
// VEX statements carry the status (known_not_affected, known_affected,
// fixed — first_fixed included — and under_investigation), the flag label
// that justifies known_not_affected, the impact statement of an "impact"
// threat, and the document's tracking id as Source.
//
// ParseCSAF is safe for concurrent use and for untrusted input.
func ParseCSAF(raw []byte) ([]*Advisory, []VEX, error) {
	if len(raw) > MaxCSAFBytes {
		return nil, nil, fmt.Errorf("CSAF document of %d bytes is over the %d byte limit", len(raw), MaxCSAFBytes)
	}
	raw, err := resolveGroups(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("decode CSAF: %w", err)
	}
	var doc csaf.Advisory
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, nil, fmt.Errorf("decode CSAF: %w", err)
	}
	if err := doc.Validate(); err != nil {
		return nil, nil, fmt.Errorf("decode CSAF: %w", err)
	}
	d := doc.Document
	if v := string(*d.CSAFVersion); v != "2.0" {
		return nil, nil, fmt.Errorf("decode CSAF: csaf_version %q (want 2.0)", v)
	}
	trackingID := string(*d.Tracking.ID)
	published := csafTime(d.Tracking.InitialReleaseDate)
	modified := csafTime(d.Tracking.CurrentReleaseDate)
	docSeverity := SeverityUnknown
	if d.AggregateSeverity != nil && d.AggregateSeverity.Text != nil {
		docSeverity = textSeverity(*d.AggregateSeverity.Text)
	}

	pt := newProductTable(doc.ProductTree)
	var (
		advs []*Advisory
		vexs []VEX
	)
	for n, v := range doc.Vulnerabilities {
		if v == nil {
			continue
		}
		ids := csafIDs(v)
		vulnID, id := "", ""
		if len(ids) == 0 {
			vulnID = fmt.Sprintf("%s#%d", trackingID, n+1)
			id = vulnID
		} else {
			vulnID, id = ids[0], trackingID+"/"+ids[0]
		}
		a := &Advisory{
			ID:        id,
			Aliases:   ids,
			Summary:   deref(d.Title),
			Severity:  csafSeverity(v, docSeverity),
			Published: published,
			Modified:  modified,
			Source:    SourceCSAF,
		}
		switch {
		case a.Severity == SeverityUnknown:
		case a.Severity == docSeverity && csafSeverity(v, SeverityUnknown) == SeverityUnknown:
			a.SeveritySource = "aggregate_severity"
		default:
			a.SeveritySource = "scores (CVSS)"
		}
		if v.Title != nil {
			a.Summary = *v.Title
		}
		if v.ReleaseDate != nil {
			if t := csafTime(v.ReleaseDate); !t.IsZero() {
				a.Published = t
			}
		}
		ps := v.ProductStatus
		if ps != nil {
			a.Affected = pt.affected(ps.KnownAffected, ps.FirstAffected, ps.LastAffected)
			flags := map[string]string{}
			for _, f := range v.Flags {
				if f == nil || f.Label == nil {
					continue
				}
				for _, id := range pt.expand(f.ProductIds) {
					flags[id] = string(*f.Label)
				}
			}
			impacts := map[string]string{}
			for _, t := range v.Threats {
				if t == nil || t.Category == nil || *t.Category != csaf.CSAFThreatCategoryImpact || t.Details == nil {
					continue
				}
				for _, id := range pt.expand(t.ProductIds) {
					impacts[id] = *t.Details
				}
			}
			for _, st := range []struct {
				status string
				ids    *csaf.Products
			}{
				{VEXNotAffected, ps.KnownNotAffected},
				{VEXAffected, ps.KnownAffected},
				{VEXFixed, ps.Fixed},
				{VEXFixed, ps.FirstFixed},
				{VEXUnderInvestigation, ps.UnderInvestigation},
			} {
				for _, id := range pt.expand(st.ids) {
					p, ok := pt.products[id]
					if !ok || p.purl == "" {
						continue
					}
					vx := VEX{Vuln: vulnID, PURL: p.purl, Range: p.rangeExpr, Product: p.scope, Status: st.status, Impact: impacts[id], Source: trackingID}
					if st.status == VEXNotAffected {
						vx.Justification = flags[id]
					}
					vexs = append(vexs, vx)
				}
			}
		}
		// A document that names no affected product (a VEX-only one) says
		// nothing an advisory could match: its statements are what it gives.
		if len(a.Affected) > 0 {
			advs = append(advs, a)
		}
	}
	return advs, vexs, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func csafTime(s *string) time.Time {
	if s == nil {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339, *s)
	if err != nil {
		return time.Time{}
	}
	return t.UTC()
}

// csafIDs returns the CVE first, then the other ids' texts, without repeats.
func csafIDs(v *csaf.Vulnerability) []string {
	var ids []string
	seen := map[string]bool{}
	add := func(s string) {
		s = strings.TrimSpace(s)
		if s != "" && !seen[strings.ToUpper(s)] {
			seen[strings.ToUpper(s)] = true
			ids = append(ids, s)
		}
	}
	if v.CVE != nil {
		add(string(*v.CVE))
	}
	for _, id := range v.IDs {
		if id != nil && id.Text != nil {
			add(*id.Text)
		}
	}
	return ids
}

func csafSeverity(v *csaf.Vulnerability, fallback string) string {
	best := 0
	for _, s := range v.Scores {
		if s == nil {
			continue
		}
		if s.CVSS3 != nil {
			if s.CVSS3.BaseSeverity != nil {
				best = max(best, severityRank(textSeverity(string(*s.CVSS3.BaseSeverity))))
			} else if s.CVSS3.BaseScore != nil {
				best = max(best, severityRank(cvssSeverity(*s.CVSS3.BaseScore, 3)))
			}
		}
		if s.CVSS2 != nil && s.CVSS2.BaseScore != nil {
			best = max(best, severityRank(cvssSeverity(*s.CVSS2.BaseScore, 2)))
		}
	}
	if best == 0 {
		return fallback
	}
	return severityName(best)
}

type csafProduct struct {
	purl      string
	rangeExpr string // name of a product_version_range branch
	// scope is the purl of the product a relationship puts this component
	// in ("x/crypto as part of thermostat 1.0" → thermostat's purl).
	scope string
}

type productTable struct {
	products map[string]csafProduct
}

const maxBranchDepth = 64

func newProductTable(tree *csaf.ProductTree) *productTable {
	pt := &productTable{products: map[string]csafProduct{}}
	if tree == nil {
		return pt
	}
	pt.walk(tree.Branches, "", 0)
	if tree.FullProductNames != nil {
		for _, fpn := range *tree.FullProductNames {
			pt.addFull(fpn, csafProduct{})
		}
	}
	if tree.RelationShips != nil {
		for _, r := range *tree.RelationShips {
			if r == nil || r.FullProductName == nil || r.ProductReference == nil {
				continue
			}
			// The relationship's product is the referenced component as
			// shipped in (or on) another product: same package, and what is
			// said of it holds in that product only.
			p := pt.products[string(*r.ProductReference)]
			if r.RelatesToProductReference != nil {
				p.scope = pt.products[string(*r.RelatesToProductReference)].purl
			}
			pt.addFull(r.FullProductName, p)
		}
	}
	return pt
}

func (pt *productTable) addFull(fpn *csaf.FullProductName, fallback csafProduct) {
	if fpn == nil || fpn.ProductID == nil {
		return
	}
	p := fallback
	if h := fpn.ProductIdentificationHelper; h != nil && h.PURL != nil {
		p = csafProduct{purl: string(*h.PURL), scope: fallback.scope}
	}
	if _, ok := pt.products[string(*fpn.ProductID)]; !ok || p.purl != "" {
		pt.products[string(*fpn.ProductID)] = p
	}
}

func (pt *productTable) walk(bs csaf.Branches, productName string, depth int) {
	if depth > maxBranchDepth {
		return
	}
	for _, b := range bs {
		if b == nil || b.Category == nil || b.Name == nil {
			continue
		}
		cat, name := *b.Category, *b.Name
		pn := productName
		if cat == csaf.CSAFBranchCategoryProductName {
			pn = name
		}
		if b.Product != nil && b.Product.ProductID != nil {
			var p csafProduct
			if h := b.Product.ProductIdentificationHelper; h != nil && h.PURL != nil {
				p.purl = string(*h.PURL)
			}
			switch cat {
			case csaf.CSAFBranchCategoryProductVersion:
				if p.purl == "" && pn != "" {
					p.purl = genericPURL(pn, name)
				}
			case csaf.CSAFBranchCategoryProductVersionRange:
				p.rangeExpr = name
				if p.purl == "" && pn != "" {
					p.purl = genericPURL(pn, "")
				}
			default:
				if p.purl == "" && pn != "" {
					p.purl = genericPURL(pn, "")
				}
			}
			pt.products[string(*b.Product.ProductID)] = p
		}
		pt.walk(b.Branches, pn, depth+1)
	}
}

// expand returns the product ids of a list. Product groups were already
// folded into product_ids by resolveGroups.
func (pt *productTable) expand(ids *csaf.Products) []string {
	var out []string
	if ids != nil {
		for _, id := range *ids {
			if id != nil {
				out = append(out, string(*id))
			}
		}
	}
	return out
}

// affected groups the products of the affected statuses by package.
func (pt *productTable) affected(lists ...*csaf.Products) []Affected {
	var out []Affected
	index := map[pkgKey]int{}
	for li, l := range lists {
		lastAffected := li == 2
		for _, id := range pt.expand(l) {
			p, ok := pt.products[id]
			if !ok || p.purl == "" {
				continue
			}
			c, err := ComponentFromPURL(p.purl)
			if err != nil {
				continue
			}
			k := keyOf(c.Ecosystem, c.Name)
			i, ok := index[k]
			if !ok {
				i = len(out)
				index[k] = i
				out = append(out, Affected{Ecosystem: c.Ecosystem, Name: c.Name})
			}
			a := &out[i]
			switch {
			case p.rangeExpr != "":
				// A range the OSV events cannot express affects nothing
				// here; its VEX statement still carries the range.
				if r, vs, err := versAffected(c.Ecosystem, p.rangeExpr); err == nil {
					if r != nil {
						a.Ranges = append(a.Ranges, *r)
					}
					a.Versions = append(a.Versions, vs...)
				}
			case c.Version == "":
				a.Ranges = append(a.Ranges, Range{Type: "ECOSYSTEM", Events: []Event{{Introduced: "0"}}})
			case lastAffected:
				a.Ranges = append(a.Ranges, Range{Type: "ECOSYSTEM", Events: []Event{{Introduced: "0"}, {LastAffected: c.Version}}})
			default:
				a.Versions = append(a.Versions, c.Version)
			}
		}
	}
	return out
}

// resolveGroups works around gocsaf v3.7.0's model of product groups, which
// does not follow the CSAF 2.0 schema: there product_tree.product_groups is
// an array of {group_id, product_ids} and every group_ids is an array of
// strings, while gocsaf expects objects and fails to decode any document
// that uses groups. resolveGroups removes product_groups and replaces each
// group_ids (in flags, threats, remediations and scores) by the groups'
// product ids appended to product_ids. Documents without groups are returned
// unchanged.
func resolveGroups(raw []byte) ([]byte, error) {
	if !bytes.Contains(raw, []byte(`"product_groups"`)) && !bytes.Contains(raw, []byte(`"group_ids"`)) {
		return raw, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return nil, err
	}
	groups := map[string][]any{}
	if tree, ok := doc["product_tree"].(map[string]any); ok {
		if pgs, ok := tree["product_groups"].([]any); ok {
			for _, g := range pgs {
				gm, _ := g.(map[string]any)
				id, _ := gm["group_id"].(string)
				ids, _ := gm["product_ids"].([]any)
				if id != "" {
					groups[id] = append(groups[id], ids...)
				}
			}
		}
		delete(tree, "product_groups")
	}
	vulns, _ := doc["vulnerabilities"].([]any)
	for _, v := range vulns {
		vm, _ := v.(map[string]any)
		for _, field := range []string{"flags", "threats", "remediations"} {
			items, _ := vm[field].([]any)
			for _, it := range items {
				im, _ := it.(map[string]any)
				foldGroups(im, "product_ids", groups)
			}
		}
	}
	return json.Marshal(doc)
}

func foldGroups(m map[string]any, key string, groups map[string][]any) {
	if m == nil {
		return
	}
	gids, ok := m["group_ids"].([]any)
	if !ok {
		delete(m, "group_ids")
		return
	}
	ids, _ := m[key].([]any)
	for _, g := range gids {
		if gs, ok := g.(string); ok {
			ids = append(ids, groups[gs]...)
		}
	}
	delete(m, "group_ids")
	if len(ids) > 0 {
		m[key] = ids
	}
}
