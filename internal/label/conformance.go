package label

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Verdicts of a provision.
const (
	VerdictMet         = "met"
	VerdictNotMet      = "not_met"
	VerdictCannotJudge = "cannot_judge" // the declaration and platform data cannot tell
	// VerdictNotApplicable: the provision applies only to other devices (ETSI 5.3-14 and
	// 5.3-15: constrained devices that cannot be updated), as the declaration shows.
	VerdictNotApplicable = "not_applicable"
)

// Sources of provisions.
const (
	SourceETSI = "ETSI EN 303 645"
	SourceNIST = "NISTIR 8259A"
	SourceCRA  = "EU CRA"
	SourcePSTI = "UK PSTI"
)

const notJudgedVD = "the policy's timelines and the reachability of its address are not checked here"

// Verdict is the outcome for one provision. Evidence quotes the declaration fields the verdict
// rests on; Reason explains a not_met, cannot_judge or not_applicable, or a limit of a met.
type Verdict struct {
	Provision string `json:"provision"`
	Source    string `json:"source"`
	Title     string `json:"title"`
	Verdict   string `json:"verdict"`
	Evidence  string `json:"evidence"`
	Reason    string `json:"reason,omitempty"`
}

// Report is the conformance report of one declaration.
type Report struct {
	DeclarationID string    `json:"declaration_id"`
	Product       string    `json:"product"`
	Status        string    `json:"status"`
	ComputedAt    time.Time `json:"computed_at"`
	Verdicts      []Verdict `json:"verdicts"`
}

// Count returns how many verdicts equal v.
func (r Report) Count(v string) int {
	n := 0
	for _, x := range r.Verdicts {
		if x.Verdict == v {
			n++
		}
	}
	return n
}

