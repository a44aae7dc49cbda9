package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"upkeep.dev/upkeep/internal/agent/boot"
	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/imagerepo"
	"upkeep.dev/upkeep/internal/tuf"
)

// rotateRootCmd replaces the offline image root keys. The new keys are written (and synced)
// before the new root is uploaded, so the server never trusts keys that exist nowhere; the old
// keys are archived only after the server accepted the new root.
func rotateRootCmd(g *globals) *cobra.Command {
	var dir string
	var newKeys, threshold int
	cmd := &cobra.Command{
		Use:   "rotate-root",
		Short: "Replace the image root keys: the new root is signed by the old and the new keys",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			trusted, err := os.ReadFile(filepath.Join(dir, tuf.FileImageRoot))
			if err != nil {
				return err
			}
			cur, err := c.LatestRoot(cmd.Context(), trusted)
			if err != nil {
				return err
			}
			old, oldFiles, err := loadRootKeys(dir)
			if err != nil {
				return err
			}
			cr := cur.Signed.Roles[tuf.Root]
			if newKeys == 0 {
				newKeys = len(cr.KeyIDs)
			}
			if threshold == 0 {
				threshold = cr.Threshold
			}
			if newKeys < 1 || threshold < 1 || threshold > newKeys {
				return fmt.Errorf("root threshold %d with %d new keys: want 1 <= threshold <= keys", threshold, newKeys)
			}
			fresh := map[string]*tuf.Key{}
			var freshKeys []*tuf.Key
			for i := range newKeys {
				k, err := tuf.GenerateKey()
				if err != nil {
					return err
				}
				fresh[tuf.RootKeyFile(i+1)] = k
				freshKeys = append(freshKeys, k)
			}
			next, err := tuf.RotateRoot(cur, old, freshKeys, threshold, time.Now().Add(tuf.DefaultLifetimes().Root))
			if err != nil {
				return err
			}
			v := cur.Signed.Version + 1
			staged, err := stageKeys(dir, fmt.Sprintf("new-root-v%d", v), fresh)
			if err != nil {
				return err
			}
			if err := c.RotateRoot(cmd.Context(), next); err != nil {
				return errors.Join(err, os.RemoveAll(staged))
			}
			retired := filepath.Join(dir, fmt.Sprintf("retired-root-v%d", cur.Signed.Version))
			if err := promoteKeys(dir, staged, retired, oldFiles); err != nil {
				return fmt.Errorf("root version %d is uploaded and its keys are in %s, but moving them into place failed (finish by hand): %w", v, staged, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "root version %d uploaded: %d keys, threshold %d; old root keys moved to %s (keep them offline)\n", v, newKeys, threshold, retired)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "keys", "key set folder")
	cmd.Flags().IntVar(&newKeys, "new-keys", 0, "number of new root keys (default: as many as the current root has)")
	cmd.Flags().IntVar(&threshold, "root-threshold", 0, "signatures needed on the next root (default: the current root's)")
	return cmd
}

// loadRootKeys reads root-1.key, root-2.key, ... up to the first that does not exist.
func loadRootKeys(dir string) ([]*tuf.Key, []string, error) {
	var keys []*tuf.Key
	var files []string
	for i := 1; ; i++ {
		name := tuf.RootKeyFile(i)
		k, err := tuf.LoadKey(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", name, err)
		}
		keys, files = append(keys, k), append(files, name)
	}
	if len(keys) == 0 {
		return nil, nil, fmt.Errorf("no root keys (%s) in %s", tuf.RootKeyFile(1), dir)
	}
	return keys, files, nil
}

// stageKeys writes keys into the new folder dir/name, each file synced, then the folders.
func stageKeys(dir, name string, keys map[string]*tuf.Key) (string, error) {
	staged := filepath.Join(dir, name)
	if err := os.Mkdir(staged, 0o700); err != nil {
		return "", fmt.Errorf("stage new keys: %w (a previous attempt left it? check it and remove it)", err)
	}
	for file, k := range keys {
		if err := tuf.SaveKey(filepath.Join(staged, file), k); err != nil {
			return "", errors.Join(err, os.RemoveAll(staged))
		}
	}
	if err := errors.Join(boot.SyncDir(staged), boot.SyncDir(dir)); err != nil {
		return "", errors.Join(err, os.RemoveAll(staged))
	}
	return staged, nil
}

// promoteKeys moves the files old of dir into the new folder retired, then every staged file
// into dir, and removes the staging folder. Every step is checked and synced.
func promoteKeys(dir, staged, retired string, old []string) error {
	if err := os.Mkdir(retired, 0o700); err != nil {
		return fmt.Errorf("archive old keys: %w", err)
	}
	for _, f := range old {
		if err := os.Rename(filepath.Join(dir, f), filepath.Join(retired, f)); err != nil {
			return fmt.Errorf("archive old key: %w", err)
		}
	}
	if err := boot.SyncDir(retired); err != nil {
		return err
	}
	entries, err := os.ReadDir(staged)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.Rename(filepath.Join(staged, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("move new key into place: %w", err)
		}
	}
	if err := boot.SyncDir(dir); err != nil {
		return err
	}
	return os.Remove(staged)
}

// resignDirectorRootCmd renews the director root: the next version, with the same director-root
// key or a new one, signed offline and uploaded.
func resignDirectorRootCmd(g *globals) *cobra.Command {
	var dir string
	var newKey bool
	var lifetime time.Duration
	cmd := &cobra.Command{
		Use:   "resign-director-root",
		Short: "Sign the next director root (a new expiry; --new-key: a new director-root key) and upload it",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			trusted, err := os.ReadFile(filepath.Join(dir, tuf.FileDirectorRoot))
			if err != nil {
				return err
			}
			cur, err := c.LatestDirectorRoot(cmd.Context(), trusted)
			if err != nil {
				return err
			}
			old, err := tuf.LoadKey(filepath.Join(dir, tuf.FileDirectorRootKey))
			if err != nil {
				return err
			}
			if !slices.Contains(cur.Signed.Roles[tuf.Root].KeyIDs, old.ID) {
				return fmt.Errorf("%s is not a key of director root version %d", tuf.FileDirectorRootKey, cur.Signed.Version)
			}
			next := old
			if newKey {
				if next, err = tuf.GenerateKey(); err != nil {
					return err
				}
			}
			body, err := tuf.RotateRoot(cur, []*tuf.Key{old}, []*tuf.Key{next}, 1, time.Now().Add(lifetime))
			if err != nil {
				return err
			}
			v := cur.Signed.Version + 1
			var staged string
			if newKey {
				if staged, err = stageKeys(dir, fmt.Sprintf("new-director-root-v%d", v), map[string]*tuf.Key{tuf.FileDirectorRootKey: next}); err != nil {
					return err
				}
			}
			if err := c.RotateDirectorRoot(cmd.Context(), body); err != nil {
				if staged != "" {
					err = errors.Join(err, os.RemoveAll(staged))
				}
				return err
			}
			w := cmd.OutOrStdout()
			if newKey {
				retired := filepath.Join(dir, fmt.Sprintf("retired-director-root-v%d", cur.Signed.Version))
				if err := promoteKeys(dir, staged, retired, []string{tuf.FileDirectorRootKey}); err != nil {
					return fmt.Errorf("director root version %d is uploaded and its key is in %s, but moving it into place failed (finish by hand): %w", v, staged, err)
				}
				fmt.Fprintf(w, "old director-root key moved to %s (keep it offline)\n", retired)
			}
			fmt.Fprintf(w, "director root version %d uploaded, expires %s; devices follow it at their next refresh\n", v, time.Now().Add(lifetime).UTC().Format(time.DateOnly))
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "keys", "key set folder (director-root.key, director-root.json)")
	cmd.Flags().StringVar(&dir, "keys", "keys", "same as --dir")
	cmd.Flags().MarkHidden("keys")
	cmd.Flags().BoolVar(&newKey, "new-key", false, "replace the director-root key too")
	cmd.Flags().DurationVar(&lifetime, "expires", tuf.DefaultLifetimes().Root, "lifetime of the new director root")
	return cmd
}

// keysStatusCmd shows when the offline-signed metadata expires and how to renew it.
func keysStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show when the offline-signed metadata (image root and targets, director root) expires",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			es, err := c.TrustExpiry(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "METADATA\tVERSION\tEXPIRES\tSTATE\tRENEW WITH")
			for _, e := range es {
				fmt.Fprintf(tw, "%s %s\t%d\t%s\t%s\t%s\n", e.Repo, e.Role, e.Version, e.Expires.Format(time.RFC3339), expiryState(e.Expires, time.Now()), e.Renew)
			}
			return tw.Flush()
		},
	}
}

