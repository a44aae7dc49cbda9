package uptane

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/installpolicy"
	"upkeep.dev/upkeep/internal/tuf"
)

// DirectorView is the signed per-device director metadata: targets, snapshot and timestamp.
type DirectorView struct {
	Version                      int64
	Targets, Snapshot, Timestamp []byte
	Expires                      time.Time
}

// SignDirectorView signs version v of a device's director metadata. target may be nil (no
// assignment). All three roles use the online director key.
func SignDirectorView(key *tuf.Key, v int64, expires time.Time, deviceID, hardwareID, name string, target *metadata.TargetFiles) (*DirectorView, error) {
	return SignDirectorViewNotice(key, v, expires, deviceID, hardwareID, name, target, nil)
}

// SignDirectorViewNotice is SignDirectorView with a lifecycle notice for the device.
func SignDirectorViewNotice(key *tuf.Key, v int64, expires time.Time, deviceID, hardwareID, name string, target *metadata.TargetFiles, notice *Notice) (*DirectorView, error) {
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
	Install              *installpolicy.Policy
	Delta                json.RawMessage // the delta hint for this device (delta.Hint), or nil
}

// SignView signs a device's director view: targets, snapshot and timestamp.
func SignView(key *tuf.Key, spec ViewSpec) (*DirectorView, error) {
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
	tb, err := tuf.SignTargets(t, key)
	if err != nil {
		return nil, err
	}
	st, err := tuf.SignSnapshotTimestamp(key, key, v, v, expires, expires)
	if err != nil {
		return nil, err
	}
	return &DirectorView{Version: v, Targets: tb, Snapshot: st.Snapshot, Timestamp: st.Timestamp, Expires: expires}, nil
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
