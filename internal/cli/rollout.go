package cli

import (
	"encoding/json"
	"fmt"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"upkeep.dev/upkeep/internal/rollout"
	"upkeep.dev/upkeep/internal/show"
	"upkeep.dev/upkeep/wire"
)

func rolloutCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "rollout", Short: "Roll a release out in waves, with automatic pause on failures"}
	var spec wire.CampaignSpec
	var asJSON bool
	create := &cobra.Command{
		Use:   "create --release P@V (--target GROUP|FILTER | --fixes ADVISORY)",
		Short: "Create a campaign (start it with `rollout start`, or --start)",
		Example: `  upkeep rollout create --release thermostat@1.2.0 --target eu-pilot --waves 1%,10%,50%,100%
  upkeep rollout create --release thermostat@1.2.0 --target 'product=thermostat,region=eu-*' --wave-size 10,100
  upkeep rollout create --release thermostat@1.2.1 --target all-thermostats --waves exp:10:2 --mode forced --ignore-window`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if ws, _ := cmd.Flags().GetString("wave-size"); ws != "" {
				if spec.Waves != "" {
					return fmt.Errorf("--waves and --wave-size exclude each other")
				}
				spec.Waves = ws
			}
			if cmd.Flags().Changed("max-failures") {
				v, _ := cmd.Flags().GetFloat64("max-failures")
				spec.FailureThreshold = &v
			}
			if spec.Release == "" && spec.Fixes == "" {
				return fmt.Errorf("--release is required (with --fixes it defaults to the lowest release that fixes the advisory)")
			}
			if spec.Target == "" && spec.Fixes == "" && len(spec.Devices) == 0 {
				return fmt.Errorf("--target (a group or a filter), --device or --fixes is required")
			}
			for _, w := range []struct {
				flag string
				to   *time.Time
			}{{"start-at", &spec.StartAt}, {"until", &spec.Until}} {
				if v, _ := cmd.Flags().GetString(w.flag); v != "" {
					t, err := parseWhen(v)
					if err != nil {
						return fmt.Errorf("--%s: %w", w.flag, err)
					}
					*w.to = t
				}
			}
			camp, err := c.CreateRollout(cmd.Context(), spec)
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(camp)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "campaign %s: %s to %s, %s, %s\n", camp.ID, camp.Release, camp.Selector, show.Waves(camp.Waves), camp.State)
			if camp.State == rollout.StateCreated {
				fmt.Fprintf(cmd.OutOrStdout(), "start it: upkeep rollout start %s\n", camp.ID)
			}
			if camp.State == rollout.StateScheduled {
				fmt.Fprintf(cmd.OutOrStdout(), "starts at %s (upkeep rollout start %s starts it now)\n", camp.StartAt.UTC().Format(time.RFC3339), camp.ID)
			}
			return nil
		},
	}
	f := create.Flags()
	f.StringVar(&spec.Release, "release", "", "release to roll out, PRODUCT@VERSION (with --fixes: default the lowest release that fixes it)")
	f.StringVar(&spec.Target, "target", "", "group name, or a filter such as 'product=thermostat,region=eu-*'")
	f.StringSliceVar(&spec.Devices, "device", nil, "explicit device ids (repeatable)")
	f.StringVar(&spec.Fixes, "fixes", "", "advisory id (CVE-…, GHSA-…): target the devices exposed to it")
	f.StringVar(&spec.Waves, "waves", "", "cumulative shares per wave, e.g. 1%,10%,50%,100%; or exp:FIRST[:FACTOR]")
	f.String("wave-size", "", "device counts per wave, e.g. 10,100,1000 (the rest form a last wave)")
	f.Float64Var(&spec.SuccessThreshold, "success", 0, "share of a wave that must be healthy to advance (default 0.95)")
	f.Float64("max-failures", rollout.DefaultFailure, "share of a wave failed or rolled back above which the campaign pauses (0: on the first failure)")
	f.StringVar(&spec.HealthGate, "health-gate", "", "how long committed devices must keep checking in (default 2m; 0s: none)")
	f.StringVar(&spec.SilentAfter, "silent-after", "", "a committed device silent this long fails the health gate (default 10m)")
	f.StringVar(&spec.AssignTimeout, "assign-timeout", "", "an assigned device silent this long counts as timed out, out of its wave's success count (default 24h; 0s: never)")
	f.StringVar(&spec.StaleAfter, "stale-after", "", "leave out devices not seen this long (default 168h; 0s: keep all)")
	f.StringVar(&spec.Mode, "mode", "", "forced (install without asking) or soft (the owner consents); default forced for security, soft for feature releases")
	f.StringVar(&spec.Window, "window", "", "maintenance window HH:MM-HH:MM UTC for its devices (default: the group's, else each device's own)")
	f.BoolVar(&spec.IgnoreWindow, "ignore-window", false, "critical: install outside maintenance windows")
	f.StringVar(&spec.Days, "days", "", "weekdays (UTC) the window opens on, e.g. mon,wed,sat (default: the group's, else every day)")
	f.BoolVar(&spec.Start, "start", false, "start at once")
	f.String("start-at", "", "schedule the start: RFC 3339 time, or YYYY-MM-DD[THH:MM] in UTC (state scheduled until then)")
	f.BoolVar(&spec.Dynamic, "dynamic", false, "take in devices that come to match the target after the start (newly enrolled, or with changed attributes) into the current wave")
	f.String("until", "", "with --dynamic: stop taking devices in at this time (RFC 3339, or YYYY-MM-DD[THH:MM] UTC); default: until cancelled")
	f.BoolVar(&asJSON, "json", false, "JSON output")

	action := func(name, short string) *cobra.Command {
		return &cobra.Command{
			Use:   name + " CAMPAIGN",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := g.client()
				if err != nil {
					return err
				}
				camp, err := c.RolloutAction(cmd.Context(), args[0], name)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "campaign %s: %s (wave %d of %d)\n", camp.ID, camp.State, camp.Wave, len(camp.Waves))
				return nil
			},
		}
	}
	var state string
	list := &cobra.Command{
		Use:   "list",
		Short: "List campaigns, newest first",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			cs, err := c.Rollouts(cmd.Context(), state)
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(cs)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "CAMPAIGN\tRELEASE\tTARGET\tSTATE\tWAVE\tDEVICES\tCREATED\tNOTE")
			for _, c := range cs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%d\t%s\t%s\n", c.ID, c.Release, c.Selector, c.State, c.Wave, len(c.Waves), show.Last(c.Waves), c.CreatedAt.Format(time.DateTime), show.Text(c.PauseReason))
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&state, "state", "", "only campaigns in this state")
	list.Flags().BoolVar(&asJSON, "json", false, "JSON output")
	status := &cobra.Command{
		Use:   "status CAMPAIGN",
		Short: "Show per-wave counts, waiting and failed devices, and the timeline",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			st, err := c.RolloutStatus(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(st)
			}
			show.CampaignStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "JSON output")
	cmd.AddCommand(create, action("start", "Release the first wave"), action("pause", "Stop new assignments now; devices mid-install finish or roll back"),
		action("resume", "Carry on after a pause"), action("cancel", "Stop, and withdraw the release from devices that have not installed it"), list, status)
	return cmd
}

func groupsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "groups", Short: "Static device groups and dynamic filters over inventory"}
	var grp wire.Group
	create := &cobra.Command{
		Use:   "create NAME [--filter 'product=thermostat,region=eu-*'] [--window 02:00-05:00]",
		Short: "Create or redefine a group: static (add devices to it) or a filter over inventory",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			grp.Name = args[0]
			out, err := c.PutGroup(cmd.Context(), grp)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "group %s: %d devices\n", out.Name, out.Count)
			return nil
		},
	}
	create.Flags().StringVar(&grp.Filter, "filter", "", "dynamic: KEY=VALUE terms over product, hardware, version, status, state, serial or any attribute; * and ? match")
	create.Flags().StringVar(&grp.Window, "window", "", "maintenance window HH:MM-HH:MM UTC for campaigns to this group")
	create.Flags().StringVar(&grp.Days, "days", "", "weekdays (UTC) the window opens on, e.g. mon,wed,sat (default every day)")
	change := func(use, short string, add bool) *cobra.Command {
		return &cobra.Command{
			Use:   use + " NAME DEVICE...",
			Short: short,
			Args:  cobra.MinimumNArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := g.client()
				if err != nil {
					return err
				}
				var ch wire.GroupDevices
				if add {
					ch.Add = args[1:]
				} else {
					ch.Remove = args[1:]
				}
				out, err := c.GroupDevices(cmd.Context(), args[0], ch)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "group %s: %d devices\n", out.Name, out.Count)
				return nil
			},
		}
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List groups",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			gs, err := c.Groups(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "GROUP\tDEVICES\tFILTER\tWINDOW\tDAYS")
			for _, g := range gs {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", g.Name, g.Count, g.Filter, g.Window, g.Days)
			}
			return tw.Flush()
		},
	}
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a group's definition and members",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			out, err := c.Group(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "group %s: %d devices", out.Name, out.Count)
			if out.Filter != "" {
				fmt.Fprintf(cmd.OutOrStdout(), ", filter %s", out.Filter)
			}
			if out.Window != "" {
				fmt.Fprintf(cmd.OutOrStdout(), ", window %s UTC", out.Window)
			}
			if out.Days != "" {
				fmt.Fprintf(cmd.OutOrStdout(), " on %s", out.Days)
			}
			fmt.Fprintln(cmd.OutOrStdout())
			slices.Sort(out.Devices)
			for _, d := range out.Devices {
				fmt.Fprintln(cmd.OutOrStdout(), "  "+show.Text(d))
			}
			return nil
		},
	}
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a group (campaigns already created keep their devices)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			return c.DeleteGroup(cmd.Context(), args[0])
		},
	}
	cmd.AddCommand(create, change("add", "Add devices to a static group", true), change("remove", "Remove devices from a static group", false), list, show, del)
	return cmd
}

// parseWhen reads a time for --start-at and --until: RFC 3339, or YYYY-MM-DD, YYYY-MM-DDTHH:MM
// or "YYYY-MM-DD HH:MM" in UTC.
func parseWhen(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04", "2006-01-02 15:04", time.DateOnly} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("time %q: want RFC 3339 (2026-12-24T02:00:00Z) or YYYY-MM-DD[THH:MM] in UTC", s)
}
