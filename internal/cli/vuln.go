package cli

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/show"
)

// addVulnCmds registers sbom, advisories and exposure, and `product time-to-patch`.
func addVulnCmds(root *cobra.Command, g *globals) {
	root.AddCommand(sbomCmd(g), advisoriesCmd(g), exposureCmd(g), vexCmd(g), waiverCmd(g))
	for _, c := range root.Commands() {
		switch c.Name() {
		case "product":
			c.AddCommand(timeToPatchCmd(g))
		case "release":
			c.AddCommand(releaseCheckCmd(g))
		}
	}
}

func splitRelease(ref string) (string, string, error) {
	p, v, ok := strings.Cut(ref, "@")
	if !ok || p == "" || v == "" {
		return "", "", fmt.Errorf("release %q: want PRODUCT@VERSION", ref)
	}
	return p, v, nil
}

func sbomCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "sbom", Short: "Attach and show releases' software bills of materials"}
	attach := &cobra.Command{
		Use:   "attach PRODUCT@VERSION FILE",
		Short: "Upload a release's SBOM (CycloneDX 1.2–1.6 or SPDX 2.2–2.3 JSON)",
		Long: "Upload a release's SBOM. If the release was published with --sbom, its signed target names the\n" +
			"SBOM's SHA-256 and the server accepts only that file.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, v, err := splitRelease(args[0])
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			info, err := c.AttachSBOM(cmd.Context(), p, v, args[1])
			if err != nil {
				return err
			}
			printSBOM(cmd.OutOrStdout(), info)
			return nil
		},
	}
	show := &cobra.Command{
		Use:   "show PRODUCT@VERSION",
		Short: "Show a release's stored SBOM",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, v, err := splitRelease(args[0])
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			info, err := c.SBOM(cmd.Context(), p, v)
			if err != nil {
				return err
			}
			printSBOM(cmd.OutOrStdout(), info)
			return nil
		},
	}
	cmd.AddCommand(attach, show)
	return cmd
}

func printSBOM(w io.Writer, i *client.SBOMInfo) {
	bound := "not signed (the release's target names no SBOM)"
	if i.Signed {
		bound = "bound to the image by the targets signature"
	}
	fmt.Fprintf(w, "SBOM of %s@%s: %s, %d components, sha256 %s, %s\n", i.Product, i.Version, i.Format, i.Components, i.SHA256, bound)
}

func advisoriesCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "advisories", Short: "Import vulnerability advisories (OSV, CSAF 2.0 with VEX)"}
	imp := &cobra.Command{
		Use:   "import PATH...",
		Short: "Import OSV records (.json, a folder, or an osv.dev .zip) and CSAF documents",
		Long: "Import advisories. A folder is walked for .json and .zip files; each file is uploaded as it is and\n" +
			"the server tells OSV from CSAF. Advisories are kept by id and replaced only by a newer copy, so\n" +
			"importing the same feed again changes nothing. Malformed files are reported by name; the rest\n" +
			"is imported.",
		Example: `  upkeep advisories import all.zip
  upkeep advisories import ./osv ./csaf/vendor-vex.json`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			res, err := c.ImportAdvisories(cmd.Context(), args...)
			if res != nil {
				w := cmd.OutOrStdout()
				fmt.Fprintf(w, "advisories: %d imported, %d updated, %d unchanged, %d skipped\n", res.Imported, res.Updated, res.Unchanged, res.Skipped)
				if n := res.VEXImported + res.VEXUpdated + res.VEXUnchanged; n > 0 {
					fmt.Fprintf(w, "VEX statements: %d imported, %d updated, %d unchanged\n", res.VEXImported, res.VEXUpdated, res.VEXUnchanged)
				}
				for _, e := range res.Errors {
					fmt.Fprintf(w, "  malformed %s: %s\n", e.File, e.Error)
				}
				if err == nil && res.Imported+res.Updated+res.Unchanged+res.VEXImported+res.VEXUpdated+res.VEXUnchanged == 0 {
					return fmt.Errorf("nothing was imported from %s: no OSV record or CSAF document found (%d skipped, %d malformed)", strings.Join(args, ", "), res.Skipped, len(res.Errors))
				}
			}
			return err
		},
	}
	cmd.AddCommand(imp)
	return cmd
}

