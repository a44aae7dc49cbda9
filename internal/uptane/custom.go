package uptane

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/delta"
	"upkeep.dev/upkeep/internal/installpolicy"
	"upkeep.dev/upkeep/internal/tuf"
)

// Update classes.
const (
	ClassSecurity = "security"
	ClassFeature  = "feature"
)

// TargetCustom is the custom object of an image-repository target, signed offline.
type TargetCustom struct {
	Product         string   `json:"product"`
	HardwareIDs     []string `json:"hardware_ids"`
	Version         string   `json:"version"`
	SecurityVersion int64    `json:"security_version"` // monotonic, anti-rollback
	Class           string   `json:"class"`            // security | feature
	Fixes           []string `json:"fixes,omitempty"`  // advisory ids this release fixes
	// SBOM is the SHA-256 (hex) of the release's SBOM, so that the targets signature binds
	// what the image contains, as the SBOM says, to the image.
	SBOM string `json:"sbom_sha256,omitempty"`
	// ArtifactType is what the bytes are: "" or "raw" (an image for the Upkeep agent), "swu" (an
	// SWUpdate bundle) or "raucb" (a RAUC bundle), for DDI clients (internal/ddi).
	ArtifactType string `json:"artifact_type,omitempty"`
}

// Artifact types of TargetCustom.ArtifactType.
const (
	ArtifactRaw   = "raw"
	ArtifactSWU   = "swu"
	ArtifactRAUCB = "raucb"
)

// Validate checks the custom fields.
func (c TargetCustom) Validate() error {
	if err := tuf.ValidIdent("product", c.Product); err != nil {
		return err
	}
	if err := tuf.ValidIdent("version", c.Version); err != nil {
		return err
	}
	if len(c.HardwareIDs) == 0 {
		return errors.New("no hardware ids")
	}
	for _, h := range c.HardwareIDs {
		if err := tuf.ValidIdent("hardware id", h); err != nil {
			return err
		}
	}
	if c.SecurityVersion < 0 {
		return fmt.Errorf("negative security version %d", c.SecurityVersion)
	}
	if c.Class != ClassSecurity && c.Class != ClassFeature {
		return fmt.Errorf("class %q: want %s or %s", c.Class, ClassSecurity, ClassFeature)
	}
	switch c.ArtifactType {
	case "", ArtifactRaw, ArtifactSWU, ArtifactRAUCB:
	default:
		return fmt.Errorf("artifact type %q: want %s, %s or %s", c.ArtifactType, ArtifactSWU, ArtifactRAUCB, ArtifactRaw)
	}
	return nil
}

// ParseTargetCustom reads and validates the Upkeep fields of an image target.
func ParseTargetCustom(tf *metadata.TargetFiles) (TargetCustom, error) {
	var c TargetCustom
	if tf.Custom == nil {
		return c, errors.New("missing custom fields")
	}
	if err := json.Unmarshal(*tf.Custom, &c); err != nil {
		return c, fmt.Errorf("custom fields: %w", err)
	}
	return c, c.Validate()
}

// ImageHash is the digest that binds an image's bytes to its signed targets entry: Decide
// refuses a target whose image-repository entry lacks it, and the agent computes it over the
// bytes it downloads and compares it with the signed value before anything is installed.
// Releases carry SHA-512 as well (NewTargetFile), which the agent does not compute
// (docs/DECISIONS.md). The update-capability declaration states this algorithm
// (transparency.PlatformMechanism), so that it claims what the device checks.
const ImageHash = "sha256"

// NewTargetFile builds an image target entry.
func NewTargetFile(length int64, sha256hex, sha512hex string, c TargetCustom) (*metadata.TargetFiles, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	tf := metadata.TargetFile()
	tf.Length = length
	tf.Hashes = metadata.Hashes{}
	for alg, h := range map[string]string{"sha256": sha256hex, "sha512": sha512hex} {
		b, err := hexBytes(h)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", alg, err)
		}
		tf.Hashes[alg] = b
	}
	tf.Custom = marshalCustom(c)
	return tf, nil
}