// expiryState says whether metadata expiring at exp needs renewing (the server warns
// imagerepo.ExpiryWarning ahead).
func expiryState(exp, now time.Time) string {
	switch left := exp.Sub(now); {
	case left <= 0:
		return "EXPIRED"
	case left < imagerepo.ExpiryWarning:
		return fmt.Sprintf("RENEW: %d days left", int(left.Hours()/24))
	default:
		return fmt.Sprintf("ok (%d days)", int(left.Hours()/24))
	}
}

// resignTargetsCmd renews the image targets metadata without a new release.
func resignTargetsCmd(g *globals) *cobra.Command {
	var keyPath, rootPath string
	var lifetime time.Duration
	cmd := &cobra.Command{
		Use:   "resign-targets",
		Short: "Re-sign the current image targets with a new expiry (offline targets key) and upload them",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			o := client.ResignOptions{Expires: lifetime}
			if o.TargetsKey, err = tuf.LoadKey(keyPath); err != nil {
				return err
			}
			if rootPath == "" {
				rootPath = filepath.Join(filepath.Dir(keyPath), tuf.FileImageRoot)
			}
			if o.TrustedRoot, err = os.ReadFile(rootPath); err != nil {
				return fmt.Errorf("trusted root: %w", err)
			}
			v, exp, err := c.ResignTargets(cmd.Context(), o)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "image targets version %d uploaded, expires %s\n", v, exp.Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().StringVar(&keyPath, "key", "keys/targets.key", "offline targets key")
	cmd.Flags().StringVar(&rootPath, "root", "", "trusted image root.json (default: root.json next to the key)")
	cmd.Flags().DurationVar(&lifetime, "expires", tuf.DefaultLifetimes().Targets, "lifetime of the re-signed targets")
	return cmd
}

// targetsExpiryFooter ends `release list` with the image targets' expiry.
func targetsExpiryFooter(cmd *cobra.Command, c *client.Client) error {
	es, err := c.TrustExpiry(cmd.Context())
	if err != nil {
		return err
	}
	for _, e := range es {
		if e.Repo == imagerepo.RepoImage && e.Role == tuf.Targets {
			fmt.Fprintf(cmd.OutOrStdout(), "\nimage targets version %d expire %s: %s (renew with %s)\n", e.Version, e.Expires.Format(time.RFC3339), expiryState(e.Expires, time.Now()), e.Renew)
		}
	}
	return nil
}
