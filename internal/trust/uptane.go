package trust

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
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
}

// Validate checks the custom fields.
func (c TargetCustom) Validate() error {
	if err := ValidIdent("product", c.Product); err != nil {
		return err
	}
	if err := ValidIdent("version", c.Version); err != nil {
		return err
	}
	if len(c.HardwareIDs) == 0 {
		return errors.New("no hardware ids")
	}
	for _, h := range c.HardwareIDs {
		if err := ValidIdent("hardware id", h); err != nil {
			return err
		}
	}
	if c.SecurityVersion < 0 {
		return fmt.Errorf("negative security version %d", c.SecurityVersion)
	}
	if c.Class != ClassSecurity && c.Class != ClassFeature {
		return fmt.Errorf("class %q: want %s or %s", c.Class, ClassSecurity, ClassFeature)
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

// DirectorCustom is the custom object of a director target: the device it is meant for.
type DirectorCustom struct {
	DeviceID   string         `json:"device_id"`
	HardwareID string         `json:"hardware_id"`
	Install    *InstallPolicy `json:"install,omitempty"`
	// Delta is the director's delta hint (delta.Hint): only a hint, checked by the device
	// against the offline-signed delta target.
	Delta json.RawMessage `json:"delta,omitempty"`
}

// InstallPolicy tells a device when it may install its assigned image. It is signed with the
// director's targets, so a network attacker cannot waive consent or a maintenance window.
type InstallPolicy struct {
	Campaign     string `json:"campaign,omitempty"`
	Consent      bool   `json:"consent,omitempty"`       // wait for the owner's consent
	Window       string `json:"window,omitempty"`        // HH:MM-HH:MM UTC; empty: the device's own
	IgnoreWindow bool   `json:"ignore_window,omitempty"` // critical: install outside any window
}

// ParseWindow parses a maintenance window "HH:MM-HH:MM" into minutes after midnight. A window
// whose end is before its start spans midnight.
func ParseWindow(s string) (start, end int, err error) {
	a, b, ok := strings.Cut(s, "-")
	if ok {
		if start, err = hhmm(a); err == nil {
			end, err = hhmm(b)
		}
	}
	if !ok || err != nil || start == end {
		return 0, 0, fmt.Errorf("maintenance window %q: want HH:MM-HH:MM, start and end different", s)
	}
	return start, end, nil
}

func hhmm(s string) (int, error) {
	t, err := time.Parse("15:04", strings.TrimSpace(s))
	if err != nil {
		return 0, err
	}
	return t.Hour()*60 + t.Minute(), nil
}

// InWindow reports whether t (taken in UTC) falls inside the window.
func InWindow(window string, t time.Time) bool {
	start, end, err := ParseWindow(window)
	if err != nil {
		return true // no valid window: no restriction
	}
	t = t.UTC()
	m := t.Hour()*60 + t.Minute()
	if start < end {
		return m >= start && m < end
	}
	return m >= start || m < end
}

// DirectorView is the signed per-device director metadata: targets, snapshot and timestamp.
type DirectorView struct {
	Version                      int64
	Targets, Snapshot, Timestamp []byte
	Expires                      time.Time
}

// Notice is what the director tells a device about its product's lifecycle. It travels in the
// director's signed targets metadata (an extra field of "signed", covered by the signature), so a
// device can trust it as much as its update instructions.
type Notice struct {
	Product      string `json:"product"`
	EndOfSupport string `json:"end_of_support"` // YYYY-MM-DD: last day of security updates
	Message      string `json:"message,omitempty"`
}

// NoticeField is the name of the notice in the director's signed targets.
const NoticeField = "upkeep_notice"

// ReadNotice returns the notice in verified director targets, or nil if there is none.
func ReadNotice(t *metadata.TargetsType) (*Notice, error) {
	raw, ok := t.UnrecognizedFields[NoticeField]
	if !ok || raw == nil {
		return nil, nil
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, fmt.Errorf("notice: %w", err)
	}
	var n Notice
	if err := json.Unmarshal(b, &n); err != nil {
		return nil, fmt.Errorf("notice: %w", err)
	}
	if _, err := time.Parse(time.DateOnly, n.EndOfSupport); err != nil {
		return nil, fmt.Errorf("notice: end of support %q: %w", n.EndOfSupport, err)
	}
	return &n, nil
}

// SignDirectorView signs version v of a device's director metadata. target may be nil (no
// assignment). All three roles use the online director key.
func SignDirectorView(key *Key, v int64, expires time.Time, deviceID, hardwareID, name string, target *metadata.TargetFiles) (*DirectorView, error) {
	return SignDirectorViewNotice(key, v, expires, deviceID, hardwareID, name, target, nil)
}

// SignDirectorViewNotice is SignDirectorView with a lifecycle notice for the device.
func SignDirectorViewNotice(key *Key, v int64, expires time.Time, deviceID, hardwareID, name string, target *metadata.TargetFiles, notice *Notice) (*DirectorView, error) {
	return SignView(key, ViewSpec{Version: v, Expires: expires, DeviceID: deviceID, HardwareID: hardwareID, Name: name, Target: target, Notice: notice})
}

// ViewSpec is what a director view says to one device.
type ViewSpec struct {
	Version              int64
	Expires              time.Time
	DeviceID, HardwareID string
	Name                 string                // target name; empty: nothing assigned
	Target               *metadata.TargetFiles // the image repository's entry for Name
	Notice               *Notice
	Install              *InstallPolicy
	Delta                json.RawMessage // the delta hint for this device (delta.Hint), or nil
}

// SignView signs a device's director view: targets, snapshot and timestamp.
func SignView(key *Key, spec ViewSpec) (*DirectorView, error) {
	v, expires, name, target, notice := spec.Version, spec.Expires, spec.Name, spec.Target, spec.Notice
	expires = expires.UTC().Truncate(time.Second)
	t := metadata.Targets(expires)
	t.Signed.Version = v
	if notice != nil {
		t.Signed.UnrecognizedFields = map[string]any{NoticeField: notice}
	}
	if target != nil {
		tf := metadata.TargetFile()
		tf.Length = target.Length
		tf.Hashes = target.Hashes
		tf.Custom = marshalCustom(DirectorCustom{DeviceID: spec.DeviceID, HardwareID: spec.HardwareID, Install: spec.Install, Delta: spec.Delta})
		tf.Path = name
		t.Signed.Targets[name] = tf
	}
	tb, err := SignTargets(t, key)
	if err != nil {
		return nil, err
	}
	st, err := SignSnapshotTimestamp(key, key, v, v, expires, expires)
	if err != nil {
		return nil, err
	}
	return &DirectorView{Version: v, Targets: tb, Snapshot: st.Snapshot, Timestamp: st.Timestamp, Expires: expires}, nil
}

// Kinds of verification failure. Each is fatal for the update that caused it.
const (
	FailWrongDevice = "wrong_device" // director metadata names another device
	FailTooMany     = "too_many_targets"
	FailNotInImage  = "not_in_image_repo" // arbitrary software: not signed by the offline keys
	FailMismatch    = "target_mismatch"   // mix-and-match: director and image repo disagree
	FailHardware    = "bad_hardware_id"
	FailProduct     = "wrong_product" // an image signed for another product
	FailRollback    = "rollback"
	FailBadCustom   = "bad_custom"
	FailHash        = "hash_mismatch"
	FailLength      = "length_mismatch"
	FailMetadata    = "metadata" // TUF metadata refresh failed verification
)

// VerificationError is a failed Uptane or TUF check. It is always fatal for the update.
type VerificationError struct {
	Kind string
	Msg  string
}

func (e *VerificationError) Error() string { return "verification failed (" + e.Kind + "): " + e.Msg }

func vfail(kind, format string, args ...any) error {
	return &VerificationError{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

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
	Install *InstallPolicy
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
		return nil, vfail(FailTooMany, "director names %d targets, a device takes one", len(director))
	}
	var name string
	var dt *metadata.TargetFiles
	for n, t := range director {
		name, dt = n, t
	}
	if err := ValidTargetName(name); err != nil {
		return nil, vfail(FailBadCustom, "%v", err)
	}
	if dt == nil {
		return nil, vfail(FailBadCustom, "director target %s is null", name)
	}
	var dc DirectorCustom
	if dt.Custom == nil || json.Unmarshal(*dt.Custom, &dc) != nil {
		return nil, vfail(FailBadCustom, "director target %s has no device binding", name)
	}
	if dc.DeviceID != deviceID {
		return nil, vfail(FailWrongDevice, "director target %s is for device %q, this is %q", name, dc.DeviceID, deviceID)
	}
	if dc.HardwareID != hardwareID {
		return nil, vfail(FailHardware, "director target %s is for hardware %q, this is %q", name, dc.HardwareID, hardwareID)
	}
	it, err := image(name)
	if err == nil && it == nil {
		err = errors.New("null entry")
	}
	if err != nil {
		return nil, vfail(FailNotInImage, "target %s is not in the image repository: %v", name, err)
	}
	// Uptane 5.4.4.2 step 8: the director's target must match the image repository's exactly.
	if dt.Length != it.Length {
		return nil, vfail(FailMismatch, "target %s: director length %d, image repository %d", name, dt.Length, it.Length)
	}
	if _, ok := it.Hashes[ImageHash]; !ok {
		return nil, vfail(FailMismatch, "target %s: image repository has no %s", name, ImageHash)
	}
	if len(dt.Hashes) == 0 {
		return nil, vfail(FailMismatch, "target %s: director names no hashes", name)
	}
	for alg, h := range dt.Hashes {
		ih, ok := it.Hashes[alg]
		if !ok || !slices.Equal(ih, h) {
			return nil, vfail(FailMismatch, "target %s: director %s hash differs from the image repository", name, alg)
		}
	}
	c, err := ParseTargetCustom(it)
	if err != nil {
		return nil, vfail(FailBadCustom, "target %s: %v", name, err)
	}
	if !slices.Contains(c.HardwareIDs, hardwareID) {
		return nil, vfail(FailHardware, "target %s is for hardware %v, this is %q", name, c.HardwareIDs, hardwareID)
	}
	// The offline-signed custom names the product; the director alone (online key) cannot make
	// another product's image acceptable, whatever hardware id it shares.
	if c.Product != product {
		return nil, vfail(FailProduct, "target %s is for product %q, this is %q", name, c.Product, product)
	}
	d := &Decision{Name: name, Info: it, Custom: c, Install: dc.Install}
	if dc.Install != nil && dc.Install.Window != "" {
		if _, _, err := ParseWindow(dc.Install.Window); err != nil {
			return nil, vfail(FailBadCustom, "director target %s: %v", name, err)
		}
	}
	if name == installed.Target && it.Hashes["sha256"].String() == installed.SHA256 {
		d.Noop = true
		return d, nil
	}
	if c.SecurityVersion < installed.SecurityVersion {
		return nil, vfail(FailRollback, "target %s has security version %d, installed is %d", name, c.SecurityVersion, installed.SecurityVersion)
	}
	return d, nil
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
