// Package cli is the upkeep command: the server (serve), the operator commands, the demo and the
// benchmarks. It parses flags and the environment and calls the packages that do the work.
package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/bench"
)

// Main runs the upkeep command with args (os.Args without the program name) and returns the
// process's exit code.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	bench.SetupProfiling()
	defer bench.StopProfile()
	root := newRoot()
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "upkeep:", userMessage(err))
		return 1
	}
	return 0
}

// userMessage shows the server's user-safe message for application errors.
func userMessage(err error) string {
	var ae *apperr.Error
	if e, ok := err.(*apperr.Error); ok {
		ae = e
	}
	if ae != nil && ae.Err == nil {
		return ae.Msg
	}
	return err.Error()
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "upkeep",
		Short:         "Secure, honest updates for consumer IoT devices",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	g := &globals{}
	pf := root.PersistentFlags()
	pf.StringVar(&g.server, "server", "http://127.0.0.1:8080", "server URL; a tenant's is under /t/NAME, as https://host/t/acme (env UPKEEP_SERVER)")
	pf.StringVar(&g.token, "token", "", "operator token (env UPKEEP_TOKEN)")
	pf.StringVar(&g.ca, "ca", "", "PEM file of a private CA that signed the server's certificate (env UPKEEP_CA)")
	envFlag(pf, "server", "UPKEEP_SERVER")
	envFlag(pf, "ca", "UPKEEP_CA")
	envFlag(pf, "token", "UPKEEP_TOKEN")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		_, err := applyEnv(cmd)
		return err
	}
	root.AddCommand(serveCmd(), keysCmd(g), releaseCmd(g), deployCmd(g), devicesCmd(g), enrollTokenCmd(g), tokensCmd(g), usersCmd(g), auditCmd(g), loginCmd(g), logoutCmd(g), tenantsCmd(g), webhooksCmd(g), productCmd(g), labelCmd(g), rolloutCmd(g), groupsCmd(g), simulateCmd(g), benchCmd(), demoCmd())
	addVulnCmds(root, g)
	return root
}