func exposureCmd(g *globals) *cobra.Command {
	var q client.ExposureQuery
	var severity, product, format string
	var all bool
	cmd := &cobra.Command{
		Use:   "exposure",
		Short: "Show which advisories affect releases that devices run, since when, and what fixes them",
		Example: `  upkeep exposure --severity high
  upkeep exposure --product thermostat --format csv > exposure.csv`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch format {
			case "table", "csv", "json":
			default:
				return fmt.Errorf("--format %q: want table, csv or json", format)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			q.Severity, q.Product, q.All = severity, product, all
			rep, err := c.Exposure(cmd.Context(), q)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			switch format {
			case "json":
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			case "csv":
				return exposureCSV(w, rep)
			}
			return exposureTable(w, rep, all)
		},
	}
	f := cmd.Flags()
	f.StringVar(&severity, "severity", "", "at least this severity: critical, high, medium, low or unknown")
	f.StringVar(&product, "product", "", "only this product")
	f.StringVar(&format, "format", "table", "table, csv or json")
	f.BoolVar(&all, "all", false, "also list matches a VEX statement suppresses (not_affected) and those that cannot be decided (unmatched)")
	f.BoolVar(&q.KEV, "kev", false, "only vulnerabilities in the CISA Known Exploited Vulnerabilities catalog")
	f.Float64Var(&q.MinEPSS, "min-epss", 0, "only vulnerabilities whose EPSS score is at least this (0 to 1)")
	f.StringVar(&q.Sort, "sort", "", "order: kev (default: known exploited first, then severity, EPSS, days), severity, epss or days")
	return cmd
}

// exposureRows is every row of the report in print order: exposed, not affected, unmatched.
func exposureRows(rep *client.ExposureReport) []client.Exposure {
	return append(append(append([]client.Exposure{}, rep.Exposed...), rep.NotAffected...), rep.Unmatched...)
}

var exposureHeader = []string{"advisory", "aliases", "severity", "summary", "product", "release", "devices", "since", "days_exposed", "fixed_in", "status", "reason", "components", "report_at", "severity_source", "kev_date_added", "epss", "vex"}

// componentsText writes a row's components as "purl" for those with the row's status and
// "purl[status]" for the others (an undecided component inside an affected row).
func componentsText(e client.Exposure) string {
	parts := make([]string, len(e.Components))
	for i, c := range e.Components {
		parts[i] = c.PURL
		if c.Status != e.Status {
			parts[i] += "[" + c.Status + "]"
		}
	}
	return strings.Join(parts, " ")
}

func kevText(e client.Exposure) string {
	if e.KEV == nil {
		return ""
	}
	return e.KEV.DateAdded.Format(time.DateOnly)
}

func epssText(e client.Exposure) string {
	if e.EPSS == nil {
		return ""
	}
	return strconv.FormatFloat(e.EPSS.Score, 'f', 5, 64)
}

func vexText(e client.Exposure) string {
	var parts []string
	for _, v := range e.VEX {
		t := v.Status
		if v.Justification != "" {
			t += " (" + v.Justification + ")"
		}
		if v.Statement != "" {
			t += ": " + v.Statement
		}
		parts = append(parts, t)
	}
	return strings.Join(parts, "; ")
}

// CSV statuses beyond the rows' own: a release without an SBOM, and the count of undecided
// findings when their rows are not listed (without --all).
const (
	csvStatusUnknown   = "unknown"
	csvStatusUndecided = "undecided"
)

// exposureCSV writes the report as CSV with the same data as the JSON: one record per row, one
// per release without an SBOM (status unknown), one giving the number of undecided findings
// when they are not listed, and the report's time in every record.
func exposureCSV(w io.Writer, rep *client.ExposureReport) error {
	cw := csv.NewWriter(w)
	at := rep.At.UTC().Format(time.RFC3339)
	cw.Write(exposureHeader) //nolint:errcheck // checked by Flush
	for _, e := range exposureRows(rep) {
		since := ""
		if !e.Since.IsZero() {
			since = e.Since.UTC().Format(time.RFC3339)
		}
		cw.Write([]string{e.Advisory, strings.Join(e.Aliases, " "), e.Severity, e.Summary, e.Product, e.Release, strconv.Itoa(e.Devices), //nolint:errcheck // checked by Flush
			since, strconv.FormatFloat(e.DaysExposed, 'f', 1, 64), e.FixedIn, e.Status, e.Reason, componentsText(e), at, e.SeveritySource, kevText(e), epssText(e), vexText(e)})
	}
	for _, ref := range rep.WithoutSBOM {
		product, version, _ := strings.Cut(ref, "@")
		cw.Write([]string{"", "", "", "", product, version, "", "", "", "", csvStatusUnknown, "no SBOM: exposure unknown", "", at, "", "", "", ""}) //nolint:errcheck // checked by Flush
	}
	if rep.Undecided > 0 && len(rep.Unmatched) == 0 {
		cw.Write([]string{"", "", "", "", "", "", "", "", "", "", csvStatusUndecided, undecidedLine(rep.Undecided), "", at, "", "", "", ""}) //nolint:errcheck // checked by Flush
	}
	cw.Flush()
	return cw.Error()
}

func undecidedLine(n int) string {
	return fmt.Sprintf("%d findings could not be decided (GIT ranges, unknown ecosystems): see --all", n)
}

