package label

import (
	"bytes"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"strings"
	"time"
)

// pageHTML is the template of the detailed layer: public, plain language, no script, no login.
//
//go:embed page.html
var pageHTML string

type pageRow struct{ Name, Value, Method, Note string }

// AdvisoriesAnchor is the id of the page's section that lists the advisories matched to the
// product: a declaration whose advisories_url ends in "#"+AdvisoriesAnchor points there.
const AdvisoriesAnchor = "advisories"

type pageAdvisory struct{ ID, Severity, Published, Fixed string }

func advisoryRows(e Evidence, now time.Time) []pageAdvisory {
	var out []pageAdvisory
	for _, a := range e.Advisories {
		r := pageAdvisory{ID: a.Advisory, Severity: a.Severity, Published: words(a.Published)}
		n, open := a.Days(now)
		if open {
			r.Fixed = fmt.Sprintf("Not yet (%g days since the advisory)", n)
		} else {
			r.Fixed = fmt.Sprintf("%s (%g days after the advisory)", words(*a.FixReleased), n)
		}
		out = append(out, r)
	}
	return out
}

type pageVerdict struct {
	Verdict
	Class, Word string
}

// PageLinks are the addresses of a published declaration's files, listed on the detailed page so
// that anyone can fetch and check them. Empty fields are left out.
type PageLinks struct {
	Declaration string // the signed DSSE envelope
	PublicKey   string // the PEM public key that verifies it
	KeyID       string // KeyID of that key
	Conformance string // the conformance report as JSON
	LabelSVG    string
	LabelPNG    string
}

// RenderHTML returns the detailed layer of the label: a public page in plain language with the
// label, the key facts, the evidence, the conformance report r and the declaration's JSON. It
// uses no script and no external resource. Every value is escaped; labelSVG is shown through an
// <img> data URL, where an SVG cannot run script.
func RenderHTML(d Declaration, r Report, labelSVG []byte) ([]byte, error) {
	return RenderPage(d, r, labelSVG, PageLinks{})
}

// RenderPage is RenderHTML with a section that links to the published files.
func RenderPage(d Declaration, r Report, labelSVG []byte, links PageLinks) ([]byte, error) {
	return renderPage(d, r, labelSVG, links, false)
}

// RenderReport returns the conformance report r of d alone as an HTML page, in the page's style:
// the product, the counts and a row per provision.
func RenderReport(d Declaration, r Report) ([]byte, error) {
	return renderPage(d, r, nil, PageLinks{}, true)
}

func renderPage(d Declaration, r Report, labelSVG []byte, links PageLinks, reportOnly bool) ([]byte, error) {
	t, err := template.New("page").Parse(pageHTML)
	if err != nil {
		return nil, fmt.Errorf("parse page template: %w", err)
	}
	raw, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode declaration: %w", err)
	}
	m := UpdateMechanism{}
	if len(d.Mechanisms) > 0 {
		m = d.Mechanisms[0]
	}
	ended := d.Status == StatusEndOfSupport
	v := map[string]any{
		"Name": d.Product.Name, "Model": pick(strings.EqualFold(d.Product.ModelDesignation, d.Product.Name), "", d.Product.ModelDesignation), "Maker": d.Manufacturer.Name, "Website": d.Manufacturer.Website,
		"ReportOnly": reportOnly, "Updates": receivesUpdates(d) || ended,
		"Ended": ended, "End": dateWords(d.Support.EndDate, "not declared"), "Start": startWords(d.Support),
		// The SVG is base64 inside a data URL, so it cannot break out of the attribute.
		"Label":    template.URL("data:image/svg+xml;base64," + base64.StdEncoding.EncodeToString(labelSVG)),
		"LabelAlt": fmt.Sprintf("Security update label: %s. %s.", deliveryWords(d), labelEnd(d)),
		"Delivery": deliverySentence(d, m), "LastUpdate": lastUpdate(d.Evidence.LastSecurityUpdate),
		"AfterEnd": sentence(d.PostEOS.Behaviour) + " " + pick(d.PostEOS.KeepsWorking, "The device keeps working, without security updates.", "The device stops working.") +
			" " + sentence(d.PostEOS.OwnerNotice),
		"VDPURL":         d.VulnerabilityHandling.VDP.URL,
		"VDPContact":     d.VulnerabilityHandling.VDP.Contact,
		"Channels":       channelWords(d.VulnerabilityHandling.NotificationChannels),
		"Advisories":     d.VulnerabilityHandling.AdvisoriesURL,
		"AdvisoryRows":   advisoryRows(d.Evidence, d.Evidence.ComputedAt),
		"ListAdvisories": len(d.Evidence.Advisories) > 0 || strings.HasSuffix(d.VulnerabilityHandling.AdvisoriesURL, "#"+AdvisoriesAnchor),
		"Commitment": pick(d.VulnerabilityHandling.RemediationTargetDays > 0,
			fmt.Sprintf("A fixed release within %d days of an advisory, for high and critical vulnerabilities.", d.VulnerabilityHandling.RemediationTargetDays), "None declared."),
		"Cost":       pick(d.SecurityUpdatesFree, "Security updates are free of charge.", "Security updates may be charged for."),
		"Separate":   pick(d.SecurityUpdatesSeparate, "Yes: security fixes do not wait for new features.", "No: security fixes arrive with feature updates."),
		"Protection": protection(m),
		"ComputedAt": d.Evidence.ComputedAt.Format("2 January 2006 15:04 MST"),
		"Evidence":   evidenceRows(d.Evidence),
		"Met":        r.Count(VerdictMet), "NotMet": r.Count(VerdictNotMet), "CannotJudge": r.Count(VerdictCannotJudge), "NotApplicable": r.Count(VerdictNotApplicable),
		"Verdicts": verdictRows(r), "History": d.Support.History, "JSON": string(raw),
		"Links": links, "HasLinks": links != PageLinks{},
		"ID": d.DeclarationID, "Schema": d.SchemaVersion, "Updated": d.LastUpdated.Format("2 January 2006 15:04 MST"),
	}
	var b bytes.Buffer
	if err := t.Execute(&b, v); err != nil {
		return nil, fmt.Errorf("render page: %w", err)
	}
	return b.Bytes(), nil
}

