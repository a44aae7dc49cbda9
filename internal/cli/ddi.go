package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"upkeep.dev/upkeep/wire"
)

// ddiCreateCmd creates a hawkBit DDI device ahead of time and prints its target token.
func ddiCreateCmd(g *globals) *cobra.Command {
	var req wire.DDIDeviceRequest
	cmd := &cobra.Command{
		Use:   "create --ddi ID --product P --hardware H",
		Short: "Create a hawkBit DDI device (SWUpdate, RAUC, Zephyr) and print its target token",
		Long: `Create a device that speaks hawkBit's DDI API at /{tenant}/controller/v1/{ID}, accepted,
and print its target token (Authorization: TargetToken ...) for the device's client configuration.
A DDI device verifies only its bundle's own signature, not Uptane metadata; the server still
offers it only releases signed by the offline targets key.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if req.ID == "" {
				return errors.New("--ddi ID is required (only DDI devices are created here; agents enrol)")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			out, err := c.CreateDDIDevice(cmd.Context(), req)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), out.TargetToken)
			fmt.Fprintf(cmd.ErrOrStderr(), "DDI device %s created (tenant %s); the line above is its target token\n", out.ID, out.Tenant)
			return nil
		},
	}
	cmd.Flags().StringVar(&req.ID, "ddi", "", "the device's DDI controller id")
	cmd.Flags().StringVar(&req.Product, "product", "", "product")
	cmd.Flags().StringVar(&req.HardwareID, "hardware", "", "hardware id")
	cmd.MarkFlagRequired("product")
	cmd.MarkFlagRequired("hardware")
	return cmd
}

// ddiTokenCmd prints the target token of an existing DDI device.
func ddiTokenCmd(g *globals) *cobra.Command {
	var id string
	cmd := &cobra.Command{
		Use:   "token --ddi ID",
		Short: "Print a DDI device's target token again",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			out, err := c.DDIToken(cmd.Context(), id)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), out.TargetToken)
			return nil
		},
	}
	cmd.Flags().StringVar(&id, "ddi", "", "the device's DDI controller id")
	cmd.MarkFlagRequired("ddi")
	return cmd
}
