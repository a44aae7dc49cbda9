package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/show"
	"upkeep.dev/upkeep/wire"
)

// webhooksCmd is `upkeep webhooks`: create, list, delete and test webhooks, and list their
// deliveries (docs/OPERATORS.md, "Webhooks").
func webhooksCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "webhooks", Short: "Send events (campaigns, device failures, new exposures, expiries) to HTTPS endpoints, signed"}
	var req wire.WebhookRequest
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a webhook and print its signing secret (shown once)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			w, err := c.CreateWebhook(cmd.Context(), req)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\n", w.Secret)
			fmt.Fprintf(cmd.ErrOrStderr(), "webhook %s sends %s to %s; the secret above signs every delivery (webhook-signature), shown once, keep it\n",
				show.Text(w.ID), show.Text(or(strings.Join(w.Events, ","), "every event")), show.Text(w.URL))
			return nil
		},
	}
	create.Flags().StringVar(&req.URL, "url", "", "the receiver's https:// URL")
	create.Flags().StringSliceVar(&req.Events, "events", nil, "event types to send (default: all), e.g. dev.upkeep.campaign.paused,dev.upkeep.device.failed")
	create.Flags().StringVar(&req.Description, "description", "", "what the receiver is")
	create.Flags().BoolVar(&req.AllowPrivate, "allow-private", false, "let it reach loopback, private, link-local and other special addresses (a receiver inside your network)")
	create.Flags().BoolVar(&req.AllowHTTP, "allow-http", false, "let it use plain http:// (events then travel in clear)")
	create.MarkFlagRequired("url")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the webhooks",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ws, err := c.Webhooks(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tURL\tEVENTS\tALLOWS\tCREATED\tBY")
			for _, w := range ws {
				var allows []string
				if w.AllowPrivate {
					allows = append(allows, "private")
				}
				if w.AllowHTTP {
					allows = append(allows, "http")
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", show.Text(w.ID), show.Text(w.URL), show.Text(or(strings.Join(w.Events, ","), "all")),
					or(strings.Join(allows, ","), "-"), w.CreatedAt.Format(time.RFC3339), show.Text(or(w.CreatedBy, "-")))
			}
			return tw.Flush()
		},
	}
	del := idCommand(g, "delete ID", "Delete a webhook and its deliveries", (*client.Client).DeleteWebhook, "webhook %s deleted")
	test := &cobra.Command{
		Use:   "test ID",
		Short: "Queue a ping event (dev.upkeep.webhook.ping) for a webhook; see it with `webhooks deliveries`",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			id, err := c.TestWebhook(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ping %s queued for webhook %s\n", show.Text(id), show.Text(args[0]))
			return nil
		},
	}
	var webhook, state string
	var limit int
	deliveries := &cobra.Command{
		Use:   "deliveries",
		Short: "List deliveries, newest first: state, attempts, last answer",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ds, err := c.WebhookDeliveries(cmd.Context(), webhook, state, limit)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "WEBHOOK\tEVENT\tTYPE\tSTATE\tATTEMPTS\tLAST STATUS\tLAST ERROR\tCREATED\tNEXT/DONE")
			for _, d := range ds {
				when := timeOr(d.DoneAt, "-")
				if d.State == "pending" {
					when = "next " + timeOr(d.NextAt, "-")
				}
				status := "-"
				if d.LastStatus != 0 {
					status = fmt.Sprint(d.LastStatus)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", show.Text(d.Webhook), show.Text(d.EventID), show.Text(d.Type), show.Text(d.State),
					d.Attempts, status, show.Text(or(d.LastError, "-")), d.CreatedAt.Format(time.RFC3339), when)
			}
			return tw.Flush()
		},
	}
	deliveries.Flags().StringVar(&webhook, "webhook", "", "only this webhook's")
	deliveries.Flags().StringVar(&state, "state", "", "only in this state: pending, delivered, failed, dropped")
	deliveries.Flags().IntVar(&limit, "limit", 0, "at most this many (default 100, at most 1,000)")
	cmd.AddCommand(create, list, del, test, deliveries)
	return cmd
}
