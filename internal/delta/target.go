// Package delta sends the difference between two images instead of the whole image, with the
// guarantees of a full one. It has two forms: a per-pair binary delta (the upkdlt2 format:
// Generate, Applier) and a casync-compatible chunk index (MakeIndex, ReadIndex). Either is a
// target of the image repository, signed offline like an image, and bound in its custom
// (Binding) to the source and destination images' hashes; the director only hints at one (Hint)
// and the device always checks the rebuilt image against the signed image target.
//
// The package imports the standard library and ulikunitz/xz's LZMA2 only: the device
// agent links it.
package delta

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
)

// CustomField is the key of the binding in a delta target's custom object, which holds nothing
// else (uptane.NewDeltaTargetFile). Delta targets signed before that carry the destination
// image's custom fields besides (WithBinding); servers and agents accept both.
const CustomField = "delta"

// Binding is what the offline key signs about a delta target: what it rebuilds, and from what.
type Binding struct {
	Format string `json:"format"` // FormatPatch or FormatCaibx
	// Image is the destination image's target name, and its signed length and SHA-256.
	Image       string `json:"image"`
	ImageSHA256 string `json:"image_sha256"`
	ImageLength int64  `json:"image_length"`
	// Source is the image a patch applies to (FormatPatch only).
	Source       string `json:"source,omitempty"`
	SourceSHA256 string `json:"source_sha256,omitempty"`
	SourceLength int64  `json:"source_length,omitempty"`
}

// Validate checks a binding's fields.
func (b *Binding) Validate() error {
	if b.Image == "" || !isSHA256(b.ImageSHA256) || b.ImageLength < 0 {
		return errors.New("delta binding: destination image, sha256 and length required")
	}
	switch b.Format {
	case FormatCaibx:
		if b.Source != "" || b.SourceSHA256 != "" {
			return errors.New("delta binding: a chunk index has no source")
		}
	case FormatPatch:
		if b.Source == "" || !isSHA256(b.SourceSHA256) || b.SourceLength < 0 {
			return errors.New("delta binding: a patch names its source image, sha256 and length")
		}
	default:
		return fmt.Errorf("delta binding: unknown format %q", b.Format)
	}
	return nil
}

func isSHA256(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == 32
}

// ParseBinding reads the binding of a target's custom object: nil if it has none (an image).
func ParseBinding(custom []byte) (*Binding, error) {
	if len(custom) == 0 {
		return nil, nil
	}
	var c struct {
		Delta *Binding `json:"delta"`
	}
	if err := json.Unmarshal(custom, &c); err != nil {
		return nil, fmt.Errorf("custom: %w", err)
	}
	if c.Delta == nil {
		return nil, nil
	}
	return c.Delta, c.Delta.Validate()
}

// WithBinding returns custom (an image's custom object) with b added: the custom object of delta
// targets as they were signed before uptane.NewDeltaTargetFile, still accepted everywhere.
func WithBinding(custom []byte, b *Binding) ([]byte, error) {
	m := map[string]json.RawMessage{}
	if len(custom) > 0 {
		if err := json.Unmarshal(custom, &m); err != nil {
			return nil, err
		}
	}
	raw, err := json.Marshal(b)
	if err != nil {
		return nil, err
	}
	m[CustomField] = raw
	return json.Marshal(m)
}

// Target is a delta target of the image repository: its name, signed length and SHA-256, and
// its binding.
type Target struct {
	Name    string
	Length  int64
	SHA256  string
	Binding Binding
}

// Hint is what the director tells one device, in its signed director target's custom
// ("delta"): a delta it may use instead of the full image. The hint is only a hint: the device
// reads the delta target (and the source index) from the image repository, checks the
// offline-signed binding against its installed image and the image it was assigned, and falls
// back to the full image whenever anything disagrees.
type Hint struct {
	Format string `json:"format"`
	Target string `json:"target"` // the patch, or the destination's chunk index
	// SourceIndex is the chunk index of the device's installed image (FormatCaibx): where the
	// chunks it already has lie in its active slot.
	SourceIndex string `json:"source_index,omitempty"`
}

// Choose picks the delta for a device that runs an image with SHA-256 installed and is
// assigned image: the smallest patch from exactly its installed image, else the chunk index of
// image when the installed image has one too, else nil (the full image).
func Choose(installed, image string, targets []Target) *Hint {
	if installed == "" {
		return nil
	}
	var patch *Target
	var dstIndex, srcIndex string
	for i := range targets {
		t := &targets[i]
		b := &t.Binding
		switch {
		case b.Format == FormatPatch && b.Image == image && b.SourceSHA256 == installed:
			if patch == nil || t.Length < patch.Length {
				patch = t
			}
		case b.Format == FormatCaibx && b.Image == image:
			dstIndex = t.Name
		case b.Format == FormatCaibx && b.ImageSHA256 == installed:
			srcIndex = t.Name
		}
	}
	switch {
	case patch != nil:
		return &Hint{Format: FormatPatch, Target: patch.Name}
	case dstIndex != "" && srcIndex != "":
		return &Hint{Format: FormatCaibx, Target: dstIndex, SourceIndex: srcIndex}
	}
	return nil
}

// PatchName is the target name of the patch from source version from to image name
// ("product/version/file"): "product/version/file.from-FROM.upkdlt2".
func PatchName(image, from string) string { return image + ".from-" + from + "." + FormatPatch }

// IndexName is the target name of image's chunk index.
func IndexName(image string) string { return image + "." + FormatCaibx }
