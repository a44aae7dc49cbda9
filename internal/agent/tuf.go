package agent

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"

	"upkeep.dev/upkeep/internal/devclient"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
)

// TUFOptions configure a TUF metadata updater: the same verification code serves the agent's
// two repositories and the `upkeep-agent tuf-client` conformance entry point.
type TUFOptions struct {
	MetadataURL string // base URL of the metadata files
	MetadataDir string // trusted metadata, kept on persistent storage; must hold root.json
	HTTP        *http.Client
	Now         func() time.Time    // reference time for expiry checks; nil: the system clock
	client      *devclient.Client   // set by the agent: the device client
	token       devclient.TokenFunc // set by the agent: the device token for each request
}

// NewUpdater builds a go-tuf updater bound to ctx, trusting MetadataDir/root.json. It is used
// for metadata only: targets are streamed by the caller, bounded by the signed length.
func NewUpdater(ctx context.Context, o TUFOptions) (*updater.Updater, error) {
	root, err := os.ReadFile(filepath.Join(o.MetadataDir, rootFile))
	if err != nil {
		return nil, fmt.Errorf("trusted root: %w", err)
	}
	cfg, err := config.New(o.MetadataURL, root)
	if err != nil {
		return nil, fmt.Errorf("tuf config: %w", err)
	}
	cfg.LocalMetadataDir = o.MetadataDir
	cfg.LocalTargetsDir = filepath.Join(o.MetadataDir, "targets") // unused: targets are streamed
	c := o.client
	if c == nil {
		hc := o.HTTP
		if hc == nil {
			hc = &http.Client{Timeout: 5 * time.Minute}
		}
		c = &devclient.Client{HTTP: hc}
	}
	cfg.Fetcher = c.Fetcher(ctx, o.token)
	up, err := updater.New(cfg)
	if err != nil {
		return nil, &uptane.VerificationError{Reason: uptane.MetadataReason(err), Msg: "load trusted metadata in " + o.MetadataDir, Err: err}
	}
	if o.Now != nil {
		up.UnsafeSetRefTime(o.Now())
	}
	return up, nil
}

// TargetInfo finds the target name in the image repository an updater refreshed: go-tuf's
// search through the delegations (TUF 5.6.7), then the same search again over the metadata it
// trusted (tuf.Resolve), verifying every delegated role on the way against the delegator of
// this search. go-tuf keeps a role it loaded through one delegator for later searches that reach
// it through another; the second walk refuses such a copy unless the current delegator's
// threshold of keys signed it too.
func TargetInfo(up *updater.Updater, name string) (tf *metadata.TargetFiles, err error) {
	if err := tuf.Guard("image targets", func() (err error) { tf, err = up.GetTargetInfo(name); return err }); err != nil {
		return nil, err
	}
	set := up.GetTrustedMetadataSet()
	res, err := tuf.Resolve(set.Targets[metadata.TARGETS], name, func(role string) (*metadata.Metadata[metadata.TargetsType], error) {
		md, ok := set.Targets[role]
		if !ok {
			return nil, fmt.Errorf("role %s was not loaded", role)
		}
		return md, nil
	}, time.Time{})
	if err != nil {
		return nil, &uptane.VerificationError{Reason: uptane.MetadataReason(err), Msg: "target " + name + " through the delegations", Err: err}
	}
	if !res.Target.Equal(*tf) {
		return nil, &uptane.VerificationError{Reason: uptane.MetadataReason(err), Msg: "target " + name + " differs along the delegations of its search"}
	}
	return res.Target, nil
}
