package cli

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/label"
	"upkeep.dev/upkeep/internal/transparency"
	"upkeep.dev/upkeep/internal/tuf"
)

// labelFiles are the files `label render` writes, each with the public route it comes from
// (relative to /p/{product}).
var labelFiles = []struct{ file, route string }{
	{"label.svg", "/label.svg"},
	{"label.png", "/label.png"},
	{"declaration.json", "/declaration.json"},
	{"declaration.pub", "/declaration.pub"},
	{"conformance.json", "/conformance.json"},
	{"conformance.html", "/conformance.html"},
	{"index.html", ""},
}

func labelCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "label", Short: "Fetch and verify products' labels and signed update-capability declarations"}
	var out string
	render := &cobra.Command{
		Use:   "render PRODUCT",
		Short: "Write a product's label (SVG, PNG), signed declaration, public key, conformance report and printable page into --out",
		Long: `Fetches the files from the server's public pages (/p/PRODUCT/...), exactly as buyers see
them, checks that the declaration verifies with the public key served beside it, and writes
label.svg, label.png, declaration.json, declaration.pub, conformance.json and index.html.
No operator token is needed: the pages are public.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			product := args[0]
			if err := tuf.ValidIdent("product", product); err != nil {
				return err
			}
			c := &client.Client{Base: g.server, Token: g.token}
			got := map[string][]byte{}
			for _, f := range labelFiles {
				var b []byte
				if err := c.Do(cmd.Context(), http.MethodGet, "/p/"+product+f.route, nil, &b); err != nil {
					return fmt.Errorf("fetch %s of %s: %w", f.file, product, err)
				}
				got[f.file] = b
			}
			pub, err := label.ParsePublicKey(got["declaration.pub"])
			if err != nil {
				return fmt.Errorf("the server's declaration.pub: %w", err)
			}
			d, err := label.Verify(got["declaration.json"], pub)
			if err != nil {
				return fmt.Errorf("the server's declaration does not verify with its own public key: %w", err)
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			for _, f := range labelFiles {
				if err := os.WriteFile(filepath.Join(out, f.file), got[f.file], 0o644); err != nil {
					return err
				}
			}
			id, _ := label.KeyID(pub)
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "wrote the label and declaration of %s to %s\n", product, out)
			printSummary(w, d, id)
			return nil
		},
	}
	render.Flags().StringVar(&out, "out", ".", "folder to write the files into")

	var pubFile string
	verify := &cobra.Command{
		Use:   "verify FILE --pub KEY.pem",
		Short: "Verify a signed declaration offline against a public key you trust",
		Long: `Verifies a declaration envelope (declaration.json) without the server: the Ed25519 signature over
the exact bytes, and the content against the declaration schema, with the key given as --pub: a key
you trust, obtained apart from the declaration. Only then does it print OK and exit 0.

Without --pub it checks the signature with the declaration.pub beside the file, else with the key
the envelope carries. Either came with the declaration, so a forger would have replaced it too:
it prints "signature consistent but signer not checked" with the key id to compare, and exits 1.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			env, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			keyFile, source := pubFile, "--pub"
			if keyFile == "" {
				keyFile, source = filepath.Join(filepath.Dir(args[0]), "declaration.pub"), "the declaration.pub beside it"
				if _, err := os.Stat(keyFile); errors.Is(err, fs.ErrNotExist) {
					keyFile = ""
				}
			}
			var d *label.Declaration
			var id string
			if keyFile == "" {
				if d, id, err = label.Inspect(env); err != nil {
					return fmt.Errorf("%s does NOT verify: %w", args[0], err)
				}
				source = "the key the envelope carries"
			} else {
				b, err := os.ReadFile(keyFile)
				if err != nil {
					return err
				}
				pub, err := label.ParsePublicKey(b)
				if err != nil {
					return fmt.Errorf("%s: %w", keyFile, err)
				}
				if d, err = label.Verify(env, pub); err != nil {
					return fmt.Errorf("%s does NOT verify with %s: %w", args[0], keyFile, err)
				}
				id, _ = label.KeyID(pub)
			}
			w := cmd.OutOrStdout()
			if pubFile == "" {
				fmt.Fprintf(w, "signature consistent but signer not checked: %s is signed by key %s (%s), which came with it\n", args[0], id, source)
				printSummary(w, d, "")
				return fmt.Errorf("signer not checked: compare key %s with a key you trust, and pass that key as --pub", id)
			}
			fmt.Fprintf(w, "OK: %s is a valid declaration signed by key %s (%s)\n", args[0], id, source)
			printSummary(w, d, "")
			return nil
		},
	}
	verify.Flags().StringVar(&pubFile, "pub", "", "PEM public key you trust, to verify with (required for OK)")
	var keysDir string
	key := &cobra.Command{
		Use:   "key PRODUCT --keys DIR",
		Short: "Print a product's declaration public key (PEM), read from the server's keys folder, for `label verify --pub`",
		Long: `Reads the product's declaration signing key from the server's keys folder
(DIR/declaration/PRODUCT.key, created when the product's declaration is first published) and
prints its public key as PEM, with its key id on standard error. Publish that key through a
channel of your own (your website, the product's documentation): buyers and auditors then check
a declaration with ` + "`upkeep label verify declaration.json --pub KEY.pem`" + `, which only says OK for a
key obtained apart from the declaration.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := tuf.ValidIdent("product", args[0]); err != nil {
				return err
			}
			path := filepath.Join(keysDir, transparency.KeyDir, args[0]+".key")
			k, err := tuf.LoadKey(path)
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%s has no declaration key in %s yet: it is created when the product's public page is first served (upkeep product set, then /p/%s)", args[0], keysDir, args[0])
			}
			if err != nil {
				return err
			}
			pub := k.Private.Public().(ed25519.PublicKey)
			pem, err := label.MarshalPublicKey(pub)
			if err != nil {
				return err
			}
			id, _ := label.KeyID(pub)
			fmt.Fprintf(cmd.ErrOrStderr(), "declaration key of %s: key id %s\n", args[0], id)
			_, err = cmd.OutOrStdout().Write(pem)
			return err
		},
	}
	key.Flags().StringVar(&keysDir, "keys", "keys", "the server's keys folder (env UPKEEP_KEYS)")
	envFlag(key.Flags(), "keys", "UPKEEP_KEYS")
	cmd.AddCommand(render, verify, key)
	return cmd
}

// printSummary prints the facts a buyer asks about.
func printSummary(w io.Writer, d *label.Declaration, keyID string) {
	delivery := "none"
	if len(d.Mechanisms) > 0 {
		delivery = d.Mechanisms[0].Initiation
	}
	end := d.Support.EndDate
	if d.Status == label.StatusEndOfSupport {
		end += " (ended: no longer receives security updates)"
	}
	last := d.Evidence.LastSecurityUpdate.Date
	if last == "" {
		last = "none yet"
	}
	model := ""
	if d.Product.ModelDesignation != "" {
		model = " (model " + d.Product.ModelDesignation + ")"
	}
	fmt.Fprintf(w, "  product:              %s%s, by %s\n", d.Product.Name, model, d.Manufacturer.Name)
	fmt.Fprintf(w, "  security updates:     %s\n", delivery)
	fmt.Fprintf(w, "  support end:          %s\n", end)
	fmt.Fprintf(w, "  last security update: %s\n", last)
	fmt.Fprintf(w, "  declaration:          %s, last updated %s\n", d.DeclarationID, d.LastUpdated.Format(time.RFC3339))
	if keyID != "" {
		fmt.Fprintf(w, "  signing key:          %s\n", keyID)
	}
}
