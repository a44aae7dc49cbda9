package cli

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/show"
	"upkeep.dev/upkeep/wire"
)

// Operator tokens, enrolment tokens and device decommissioning: who may act, and revoking it.

func rejectCmd(g *globals) *cobra.Command {
	return idCommand(g, "reject ID", "Refuse a pending device: it gets no token (accept undoes it)",
		(*client.Client).Reject, "device %s rejected")
}

func decommissionCmd(g *globals) *cobra.Command {
	return idCommand(g, "decommission ID", "Take an accepted device out of service: its token stops working, the director serves it nothing, its history stays",
		(*client.Client).Decommission, "device %s decommissioned: it cannot enrol again with its key unless readmitted (devices accept --readmit)")
}

// idCommand is a command that applies one client call to the ID it is given and says so:
// "USE ID", then done (a format taking the ID) on success.
func idCommand(g *globals, use, short string, call func(*client.Client, context.Context, string) error, done string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := call(c, cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), done+"\n", args[0])
			return nil
		},
	}
}

func enrollTokenCmd(g *globals) *cobra.Command {
	var req wire.EnrollTokenRequest
	create := func(cmd *cobra.Command, _ []string) error {
		c, err := g.client()
		if err != nil {
			return err
		}
		t, err := c.CreateEnrollToken(cmd.Context(), req)
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s\n", t.Token)
		return nil
	}
	flags := func(cmd *cobra.Command) {
		cmd.Flags().StringVar(&req.Name, "name", "factory", "a name for the token")
		cmd.Flags().IntVar(&req.Uses, "uses", fleet.DefaultEnrollUses, fmt.Sprintf("how many devices it admits (at most %d)", fleet.MaxEnrollUses))
		cmd.Flags().DurationVar(&req.TTL, "ttl", fleet.DefaultEnrollTTL, fmt.Sprintf("how long it is valid (at most %s)", fleet.MaxEnrollTTL))
		cmd.Flags().StringVar(&req.Product, "product", "", "only devices of this product")
	}
	cmd := &cobra.Command{
		Use:   "enroll-token",
		Short: "Create (as enroll-token create), list and revoke enrolment tokens, which admit devices without an operator",
		Args:  cobra.NoArgs,
		RunE:  create,
	}
	flags(cmd)
	createCmd := &cobra.Command{Use: "create", Short: "Create an enrolment token and print it (shown once)", Args: cobra.NoArgs, RunE: create}
	flags(createCmd)
	list := &cobra.Command{
		Use:   "list",
		Short: "List enrolment tokens: uses left, expiry, revocation",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ts, err := c.EnrollTokens(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tPRODUCT\tUSES LEFT\tEXPIRES\tSTATE")
			now := time.Now()
			for _, t := range ts {
				uses := fmt.Sprint(t.UsesLeft)
				if t.UsesLeft < 0 {
					uses = "unlimited"
				}
				state := "active"
				switch {
				case !t.RevokedAt.IsZero():
					state = "revoked " + t.RevokedAt.Format(time.RFC3339)
				case !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt):
					state = "expired"
				case t.UsesLeft == 0:
					state = "used up"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", show.Text(t.ID), show.Text(t.Name), show.Text(or(t.Product, "any")), uses, timeOr(t.ExpiresAt, "never"), state)
			}
			return tw.Flush()
		},
	}
	revoke := idCommand(g, "revoke ID", "Revoke an enrolment token: it admits no device from now on (devices it admitted stay)",
		(*client.Client).RevokeEnrollToken, "enrolment token %s revoked")
	cmd.AddCommand(createCmd, list, revoke)
	return cmd
}

func tokensCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "tokens", Short: "Create, list and revoke operator tokens (roles: " + fmt.Sprint(auth.Roles) + ")"}
	var req wire.OperatorTokenRequest
	create := &cobra.Command{
		Use:   "create",
		Short: "Create an operator token and print it (shown once)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			t, err := c.CreateToken(cmd.Context(), req)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\n", t.Token)
			fmt.Fprintf(cmd.ErrOrStderr(), "operator token %s (%s, role %s%s) expires %s; shown once, keep it\n", show.Text(t.ID), show.Text(t.Name), show.Text(t.Role), groupScopeText(t.Groups), timeOr(t.ExpiresAt, "never"))
			return nil
		},
	}
	create.Flags().StringVar(&req.Name, "name", "", "who or what uses the token")
	create.Flags().StringVar(&req.Role, "role", auth.RoleViewer, fmt.Sprintf("one of %v (docs/OPERATORS.md)", auth.Roles))
	create.Flags().StringSliceVar(&req.Groups, "groups", nil, "limit a deployer token to these device groups")
	create.Flags().DurationVar(&req.TTL, "ttl", 90*24*time.Hour, "how long it is valid (at most 366 days)")
	create.MarkFlagRequired("name")
	list := &cobra.Command{
		Use:   "list",
		Short: "List operator tokens with their role, expiry and last use",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ts, err := c.Tokens(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tROLE\tGROUPS\tUSER\tCREATED\tEXPIRES\tLAST USED\tSTATE")
			now := time.Now()
			for _, t := range ts {
				state := "active"
				switch {
				case !t.RevokedAt.IsZero():
					state = "revoked " + t.RevokedAt.Format(time.RFC3339)
				case !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt):
					state = "expired"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", show.Text(t.ID), show.Text(t.Name), show.Text(t.Role), show.Text(or(strings.Join(t.Groups, ","), "all")), show.Text(or(t.User, "-")), t.CreatedAt.Format(time.RFC3339), timeOr(t.ExpiresAt, "never"), timeOr(t.LastUsed, "never"), state)
			}
			return tw.Flush()
		},
	}
	revoke := idCommand(g, "revoke ID", "Revoke an operator token: it stops working on every server within a second",
		(*client.Client).RevokeToken, "operator token %s revoked")
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func or(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

func timeOr(t time.Time, alt string) string {
	if t.IsZero() {
		return alt
	}
	return t.Format(time.RFC3339)
}
