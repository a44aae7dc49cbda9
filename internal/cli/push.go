package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/show"
)

// pushFlags adds serve's flags of failure logs and push.
func pushFlags(f *pflag.FlagSet, cfg *server.Config) {
	f.IntVar(&cfg.Logs.PerHour, "logs-per-hour", 6, "failure log bundles one device may upload per hour; beyond: 429 with Retry-After (env UPKEEP_LOGS_PER_HOUR)")
	f.IntVar(&cfg.Logs.KeepCount, "logs-kept", 10, "failure log bundles kept per device, newest first (env UPKEEP_LOGS_KEPT)")
	f.DurationVar(&cfg.Logs.MaxAge, "log-retention", 30*24*time.Hour, "time failure log bundles are kept (env UPKEEP_LOG_RETENTION)")
	f.StringVar(&cfg.Push.URL, "mqtt-url", "", "MQTT broker (Mosquitto with the dynamic-security plugin) the server publishes check-in nudges through: tcp://HOST:1883 or ssl://HOST:8883 (env UPKEEP_MQTT_URL; empty: devices poll only)")
	f.StringVar(&cfg.Push.DeviceURL, "mqtt-device-url", "", "the broker as devices reach it (env UPKEEP_MQTT_DEVICE_URL; default --mqtt-url)")
	f.StringVar(&cfg.Push.Username, "mqtt-user", "", "the server's broker account, a dynamic-security administrator (env UPKEEP_MQTT_USER)")
	f.StringVar(&cfg.Push.Password, "mqtt-password", "", "its password (env UPKEEP_MQTT_PASSWORD, preferred: a flag shows in the process list)")
	for flag, env := range map[string]string{"logs-per-hour": "UPKEEP_LOGS_PER_HOUR", "logs-kept": "UPKEEP_LOGS_KEPT", "log-retention": "UPKEEP_LOG_RETENTION",
		"mqtt-url": "UPKEEP_MQTT_URL", "mqtt-device-url": "UPKEEP_MQTT_DEVICE_URL", "mqtt-user": "UPKEEP_MQTT_USER", "mqtt-password": "UPKEEP_MQTT_PASSWORD"} {
		envFlag(f, flag, env)
	}
}

// logsCmd is `upkeep devices logs ID [--all]`: the failure log bundles a device uploaded.
func logsCmd(g *globals) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "logs ID",
		Short: "Show the failure log a device uploaded (the output of the failing hook or module, and the agent's log); --all: every one kept",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ls, err := c.DeviceLogs(cmd.Context(), args[0], all)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(ls) == 0 {
				fmt.Fprintf(out, "device %s uploaded no failure log\n", show.Text(args[0]))
				return nil
			}
			for i, l := range ls {
				if i > 0 {
					fmt.Fprintln(out)
				}
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "received\t%s (%d bytes compressed)\n", l.ReceivedAt.Format(time.RFC3339), l.Size)
				fmt.Fprintf(tw, "failed\t%s at %s\n", show.Text(l.Step), l.Time.Format(time.RFC3339))
				fmt.Fprintf(tw, "target\t%s\n", show.Text(l.Target))
				fmt.Fprintf(tw, "error\t%s\n", show.Text(l.Message))
				if l.Truncated {
					fmt.Fprintf(tw, "note\tthe device cut the oldest lines to fit the size bound\n")
				}
				tw.Flush()
				fmt.Fprintln(out, "--- output of the hook or module ---")
				for _, line := range splitLines(l.Output) {
					fmt.Fprintln(out, show.Text(line))
				}
				fmt.Fprintln(out, "--- agent log ---")
				for _, line := range l.AgentLog {
					fmt.Fprintln(out, show.Text(line))
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "every bundle kept, newest first (default: the latest)")
	return cmd
}

func splitLines(s string) []string {
	var out []string
	for len(s) > 0 {
		i := 0
		for i < len(s) && s[i] != '\n' {
			i++
		}
		out = append(out, s[:i])
		if i < len(s) {
			i++
		}
		s = s[i:]
	}
	return out
}
