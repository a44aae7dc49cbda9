package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/tuf"
)

// keysDelegateCmd is the offline ceremony that gives a product its own targets role
// (docs/OPERATORS.md, "Product delegations"): create, rotate its keys, change its threshold,
// rotate back to earlier keys, or undo the delegation.
func keysDelegateCmd(g *globals) *cobra.Command {
	var dir, product string
	var nkeys, threshold int
	var rotate, undo bool
	var useKeys []string
	cmd := &cobra.Command{
		Use:   "delegate --product P [--keys N] [--threshold T] [--rotate | --use-key FILE... | --undo]",
		Short: "Delegate a product's targets to its own offline keys (create, rotate, undo)",
		Long: `Signs, with the offline targets key, a delegation of the product's targets ("P/*/*") to the
product's own role, signed by its own offline keys (targets.P.1.key, ... in the keys folder)
with a threshold. The first delegation moves the product's published targets out of the
top-level targets into its role; devices follow it at their next refresh.

  --rotate        new product keys; the old ones move to retired-targets.P-vN/
  --use-key FILE  the product keys to delegate to (repeatable): rotating back to retired keys
  --threshold T   signatures devices require (default: all the keys)
  --undo          remove the delegation: the targets move back into the top-level targets`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := tuf.ValidIdent("product", product); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			o := client.DelegateOptions{Product: product, Undo: undo, Expires: tuf.DefaultLifetimes().Targets}
			if o.TargetsKey, err = tuf.LoadKey(filepath.Join(dir, tuf.FileTargetsKey)); err != nil {
				return err
			}
			if o.TrustedRoot, err = os.ReadFile(filepath.Join(dir, tuf.FileImageRoot)); err != nil {
				return fmt.Errorf("trusted root: %w", err)
			}
			cur, curFiles, err := tuf.LoadProductKeys(dir, product)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if undo {
				stored, err := c.Delegate(cmd.Context(), o)
				if err != nil {
					return err
				}
				fmt.Fprintf(w, "delegation of %s removed (stored %s); its targets are back in the top-level targets. Its keys stay in %s.\n", product, strings.Join(stored, ", "), dir)
				return nil
			}
			fresh := map[string]*tuf.Key{}
			switch {
			case len(useKeys) > 0:
				for i, f := range useKeys {
					k, err := tuf.LoadKey(f)
					if err != nil {
						return err
					}
					o.Keys = append(o.Keys, k)
					fresh[tuf.ProductKeyFile(product, i+1)] = k
				}
			case rotate || len(cur) == 0:
				if rotate && len(cur) == 0 {
					return fmt.Errorf("no keys of %s (%s) in %s to rotate", product, tuf.ProductKeyFile(product, 1), dir)
				}
				for i := range nkeys {
					k, err := tuf.GenerateKey()
					if err != nil {
						return err
					}
					o.Keys = append(o.Keys, k)
					fresh[tuf.ProductKeyFile(product, i+1)] = k
				}
			default: // the same keys: a new threshold, or a delegation made again
				o.Keys = cur
			}
			o.Threshold = threshold
			if o.Threshold == 0 {
				o.Threshold = len(o.Keys)
			}
			if o.Threshold < 1 || o.Threshold > len(o.Keys) {
				return fmt.Errorf("threshold %d with %d keys: want 1 <= threshold <= keys", o.Threshold, len(o.Keys))
			}
			// New keys are written and synced before the server trusts them; the old ones are
			// archived only after it accepted the delegation.
			var staged string
			if len(fresh) > 0 {
				if staged, err = stageKeys(dir, fmt.Sprintf("new-targets.%s", product), fresh); err != nil {
					return err
				}
			}
			stored, err := c.Delegate(cmd.Context(), o)
			if err != nil {
				if staged != "" {
					return errors.Join(err, os.RemoveAll(staged))
				}
				return err
			}
			if staged != "" {
				retired := retiredDir(dir, product)
				if err := promoteKeys(dir, staged, retired, curFiles); err != nil {
					return fmt.Errorf("the delegation is uploaded and the new keys are in %s, but moving them into place failed (finish by hand): %w", staged, err)
				}
				if len(curFiles) > 0 {
					fmt.Fprintf(w, "old keys of %s moved to %s (keep them offline)\n", product, retired)
				} else {
					os.Remove(retired)
				}
			}
			fmt.Fprintf(w, "%s delegated to %d keys, threshold %d (stored %s)\n", product, len(o.Keys), o.Threshold, strings.Join(stored, ", "))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "keys", "offline key folder (targets.key, root.json)")
	f.StringVar(&product, "product", "", "product to delegate")
	f.IntVar(&nkeys, "keys", 1, "number of new product keys")
	f.IntVar(&threshold, "threshold", 0, "signatures devices require (default: all the keys)")
	f.BoolVar(&rotate, "rotate", false, "replace the product's keys with new ones")
	f.StringArrayVar(&useKeys, "use-key", nil, "delegate to these key files (rotating back to retired keys)")
	f.BoolVar(&undo, "undo", false, "remove the product's delegation, moving its targets back to the top-level targets")
	cmd.MarkFlagRequired("product")
	cmd.MarkFlagsMutuallyExclusive("rotate", "use-key", "undo")
	return cmd
}

// retiredDir names the first free folder retired-targets.P-N in dir, for a product's old keys.
func retiredDir(dir, product string) string {
	for n := 1; ; n++ {
		p := filepath.Join(dir, fmt.Sprintf("retired-targets.%s-%d", product, n))
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			return p
		}
	}
}
