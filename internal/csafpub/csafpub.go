// Package csafpub publishes a manufacturer's own vulnerability information: for each product,
// a CSAF 2.0 VEX document (its analysts' statements) and a CSAF 2.0 security advisory per
// vulnerability a release fixed, an OpenVEX v0.2.0 document, and the CSAF provider around them
// (provider-metadata.json, a ROLIE feed, OpenPGP detached signatures, SHA-256 and SHA-512
// files), so that CSAF aggregators and scanners can consume them (CSAF 2.0 §7).
//
// Build is pure: it turns the records it is given into documents. Signer signs them.
package csafpub

import (
	"cmp"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"upkeep.dev/upkeep/wire"
)

// Publisher names the manufacturer in every document (CSAF 2.0 §3.2.1.8).
type Publisher struct {
	Name      string // manufacturer
	Namespace string // its web address, absolute https
	Contact   string
}

// Release is one published release of a product.
type Release struct {
	Version   string
	Published time.Time
}

// Product is what is published of one product.
type Product struct {
	Key      string // product key (URL segment)
	Name     string // as the owner sees it
	Releases []Release
	Triage   []wire.Triage
	// Fixed are the vulnerabilities a release of the product fixed (time to patch with a
	// FixedIn): each gets a security advisory.
	Fixed []wire.TimeToPatch
}

// Document is one generated file: its name under the provider's TLP:WHITE folder and bytes.
type Document struct {
	Name       string // e.g. "2025/upkeep-thermostat-vex.json"
	TrackingID string
	Title      string
	Category   string // csaf_vex | csaf_security_advisory
	Published  time.Time
	Updated    time.Time
	JSON       []byte
}

var nonID = regexp.MustCompile(`[^a-z0-9+\-_]+`)

// fileName is the CSAF file name of a tracking id (§5.1: lower case, [+\-a-z0-9_] kept).
func fileName(trackingID string) string {
	return nonID.ReplaceAllString(strings.ToLower(trackingID), "_") + ".json"
}

func productID(key, version string) string { return key + "-" + version }

func purl(key, version string) string { return "pkg:generic/" + key + "@" + version }

// productTree is one vendor branch, one product_name branch and a product_version branch per
// release, each with a generic purl.
func productTree(pub Publisher, p Product) map[string]any {
	var versions []any
	for _, r := range p.Releases {
		versions = append(versions, map[string]any{"category": "product_version", "name": r.Version,
			"product": map[string]any{"name": p.Name + " " + r.Version, "product_id": productID(p.Key, r.Version),
				"product_identification_helper": map[string]any{"purl": purl(p.Key, r.Version)}}})
	}
	return map[string]any{"branches": []any{map[string]any{"category": "vendor", "name": pub.Name, "branches": []any{
		map[string]any{"category": "product_name", "name": p.Name, "branches": versions}}}}}
}

func document(pub Publisher, category, title, trackingID string, published, updated time.Time, summary, self string) map[string]any {
	ts := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	return map[string]any{
		"category": category, "csaf_version": "2.0", "lang": "en", "title": title,
		"distribution": map[string]any{"tlp": map[string]any{"label": "WHITE"}},
		"publisher":    map[string]any{"category": "vendor", "name": pub.Name, "namespace": pub.Namespace, "contact_details": pub.Contact},
		"notes":        []any{map[string]any{"category": "summary", "title": "Summary", "text": summary}},
		"references":   []any{map[string]any{"category": "self", "summary": "This document", "url": self}},
		"tracking": map[string]any{"id": trackingID, "status": "final", "version": "1",
			"initial_release_date": ts(published), "current_release_date": ts(updated),
			"revision_history": []any{map[string]any{"date": ts(published), "number": "1", "summary": "Initial version."}},
			"generator":        map[string]any{"engine": map[string]any{"name": "Upkeep"}, "date": ts(updated)}},
	}
}

// vulnIDs splits an id into the CSAF cve field and ids entries.
func vulnIDs(id string, aliases []string) (string, []any) {
	cve := ""
	var ids []any
	for _, x := range append([]string{id}, aliases...) {
		if strings.HasPrefix(x, "CVE-") && cve == "" {
			cve = x
			continue
		}
		system := "OSV"
		if strings.HasPrefix(x, "GHSA-") {
			system = "GitHub Security Advisory"
		}
		ids = append(ids, map[string]any{"system_name": system, "text": x})
	}
	return cve, ids
}