// Conformance judges d, provision by provision, from its fields and evidence only. now decides
// whether the support period has ended. The order of the verdicts is fixed.
func Conformance(d Declaration, now time.Time) Report {
	now = now.UTC().Truncate(time.Second)
	st := status(parseDate(d.Support.EndDate), now)
	r := Report{DeclarationID: d.DeclarationID, Product: d.Product.ID, Status: st, ComputedAt: now}
	add := func(src, prov, title, verdict, evidence, reason string) {
		r.Verdicts = append(r.Verdicts, Verdict{Provision: prov, Source: src, Title: title, Verdict: verdict, Evidence: evidence, Reason: reason})
	}
	m := UpdateMechanism{}
	if len(d.Mechanisms) > 0 {
		m = d.Mechanisms[0]
	}
	updatable := d.UpdateCapable == "yes" && len(d.Mechanisms) > 0
	auto := updatable && m.Defaults.AutoInstall
	vh := d.VulnerabilityHandling
	vdp := fmt.Sprintf("vdp.url=%q, vdp.contact=%q", vh.VDP.URL, vh.VDP.Contact)
	secure := updatable && m.Crypto.VerifiedOnDevice && m.Crypto.SigAlg != ""
	cryptoEv := fmt.Sprintf("sig_alg=%q, hash_alg=%q, verified_on_device=%t, anti_rollback=%t", m.Crypto.SigAlg, m.Crypto.HashAlg, m.Crypto.VerifiedOnDevice, m.Crypto.AntiRollback)
	timely, timelyEv, timelyWhy := timeliness(d, now)
	channels := strings.Join(vh.NotificationChannels, ", ")
	supportEv, supportOK, supportWhy := supportPeriod(d, st)

	// ETSI EN 303 645 V3, clause 5.2: vulnerability reports.
	add(SourceETSI, "5.2-1", "A vulnerability disclosure policy is published, with a contact",
		pick(vh.VDP.URL != "" && vh.VDP.Contact != "", VerdictMet, VerdictNotMet), vdp,
		pick(vh.VDP.URL != "" && vh.VDP.Contact != "", notJudgedVD, "the policy's address and a contact are both required"))
	add(SourceETSI, "5.2-2", "Vulnerabilities are acted on in a timely way", timely, timelyEv, timelyWhy)
	ttf := d.Evidence.AdvisoryToFixDays
	add(SourceETSI, "5.2-3", "Vulnerabilities are monitored and fixed throughout the support period",
		pick(ttf.Samples > 0, VerdictMet, VerdictCannotJudge), fmt.Sprintf("fixed advisories matched to the product: %d", ttf.Samples),
		pick(ttf.Samples > 0, "", "no advisory matched to the product has a fixed release, so monitoring cannot be shown"))

	// Clause 5.3: keep software updated.
	if updatable {
		add(SourceETSI, "5.3-1", "All software components are securely updatable", VerdictCannotJudge, "update_capable=yes; the image is updated as a whole",
			"the declaration does not list components, so components outside the image cannot be judged")
	} else {
		add(SourceETSI, "5.3-1", "All software components are securely updatable", VerdictNotMet, "update_capable="+d.UpdateCapable, "the device receives no updates")
	}
	why53_2 := pick(secure, "", "updates must be signed and verified on the device")
	if f := d.Evidence.DDIDevices; f != nil && f.Value != nil {
		// The declared mechanism is the agent's; DDI devices check less, and the report says so.
		cryptoEv += fmt.Sprintf("; %.0f of the devices speak hawkBit DDI", *f.Value)
		why53_2 = strings.TrimPrefix(why53_2+"; ", "; ") + fmt.Sprintf("%.0f devices speak hawkBit DDI: %s", *f.Value, DDIMeaning)
	}
	add(SourceETSI, "5.3-2", "A secure update mechanism exists", pick(secure, VerdictMet, VerdictNotMet), cryptoEv, why53_2)
	switch {
	case auto:
		add(SourceETSI, "5.3-3", "Updates are simple to apply", VerdictMet, "initiation=automatic", "")
	case updatable:
		add(SourceETSI, "5.3-3", "Updates are simple to apply", VerdictCannotJudge, "initiation="+m.Initiation,
			"the owner's consent step happens outside the platform, which cannot show how simple it is")
	default:
		add(SourceETSI, "5.3-3", "Updates are simple to apply", VerdictNotMet, "update_capable="+d.UpdateCapable, "the device receives no updates")
	}
	add(SourceETSI, "5.3-4", "Automatic updates are used", pick(auto, VerdictMet, VerdictNotMet),
		fmt.Sprintf("defaults.auto_install=%t; fleet on a supported release: %s", m.Defaults.AutoInstall, figure(d.Evidence.FleetOnSupported)),
		pick(auto, "", "security updates are not installed automatically by default"))
	add(SourceETSI, "5.3-5", "The device checks for updates after initialisation and then periodically", VerdictCannotJudge, "",
		"the check schedule is not part of the declaration")
	controls := m.UserControls.Disable || m.UserControls.Postpone
	ok := auto && m.Defaults.Notifications && controls
	add(SourceETSI, "5.3-6", "Automatic updates and notifications are on by default and can be disabled or postponed", pick(ok, VerdictMet, VerdictNotMet),
		fmt.Sprintf("auto_install=%t, notifications=%t, disable=%t, postpone=%t", m.Defaults.AutoInstall, m.Defaults.Notifications, m.UserControls.Disable, m.UserControls.Postpone),
		pick(ok, "", missing(map[string]bool{"automatic installation by default": auto, "notifications by default": m.Defaults.Notifications, "an owner control to disable or postpone": controls})))
	cv, cr := cryptography(m.Crypto)
	if !updatable {
		cv, cr = VerdictNotMet, "the device receives no updates"
	}
	add(SourceETSI, "5.3-7", "Best-practice cryptography secures updates", cv, cryptoEv, cr)
	add(SourceETSI, "5.3-8", "Security updates are timely", timely, timelyEv, timelyWhy)
	add(SourceETSI, "5.3-9", "The device verifies the authenticity and integrity of updates", pick(secure, VerdictMet, VerdictNotMet), cryptoEv,
		pick(secure, "", "the device does not verify updates"))
	anchored := secure && m.Crypto.TrustAnchor != ""
	add(SourceETSI, "5.3-10", "Updates over the network are verified through a trust relationship", pick(anchored, VerdictMet, VerdictNotMet),
		fmt.Sprintf("trust_anchor=%q, verified_on_device=%t", m.Crypto.TrustAnchor, m.Crypto.VerifiedOnDevice), pick(anchored, "", "no trust anchor the device verifies against"))
	told := len(vh.NotificationChannels) > 0 && vh.AdvisoriesURL != ""
	add(SourceETSI, "5.3-11", "The owner is told an update is needed and what risk it mitigates", pick(told, VerdictMet, VerdictNotMet),
		fmt.Sprintf("notification_channels=[%s], advisories_url=%q", channels, vh.AdvisoriesURL),
		pick(told, "", missing(map[string]bool{"a notification channel": len(vh.NotificationChannels) > 0, "published advisories that state the risk": vh.AdvisoriesURL != ""})))
	add(SourceETSI, "5.3-12", "The owner is warned when an update disrupts the device's basic function", VerdictCannotJudge,
		fmt.Sprintf("atomic_ab=%t, automatic_rollback=%t", m.AtomicAB, m.AutomaticRollback), "disruption warnings are not part of the declaration")
	add(SourceETSI, "5.3-13", "The defined support period is published", pick(supportOK, VerdictMet, VerdictNotMet), supportEv, supportWhy)
	// 5.3-14 and 5.3-15 are for constrained devices whose software cannot be updated: for a
	// device that receives updates they do not apply (ETSI EN 303 645 V3, 5.3-14/15).
	if updatable {
		add(SourceETSI, "5.3-14", "Constrained devices: rationale, hardware replacement and support period are published", VerdictNotApplicable,
			"update_capable=yes", "applies only to devices whose software cannot be updated; this one receives updates")
		add(SourceETSI, "5.3-15", "Constrained devices: the device can be isolated and its hardware replaced", VerdictNotApplicable,
			"update_capable=yes", "applies only to devices whose software cannot be updated; this one receives updates")
	} else {
		add(SourceETSI, "5.3-14", "Constrained devices: rationale, hardware replacement and support period are published", VerdictCannotJudge,
			"update_capable="+d.UpdateCapable+"; "+supportEv, "the rationale and the hardware replacement offer are not part of the declaration")
		add(SourceETSI, "5.3-15", "Constrained devices: the device can be isolated and its hardware replaced", VerdictCannotJudge, "update_capable="+d.UpdateCapable,
			"isolability and hardware replacement are physical properties that platform data cannot show")
	}
	add(SourceETSI, "5.3-16", "The model designation is clearly recognisable", pick(d.Product.ModelDesignation != "", VerdictMet, VerdictNotMet),
		fmt.Sprintf("model_designation=%q", d.Product.ModelDesignation),
		pick(d.Product.ModelDesignation != "", "matching against the model the devices report is not part of the declaration", "no model designation"))

	// NISTIR 8259A, "Software Update".
	add(SourceNIST, "Software Update 1", "Software can be updated by authorised entities only, through a secure mechanism", pick(anchored, VerdictMet, VerdictNotMet), cryptoEv,
		pick(anchored, "", "updates are not verified against a trust anchor on the device"))
	rb := updatable && m.Crypto.AntiRollback && m.AutomaticRollback
	add(SourceNIST, "Software Update 2", "Rollback happens only when authorised", pick(rb, VerdictMet, VerdictNotMet),
		fmt.Sprintf("anti_rollback=%t, automatic_rollback=%t", m.Crypto.AntiRollback, m.AutomaticRollback),
		pick(rb, "", "both anti-rollback and rollback of a failed image are required"))
	cfg := updatable && m.UserControls.Disable
	add(SourceNIST, "Software Update 3", "Updating can be enabled, disabled and set to automatic or manual", pick(cfg, VerdictMet, VerdictNotMet),
		fmt.Sprintf("initiation=%q, disable=%t, notifications=%t", m.Initiation, m.UserControls.Disable, m.Defaults.Notifications),
		pick(cfg, "", "the owner cannot turn automatic updating off"))

	// Regulation (EU) 2024/2847.
	craAuto := auto && m.UserControls.Disable && m.Defaults.Notifications
	add(SourceCRA, "Annex I Pt I(2)(c)", "Automatic security updates by default, with an easy opt-out and notification", pick(craAuto, VerdictMet, VerdictNotMet),
		fmt.Sprintf("auto_install=%t, disable=%t, postpone=%t, notifications=%t", m.Defaults.AutoInstall, m.UserControls.Disable, m.UserControls.Postpone, m.Defaults.Notifications),
		pick(craAuto, pick(m.UserControls.Postpone, "", "temporary postponement is not declared"),
			missing(map[string]bool{"automatic installation by default": auto, "an opt-out": m.UserControls.Disable, "notification": m.Defaults.Notifications})))
	add(SourceCRA, "Annex I Pt II(2)", "Security updates are provided separately from feature updates", pick(d.SecurityUpdatesSeparate, VerdictMet, VerdictNotMet),
		fmt.Sprintf("security_updates_separate=%t; security updates in 12 months: %s", d.SecurityUpdatesSeparate, figure(d.Evidence.SecurityUpdates12m)),
		pick(d.SecurityUpdatesSeparate, "", "security fixes ship only with feature updates"))
	switch {
	case !secure || !auto:
		add(SourceCRA, "Annex I Pt II(7)", "Security updates are distributed securely, in a timely and automatic way", VerdictNotMet, cryptoEv+"; auto_install="+fmt.Sprint(m.Defaults.AutoInstall),
			missing(map[string]bool{"signed updates verified on the device": secure, "automatic distribution": auto}))
	default:
		add(SourceCRA, "Annex I Pt II(7)", "Security updates are distributed securely, in a timely and automatic way", timely, cryptoEv+"; "+timelyEv, timelyWhy)
	}
	free := d.SecurityUpdatesFree && vh.AdvisoriesURL != ""
	add(SourceCRA, "Annex I Pt II(8)", "Security updates are free of charge, with advisories", pick(free, VerdictMet, VerdictNotMet),
		fmt.Sprintf("security_updates_free=%t, advisories_url=%q", d.SecurityUpdatesFree, vh.AdvisoriesURL),
		pick(free, "", missing(map[string]bool{"free security updates": d.SecurityUpdatesFree, "published advisories": vh.AdvisoriesURL != ""})))
	pv, pe, pr := cra13(d.Support)
	add(SourceCRA, "Art.13(8)", "The support period is at least five years, or shorter with a justification", pv, pe, pr)

	// The Product Security and Telecommunications Infrastructure (Security Requirements for
	// Relevant Connectable Products) Regulations 2023, Schedule 1.
	reach := vh.VDP.Contact != "" || vh.VDP.URL != ""
	add(SourcePSTI, "Sch.1 ¶2", "A point of contact for reporting vulnerabilities is published", pick(reach, VerdictMet, VerdictNotMet), vdp,
		pick(reach, notJudgedVD, "no contact or policy address"))
	add(SourcePSTI, "Sch.1 ¶3", "The defined support period is published", pick(supportOK, VerdictMet, VerdictNotMet), supportEv, supportWhy)
	return r
}

