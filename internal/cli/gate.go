package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"upkeep.dev/upkeep/internal/client"
)

// printCheck writes a release check: the gate's verdict, then each finding.
func printCheck(w io.Writer, c *client.ReleaseCheck) {
	ref := c.Product
	if c.Version != "" {
		ref += "@" + c.Version
	}
	fmt.Fprintf(w, "release check of %s: %s, %d components, sha256 %s\n", ref, c.Format, c.Components, c.SHA256)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ADVISORY\tSTATUS\tSEVERITY\tKEV\tEPSS\tGATE\tCOMPONENTS")
	for _, e := range c.Findings {
		kev, epss, gate := kevText(e), epssText(e), e.Gate
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Advisory, e.Status, e.Severity, dash(kev), dash(epss), dash(gate), componentsText(e))
	}
	if len(c.Findings) == 0 {
		fmt.Fprintln(tw, "(no known advisory matches)")
	}
	tw.Flush()
	switch {
	case !c.Gate.KEV && c.Gate.Severity == "":
		fmt.Fprintf(w, "release gate: none set for %s (upkeep product set %s --gate-kev --gate-severity high; a new product also needs --support-end)\n", c.Product, c.Product)
	case c.Gate.Blocked:
		fmt.Fprintf(w, "release gate: REFUSED by %s\n", strings.Join(c.Gate.Blockers, ", "))
	default:
		fmt.Fprintf(w, "release gate: passed (kev=%v severity=%q; waived: %s)\n", c.Gate.KEV, c.Gate.Severity, dash(strings.Join(c.Gate.Waived, ", ")))
	}
	if c.Undecided > 0 {
		fmt.Fprintf(w, "%d findings could not be decided (GIT ranges, unknown ecosystems): check them by hand\n", c.Undecided)
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func releaseCheckCmd(g *globals) *cobra.Command {
	var product, version, sbom string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "check --product P [--version V] --sbom FILE",
		Short: "List the advisories a release's SBOM matches and the release gate's verdict, before it ships (no device needed)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			chk, err := c.CheckRelease(cmd.Context(), product, version, sbom)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(chk); err != nil {
					return err
				}
			} else {
				printCheck(cmd.OutOrStdout(), chk)
			}
			if chk.Gate.Blocked {
				return fmt.Errorf("the release gate of %s refuses this release: %s", product, strings.Join(chk.Gate.Blockers, ", "))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&product, "product", "", "product the release belongs to (its release gate applies)")
	f.StringVar(&version, "version", "", "release version (waivers and VEX statements of that release apply)")
	f.StringVar(&sbom, "sbom", "", "the release's SBOM (CycloneDX 1.2–1.6 or SPDX 2.2–2.3 JSON)")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	cmd.MarkFlagRequired("product")
	cmd.MarkFlagRequired("sbom")
	return cmd
}

func vexCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "vex", Short: "Record and list analysts' VEX statements (not affected, affected, fixed, under investigation)"}
	var t client.Triage
	set := &cobra.Command{
		Use:   "set PRODUCT[@VERSION] VULNERABILITY STATUS",
		Short: "Record a VEX statement: STATUS is not_affected (with --justification), affected (with --action), fixed or under_investigation",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			t.Product, t.Version, _ = strings.Cut(args[0], "@")
			t.Vuln, t.Status = args[1], args[2]
			out, err := c.SetVEX(cmd.Context(), t)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "recorded: %s %s %s by %s\n", out.Vuln, scopeText(out.Product, out.Version, out.Component), out.Status, out.Analyst)
			return nil
		},
	}
	f := set.Flags()
	f.StringVar(&t.Component, "component", "", "purl of the component it speaks of (default: the product as a whole)")
	f.StringVar(&t.Justification, "justification", "", "not_affected: component_not_present, vulnerable_code_not_present, vulnerable_code_not_in_execute_path, vulnerable_code_cannot_be_controlled_by_adversary or inline_mitigations_already_exist")
	f.StringVar(&t.Impact, "impact", "", "not_affected: impact statement (why)")
	f.StringVar(&t.Action, "action", "", "affected: action statement (what users should do)")
	f.StringVar(&t.Analyst, "analyst", "", "who decided (default: the operator token's name)")
	var asJSON bool
	list := &cobra.Command{
		Use:   "list PRODUCT",
		Short: "List a product's VEX statements",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ts, err := c.VEX(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(ts)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VULNERABILITY\tSCOPE\tSTATUS\tJUSTIFICATION / ACTION\tANALYST\tUPDATED")
			for _, t := range ts {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.Vuln, scopeText(t.Product, t.Version, t.Component), t.Status, dash(t.Justification+t.Action), t.Analyst, t.UpdatedAt.Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(set, list)
	return cmd
}

func scopeText(product, version, component string) string {
	s := product
	if version != "" {
		s += "@" + version
	} else {
		s += " (all releases)"
	}
	if component != "" {
		s += " " + component
	}
	return s
}

func waiverCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "waiver", Short: "Named, audited waivers of the release gate"}
	var w client.Waiver
	var expires string
	add := &cobra.Command{
		Use:   "add PRODUCT[@VERSION] VULNERABILITY --reason R --by NAME",
		Short: "Let a release through the gate despite one vulnerability",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			w.Product, w.Version, _ = strings.Cut(args[0], "@")
			w.Vuln = args[1]
			if expires != "" {
				t, err := time.Parse(time.DateOnly, expires)
				if err != nil {
					return fmt.Errorf("--expires: want YYYY-MM-DD")
				}
				w.ExpiresAt = &t
			}
			out, err := c.AddWaiver(cmd.Context(), w)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "waiver %s: %s in %s, by %s\n", out.ID, out.Vuln, scopeText(out.Product, out.Version, ""), out.CreatedBy)
			return nil
		},
	}
	add.Flags().StringVar(&w.Reason, "reason", "", "why the vulnerability is accepted")
	add.Flags().StringVar(&w.CreatedBy, "by", "", "name of who grants the waiver")
	add.Flags().StringVar(&expires, "expires", "", "last day (YYYY-MM-DD) it holds")
	add.MarkFlagRequired("reason")
	add.MarkFlagRequired("by")
	var product string
	list := &cobra.Command{
		Use:   "list",
		Short: "List waivers, revoked and expired ones included",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ws, err := c.Waivers(cmd.Context(), product)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tVULNERABILITY\tSCOPE\tBY\tCREATED\tEXPIRES\tREVOKED\tREASON")
			for _, w := range ws {
				exp, rev := "-", "-"
				if w.ExpiresAt != nil {
					exp = w.ExpiresAt.Format(time.DateOnly)
				}
				if w.RevokedAt != nil {
					rev = w.RevokedAt.Format(time.RFC3339) + " by " + w.RevokedBy
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", w.ID, w.Vuln, scopeText(w.Product, w.Version, ""), w.CreatedBy, w.CreatedAt.Format(time.RFC3339), exp, rev, w.Reason)
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&product, "product", "", "only this product")
	var by string
	revoke := &cobra.Command{
		Use:   "revoke ID --by NAME",
		Short: "Revoke a waiver (it stays listed)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			return c.RevokeWaiver(cmd.Context(), args[0], by)
		},
	}
	revoke.Flags().StringVar(&by, "by", "", "name of who revokes it")
	revoke.MarkFlagRequired("by")
	cmd.AddCommand(add, list, revoke)
	return cmd
}
