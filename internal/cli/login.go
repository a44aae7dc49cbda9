package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/show"
	"upkeep.dev/upkeep/internal/sso"
	"upkeep.dev/upkeep/internal/tlsclient"
	"upkeep.dev/upkeep/wire"
)

// `upkeep login` and `upkeep logout`: a person logs in with their password, and the CLI keeps a
// personal operator token (the user's role and scope, a short life) in the credentials file,
// one per server URL, for the commands that follow without --token.

// savedLogin is one server's entry of the credentials file.
type savedLogin struct {
	Token     string    `json:"token"`
	TokenID   string    `json:"token_id"`
	User      string    `json:"user"`
	Role      string    `json:"role"`
	ExpiresAt time.Time `json:"expires_at"`
}

// credentials is the credentials file: $XDG_CONFIG_HOME/upkeep/credentials (else
// ~/.config/upkeep/credentials), mode 0600, JSON.
type credentials struct {
	Servers map[string]savedLogin `json:"servers"`
}

func credentialsPath() (string, error) {
	dir, err := os.UserConfigDir() // $XDG_CONFIG_HOME, else ~/.config
	if err != nil {
		return "", fmt.Errorf("credentials file: %w", err)
	}
	return filepath.Join(dir, "upkeep", "credentials"), nil
}

// serverKey is the form of a server URL the file is keyed by.
func serverKey(server string) string { return strings.TrimRight(server, "/") }

// loadCredentials reads the file; a missing file is empty. A file others may read is refused,
// as ssh refuses such a key.
func loadCredentials() (*credentials, string, error) {
	path, err := credentialsPath()
	if err != nil {
		return nil, "", err
	}
	c := &credentials{Servers: map[string]savedLogin{}}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, path, nil
	}
	if err != nil {
		return nil, path, fmt.Errorf("credentials file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, path, fmt.Errorf("credentials file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, path, fmt.Errorf("credentials file %s is open to other users (mode %v): chmod 600 it, or remove it and log in again", path, st.Mode().Perm())
	}
	if err := json.NewDecoder(f).Decode(c); err != nil {
		return nil, path, fmt.Errorf("credentials file %s: %w", path, err)
	}
	if c.Servers == nil {
		c.Servers = map[string]savedLogin{}
	}
	return c, path, nil
}

// save writes the file atomically with mode 0600 (its folder 0700).
func (c *credentials) save(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("credentials file: %w", err)
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".credentials-*")
	if err != nil {
		return fmt.Errorf("credentials file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("credentials file: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("credentials file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("credentials file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("credentials file: %w", err)
	}
	return nil
}

// savedToken returns the token `upkeep login` saved for server, or "" if there is none. An
// expired one is an error that says to log in again.
func savedToken(server string) (string, error) {
	if _, err := credentialsPath(); err != nil {
		return "", nil // no home folder: no saved login
	}
	c, _, err := loadCredentials()
	if err != nil {
		return "", err
	}
	l, ok := c.Servers[serverKey(server)]
	if !ok {
		return "", nil
	}
	if !l.ExpiresAt.IsZero() && !time.Now().Before(l.ExpiresAt) {
		return "", fmt.Errorf("your login to %s expired at %s: run upkeep login again", server, l.ExpiresAt.Format(time.RFC3339))
	}
	return l.Token, nil
}

// httpClient is the CLI's HTTP client for the server: the private CA of --ca, and a cookie jar
// when a login session is to be kept.
func (g *globals) httpClient(jar bool) (*http.Client, error) {
	hc := &http.Client{Timeout: 10 * time.Minute}
	if g.ca != "" {
		tr, err := tlsclient.Transport(g.ca)
		if err != nil {
			return nil, err
		}
		hc.Transport = tr
	}
	if jar {
		hc.Jar, _ = cookiejar.New(nil)
	}
	return hc, nil
}

func loginCmd(g *globals) *cobra.Command {
	var user string
	var pwStdin, useSSO bool
	var ttl, ssoWait time.Duration
	cmd := &cobra.Command{
		Use:   "login --user NAME | --sso",
		Short: "Log in with your password and keep a personal token (your role, 12 h) for the commands that follow",
		Long: "Log in to --server with a user's password (prompted without echo, or --password-stdin), make a personal\n" +
			"operator token bound to that user through the login session, and keep it in $XDG_CONFIG_HOME/upkeep/credentials\n" +
			"(mode 0600, one per server URL). Later commands use it when neither --token nor UPKEEP_TOKEN is given;\n" +
			"`upkeep logout` revokes and forgets it. With --sso (single sign-on users) it prints the server's login URL\n" +
			"to open in a browser on this machine; the token comes back, sealed to this process, on a loopback port.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := tlsclient.CheckServerURL(g.server); err != nil {
				return err
			}
			if useSSO {
				return loginSSO(cmd, g, ssoWait)
			}
			if user == "" {
				return errors.New("--user NAME is needed (or --sso for single sign-on)")
			}
			pw, err := readPasswordOnce(cmd, pwStdin)
			if err != nil {
				return err
			}
			hc, err := g.httpClient(true)
			if err != nil {
				return err
			}
			c := &client.Client{Base: g.server, HTTP: hc}
			ctx := cmd.Context()
			if _, err := c.Login(ctx, user, pw); err != nil {
				return err
			}
			host, _ := os.Hostname()
			tok, err := c.CreatePersonalToken(ctx, wire.PersonalTokenRequest{Name: trimTo("upkeep login "+user+"@"+host, 64), TTL: ttl})
			if err != nil {
				c.Logout(ctx)
				return err
			}
			c.Logout(ctx) // the token is what is kept; the session is not needed any more
			return keepToken(cmd, g, hc, tok)
		},
	}
	cmd.Flags().StringVar(&user, "user", "", "your user name (env UPKEEP_USER)")
	cmd.Flags().BoolVar(&pwStdin, "password-stdin", false, "read the password from the first line of stdin")
	cmd.Flags().DurationVar(&ttl, "ttl", 12*time.Hour, "how long the personal token is valid (at most 7 days)")
	cmd.Flags().BoolVar(&useSSO, "sso", false, "log in through the server's OpenID Connect provider in a browser on this machine (prints the URL to open)")
	cmd.Flags().DurationVar(&ssoWait, "sso-wait", 5*time.Minute, "how long --sso waits for the browser")
	envFlag(cmd.Flags(), "user", "UPKEEP_USER")
	return cmd
}