// Build makes the documents of one product: its VEX document (when it has statements) and a
// security advisory per fixed vulnerability. base is the provider's TLP:WHITE folder URL.
func Build(pub Publisher, p Product, base string) ([]Document, error) {
	var out []Document
	slices.SortFunc(p.Releases, func(a, b Release) int { return a.Published.Compare(b.Published) })
	if len(p.Triage) > 0 {
		d, err := buildVEX(pub, p, base)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	for _, f := range p.Fixed {
		if f.FixedIn == "" || f.FixPublished == nil {
			continue
		}
		d, err := buildAdvisory(pub, p, f, base)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// versionsOf is the releases a statement speaks of: one, or all when Version is "".
func versionsOf(p Product, version string) []string {
	var out []string
	for _, r := range p.Releases {
		if version == "" || r.Version == version {
			out = append(out, productID(p.Key, r.Version))
		}
	}
	return out
}

// vexStatus maps an analyst's status to a CSAF product_status.
var vexStatus = map[string]string{"not_affected": "known_not_affected", "affected": "known_affected", "fixed": "fixed", "under_investigation": "under_investigation"}

func buildVEX(pub Publisher, p Product, base string) (Document, error) {
	byVuln := map[string][]wire.Triage{}
	var order []string
	first, last := p.Triage[0].UpdatedAt, p.Triage[0].UpdatedAt
	for _, t := range p.Triage {
		if _, ok := byVuln[t.Vuln]; !ok {
			order = append(order, t.Vuln)
		}
		byVuln[t.Vuln] = append(byVuln[t.Vuln], t)
		first, last = minTime(first, t.UpdatedAt), maxTime(last, t.UpdatedAt)
	}
	slices.Sort(order)
	var vulns []any
	for _, id := range order {
		status := map[string][]any{}
		seen := map[string]string{} // product id → status (the statement about one release wins over an all-releases one)
		ts := byVuln[id]
		slices.SortStableFunc(ts, func(a, b wire.Triage) int { return cmp.Compare(len(a.Version), len(b.Version)) }) // all-releases first
		flags, threats, rems := []any{}, []any{}, []any{}
		for _, t := range ts {
			for _, pid := range versionsOf(p, t.Version) {
				seen[pid] = vexStatus[t.Status]
			}
		}
		for _, t := range ts {
			var pids []any
			for _, pid := range versionsOf(p, t.Version) {
				if seen[pid] == vexStatus[t.Status] {
					pids = append(pids, pid)
				}
			}
			if len(pids) == 0 {
				continue
			}
			st := vexStatus[t.Status]
			status[st] = append(status[st], pids...)
			switch t.Status {
			case "not_affected":
				flags = append(flags, map[string]any{"label": t.Justification, "product_ids": pids})
				if t.Impact != "" {
					threats = append(threats, map[string]any{"category": "impact", "details": t.Impact, "product_ids": pids})
				}
			case "affected":
				rems = append(rems, map[string]any{"category": "mitigation", "details": t.Action, "product_ids": pids})
			}
		}
		if len(status) == 0 {
			continue
		}
		cve, ids := vulnIDs(id, nil)
		v := map[string]any{"product_status": dedupe(status)}
		if cve != "" {
			v["cve"] = cve
		}
		if len(ids) > 0 {
			v["ids"] = ids
		}
		if len(flags) > 0 {
			v["flags"] = flags
		}
		if len(threats) > 0 {
			v["threats"] = threats
		}
		if len(rems) > 0 {
			v["remediations"] = rems
		}
		vulns = append(vulns, v)
	}
	tid := strings.ToUpper("UPKEEP-" + p.Key + "-VEX")
	name := fmt.Sprintf("%d/%s", first.Year(), fileName(tid))
	doc := map[string]any{"document": document(pub, "csaf_vex", p.Name+": vulnerability exploitability (VEX)", tid, first, last,
		fmt.Sprintf("The status of known vulnerabilities in the releases of %s, as the manufacturer's security analysts assessed them.", p.Name), base+"/"+name)}
	doc["product_tree"] = productTree(pub, p)
	doc["vulnerabilities"] = vulns
	return finish(name, tid, "csaf_vex", doc, first, last)
}

func buildAdvisory(pub Publisher, p Product, f wire.TimeToPatch, base string) (Document, error) {
	var affected, fixed []any
	fixedFrom := false
	for _, r := range p.Releases {
		pid := productID(p.Key, r.Version)
		switch {
		case slices.Contains(f.Affected, r.Version):
			affected = append(affected, pid)
		case r.Version == f.FixedIn:
			fixedFrom = true
			fixed = append(fixed, pid)
		case fixedFrom:
			fixed = append(fixed, pid)
		}
	}
	cve, ids := vulnIDs(f.Advisory, f.Aliases)
	status := map[string][]any{}
	if len(affected) > 0 {
		status["known_affected"] = affected
	}
	if len(fixed) > 0 {
		status["fixed"] = fixed
	}
	v := map[string]any{"product_status": status,
		"notes": []any{map[string]any{"category": "description", "title": "Severity", "text": "Severity: " + f.Severity + exploitedText(f)}}}
	if cve != "" {
		v["cve"] = cve
	}
	if len(ids) > 0 {
		v["ids"] = ids
	}
	if len(affected) > 0 {
		v["remediations"] = []any{map[string]any{"category": "vendor_fix", "details": fmt.Sprintf("Update %s to %s or later.", p.Name, f.FixedIn), "product_ids": affected}}
	}
	tid := strings.ToUpper("UPKEEP-" + p.Key + "-" + f.Advisory)
	published, updated := *f.FixPublished, *f.FixPublished
	name := fmt.Sprintf("%d/%s", published.Year(), fileName(tid))
	doc := map[string]any{"document": document(pub, "csaf_security_advisory", fmt.Sprintf("%s: %s fixed in %s", p.Name, f.Advisory, f.FixedIn), tid, published, updated,
		fmt.Sprintf("%s affects %s %s; %s %s fixes it.", f.Advisory, p.Name, strings.Join(f.Affected, ", "), p.Name, f.FixedIn), base+"/"+name)}
	doc["product_tree"] = productTree(pub, p)
	doc["vulnerabilities"] = []any{v}
	return finish(name, tid, "csaf_security_advisory", doc, published, updated)
}

func exploitedText(f wire.TimeToPatch) string {
	if f.Exploited {
		return "; known to be exploited (CISA KEV)."
	}
	return "."
}

func dedupe(m map[string][]any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		seen := map[any]bool{}
		var u []any
		for _, x := range v {
			if !seen[x] {
				seen[x] = true
				u = append(u, x)
			}
		}
		out[k] = u
	}
	return out
}

func finish(name, tid, category string, doc map[string]any, published, updated time.Time) (Document, error) {
	raw, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return Document{}, fmt.Errorf("encode CSAF %s: %w", tid, err)
	}
	title, _ := doc["document"].(map[string]any)["title"].(string)
	return Document{Name: name, TrackingID: tid, Title: title, Category: category, Published: published, Updated: updated, JSON: raw}, nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
