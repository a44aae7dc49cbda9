package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/show"
	"upkeep.dev/upkeep/wire"
)

// Operator users: people with a role, a password for the login (web console), an optional
// group scope.

// readPassword reads a new password from stdin: one line with --password-stdin, else a prompt
// without echo (twice) when stdin is a terminal.
func readPassword(cmd *cobra.Command, fromStdin bool) (string, error) {
	return readPasswordWith(cmd, fromStdin, true)
}

// readPasswordWith reads a password: one line with fromStdin, else a prompt without echo when
// stdin is a terminal, asked twice if confirm.
func readPasswordWith(cmd *cobra.Command, fromStdin, confirm bool) (string, error) {
	in := cmd.InOrStdin()
	if fromStdin {
		line, err := bufio.NewReader(in).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("read password: %w", err)
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	f, ok := in.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		if !confirm {
			return "", errors.New("no terminal to prompt for a password: use --password-stdin")
		}
		return "", errors.New("no terminal to prompt for a password: use --password-stdin (or --no-password)")
	}
	ask := func(prompt string) (string, error) {
		fmt.Fprint(cmd.ErrOrStderr(), prompt)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(cmd.ErrOrStderr())
		return string(b), err
	}
	pw, err := ask("Password: ")
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	if !confirm {
		return pw, nil
	}
	again, err := ask("Again: ")
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	if pw != again {
		return "", errors.New("the passwords differ")
	}
	return pw, nil
}

func usersCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "users", Short: "Add, list, disable operator users and change their role (roles: " + strings.Join(auth.Roles, ", ") + ")"}
	var role string
	var groups []string
	var pwStdin, noPassword bool
	add := &cobra.Command{
		Use:   "add NAME --role ROLE",
		Short: "Add a user; prompts for the password (or --password-stdin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := wire.UserRequest{Name: args[0], Role: role, Groups: groups}
			if !noPassword {
				pw, err := readPassword(cmd, pwStdin)
				if err != nil {
					return err
				}
				req.Password = pw
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			u, err := c.CreateUser(cmd.Context(), req)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "user %s added with role %s%s\n", show.Text(u.Name), show.Text(u.Role), groupScopeText(u.Groups))
			return nil
		},
	}
	add.Flags().StringVar(&role, "role", "", "the user's role: "+strings.Join(auth.Roles, ", "))
	add.Flags().StringSliceVar(&groups, "groups", nil, "limit a deployer to these device groups")
	add.Flags().BoolVar(&pwStdin, "password-stdin", false, "read the password from the first line of stdin")
	add.Flags().BoolVar(&noPassword, "no-password", false, "no password login: the user works through tokens only")
	add.MarkFlagRequired("role")
	list := &cobra.Command{
		Use:   "list",
		Short: "List users with their role, group scope, how they log in (password, sso, tokens only) and state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			us, err := c.Users(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tROLE\tGROUPS\tLOGIN\tCREATED\tSTATE")
			for _, u := range us {
				state := "enabled"
				if !u.DisabledAt.IsZero() {
					state = "disabled " + timeOr(u.DisabledAt, "")
				}
				pw := "tokens only"
				switch {
				case u.Issuer != "":
					pw = "sso" // single sign-on through the provider u.Issuer
				case u.HasPassword:
					pw = "password"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", show.Text(u.Name), show.Text(u.Role), show.Text(or(strings.Join(u.Groups, ","), "all")), pw, timeOr(u.CreatedAt, ""), state)
			}
			return tw.Flush()
		},
	}
	disable := &cobra.Command{
		Use:   "disable NAME",
		Short: "Disable a user: no more logins; their sessions end and their tokens are revoked within a second",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := c.DisableUser(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "user %s disabled\n", show.Text(args[0]))
			return nil
		},
	}
	var roleGroups []string
	roleCmd := &cobra.Command{
		Use:   "role NAME ROLE",
		Short: "Change a user's role (and --groups scope); their sessions end and their tokens are revoked",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := c.SetUserRole(cmd.Context(), args[0], wire.UserRoleRequest{Role: args[1], Groups: roleGroups}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "user %s now has role %s%s\n", show.Text(args[0]), show.Text(args[1]), groupScopeText(roleGroups))
			return nil
		},
	}
	roleCmd.Flags().StringSliceVar(&roleGroups, "groups", nil, "limit a deployer to these device groups")
	var pwStdin2 bool
	password := &cobra.Command{
		Use:   "password NAME",
		Short: "Set a user's password (prompts, or --password-stdin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pw, err := readPassword(cmd, pwStdin2)
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := c.SetUserPassword(cmd.Context(), args[0], pw); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "password of %s set\n", show.Text(args[0]))
			return nil
		},
	}
	password.Flags().BoolVar(&pwStdin2, "password-stdin", false, "read the password from the first line of stdin")
	cmd.AddCommand(add, list, disable, roleCmd, password)
	return cmd
}

func groupScopeText(groups []string) string {
	if len(groups) == 0 {
		return ""
	}
	return ", limited to groups " + show.Text(strings.Join(groups, ","))
}
