package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/show"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/wire"
)

// Tenants: organisations with a server stack of their own under /t/{name}/ (docs/OPERATORS.md
// "Tenants"). Managed by the default tenant's admins.

// tenantOnlineFiles are the files of a key set that the server of a tenant needs; the offline
// keys never leave the folder they were made in.
var tenantOnlineFiles = []string{tuf.FileSnapshotKey, tuf.FileTimestampKey, tuf.FileDirectorKey, tuf.FileImageRoot, tuf.FileDirectorRoot, tuf.FileImageTargets}

func tenantsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "tenants", Short: "Add and list tenants: organisations with their own devices, releases, keys and operators, served under /t/NAME"}
	var keysDir string
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Add a tenant: makes its key set (offline keys stay in --keys), creates its stack and prints its first admin token once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := server.ValidTenantName(name); err != nil {
				return err
			}
			dir := keysDir
			if dir == "" {
				dir = "keys-" + name
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			// A folder with a key set is used as it is (made by `upkeep keys init`); else one is made.
			if _, err := os.Stat(filepath.Join(dir, tuf.FileImageRoot)); errors.Is(err, fs.ErrNotExist) {
				if _, err := tuf.InitKeySet(dir, 1, 1, tuf.DefaultLifetimes(), time.Now()); err != nil {
					return err
				}
				fmt.Fprintf(w, "key set of tenant %s written to %s\n", name, dir)
			} else if err != nil {
				return err
			}
			req := wire.TenantRequest{Name: name, Keys: map[string][]byte{}}
			for _, f := range tenantOnlineFiles {
				b, err := os.ReadFile(filepath.Join(dir, f))
				if err != nil {
					return fmt.Errorf("tenant key set: %w", err)
				}
				req.Keys[f] = b
			}
			created, err := c.AddTenant(cmd.Context(), req)
			if err != nil {
				return err
			}
			base := strings.TrimRight(g.server, "/") + created.Tenant.Path
			fmt.Fprintf(w, "tenant %s added at %s\n", show.Text(created.Tenant.Name), base)
			fmt.Fprintf(w, "its admin token (shown once, keep it): %s\n", created.AdminToken)
			fmt.Fprintf(w, "its operators and devices use --server %s; its offline keys (root-1.key, targets.key, director-root.key) are in %s: move them off this machine\n", base, dir)
			fmt.Fprintf(w, "provision its devices with %s and %s\n", filepath.Join(dir, tuf.FileImageRoot), filepath.Join(dir, tuf.FileDirectorRoot))
			return nil
		},
	}
	add.Flags().StringVar(&keysDir, "keys", "", "the tenant's key set: used if it holds one (upkeep keys init --dir), else made there (default keys-NAME)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the tenants",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ts, err := c.Tenants(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tPATH\tCREATED\tSERVING")
			for _, t := range ts {
				serving := "yes"
				switch {
				case !t.Ready:
					serving = "no: being added, or an add failed midway"
				case !t.Serving:
					serving = "not yet on this replica"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", show.Text(t.Name), show.Text(t.Path), t.CreatedAt.UTC().Format(time.DateTime), serving)
			}
			return tw.Flush()
		},
	}
	cmd.AddCommand(add, list)
	return cmd
}
