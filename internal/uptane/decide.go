// Package uptane is Upkeep's Uptane layer over package tuf: the custom fields signed into
// image-repository targets (TargetCustom) and director targets (DirectorCustom), the per-device
// director views and the end-of-support Notice they carry, Decide (the Uptane Standard 5.4.4.2
// checks a device applies to verified metadata) and the typed VerificationError with its Reasons,
// which wraps go-tuf's errors.
package uptane

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/installpolicy"
	"upkeep.dev/upkeep/internal/tuf"
)

// Installed is what a device runs now.
type Installed struct {
	Target          string
	SHA256          string
	SecurityVersion int64
}

// Decision is the result of the Uptane checks on a device's director targets.
type Decision struct {
	Name   string                // target name; empty when nothing is assigned
	Info   *metadata.TargetFiles // the image repository's entry (length, hashes)
	Custom TargetCustom
	Noop   bool // the device already runs it
	// Install is the director's install policy for this assignment; nil: install at once.
	Install *installpolicy.Policy
}

// Decide applies the Uptane full-verification checks (Uptane Standard 5.4.4.2 steps 6-8 and the
// image checks of 5.4.4.6) to verified director targets. image looks a target up in the verified
// image repository; it returns an error if the target is absent. product is the device's own
// product: an image signed for another product is refused even on the same hardware.
func Decide(deviceID, hardwareID, product string, installed Installed, director map[string]*metadata.TargetFiles, image func(name string) (*metadata.TargetFiles, error)) (*Decision, error) {
	if len(director) == 0 {
		return &Decision{Noop: true}, nil
	}
	if len(director) > 1 {
		return nil, vfail(ReasonTooManyTargets, nil, fmt.Sprintf("director names %d targets, a device takes one", len(director)))
	}
	var name string
	var dt *metadata.TargetFiles
	for n, t := range director {
		name, dt = n, t
	}
	if err := tuf.ValidTargetName(name); err != nil {
		return nil, vfail(ReasonBadCustom, err, "director target")
	}
	if dt == nil {
		return nil, vfail(ReasonBadCustom, nil, fmt.Sprintf("director target %s is null", name))
	}
	var dc DirectorCustom
	if dt.Custom == nil {
		return nil, vfail(ReasonBadCustom, nil, fmt.Sprintf("director target %s has no device binding", name))
	}
	if err := json.Unmarshal(*dt.Custom, &dc); err != nil {
		return nil, vfail(ReasonBadCustom, err, fmt.Sprintf("director target %s has no device binding", name))
	}
	if dc.DeviceID != deviceID {
		return nil, vfail(ReasonNotForThisDevice, nil, fmt.Sprintf("director target %s is for device %q, this is %q", name, dc.DeviceID, deviceID))
	}
	if dc.HardwareID != hardwareID {
		return nil, vfail(ReasonHardware, nil, fmt.Sprintf("director target %s is for hardware %q, this is %q", name, dc.HardwareID, hardwareID))
	}
	it, err := image(name)
	if err == nil && it == nil {
		err = errors.New("null entry")
	}
	if err != nil {
		// A delegated role refused on the way (TUF 5.6.7: loaded during the search) says why;
		// anything else is a target no offline key signed.
		var ve *VerificationError
		reason := ReasonMissingTarget
		if errors.As(err, &ve) {
			reason = ve.Reason
		} else if r := MetadataReason(err); r != ReasonInvalidMetadata {
			reason = r
		}
		return nil, vfail(reason, err, fmt.Sprintf("target %s", name))
	}
	// Uptane 5.4.4.2 step 8: the director's target must match the image repository's exactly.
	if dt.Length != it.Length {
		return nil, vfail(ReasonMismatchImageDirector, nil, fmt.Sprintf("target %s: director length %d, image repository %d", name, dt.Length, it.Length))
	}
	if _, ok := it.Hashes[ImageHash]; !ok {
		return nil, vfail(ReasonMismatchImageDirector, nil, fmt.Sprintf("target %s: image repository has no %s", name, ImageHash))
	}
	if len(dt.Hashes) == 0 {
		return nil, vfail(ReasonMismatchImageDirector, nil, fmt.Sprintf("target %s: director names no hashes", name))
	}
	for alg, h := range dt.Hashes {
		ih, ok := it.Hashes[alg]
		if !ok || !slices.Equal(ih, h) {
			return nil, vfail(ReasonMismatchImageDirector, nil, fmt.Sprintf("target %s: director %s hash differs from the image repository", name, alg))
		}
	}
	c, err := ParseTargetCustom(it)
	if err != nil {
		return nil, vfail(ReasonBadCustom, err, fmt.Sprintf("target %s", name))
	}
	if !slices.Contains(c.HardwareIDs, hardwareID) {
		return nil, vfail(ReasonHardware, nil, fmt.Sprintf("target %s is for hardware %v, this is %q", name, c.HardwareIDs, hardwareID))
	}
	// The offline-signed custom names the product; the director alone (online key) cannot make
	// another product's image acceptable, whatever hardware id it shares.
	if c.Product != product {
		return nil, vfail(ReasonProduct, nil, fmt.Sprintf("target %s is for product %q, this is %q", name, c.Product, product))
	}
	d := &Decision{Name: name, Info: it, Custom: c, Install: dc.Install}
	if err := dc.Install.Validate(); err != nil {
		return nil, vfail(ReasonBadCustom, err, fmt.Sprintf("director target %s", name))
	}
	if name == installed.Target && it.Hashes["sha256"].String() == installed.SHA256 {
		d.Noop = true
		return d, nil
	}
	if c.SecurityVersion < installed.SecurityVersion {
		return nil, vfail(ReasonSecurityDowngrade, nil, fmt.Sprintf("target %s has security version %d, installed is %d", name, c.SecurityVersion, installed.SecurityVersion))
	}
	return d, nil
}