// timeliness judges the remediation commitment advisory by advisory: every advisory it covers
// (high, critical or unknown severity; CommitmentCovers) must have been fixed within the
// declared days of its publication, and one still open counts by its age at now. Any breach is
// not_met; cannot_judge without a target or without a covered advisory. The median is evidence
// only.
func timeliness(d Declaration, now time.Time) (verdict, evidence, reason string) {
	e, target := d.Evidence, d.VulnerabilityHandling.RemediationTargetDays
	within := "not available"
	if e.WithinTarget != nil {
		within = figure(*e.WithinTarget)
	}
	evidence = fmt.Sprintf("declared target: %d days for high and critical advisories; within target: %s; median days advisory to fix: %s; median days fix to 90%% of fleet: %s",
		target, within, figure(e.AdvisoryToFixDays), figure(e.FixToFleet90Days))
	if target <= 0 {
		return VerdictCannotJudge, evidence, "no remediation target is declared to measure against"
	}
	var breaches []string
	covered, open := 0, 0
	for _, a := range e.Advisories {
		if !CommitmentCovers(a.Severity) {
			continue
		}
		covered++
		days, isOpen := a.Days(now)
		if isOpen {
			open++
		}
		if days <= float64(target) {
			continue
		}
		if isOpen {
			breaches = append(breaches, fmt.Sprintf("%s (%s) has had no fix for %g days", a.Advisory, a.Severity, days))
		} else {
			breaches = append(breaches, fmt.Sprintf("%s (%s) took %g days to fix", a.Advisory, a.Severity, days))
		}
	}
	switch {
	case len(breaches) > 0:
		more := ""
		if len(breaches) > 3 {
			more = fmt.Sprintf(" and %d more", len(breaches)-3)
			breaches = breaches[:3]
		}
		return VerdictNotMet, evidence, fmt.Sprintf("over the declared %d days: %s%s", target, strings.Join(breaches, "; "), more)
	case covered == 0 && e.AdvisoryToFixDays.Value == nil:
		return VerdictCannotJudge, evidence, "no time-to-patch data: " + cmp.Or(e.AdvisoryToFixDays.Note, "no advisory is matched to this product")
	case covered == 0:
		return VerdictCannotJudge, evidence, "no advisory of high, critical or unknown severity is matched to this product"
	case open > 0:
		return VerdictMet, evidence, fmt.Sprintf("%d covered advisories are open and still within the declared days", open)
	}
	return VerdictMet, evidence, ""
}