func deliverySentence(d Declaration, m UpdateMechanism) string {
	switch deliveryWords(d) {
	case "None":
		return "None: this product does not receive updates."
	case "Ended":
		return "None any more: support has ended. Updates released before then stay available to install."
	case "Automatic":
		return "Automatic: they install without you doing anything." + pick(m.UserControls.Disable, " You can turn this off.", "")
	}
	return "With your consent: each update installs once you agree to it."
}

// channelWords says in plain words how owners are told, e.g. "In the app and by e-mail.".
func channelWords(channels []string) string {
	if len(channels) == 0 {
		return "No notification channel is declared."
	}
	known := map[string]string{"app": "in the app", "email": "by e-mail", "e-mail": "by e-mail", "device": "on the device itself",
		"sms": "by text message", "web": "on the manufacturer's website", "push": "by a notification on your phone"}
	var parts []string
	for _, c := range channels {
		w, ok := known[strings.ToLower(strings.TrimSpace(c))]
		if !ok {
			w = "by " + c
		}
		parts = append(parts, w)
	}
	s := parts[0]
	if len(parts) > 1 {
		s = strings.Join(parts[:len(parts)-1], ", ") + " and " + parts[len(parts)-1]
	}
	return sentence(s)
}

func protection(m UpdateMechanism) string {
	var parts []string
	if m.Crypto.VerifiedOnDevice {
		parts = append(parts, fmt.Sprintf("every update is signed (%s) and checked by the device before it installs", m.Crypto.SigAlg))
	}
	if m.Crypto.AntiRollback {
		parts = append(parts, "older, vulnerable versions are refused")
	}
	if m.AtomicAB {
		parts = append(parts, "an update installs beside the running system"+pick(m.AutomaticRollback, " and is undone automatically if it fails to start", ""))
	}
	if m.Crypto.TrustAnchor != "" {
		parts = append(parts, "trust anchor: "+m.Crypto.TrustAnchor)
	}
	if len(parts) == 0 {
		return "Not declared."
	}
	return sentence(strings.Join(parts, "; "))
}

// sentence capitalises s and ends it with a full stop; an empty s stays empty.
func sentence(s string) string {
	if s == "" {
		return ""
	}
	return strings.ToUpper(s[:1]) + strings.TrimSuffix(s[1:], ".") + "."
}

// deref returns *f, or a figure that says it is not available.
func deref(f *Figure) Figure {
	if f == nil {
		return Figure{Method: "share of the high and critical advisories fixed within the declared remediation days", Note: "not available"}
	}
	return *f
}

func evidenceRows(e Evidence) []pageRow {
	rows := []pageRow{{"Last security update", lastUpdate(e.LastSecurityUpdate), e.LastSecurityUpdate.Method, e.LastSecurityUpdate.Note}}
	for _, f := range []struct {
		name string
		f    Figure
	}{
		{"Security updates in the last 12 months", e.SecurityUpdates12m},
		{"Median days from advisory to fixed release", e.AdvisoryToFixDays},
		{"High and critical advisories fixed within the commitment", deref(e.WithinTarget)},
		{"Median days from fixed release to 90% of devices", e.FixToFleet90Days},
		{"Recently seen devices on a supported release", e.FleetOnSupported},
		{"Devices", e.Devices},
		{"Devices seen in the last 30 days", e.ActiveDevices},
	} {
		val := "Not available"
		if f.f.Value != nil {
			val = fmt.Sprintf("%g", *f.f.Value) + map[string]string{"days": " days", "percent": "%"}[f.f.Unit]
		}
		rows = append(rows, pageRow{f.name, val, f.f.Method, f.f.Note})
	}
	return rows
}

func verdictRows(r Report) []pageVerdict {
	words := map[string]string{VerdictMet: "Met", VerdictNotMet: "Not met", VerdictCannotJudge: "Cannot judge", VerdictNotApplicable: "Not applicable"}
	var out []pageVerdict
	for _, v := range r.Verdicts {
		w, ok := words[v.Verdict]
		if !ok {
			w = v.Verdict
		}
		out = append(out, pageVerdict{Verdict: v, Class: v.Verdict, Word: w})
	}
	return out
}

func lastUpdate(f DateFigure) string {
	if f.Date == "" {
		return "None yet"
	}
	return dateWords(f.Date, f.Date) + pick(f.Version != "", " (version "+f.Version+")", "")
}

func startWords(s Support) string {
	basis := map[string]string{"placed_on_market": "the day it was placed on the market", "purchase": "the day of purchase", "activation": "the day of activation"}[s.StartBasis]
	switch {
	case s.StartDate == "":
		return basis
	case basis == "":
		return dateWords(s.StartDate, s.StartDate)
	}
	return dateWords(s.StartDate, s.StartDate) + ", " + basis
}

// dateWords writes a YYYY-MM-DD date as "31 December 2030", or def when there is none.
func dateWords(s, def string) string {
	if t := parseDate(s); !t.IsZero() {
		return words(t)
	}
	return def
}
