package cli

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"upkeep.dev/upkeep/internal/show"
)

// deviceShowCmd is `devices show ID`: one device with its inventory attributes (a list, a
// repeated key of the device's inventory, one value a line).
func deviceShowCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show a device and the inventory attributes it reported",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			d, err := c.Device(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(d)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "device %s (%s): %s %s on %s, %s, runs %s\n", show.Text(d.ID), show.Text(d.Serial), show.Text(d.Status), show.Text(d.Product),
				show.Text(d.HardwareID), show.Text(d.State), show.Text(d.Installed.Version))
			if len(d.Attributes) == 0 {
				fmt.Fprintln(w, "no inventory attributes")
				return nil
			}
			fmt.Fprintln(w, "inventory (device-asserted):")
			for _, k := range slices.Sorted(maps.Keys(d.Attributes)) {
				for _, v := range strings.Split(d.Attributes[k], "\n") {
					fmt.Fprintf(w, "  %s=%s\n", show.Text(k), show.Text(v))
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "JSON output")
	return cmd
}