// supportPeriod judges whether the support period is published and was never shortened.
func supportPeriod(d Declaration, st string) (evidence string, ok bool, reason string) {
	end := parseDate(d.Support.EndDate)
	if end.IsZero() {
		return "support.end_date missing", false, "no support end date is declared"
	}
	evidence = "security updates guaranteed until " + words(end)
	if st == StatusEndOfSupport {
		evidence = "end_of_support: support ended on " + words(end)
	}
	for _, c := range d.Support.History {
		if c.Field != "support_end" {
			continue
		}
		if o, n := parseDate(c.Old), parseDate(c.New); !o.IsZero() && n.Before(o) {
			return evidence, false, fmt.Sprintf("the support end was shortened from %s to %s on %s", c.Old, c.New, date(c.At))
		}
	}
	return evidence, true, ""
}

// cryptography judges the declared algorithms against current practice (RFC 9124 and the
// algorithms TUF and Uptane specify).
func cryptography(c Crypto) (verdict, reason string) {
	strongSig := []string{"ed25519", "ed448", "ecdsa-p256", "ecdsa-p384", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "rsassa-pss-sha256", "rsa-pss"}
	weak := []string{"md5", "sha1", "crc32", "dsa", "rsa-1024", "rsassa-pkcs1v15-sha1"}
	strongHash := []string{"sha256", "sha384", "sha512", "sha3-256", "sha3-512", "blake2b"}
	sig := strings.ToLower(c.SigAlg)
	hashes := strings.FieldsFunc(strings.ToLower(c.HashAlg), func(r rune) bool { return r == '+' || r == ',' || r == ' ' })
	for _, h := range append([]string{sig}, hashes...) {
		if slices.Contains(weak, h) {
			return VerdictNotMet, h + " is not best practice"
		}
	}
	switch {
	case sig == "" || len(hashes) == 0:
		return VerdictCannotJudge, "the signature or hash algorithm is not declared"
	case !slices.Contains(strongSig, sig):
		return VerdictCannotJudge, "signature algorithm " + c.SigAlg + " is not one this report knows"
	}
	for _, h := range hashes {
		if !slices.Contains(strongHash, h) {
			return VerdictCannotJudge, "hash algorithm " + h + " is not one this report knows"
		}
	}
	return VerdictMet, "key sizes and rotation are not part of the declaration"
}