// keepToken saves a personal token for --server in the credentials file, revoking the one an
// earlier login kept there.
func keepToken(cmd *cobra.Command, g *globals, hc *http.Client, tok *wire.OperatorToken) error {
	creds, path, err := loadCredentials()
	if err != nil {
		return err
	}
	key := serverKey(g.server)
	if old, ok := creds.Servers[key]; ok && old.TokenID != tok.ID {
		// The previous login's token is not needed any more: revoke it (it may have expired
		// or been revoked already).
		oc := &client.Client{Base: g.server, Token: old.Token, HTTP: hc}
		oc.RevokePersonalToken(cmd.Context(), old.TokenID)
	}
	creds.Servers[key] = savedLogin{Token: tok.Token, TokenID: tok.ID, User: tok.User, Role: tok.Role, ExpiresAt: tok.ExpiresAt}
	if err := creds.save(path); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "logged in to %s as %s (role %s%s); token %s expires %s, kept in %s\n",
		key, show.Text(tok.User), show.Text(tok.Role), groupScopeText(tok.Groups), show.Text(tok.ID), timeOr(tok.ExpiresAt, "never"), path)
	return nil
}

// loginSSO is `upkeep login --sso`: a loopback listener and a key pair; the person opens the
// server's single sign-on URL (which names the port and the public key) in a browser on this
// machine; at the end the server redirects the browser to the loopback port with a personal
// token sealed to the key (RFC 8252 §7.3; HPKE), which only this process can open.
func loginSSO(cmd *cobra.Command, g *globals, wait time.Duration) error {
	priv, pub := sso.NewCLIKey()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("loopback listener: %w", err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	got := make(chan *wire.OperatorToken, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/upkeep-login" {
			http.NotFound(w, r)
			return
		}
		plain, err := sso.OpenSealed(priv, r.URL.Query().Get("sealed"))
		var tok wire.OperatorToken
		if err == nil {
			err = json.Unmarshal(plain, &tok)
		}
		if err != nil || tok.Token == "" {
			http.Error(w, "This is not the answer this upkeep login waits for.", http.StatusBadRequest)
			return
		}
		// The page first, then the token: the command ends once it has the token, and the
		// browser must have its answer by then.
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "Logged in to Upkeep as %s. You can close this tab.\n", show.Text(tok.User))
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		select {
		case got <- &tok:
		default:
		}
	})}
	go srv.Serve(ln)
	defer func() { // lets the answer in flight finish, then closes
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx) //nolint:errcheck // the process is ending its login either way
	}()
	u := strings.TrimRight(g.server, "/") + "/api/v1/oidc/login?" + url.Values{"cli_port": {strconv.Itoa(port)}, "cli_key": {pub}}.Encode()
	fmt.Fprintf(cmd.ErrOrStderr(), "Open this URL in a browser on this machine to log in:\n\n    %s\n\n", u)
	ctx, cancel := context.WithTimeout(cmd.Context(), wait)
	defer cancel()
	select {
	case tok := <-got:
		hc, err := g.httpClient(false)
		if err != nil {
			return err
		}
		return keepToken(cmd, g, hc, tok)
	case <-ctx.Done():
		return fmt.Errorf("no login came back within %s: open the URL above, or run upkeep login --sso again", wait)
	}
}

func logoutCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "Revoke the personal token `upkeep login` kept for --server and forget it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			creds, path, err := loadCredentials()
			if err != nil {
				return err
			}
			key := serverKey(g.server)
			l, ok := creds.Servers[key]
			if !ok {
				return fmt.Errorf("not logged in to %s (no token in %s)", key, path)
			}
			hc, err := g.httpClient(false)
			if err != nil {
				return err
			}
			c := &client.Client{Base: g.server, Token: l.Token, HTTP: hc}
			err = c.RevokePersonalToken(cmd.Context(), l.TokenID)
			switch {
			case err == nil:
				fmt.Fprintf(cmd.OutOrStdout(), "logged out of %s: token %s revoked\n", key, show.Text(l.TokenID))
			case apperr.Is(err, apperr.Unauthorized):
				fmt.Fprintf(cmd.OutOrStdout(), "logged out of %s: token %s had already expired or been revoked\n", key, show.Text(l.TokenID))
			default:
				return fmt.Errorf("revoke token %s: %w (it stays in %s; try again, or revoke it with tokens revoke)", l.TokenID, err, path)
			}
			delete(creds.Servers, key)
			return creds.save(path)
		},
	}
}

// readPasswordOnce reads a login password: one line with --password-stdin, else a prompt
// without echo when stdin is a terminal.
func readPasswordOnce(cmd *cobra.Command, fromStdin bool) (string, error) {
	return readPasswordWith(cmd, fromStdin, false)
}

func trimTo(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