// NewDeltaTargetFile builds a delta target entry (a patch or a chunk index): its length and
// SHA-256, and a custom object that holds only its binding, {"delta": b}. What it rebuilds is
// the bound image target, whose own entry carries the release's fields; repeating them, and a
// SHA-512 that no device computes, would cost ~310 bytes a release in the product's role that
// every device of the product downloads (docs/DECISIONS.md, "Delegated targets per product").
func NewDeltaTargetFile(length int64, sha256hex string, b *delta.Binding) (*metadata.TargetFiles, error) {
	if err := b.Validate(); err != nil {
		return nil, err
	}
	h, err := hexBytes(sha256hex)
	if err != nil {
		return nil, fmt.Errorf("sha256: %w", err)
	}
	custom, err := json.Marshal(map[string]*delta.Binding{delta.CustomField: b})
	if err != nil {
		return nil, err
	}
	raw := json.RawMessage(custom)
	tf := metadata.TargetFile()
	tf.Length = length
	tf.Hashes = metadata.Hashes{"sha256": h}
	tf.Custom = &raw
	return tf, nil
}

// DirectorCustom is the custom object of a director target: the device it is meant for.
type DirectorCustom struct {
	DeviceID   string                `json:"device_id"`
	HardwareID string                `json:"hardware_id"`
	Install    *installpolicy.Policy `json:"install,omitempty"`
	// Delta is the director's delta hint (delta.Hint): only a hint, checked by the device
	// against the offline-signed delta target.
	Delta json.RawMessage `json:"delta,omitempty"`
}

// VerifyImageTargets checks image-repository targets metadata against root: the TUF checks of
// tuf.VerifyTargets (signatures, expiry at now, target names), then Upkeep's custom fields,
// which every image target must carry valid.
func VerifyImageTargets(root *metadata.Metadata[metadata.RootType], data []byte, now time.Time) (*metadata.Metadata[metadata.TargetsType], error) {
	t, err := tuf.VerifyTargets(root, data, now)
	if err != nil {
		return nil, err
	}
	if err := checkCustoms(t); err != nil {
		return nil, err
	}
	return t, nil
}

// VerifyImageTargetsSigned is VerifyImageTargets without the expiry check: the release CLI and
// the server extend or re-sign the current targets even after they expired, since only a new
// offline signature can renew them. Anything a device trusts is still checked with expiry.
func VerifyImageTargetsSigned(root *metadata.Metadata[metadata.RootType], data []byte) (*metadata.Metadata[metadata.TargetsType], error) {
	return VerifyImageTargets(root, data, time.Time{})
}

// CheckImageCustoms checks that every target of image-repository targets metadata (top-level
// or delegated) carries valid Upkeep custom fields: an image's TargetCustom, or a delta
// target's binding (with or without the image's fields, which delta targets signed before
// NewDeltaTargetFile repeat).
func CheckImageCustoms(t *metadata.Metadata[metadata.TargetsType]) error { return checkCustoms(t) }

func checkCustoms(t *metadata.Metadata[metadata.TargetsType]) error {
	return tuf.Guard("targets", func() error {
		for name, tf := range t.Signed.Targets {
			if tf == nil {
				return fmt.Errorf("target %s: null entry", name)
			}
			if tf.Custom != nil {
				if b, err := delta.ParseBinding(*tf.Custom); err != nil {
					return fmt.Errorf("target %s: %w", name, err)
				} else if b != nil {
					continue
				}
			}
			if _, err := ParseTargetCustom(tf); err != nil {
				return fmt.Errorf("target %s: %w", name, err)
			}
		}
		return nil
	})
}

func hexBytes(s string) (metadata.HexBytes, error) {
	h, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("bad hex digest %q: %w", s, err)
	}
	if len(h) == 0 {
		return nil, errors.New("empty digest")
	}
	return metadata.HexBytes(h), nil
}

func marshalCustom(v any) *json.RawMessage {
	b, _ := json.Marshal(v) // plain structs cannot fail
	raw := json.RawMessage(b)
	return &raw
}
