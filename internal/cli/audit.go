package cli

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/show"
)

// The audit trail: every state-changing management call and every login, hash-chained.

func auditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "List, export and verify the audit trail of management calls and logins"}
	var actor, action, target, outcome, since, until string
	var before int64
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List audit records, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			for k, v := range map[string]string{"actor": actor, "action": action, "target": target, "outcome": outcome} {
				if v != "" {
					q.Set(k, v)
				}
			}
			for k, v := range map[string]string{"since": since, "until": until} {
				if v == "" {
					continue
				}
				at, err := whenFlag(v, time.Now())
				if err != nil {
					return fmt.Errorf("--%s: %w", k, err)
				}
				q.Set(k, at.UTC().Format(time.RFC3339))
			}
			if before > 0 {
				q.Set("before", strconv.FormatInt(before, 10))
			}
			q.Set("limit", strconv.Itoa(limit))
			c, err := g.client()
			if err != nil {
				return err
			}
			page, err := c.AuditRecords(cmd.Context(), q)
			if err != nil {
				return err
			}
			show.AuditRecords(cmd.OutOrStdout(), page.Records)
			if page.Next > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "more: --before %d\n", page.Next)
			}
			return nil
		},
	}
	f := list.Flags()
	f.StringVar(&actor, "actor", "", "only this user or token name")
	f.StringVar(&action, "action", "", "only this action (device.accept), or every action under a name (device)")
	f.StringVar(&target, "target", "", "only calls on this target (a device id, P@V, a token id, ...)")
	f.StringVar(&outcome, "outcome", "", "ok, failed, denied (401 or 403), or an HTTP status")
	f.StringVar(&since, "since", "", "from this time (RFC 3339) or this long ago (24h)")
	f.StringVar(&until, "until", "", "before this time (RFC 3339) or this long ago")
	f.Int64Var(&before, "before", 0, "records below this sequence number (the next page)")
	f.IntVar(&limit, "limit", 50, "at most this many records (1-1000)")

	var format, output string
	export := &cobra.Command{
		Use:   "export [--format json|csv] [-o FILE]",
		Short: "Write the whole kept audit trail, oldest first (JSON verifies with `audit verify --file`)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "json" && format != "csv" {
				return fmt.Errorf("--format %q: json or csv", format)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			if output == "" || output == "-" {
				return c.ExportAudit(cmd.Context(), format, cmd.OutOrStdout())
			}
			// Written beside the target and renamed once whole: a cut export never takes its place.
			tmp, err := os.CreateTemp(filepath.Dir(output), ".audit-export-*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			if err := c.ExportAudit(cmd.Context(), format, tmp); err != nil {
				tmp.Close()
				return err
			}
			if err := tmp.Close(); err != nil {
				return err
			}
			if err := os.Rename(tmp.Name(), output); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "audit trail written to %s\n", output)
			return nil
		},
	}
	export.Flags().StringVar(&format, "format", "json", "json or csv")
	export.Flags().StringVarP(&output, "output", "o", "", "file to write (default: standard output)")

	var file string
	var anchorFlags []string
	verify := &cobra.Command{
		Use:   "verify [--file EXPORT.json]",
		Short: "Verify the hash chain here, on an export, and ask the server to verify it too; fails naming the first broken sequence number",
		Long: `Verify the audit trail's hash chain. The JSON export streams through the verification on this
machine (the server's word is not taken), then the server recomputes it too. The head printed
(SEQ:HASH) can be noted elsewhere and given later as --anchor: a chain rewritten together with
its head by someone who can write the database then fails too.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			var anchors []client.Anchor
			for _, a := range anchorFlags {
				an, err := client.ParseAnchor(a)
				if err != nil {
					return err
				}
				anchors = append(anchors, an)
			}
			if file != "" { // offline: an export kept earlier
				fh, err := os.Open(file)
				if err != nil {
					return err
				}
				defer fh.Close()
				ch, n, err := client.VerifyAuditExport(fh, anchors...)
				if err != nil {
					return fmt.Errorf("%s: %w", file, err)
				}
				fmt.Fprintf(out, "%s: %d records verified here, sequence %d to %d, head %d:%s\n", file, n, ch.CheckpointSeq+1, ch.HeadSeq, ch.HeadSeq, ch.HeadHash)
				return nil
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			// The export streams through the verifier; nothing is kept.
			pr, pw := io.Pipe()
			done := make(chan error, 1)
			go func() {
				err := c.ExportAudit(cmd.Context(), "json", pw)
				pw.CloseWithError(err)
				done <- err
			}()
			ch, n, local := client.VerifyAuditExport(pr, anchors...)
			pr.CloseWithError(errors.New("verification ended"))
			if err := <-done; err != nil && local == nil {
				return err
			}
			if local != nil {
				if sv, err := c.VerifyAuditOnServer(cmd.Context()); err == nil && !sv.OK {
					fmt.Fprintf(cmd.ErrOrStderr(), "the server also finds the chain broken at sequence %d: %s\n", sv.BrokenSeq, sv.Reason)
				}
				return fmt.Errorf("verified here: %w", local)
			}
			fmt.Fprintf(out, "verified here: %d records, sequence %d to %d, head %d:%s\n", n, ch.CheckpointSeq+1, ch.HeadSeq, ch.HeadSeq, ch.HeadHash)
			sv, err := c.VerifyAuditOnServer(cmd.Context())
			if err != nil {
				return err
			}
			if !sv.OK {
				return fmt.Errorf("verified by the server: audit chain broken at sequence %d: %s", sv.BrokenSeq, sv.Reason)
			}
			fmt.Fprintf(out, "verified by the server: %d records, head %d %s\n", sv.Records, sv.Chain.HeadSeq, sv.Chain.HeadHash)
			return nil
		},
	}
	verify.Flags().StringVar(&file, "file", "", "verify this JSON export offline instead of the server's trail")
	verify.Flags().StringArrayVar(&anchorFlags, "anchor", nil, "SEQ:HASH noted earlier (a head this command printed): that record must still be there, unchanged")
	cmd.AddCommand(list, export, verify)
	return cmd
}

// whenFlag reads a time flag: RFC 3339, or a duration meaning that long before now.
func whenFlag(v string, now time.Time) (time.Time, error) {
	if at, err := time.Parse(time.RFC3339, v); err == nil {
		return at, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%q: want an RFC 3339 time or a duration such as 24h", v)
	}
	return now.Add(-d), nil
}
