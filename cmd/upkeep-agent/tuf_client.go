package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/agent"
	"upkeep.dev/upkeep/internal/tuf"
)

// tufClient implements the client-under-test command line of the public TUF conformance suite
// (theupdateframework/tuf-conformance, CLIENT-CLI.md) on the agent's own verification code:
//
//	upkeep-agent tuf-client --metadata-dir D init ROOT
//	upkeep-agent tuf-client --metadata-url U --metadata-dir D refresh
//	upkeep-agent tuf-client --metadata-url U --metadata-dir D --target-name N \
//	    --target-base-url B --target-dir T download
//
// Trusted metadata stays in D under unversioned names. Exit status 0 is success, 1 failure.
func tufClient(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("tuf-client", flag.ContinueOnError)
	var metaDir, metaURL, targetDir, targetBase string
	var targetNames names
	fs.StringVar(&metaDir, "metadata-dir", "", "trusted metadata directory")
	fs.StringVar(&metaURL, "metadata-url", "", "base URL of the repository's metadata")
	fs.Var(&targetNames, "target-name", "target to download (repeatable: downloaded in order)")
	fs.StringVar(&targetDir, "target-dir", "", "where downloaded targets go")
	fs.StringVar(&targetBase, "target-base-url", "", "base URL of the repository's targets")
	// Flags may come before or after the command.
	var rest []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(rest) == 0 || metaDir == "" {
		return errors.New("usage: tuf-client --metadata-dir D [--metadata-url U] init ROOT | refresh | download")
	}
	now, err := fakeNow(os.Getenv("FAKETIME"), time.Now())
	if err != nil {
		return err
	}
	opts := agent.TUFOptions{MetadataURL: metaURL, MetadataDir: metaDir, Now: func() time.Time { return now }}
	switch rest[0] {
	case "init":
		if len(rest) != 2 {
			return errors.New("init needs the trusted root file")
		}
		b, err := os.ReadFile(rest[1])
		if err != nil {
			return fmt.Errorf("trusted root: %w", err)
		}
		if err := os.MkdirAll(metaDir, 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(metaDir, "root.json"), b, 0o600); err != nil {
			return err
		}
		fmt.Fprintf(out, "upkeep tuf-client: trusted root initialised in %s\n", metaDir)
		return nil
	case "refresh":
		if metaURL == "" {
			return errors.New("refresh needs --metadata-url")
		}
		up, err := agent.NewUpdater(ctx, opts)
		if err != nil {
			return err
		}
		if err := tuf.Guard("repository", up.Refresh); err != nil {
			return err
		}
		fmt.Fprintln(out, "upkeep tuf-client: metadata refreshed")
		return nil
	case "download":
		if metaURL == "" || len(targetNames) == 0 || targetDir == "" || targetBase == "" {
			return errors.New("download needs --metadata-url, --target-name, --target-dir and --target-base-url")
		}
		up, err := agent.NewUpdater(ctx, opts)
		if err != nil {
			return err
		}
		if err := tuf.Guard("repository", up.Refresh); err != nil {
			return err
		}
		consistent := up.GetTrustedMetadataSet().Root.Signed.ConsistentSnapshot
		for _, name := range targetNames { // in order, one updater, stop at the first failure
			var tf *metadata.TargetFiles
			if tf, err = agent.TargetInfo(up, name); err != nil {
				return fmt.Errorf("target %s: %w", name, err)
			}
			local := filepath.Join(targetDir, url.PathEscape(name))
			if b, err := os.ReadFile(local); err == nil && tf.VerifyLengthHashes(b) == nil {
				fmt.Fprintf(out, "upkeep tuf-client: %s already downloaded and verified\n", name)
				continue
			}
			if err := downloadTarget(ctx, tf, name, targetBase, targetDir, consistent); err != nil {
				return fmt.Errorf("target %s: %w", name, err)
			}
			fmt.Fprintf(out, "upkeep tuf-client: downloaded %s\n", name)
		}
		return nil
	default:
		return fmt.Errorf("unknown tuf-client command %q", rest[0])
	}
}

// names collects a repeatable flag.
type names []string

func (n *names) String() string     { return strings.Join(*n, ",") }
func (n *names) Set(v string) error { *n = append(*n, v); return nil }

// downloadTarget streams a target through the agent's verified download into targetDir, named
// as the URL-escaped target path; nothing is left behind on failure.
func downloadTarget(ctx context.Context, tf *metadata.TargetFiles, name, base, dir string, consistent bool) error {
	if name == "." || name == ".." || strings.ContainsAny(name, "\x00") {
		return fmt.Errorf("target name %q cannot be stored", name)
	}
	remote := name
	if consistent { // TUF 5.7.3: consistent snapshots prefix the file name with a hash
		algs := slices.Sorted(func(yield func(string) bool) {
			for a := range tf.Hashes {
				if !yield(a) {
					return
				}
			}
		})
		if len(algs) > 0 {
			alg := algs[0]
			if _, ok := tf.Hashes["sha256"]; ok {
				alg = "sha256"
			}
			d, f := path.Split(name)
			remote = d + tf.Hashes[alg].String() + "." + f
		}
	}
	u := strings.TrimRight(base, "/") + "/" + (&url.URL{Path: remote}).EscapedPath()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".download-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := agent.StreamTarget(ctx, agent.NewDownloadClient(), u, tf, tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, url.PathEscape(name)))
}

// fakeNow applies a libfaketime FAKETIME value, which Go programs do not see through
// LD_PRELOAD: "+15d" / "-2h" / "+30" (seconds) shift the clock; "@2030-01-01 00:00:00" and
// "2030-01-01 00:00:00" set it.
func fakeNow(spec string, now time.Time) (time.Time, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return now, nil
	}
	if spec[0] == '+' || spec[0] == '-' {
		f := strings.Fields(spec)[0] // ignore a speed suffix such as " x2"
		unit := time.Second
		num := f[1:]
		if n := len(num); n > 0 {
			switch num[n-1] {
			case 's':
				num = num[:n-1]
			case 'm':
				unit, num = time.Minute, num[:n-1]
			case 'h':
				unit, num = time.Hour, num[:n-1]
			case 'd':
				unit, num = 24*time.Hour, num[:n-1]
			case 'y':
				unit, num = 365*24*time.Hour, num[:n-1]
			}
		}
		v, err := strconv.ParseFloat(num, 64)
		if err != nil {
			return now, fmt.Errorf("FAKETIME %q: %w", spec, err)
		}
		d := time.Duration(v * float64(unit))
		if f[0] == '-' {
			d = -d
		}
		return now.Add(d), nil
	}
	abs := strings.TrimPrefix(spec, "@")
	for _, layout := range []string{time.DateTime, time.DateOnly, time.RFC3339} {
		if t, err := time.ParseInLocation(layout, abs, time.UTC); err == nil {
			return t, nil
		}
	}
	return now, fmt.Errorf("FAKETIME %q: not a time this client understands", spec)
}
