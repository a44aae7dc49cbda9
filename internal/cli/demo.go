package cli

import (
	"time"

	"github.com/spf13/cobra"
	"upkeep.dev/upkeep/internal/demo"
)

func demoCmd() *cobra.Command {
	cfg := demo.Config{Devices: 20, ImageSize: 256 << 10, Timeout: 3 * time.Minute}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a server and simulated devices, publish a security fix and watch it roll out",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Out = cmd.OutOrStdout()
			if cfg.Addr == "" {
				cfg.Addr = "127.0.0.1:8080"
				if cfg.Once {
					cfg.Addr = "127.0.0.1:0"
				}
			}
			return demo.Run(cmd.Context(), cfg)
		},
	}
	cmd.Flags().IntVar(&cfg.Devices, "devices", cfg.Devices, "number of simulated devices")
	cmd.Flags().BoolVar(&cfg.Once, "once", false, "run headless and exit when the rollout is done (0 only if every device updated)")
	cmd.Flags().StringVar(&cfg.Addr, "addr", "", "listen address (default 127.0.0.1:8080, or a free port with --once)")
	cmd.Flags().DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "give up on the rollout after this long")
	return cmd
}