func exposureTable(w io.Writer, rep *client.ExposureReport, all bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ADVISORY\tSEVERITY\tKEV\tEPSS\tRELEASE\tDEVICES\tDAYS EXPOSED\tFIXED IN\tSUMMARY")
	for _, e := range rep.Exposed {
		fix := e.FixedIn
		if fix == "" {
			fix = "none"
		}
		kev := kevText(e)
		if kev == "" {
			kev = "-"
		}
		epss := epssText(e)
		if epss == "" {
			epss = "-"
		}
		summary := show.Text(e.Summary)
		if n := undecidedIn(e); n > 0 {
			summary += fmt.Sprintf(" (+%d undecided components)", n)
		}
		if v := vexText(e); v != "" {
			summary += " [VEX " + show.Text(v) + "]"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s@%s\t%d\t%.1f\t%s\t%s\n", e.Advisory, e.Severity, kev, epss, e.Product, e.Release, e.Devices, e.DaysExposed, fix, summary)
	}
	if len(rep.Exposed) == 0 {
		fmt.Fprintln(tw, "(no device runs a release affected by a known advisory)")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if all {
		for _, sec := range []struct {
			title string
			rows  []client.Exposure
		}{{"Not affected (VEX)", rep.NotAffected}, {"Unmatched (not decided: check by hand)", rep.Unmatched}} {
			fmt.Fprintf(w, "\n%s:\n", sec.title)
			if len(sec.rows) == 0 {
				fmt.Fprintln(w, "  none")
			}
			for _, e := range sec.rows {
				fmt.Fprintf(w, "  %s %s@%s (%d devices): %s\n", e.Advisory, e.Product, e.Release, e.Devices, show.Text(e.Reason))
			}
		}
	}
	if len(rep.WithoutSBOM) > 0 {
		fmt.Fprintf(w, "\nReleases in the field without an SBOM (exposure unknown): %s\n", strings.Join(rep.WithoutSBOM, ", "))
	}
	if !all && rep.Undecided > 0 {
		fmt.Fprintf(w, "\n%s\n", undecidedLine(rep.Undecided))
	}
	if rep.NoSeverity > 0 {
		fmt.Fprintf(w, "\n%d affected findings have no severity from any source and were left out: import an NVD CVE feed or the GHSA records, or see --severity unknown\n", rep.NoSeverity)
	}
	return nil
}

func undecidedIn(e client.Exposure) int {
	n := 0
	for _, c := range e.Components {
		if c.Status == "unmatched" && e.Status != "unmatched" {
			n++
		}
	}
	return n
}

func timeToPatchCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "time-to-patch PRODUCT",
		Short: "Show, per advisory, the days to a fixed release (A) and until 50/90/99% of the exposed devices ran it (B)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			t, err := c.TimeToPatch(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(t)
			}
			var exploited, other []client.TimeToPatch
			for _, a := range t.Advisories {
				if a.Exploited {
					exploited = append(exploited, a)
				} else {
					other = append(other, a)
				}
			}
			if len(exploited) > 0 {
				fmt.Fprintln(w, "Known exploited (CISA KEV; counted from the earlier of publication and the catalog's date added):")
				if err := ttpTable(w, exploited); err != nil {
					return err
				}
				if len(other) == 0 {
					return nil
				}
				fmt.Fprintln(w, "\nOther advisories:")
			}
			return ttpTable(w, other)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func ttpTable(w io.Writer, advs []client.TimeToPatch) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ADVISORY\tSEVERITY\tAFFECTED\tFIXED IN\tA (DAYS)\tEXPOSED\tB50\tB90\tB99")
	for _, a := range advs {
		fix, vendor := a.FixedIn, fmt.Sprintf("%.1f", a.VendorDays)
		if a.VendorOpen {
			fix, vendor = "none", fmt.Sprintf("open, %.1f", a.VendorDays)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d", a.Advisory, a.Severity, strings.Join(a.Affected, ","), fix, vendor, a.ExposedAtFix)
		for _, f := range a.Fleet {
			switch {
			case f.Reached:
				fmt.Fprintf(tw, "\t%.1f", *f.Days)
			case a.ExposedAtFix > 0:
				fmt.Fprintf(tw, "\tnot reached (%d%%)", a.PatchedNow*100/a.ExposedAtFix)
			default:
				fmt.Fprint(tw, "\t-")
			}
		}
		if a.VendorOpen {
			fmt.Fprint(tw, "\t-\t-\t-")
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// splitFixes reads release publish --fixes: advisory ids separated by commas, spaces or both
// ("GO-2024-3321, CVE-2024-45337"), empty ones dropped.
func splitFixes(s string) []string {
	return strings.Fields(strings.ReplaceAll(s, ",", " "))
}