// cra13 judges Art.13(8): at least five years from the start, or a justification.
func cra13(s Support) (verdict, evidence, reason string) {
	start, end := parseDate(s.StartDate), parseDate(s.EndDate)
	evidence = fmt.Sprintf("start_date=%q (%s), end_date=%q, justification_lt_5y=%q", s.StartDate, s.StartBasis, s.EndDate, s.JustificationLT5y)
	switch {
	case end.IsZero():
		return VerdictNotMet, evidence, "no support end date is declared"
	case start.IsZero():
		return VerdictCannotJudge, evidence, "no start date is declared, so the length of the period is unknown"
	case !end.Before(start.AddDate(5, 0, 0)):
		return VerdictMet, evidence, ""
	case s.JustificationLT5y != "":
		return VerdictMet, evidence, "the period is under five years, with a justification"
	}
	return VerdictNotMet, evidence, "the period is under five years and no justification is given"
}

// figure renders f for evidence text.
func figure(f Figure) string {
	if f.Value == nil {
		return "not available"
	}
	return fmt.Sprintf("%g %s (n=%d)", *f.Value, f.Unit, f.Samples)
}

// missing lists the names whose condition is false, in a stable order.
func missing(conds map[string]bool) string {
	var out []string
	for name, ok := range conds {
		if !ok {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	if len(out) == 0 {
		return ""
	}
	return "missing: " + strings.Join(out, "; ")
}

func pick[T any](cond bool, a, b T) T {
	if cond {
		return a
	}
	return b
}

// parseDate reads YYYY-MM-DD, returning the zero time for anything else.
func parseDate(s string) time.Time {
	t, _ := time.Parse(time.DateOnly, s)
	return t
}

// words formats t as "31 December 2030".
func words(t time.Time) string { return t.UTC().Format("2 January 2006") }
