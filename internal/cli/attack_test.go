package cli

// Attack tests: the server is fully compromised. It holds the online keys (image snapshot and
// timestamp, director) and can store and serve anything, but it does not hold the offline root
// and targets keys. Every attack must leave the device on the image it runs, and the device must
// report a fatal failure to the server.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/agent"
	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/imagerepo"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/sim"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/wire"
)

// shiftClock is the server's clock: real time shifted by an offset that a test moves.
type shiftClock struct{ offset atomic.Int64 }

func (c *shiftClock) Now() time.Time         { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *shiftClock) Shift(by time.Duration) { c.offset.Store(int64(by)) }

// attackFixture is a server with release 1.0.0 (security version 1) and one device running it
// that has already completed one full, uneventful verification.
type attackFixture struct {
	*env
	t     *testing.T
	ctx   context.Context
	clock *shiftClock
	dev   *sim.Device
	id    string
	r100  *wire.Release
}

func newAttackFixture(t *testing.T, configure func(*server.Config)) *attackFixture {
	t.Helper()
	clock := &shiftClock{}
	e := newEnvWith(t, func(c *server.Config) {
		c.Now = clock.Now
		if configure != nil {
			configure(c)
		}
	})
	f := &attackFixture{env: e, t: t, ctx: context.Background(), clock: clock}
	v100 := image("1.0.0", 64<<10)
	f.r100 = e.publish("1.0.0", 1, v100)
	f.dev = e.device("SN-1", v100, f.r100)
	f.id = f.dev.Agent.State().DeviceID
	if err := f.dev.Agent.Cycle(f.ctx); err != nil {
		t.Fatalf("first cycle: %v", err)
	}
	if st := f.dev.Agent.State(); st.DirectorVersion == 0 || st.Installed.Version != "1.0.0" {
		t.Fatalf("after the first cycle the device holds director version %d and runs %+v", st.DirectorVersion, st.Installed)
	}
	return f
}

func (f *attackFixture) key(file string) *tuf.Key {
	f.t.Helper()
	k, err := tuf.LoadKey(filepath.Join(f.keys, file))
	if err != nil {
		f.t.Fatal(err)
	}
	return k
}

func (f *attackFixture) fleetDevice() *fleet.Device {
	f.t.Helper()
	d, err := f.srv.DB.FindDevice(f.ctx, f.id)
	if err != nil {
		f.t.Fatal(err)
	}
	return d
}

// imageEntry is the image repository's current entry for a target.
func (f *attackFixture) imageEntry(name string) *metadata.TargetFiles {
	f.t.Helper()
	b, err := f.srv.Images.CurrentTargets(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	t, err := metadata.Targets().FromBytes(b)
	if err != nil {
		f.t.Fatal(err)
	}
	tf := t.Signed.Targets[name]
	if tf == nil {
		f.t.Fatalf("image repository has no target %s", name)
	}
	return tf
}

// signDirector plays the compromised director: it signs a view for the device naming any target.
func (f *attackFixture) signDirector(name string, tf *metadata.TargetFiles) {
	f.t.Helper()
	if err := f.srv.Director.SignView(f.ctx, f.fleetDevice(), name, tf); err != nil {
		f.t.Fatal(err)
	}
}

// update deploys rel legitimately and runs a cycle, which must install it.
func (f *attackFixture) update(rel *wire.Release) {
	f.t.Helper()
	f.deploy(rel, f.id)
	if err := f.dev.Agent.Cycle(f.ctx); err != nil {
		f.t.Fatalf("legitimate update to %s: %v", rel.Version, err)
	}
	f.requireRunning(rel)
}

// requireTUFCause checks that a verification failure for a TUF metadata reason wraps go-tuf's
// typed error for it, reachable with errors.Is (go-tuf's error types match their subsets).
func requireTUFCause(t testing.TB, err error, r uptane.Reason) {
	t.Helper()
	var cause error
	switch r {
	case uptane.ReasonVersionRollback:
		cause = &metadata.ErrBadVersionNumber{}
	case uptane.ReasonExpired:
		cause = &metadata.ErrExpiredMetadata{}
	case uptane.ReasonThreshold:
		cause = &metadata.ErrUnsignedMetadata{}
	case uptane.ReasonMalformed:
		cause = &metadata.ErrValue{}
	default:
		return
	}
	if !errors.Is(err, cause) {
		t.Errorf("%v does not wrap go-tuf's %T", err, cause)
	}
}

func (f *attackFixture) requireRunning(rel *wire.Release) {
	f.t.Helper()
	st := f.dev.Agent.State()
	if st.Installed.Version != rel.Version || st.Installed.SHA256 != rel.SHA256 || st.Phase != agent.PhaseIdle {
		f.t.Fatalf("device runs %+v in phase %s (last error %q), want %s idle", st.Installed, st.Phase, st.LastError, rel.Version)
	}
	got, err := f.dev.ActiveImageSHA256(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	if got != rel.SHA256 {
		f.t.Fatalf("active slot holds %s, want %s (%s)", got, rel.SHA256, rel.Version)
	}
}

// requireRefused checks that the agent refused an attack: err is a verification failure for
// the given reason (wrapping go-tuf's error of that kind, for the metadata reasons), the device still runs stay from a committed slot, and the server holds a fatal
// failure event for step.
func (f *attackFixture) requireRefused(err error, kind uptane.Reason, step string, stay *wire.Release) {
	f.t.Helper()
	if err == nil {
		f.t.Fatalf("the agent did not refuse the attack (state %+v)", f.dev.Agent.State())
	}
	var ve *uptane.VerificationError
	if !errors.As(err, &ve) {
		f.t.Fatalf("the agent failed with %v, want a verification failure (%s)", err, kind)
	}
	if ve.Reason != kind || !errors.Is(err, kind) {
		f.t.Errorf("verification failure %q (%v), want %q", ve.Reason, err, kind)
	}
	requireTUFCause(f.t, err, kind)
	st := f.dev.Agent.State()
	if st.Installed.Version != stay.Version || st.Installed.SHA256 != stay.SHA256 || st.Installed.SecurityVersion != stay.SecurityVersion {
		f.t.Errorf("device now runs %+v, want %s unchanged", st.Installed, stay.Version)
	}
	if st.Phase != agent.PhaseIdle || st.Pending != nil {
		f.t.Errorf("device phase %s, pending %+v; want idle with nothing pending", st.Phase, st.Pending)
	}
	if st.LastError == "" {
		f.t.Error("device recorded no last error")
	}
	f.t.Logf("refused: %s", st.LastError)
	if len(st.Outbox) != 0 {
		f.t.Errorf("%d events were not reported: %+v", len(st.Outbox), st.Outbox)
	}
	got, e := f.dev.ActiveImageSHA256(f.ctx)
	if e != nil {
		f.t.Fatal(e)
	}
	if got != stay.SHA256 {
		f.t.Errorf("active slot holds %s, want %s (%s)", got, stay.SHA256, stay.Version)
	}
	bs, e := f.dev.Boot.State(f.ctx)
	if e != nil {
		f.t.Fatal(e)
	}
	if bs.Trying || bs.Booted != bs.Committed {
		f.t.Errorf("boot loader %+v: a trial boot was armed", bs)
	}
	f.requireFatalEvent(f.id, step)
	devs, e := f.cli.Devices(f.ctx, "")
	if e != nil {
		f.t.Fatal(e)
	}
	for _, d := range devs {
		if d.ID == f.id && (d.Installed.Version != stay.Version || d.State != agent.PhaseIdle || d.LastError == "") {
			f.t.Errorf("server sees the device as %+v, want %s idle with an error", d, stay.Version)
		}
	}
}

func (f *attackFixture) requireFatalEvent(id, step string) {
	f.t.Helper()
	evs, err := f.cli.Events(f.ctx, id)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Fatal && ev.Status == wire.StatusFailed && ev.Step == step {
			return
		}
	}
	f.t.Errorf("the server has no fatal %q failure event for %s; events: %+v", step, id, evs)
}

// requireFatalEventFor is requireFatalEvent for a failure the server must count against the
// named target (and so against the campaign that assigned it).
func (f *attackFixture) requireFatalEventFor(id, step, target string) {
	f.t.Helper()
	evs, err := f.cli.Events(f.ctx, id)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Fatal && ev.Status == wire.StatusFailed && ev.Step == step && ev.Target == target {
			return
		}
	}
	f.t.Errorf("the server has no fatal %q failure event for %s naming target %s; events: %+v", step, id, target, evs)
}

// overwriteBlob replaces the stored artifact's bytes on disk, as a compromised server can.
func (f *attackFixture) overwriteBlob(sha string, b []byte) {
	f.t.Helper()
	if err := os.WriteFile(f.blobPath(sha), b, 0o600); err != nil {
		f.t.Fatal(err)
	}
}

func artifactDigests(b []byte) (sha256hex, sha512hex string) {
	h256, h512 := sha256.Sum256(b), sha512.Sum512(b)
	return hex.EncodeToString(h256[:]), hex.EncodeToString(h512[:])
}

// directorEntryFor is a director-style target entry (length and both hashes) for b.
func directorEntryFor(b []byte) *metadata.TargetFiles {
	h256, h512 := sha256.Sum256(b), sha512.Sum512(b)
	tf := metadata.TargetFile()
	tf.Length = int64(len(b))
	tf.Hashes = metadata.Hashes{"sha256": h256[:], "sha512": h512[:]}
	return tf
}

var attackHTTP = &http.Client{Timeout: 30 * time.Second}

// call sends a raw request to the server and returns the status and body.
func (f *attackFixture) call(method, path, token string, body []byte) (int, []byte) {
	f.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(f.ctx, method, f.srv.URL+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := attackHTTP.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp.StatusCode, b
}

func attackJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// requireAPIRefusal checks a 4xx answer carrying the given apperr code.
func requireAPIRefusal(t *testing.T, what string, status int, body []byte, code apperr.Code) {
	t.Helper()
	var we wire.Error
	_ = json.Unmarshal(body, &we)
	if status < 400 || status > 499 || we.Code != string(code) {
		t.Errorf("%s: server answered %d %s, want 4xx %s", what, status, bytes.TrimSpace(body), code)
	}
}

// 1. Arbitrary software by replacing the artifact's bytes: the hash check while streaming stops it.
func TestAttackTamperedArtifact(t *testing.T) {
	t.Parallel()
	f := newAttackFixture(t, nil)
	v101 := image("1.0.1", 80<<10)
	r101 := f.publish("1.0.1", 2, v101)
	evil := bytes.Clone(v101)
	copy(evil[len(evil)/2:], "EVIL PAYLOAD, SAME LENGTH")
	f.overwriteBlob(r101.SHA256, evil)
	f.deploy(r101, f.id)

	err := f.dev.Agent.Cycle(f.ctx)
	f.requireRefused(err, uptane.ReasonHashMismatch, wire.StepDownload, f.r100)
	if st := f.dev.Agent.State(); st.FailedTarget != r101.Target {
		t.Errorf("failed target %q, want %s", st.FailedTarget, r101.Target)
	}
	// The image is not retried blindly.
	if err := f.dev.Agent.Update(f.ctx); err != nil {
		t.Fatalf("second update: %v", err)
	}
	f.requireRunning(f.r100)
}

// forgeTargets builds the next image targets metadata with an extra evil target, signed with keys
// that are not the offline targets key.
func (f *attackFixture) forgeTargets(evil []byte, version string, keys ...*tuf.Key) (name string, tf *metadata.TargetFiles, signed []byte, ver int64) {
	f.t.Helper()
	cur, err := f.srv.Images.CurrentTargets(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	t, err := metadata.Targets().FromBytes(cur)
	if err != nil {
		f.t.Fatal(err)
	}
	s256, s512 := artifactDigests(evil)
	tf, err = uptane.NewTargetFile(int64(len(evil)), s256, s512, uptane.TargetCustom{
		Product: testProduct, HardwareIDs: []string{testHardware}, Version: version, SecurityVersion: 99, Class: uptane.ClassSecurity,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	name = tuf.TargetName(testProduct, version, "firmware-"+version+".img")
	t.Signed.Targets[name] = tf
	t.Signed.Version++
	t.Signed.Expires = time.Now().Add(30 * 24 * time.Hour).UTC().Truncate(time.Second)
	if signed, err = tuf.SignTargets(t, keys...); err != nil {
		f.t.Fatal(err)
	}
	return name, tf, signed, t.Signed.Version
}

// plantArtifact stores bytes and a release record so that the server would serve them to a device.
func (f *attackFixture) plantArtifact(name, version string, b []byte, targetsVersion int64) {
	f.t.Helper()
	blob, err := f.srv.Blobs.Put(f.ctx, bytes.NewReader(b), int64(len(b)), "")
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.srv.DB.CreateRelease(f.ctx, &release.Release{
		Product: testProduct, Version: version, HardwareIDs: []string{testHardware}, SecurityVersion: 99, Class: uptane.ClassSecurity,
		Target: name, Length: blob.Length, SHA256: blob.SHA256, SHA512: blob.SHA512, TargetsVersion: targetsVersion, PublishedAt: time.Now().UTC(),
	}); err != nil {
		f.t.Fatal(err)
	}
}

// 2. Arbitrary software signed with online keys only.
func TestAttackOnlineKeysOnly(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		keys []string
	}{
		{"snapshot key", []string{tuf.FileSnapshotKey}},
		{"timestamp key", []string{tuf.FileTimestampKey}},
		{"director key", []string{tuf.FileDirectorKey}},
		{"all online keys", []string{tuf.FileSnapshotKey, tuf.FileTimestampKey, tuf.FileDirectorKey}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newAttackFixture(t, nil)
			var keys []*tuf.Key
			for _, k := range tc.keys {
				keys = append(keys, f.key(k))
			}
			evil := image("6.6.6", 72<<10)
			name, tf, signed, ver := f.forgeTargets(evil, "6.6.6", keys...)
			blob, err := f.srv.Blobs.Put(f.ctx, bytes.NewReader(evil), int64(len(evil)), "")
			if err != nil {
				t.Fatal(err)
			}

			// The management API refuses the forged targets metadata.
			status, body := f.call(http.MethodPost, "/api/v1/releases", f.srv.AdminToken, attackJSON(t, wire.PublishRequest{Target: name, Targets: signed}))
			requireAPIRefusal(t, "publish forged targets", status, body, apperr.Verification)
			if _, err := f.srv.DB.FindRelease(f.ctx, testProduct, "6.6.6"); !apperr.Is(err, apperr.NotFound) {
				t.Fatalf("forged release was recorded: %v", err)
			}

			// The compromised server stores it anyway, signs snapshot and timestamp naming it, and
			// has the director assign it.
			if err := f.srv.DB.PutMetadata(f.ctx, &imagerepo.Meta{Repo: imagerepo.RepoImage, Role: tuf.Targets, Version: ver, Body: signed, Expires: time.Now().Add(30 * 24 * time.Hour)}); err != nil {
				t.Fatal(err)
			}
			if err := f.srv.Images.Refresh(f.ctx, false); err != nil {
				t.Fatal(err)
			}
			f.plantArtifact(name, "6.6.6", evil, ver)
			f.signDirector(name, tf)
			if served, err := f.srv.Images.Metadata(f.ctx, fmt.Sprintf("%d.targets.json", ver)); err != nil || !bytes.Equal(served, signed) {
				t.Fatalf("the forged targets are not served: %v", err)
			}
			status, served := f.call(http.MethodGet, "/device/v1/targets/"+name, f.dev.Agent.State().Token, nil)
			if status != http.StatusOK || !bytes.Equal(served, evil) {
				t.Fatalf("the evil artifact is not served (%d, %d bytes, sha256 %s)", status, len(served), blob.SHA256)
			}

			err = f.dev.Agent.Cycle(f.ctx)
			f.requireRefused(err, uptane.ReasonThreshold, wire.StepVerify, f.r100)
		})
	}

	// The director alone names an image the image repository has never listed.
	t.Run("director only", func(t *testing.T) {
		t.Parallel()
		f := newAttackFixture(t, nil)
		evil := image("6.6.6", 72<<10)
		name := tuf.TargetName(testProduct, "6.6.6", "firmware-6.6.6.img")
		f.plantArtifact(name, "6.6.6", evil, 0)
		f.signDirector(name, directorEntryFor(evil))
		err := f.dev.Agent.Cycle(f.ctx)
		f.requireRefused(err, uptane.ReasonMissingTarget, wire.StepVerify, f.r100)
	})
}

// 3. Mix-and-match: the director names a published target with other length or hashes.
func TestAttackMixAndMatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// forge returns the bytes the server will serve and the entry the director signs.
		forge func(real []byte, entry *metadata.TargetFiles) ([]byte, *metadata.TargetFiles)
	}{
		{"other hashes same length", func(real []byte, _ *metadata.TargetFiles) ([]byte, *metadata.TargetFiles) {
			evil := bytes.Clone(real)
			copy(evil[1024:], "EVIL")
			return evil, directorEntryFor(evil)
		}},
		{"other length and hashes", func(real []byte, _ *metadata.TargetFiles) ([]byte, *metadata.TargetFiles) {
			evil := append(bytes.Clone(real), []byte("EVIL TRAILER")...)
			return evil, directorEntryFor(evil)
		}},
		{"sha512 differs only", func(real []byte, entry *metadata.TargetFiles) ([]byte, *metadata.TargetFiles) {
			evil := bytes.Clone(real)
			copy(evil[1024:], "EVIL")
			tf := directorEntryFor(evil)
			tf.Hashes["sha256"] = entry.Hashes["sha256"]
			return evil, tf
		}},
		{"entry of another release", func(_ []byte, _ *metadata.TargetFiles) ([]byte, *metadata.TargetFiles) {
			old := image("1.0.0", 64<<10)
			return old, directorEntryFor(old)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newAttackFixture(t, nil)
			v101 := image("1.0.1", 80<<10)
			r101 := f.publish("1.0.1", 2, v101)
			served, dir := tc.forge(v101, f.imageEntry(r101.Target))
			f.overwriteBlob(r101.SHA256, served)
			f.signDirector(r101.Target, dir)
			err := f.dev.Agent.Cycle(f.ctx)
			f.requireRefused(err, uptane.ReasonMismatchImageDirector, wire.StepVerify, f.r100)
			f.requireFatalEventFor(f.id, wire.StepVerify, r101.Target)
		})
	}
}

// 4. Wrong hardware: a release signed for other hardware.
func TestAttackWrongHardware(t *testing.T) {
	t.Parallel()
	const otherHardware = "tstat-v9"
	for _, tc := range []struct {
		name string
		// bind is the hardware id the director writes into its target.
		bind string
	}{
		{"image entry for other hardware", testHardware},
		{"director binds other hardware", otherHardware},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newAttackFixture(t, nil)
			r200, err := f.tryPublish("2.0.0", 2, []string{otherHardware}, image("2.0.0", 80<<10))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := f.cli.Deploy(f.ctx, wire.DeployRequest{Release: r200.Product + "@" + r200.Version, DeviceIDs: []string{f.id}})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Assigned != 0 || resp.Skipped[f.id] == "" {
				t.Fatalf("deploy of a release for other hardware: %+v, want the device skipped", resp)
			}
			d := f.fleetDevice()
			d.HardwareID = tc.bind
			if err := f.srv.Director.SignView(f.ctx, d, r200.Target, f.imageEntry(r200.Target)); err != nil {
				t.Fatal(err)
			}
			err = f.dev.Agent.Cycle(f.ctx)
			f.requireRefused(err, uptane.ReasonHardware, wire.StepVerify, f.r100)
		})
	}
}

// 5. Rollback to an image with a lower security version, though properly signed.
func TestAttackRollback(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		old  func(f *attackFixture) *wire.Release
	}{
		{"newer version lower security version", func(f *attackFixture) *wire.Release { return f.publish("1.0.2", 1, image("1.0.2", 72<<10)) }},
		{"previous release", func(f *attackFixture) *wire.Release { return f.r100 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newAttackFixture(t, nil)
			r101 := f.publish("1.0.1", 2, image("1.0.1", 80<<10))
			f.update(r101)
			old := tc.old(f)
			f.deploy(old, f.id)
			err := f.dev.Agent.Cycle(f.ctx)
			f.requireRefused(err, uptane.ReasonSecurityDowngrade, wire.StepVerify, r101)
			if st := f.dev.Agent.State(); st.Installed.SecurityVersion != 2 {
				t.Errorf("installed security version %d, want 2", st.Installed.SecurityVersion)
			}
		})
	}
}

// putDirectorView stores a hand-made view for the device, signed with the online director key:
// targets expire at targetsExpires, snapshot and timestamp at otherExpires.
func (f *attackFixture) putDirectorView(name string, entry *metadata.TargetFiles, targetsExpires, otherExpires time.Time) {
	f.t.Helper()
	f.putDirectorViewOf(map[string]*metadata.TargetFiles{name: entry}, targetsExpires, otherExpires)
}

// putDirectorViewOf stores a view for the device, signed with the online director key, naming
// every entry (each bound to the device); targets expire at targetsExpires, snapshot and
// timestamp at otherExpires.
func (f *attackFixture) putDirectorViewOf(entries map[string]*metadata.TargetFiles, targetsExpires, otherExpires time.Time) {
	f.t.Helper()
	key := f.key(tuf.FileDirectorKey)
	cur, err := f.srv.DB.FindDirectorView(f.ctx, f.id, 0)
	if err != nil {
		f.t.Fatal(err)
	}
	v := cur.Version + 1
	otherExpires = otherExpires.UTC().Truncate(time.Second)
	t := metadata.Targets(targetsExpires.UTC().Truncate(time.Second))
	t.Signed.Version = v
	for name, entry := range entries {
		dt := metadata.TargetFile()
		dt.Length, dt.Hashes = entry.Length, entry.Hashes
		custom := json.RawMessage(attackJSON(f.t, uptane.DirectorCustom{DeviceID: f.id, HardwareID: testHardware}))
		dt.Custom = &custom
		t.Signed.Targets[name] = dt
	}
	tb, err := tuf.SignTargets(t, key)
	if err != nil {
		f.t.Fatal(err)
	}
	st, err := tuf.SignSnapshotTimestamp(key, key, v, v, otherExpires, otherExpires)
	if err != nil {
		f.t.Fatal(err)
	}
	view := &uptane.DirectorView{Version: v, Targets: tb, Snapshot: st.Snapshot, Timestamp: st.Timestamp, Expires: otherExpires}
	if err := f.srv.DB.PutDirectorView(f.ctx, f.id, cur.Version, view, nil); err != nil {
		f.t.Fatal(err)
	}
	f.srv.Fleet.SetDirectorVersion(f.id, v)
}

// 6. Indefinite freeze: the server serves metadata that has expired, so the device cannot learn
// of the new release. Once the server signs fresh metadata again the update goes through, which
// shows that expiry alone stopped it.
func TestAttackFreeze(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		configure func(*server.Config)
		// attack publishes 1.0.1 and assigns it to the device while the server serves expired
		// metadata.
		attack func(f *attackFixture, content []byte) *wire.Release
		thaw   func(f *attackFixture, rel *wire.Release)
	}{
		{
			name: "expired image timestamp",
			attack: func(f *attackFixture, content []byte) *wire.Release {
				f.clock.Shift(-48 * time.Hour) // timestamps live 24 h
				rel := f.publish("1.0.1", 2, content)
				f.deploy(rel, f.id)
				return rel
			},
			thaw: func(f *attackFixture, _ *wire.Release) { f.clock.Shift(0) },
		},
		{
			name: "expired image snapshot",
			configure: func(c *server.Config) {
				c.Lifetimes.Snapshot, c.Lifetimes.Timestamp = time.Hour, 7*24*time.Hour
			},
			attack: func(f *attackFixture, content []byte) *wire.Release {
				f.clock.Shift(-2 * time.Hour)
				rel := f.publish("1.0.1", 2, content)
				f.deploy(rel, f.id)
				return rel
			},
			thaw: func(f *attackFixture, _ *wire.Release) {
				f.clock.Shift(0)
				if err := f.srv.Images.Refresh(f.ctx, true); err != nil {
					f.t.Fatal(err)
				}
			},
		},
		{
			name:      "expired director metadata",
			configure: func(c *server.Config) { c.Lifetimes.Director = time.Hour },
			attack: func(f *attackFixture, content []byte) *wire.Release {
				rel := f.publish("1.0.1", 2, content)
				f.clock.Shift(-2 * time.Hour)
				f.deploy(rel, f.id)
				return rel
			},
			thaw: func(f *attackFixture, _ *wire.Release) { f.clock.Shift(0) },
		},
		{
			name: "expired director targets",
			attack: func(f *attackFixture, content []byte) *wire.Release {
				rel := f.publish("1.0.1", 2, content)
				now := time.Now()
				f.putDirectorView(rel.Target, f.imageEntry(rel.Target), now.Add(-time.Hour), now.Add(7*24*time.Hour))
				return rel
			},
			thaw: func(f *attackFixture, rel *wire.Release) { f.signDirector(rel.Target, f.imageEntry(rel.Target)) },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newAttackFixture(t, tc.configure)
			rel := tc.attack(f, image("1.0.1", 80<<10))
			err := f.dev.Agent.Cycle(f.ctx)
			f.requireRefused(err, uptane.ReasonExpired, wire.StepVerify, f.r100)
			if st := f.dev.Agent.State(); !strings.Contains(st.LastError, "expired") {
				t.Errorf("last error %q does not name expiry", st.LastError)
			}

			tc.thaw(f, rel)
			if err := f.dev.Agent.Update(f.ctx); err != nil {
				t.Fatalf("update after the server signs fresh metadata: %v", err)
			}
			f.requireRunning(rel)
		})
	}
}

// 7. Endless data: the server sends the right image followed by more bytes.
func TestAttackEndlessData(t *testing.T) {
	t.Parallel()
	f := newAttackFixture(t, nil)
	v101 := image("1.0.1", 80<<10)
	r101 := f.publish("1.0.1", 2, v101)
	f.overwriteBlob(r101.SHA256, append(bytes.Clone(v101), make([]byte, 4<<20)...))
	f.deploy(r101, f.id)

	err := f.dev.Agent.Cycle(f.ctx)
	f.requireRefused(err, uptane.ReasonLengthMismatch, wire.StepDownload, f.r100)
	if st := f.dev.Agent.State(); st.FailedTarget != r101.Target {
		t.Errorf("failed target %q, want %s", st.FailedTarget, r101.Target)
	}
}

// 8. Replay: older, validly signed metadata served after the device verified newer versions.
func TestAttackReplayOldMetadata(t *testing.T) {
	t.Parallel()
	t.Run("director view", func(t *testing.T) {
		t.Parallel()
		f := newAttackFixture(t, nil)
		r101 := f.publish("1.0.1", 1, image("1.0.1", 72<<10))
		r102 := f.publish("1.0.2", 1, image("1.0.2", 80<<10))
		f.deploy(r101, f.id)
		older, err := f.srv.DB.FindDirectorView(f.ctx, f.id, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.update(r102)
		cur, err := f.srv.DB.FindDirectorView(f.ctx, f.id, 0)
		if err != nil {
			t.Fatal(err)
		}
		if st := f.dev.Agent.State(); st.DirectorVersion != cur.Version || older.Version >= cur.Version {
			t.Fatalf("device verified director version %d, server holds %d, older view %d", st.DirectorVersion, cur.Version, older.Version)
		}
		// The older view names 1.0.1, which has the same security version: only the metadata
		// version check stands between the device and a downgrade. The server stores its bytes as
		// the newest view.
		replay := &uptane.DirectorView{Version: cur.Version + 1, Targets: older.Targets, Snapshot: older.Snapshot, Timestamp: older.Timestamp, Expires: older.Expires}
		if err := f.srv.DB.PutDirectorView(f.ctx, f.id, cur.Version, replay, nil); err != nil {
			t.Fatal(err)
		}
		f.srv.Fleet.SetDirectorVersion(f.id, replay.Version)
		status, served := f.call(http.MethodGet, "/device/v1/director/timestamp.json", f.dev.Agent.State().Token, nil)
		if status != http.StatusOK || !bytes.Equal(served, older.Timestamp) {
			t.Fatalf("the replayed director timestamp is not served (%d)", status)
		}

		err = f.dev.Agent.Cycle(f.ctx)
		f.requireRefused(err, uptane.ReasonVersionRollback, wire.StepVerify, r102)
		if st := f.dev.Agent.State(); st.DirectorVersion != cur.Version {
			t.Errorf("device director version %d, want %d", st.DirectorVersion, cur.Version)
		}
	})

	for _, tc := range []struct {
		name string
		// replay stores, as the newest image timestamp, one that is validly signed but older
		// than what the device trusts (or names an older snapshot).
		replay func(f *attackFixture, latest *imagerepo.Meta) []byte
	}{
		{"image timestamp", func(f *attackFixture, latest *imagerepo.Meta) []byte {
			old, err := f.srv.DB.FindMetadata(f.ctx, imagerepo.RepoImage, tuf.Timestamp, latest.Version-1)
			if err != nil {
				f.t.Fatal(err)
			}
			return old.Body
		}},
		{"image snapshot", func(f *attackFixture, latest *imagerepo.Meta) []byte {
			ts := metadata.Timestamp(latest.Expires.UTC().Truncate(time.Second))
			ts.Signed.Version = latest.Version + 1
			ts.Signed.Meta["snapshot.json"] = metadata.MetaFile(latest.Version - 1)
			if _, err := ts.Sign(f.key(tuf.FileTimestampKey).Signer()); err != nil {
				f.t.Fatal(err)
			}
			b, err := ts.ToBytes(false)
			if err != nil {
				f.t.Fatal(err)
			}
			return b
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newAttackFixture(t, nil)
			r101 := f.publish("1.0.1", 2, image("1.0.1", 80<<10))
			f.update(r101)
			latest, err := f.srv.DB.LatestMetadata(f.ctx, imagerepo.RepoImage, tuf.Timestamp)
			if err != nil {
				t.Fatal(err)
			}
			body := tc.replay(f, latest)
			if err := f.srv.DB.PutMetadata(f.ctx, &imagerepo.Meta{Repo: imagerepo.RepoImage, Role: tuf.Timestamp, Version: latest.Version + 1, Body: body, Expires: latest.Expires}); err != nil {
				t.Fatal(err)
			}
			f.srv.Images.ForgetCache() // the compromised server serves what it stored
			if served, err := f.srv.Images.Metadata(f.ctx, "timestamp.json"); err != nil || !bytes.Equal(served, body) {
				t.Fatalf("the replayed timestamp is not served: %v", err)
			}
			// A fresh director view makes the device run a full verification.
			f.signDirector(r101.Target, f.imageEntry(r101.Target))
			err = f.dev.Agent.Cycle(f.ctx)
			f.requireRefused(err, uptane.ReasonVersionRollback, wire.StepVerify, r101)
		})
	}
}

// 9. A device reads only its own director metadata and reports only its own status.
func TestDeviceIsolation(t *testing.T) {
	t.Parallel()
	f := newAttackFixture(t, nil)
	v100 := image("1.0.0", 64<<10)
	devB := f.device("SN-B", v100, f.r100)
	a, b := f.id, devB.Agent.State().DeviceID
	tokA, tokB := f.dev.Agent.State().Token, devB.Agent.State().Token
	if a == b || tokA == "" || tokB == "" {
		t.Fatalf("devices %s and %s, tokens %q %q", a, b, tokA, tokB)
	}
	r101 := f.publish("1.0.1", 2, image("1.0.1", 80<<10))
	f.deploy(r101, a, b)

	// directorFile is the URL path of a director role file in version v, as a TUF client names it.
	consistent := false
	if r, err := tuf.ParseRoot(f.directorRoot); err != nil {
		t.Fatal(err)
	} else {
		consistent = r.Signed.ConsistentSnapshot
	}
	directorFile := func(role string, v int64) string {
		if consistent {
			return fmt.Sprintf("/device/v1/director/%d.%s.json", v, role)
		}
		return "/device/v1/director/" + role + ".json"
	}
	get := func(path, token string) []byte {
		t.Helper()
		status, body := f.call(http.MethodGet, path, token, nil)
		if status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, status, body)
		}
		return body
	}
	// requireOwn checks that director metadata served with owner's token names owner only.
	requireOwn := func(path string, body []byte, owner, other string) {
		t.Helper()
		if bytes.Contains(body, []byte(other)) {
			t.Errorf("GET %s with the token of %s returned metadata naming %s", path, owner, other)
		}
		md, err := metadata.Targets().FromBytes(body)
		if err != nil || md.Signed.Type != metadata.TARGETS {
			return // a timestamp or snapshot: it names no device
		}
		for name, tf := range md.Signed.Targets {
			var dc uptane.DirectorCustom
			if tf.Custom == nil || json.Unmarshal(*tf.Custom, &dc) != nil || dc.DeviceID != owner {
				t.Errorf("GET %s: target %s is bound to %+v, want device %s", path, name, dc, owner)
			}
		}
	}
	// walk follows the TUF chain timestamp -> snapshot -> targets with token and returns the
	// targets it ends at.
	walk := func(token, owner, other, query string) *metadata.Metadata[metadata.TargetsType] {
		t.Helper()
		p := "/device/v1/director/timestamp.json" + query
		body := get(p, token)
		requireOwn(p, body, owner, other)
		ts, err := metadata.Timestamp().FromBytes(body)
		if err != nil {
			t.Fatal(err)
		}
		p = directorFile(tuf.Snapshot, ts.Signed.Meta["snapshot.json"].Version) + query
		body = get(p, token)
		requireOwn(p, body, owner, other)
		sn, err := metadata.Snapshot().FromBytes(body)
		if err != nil {
			t.Fatal(err)
		}
		p = directorFile(tuf.Targets, sn.Signed.Meta["targets.json"].Version) + query
		body = get(p, token)
		requireOwn(p, body, owner, other)
		md, err := metadata.Targets().FromBytes(body)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := md.Signed.Targets[r101.Target]; !ok || len(md.Signed.Targets) != 1 {
			t.Errorf("director targets for %s name %d targets, want only %s", owner, len(md.Signed.Targets), r101.Target)
		}
		return md
	}
	walk(tokA, a, b, "")
	mdB := walk(tokB, b, a, "")
	walk(tokA, a, b, "?device_id="+b)
	walk(tokA, a, b, "?device="+b)
	// Every version number B's metadata uses, asked for with A's token, is A's or nothing.
	for v := int64(1); v <= mdB.Signed.Version+1; v++ {
		for _, role := range []string{tuf.Snapshot, tuf.Targets} {
			p := directorFile(role, v)
			status, body := f.call(http.MethodGet, p, tokA, nil)
			switch status {
			case http.StatusOK:
				requireOwn(p, body, a, b)
			case http.StatusNotFound:
			default:
				t.Errorf("GET %s with A's token: %d %s", p, status, body)
			}
		}
	}
	for _, path := range []string{"/device/v1/director/" + b + "/targets.json", "/device/v1/director/" + b, "/device/v1/director/..%2F" + b + "%2Ftargets.json"} {
		// A 404 may echo the requested name; it must not carry metadata.
		if status, body := f.call(http.MethodGet, path, tokA, nil); status == http.StatusOK || bytes.Contains(body, []byte(`"signed"`)) {
			t.Errorf("GET %s with A's token: %d %s", path, status, body)
		}
	}

	// A report with A's token changes A only.
	const probe = "isolation probe"
	rep := wire.Report{
		Installed: wire.Installed{Target: r101.Target, Version: r101.Version, SecurityVersion: r101.SecurityVersion, SHA256: r101.SHA256},
		State:     agent.PhaseIdle,
		Events:    []wire.Event{{Time: time.Now().UTC(), Target: r101.Target, Step: wire.StepCommit, Status: wire.StatusOK, Message: probe}},
	}
	if status, body := f.call(http.MethodPost, "/device/v1/report", tokA, attackJSON(t, rep)); status != http.StatusNoContent {
		t.Fatalf("report with A's token: %d %s", status, body)
	}
	// A report cannot name another device.
	var withID map[string]any
	if err := json.Unmarshal(attackJSON(t, rep), &withID); err != nil {
		t.Fatal(err)
	}
	withID["device_id"] = b
	if status, body := f.call(http.MethodPost, "/device/v1/report", tokA, attackJSON(t, withID)); status < 400 || status > 499 {
		t.Errorf("report naming device B with A's token: %d %s, want 4xx", status, body)
	}
	devs, err := f.cli.Devices(f.ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		switch d.ID {
		case a:
			if d.Installed.Version != r101.Version {
				t.Errorf("device A after its report: %+v", d.Installed)
			}
		case b:
			if d.Installed.Version != f.r100.Version || d.Installed.SHA256 != f.r100.SHA256 {
				t.Errorf("device B changed by A's report: %+v", d.Installed)
			}
		}
	}
	hasProbe := func(id string) bool {
		evs, err := f.cli.Events(f.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if ev.Message == probe {
				return true
			}
		}
		return false
	}
	if !hasProbe(a) {
		t.Error("A's report did not reach A's events")
	}
	if hasProbe(b) {
		t.Error("A's report reached B's events")
	}

	// Credentials: none, garbage, A's token edited to name B, and a validly made token for a
	// device the server does not know.
	unknown := "00112233445566778899aabbccddeeff"
	unknownTok, _ := f.srv.Fleet.Tokens.Issue(unknown, time.Now())
	checkin := attackJSON(t, wire.Checkin{State: agent.PhaseIdle})
	report := attackJSON(t, wire.Report{State: agent.PhaseIdle, Events: []wire.Event{{Step: wire.StepCheck, Status: wire.StatusOK, Message: probe}}})
	requests := []struct {
		method, path string
		body         []byte
	}{
		{http.MethodGet, "/device/v1/director/timestamp.json", nil},
		{http.MethodGet, directorFile(tuf.Targets, mdB.Signed.Version), nil},
		{http.MethodPost, "/device/v1/checkin", checkin},
		{http.MethodPost, "/device/v1/report", report},
		{http.MethodGet, "/device/v1/targets/" + r101.Target, nil},
	}
	for _, tc := range []struct {
		name  string
		token string
		want  []int
	}{
		{"no token", "", []int{http.StatusUnauthorized}},
		{"garbage token", "garbage", []int{http.StatusUnauthorized}},
		{"operator token", f.srv.AdminToken, []int{http.StatusUnauthorized}},
		{"token edited to name B", strings.Replace(tokA, a, b, 1), []int{http.StatusUnauthorized}},
		{"token for an unknown device", unknownTok, []int{http.StatusUnauthorized, http.StatusNotFound}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range requests {
				status, body := f.call(r.method, r.path, tc.token, r.body)
				ok := false
				for _, w := range tc.want {
					ok = ok || status == w
				}
				if !ok {
					t.Errorf("%s %s: %d (%d bytes), want one of %v", r.method, r.path, status, len(body), tc.want)
				}
			}
		})
	}
	// A refused report must not leave events behind.
	t.Run("refused report leaves no trace", func(t *testing.T) {
		for _, tc := range []struct {
			name, token, device, state string
		}{
			{"unknown device", unknownTok, unknown, agent.PhaseIdle},
			{"invalid report", tokA, a, strings.Repeat("x", 40)},
		} {
			msg := "refused report probe: " + tc.name
			body := attackJSON(t, wire.Report{State: tc.state, Events: []wire.Event{{Step: wire.StepCheck, Status: wire.StatusOK, Message: msg}}})
			if status, resp := f.call(http.MethodPost, "/device/v1/report", tc.token, body); status < 400 || status > 499 {
				t.Errorf("%s: report answered %d %s, want 4xx", tc.name, status, resp)
				continue
			}
			evs, err := f.cli.Events(f.ctx, tc.device)
			if err != nil && !apperr.Is(err, apperr.NotFound) {
				t.Fatal(err)
			}
			for _, ev := range evs {
				if ev.Message == msg {
					t.Errorf("%s: the server refused the report but stored its event for %s: %+v", tc.name, tc.device, ev)
				}
			}
		}
	})
	// B's device was never touched by any of this.
	for _, d := range attackDevices(t, f) {
		if d.ID == b && (d.Installed.Version != f.r100.Version || d.LastError != "") {
			t.Errorf("device B after the probes: %+v", d)
		}
	}
}

func attackDevices(t *testing.T, f *attackFixture) []wire.Device {
	t.Helper()
	devs, err := f.cli.Devices(f.ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	return devs
}

// 10. Rotating the image root: the device follows a root signed by the old and the new keys, and
// the server refuses a root not signed by both.
func TestRootRotation(t *testing.T) {
	t.Parallel()
	f := newAttackFixture(t, nil)
	oldKey := f.key(tuf.RootKeyFile(1))
	newKey, err := tuf.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	parse := func() *metadata.Metadata[metadata.RootType] {
		r, err := tuf.ParseRoot(f.imageRoot)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	expires := time.Now().Add(365 * 24 * time.Hour)
	good, err := tuf.RotateRoot(parse(), []*tuf.Key{oldKey}, []*tuf.Key{newKey}, 1, expires)
	if err != nil {
		t.Fatal(err)
	}

	newOnly, err := tuf.RotateRoot(parse(), nil, []*tuf.Key{newKey}, 1, expires)
	if err != nil {
		t.Fatal(err)
	}
	unsigned, err := metadata.Root().FromBytes(good)
	if err != nil {
		t.Fatal(err)
	}
	oldOnly, err := tuf.SignRoot(unsigned, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		name string
		root []byte
	}{{"signed only by the new key", newOnly}, {"signed only by the old key", oldOnly}} {
		status, body := f.call(http.MethodPut, "/api/v1/image/root", f.srv.AdminToken, bad.root)
		requireAPIRefusal(t, "root "+bad.name, status, body, apperr.Verification)
	}
	if r, err := f.cli.LatestRoot(f.ctx, f.imageRoot); err != nil || r.Signed.Version != 1 {
		t.Fatalf("after refused rotations the server's root is %v (%v), want version 1", r, err)
	}

	if err := f.cli.RotateRoot(f.ctx, good); err != nil {
		t.Fatalf("rotate root: %v", err)
	}
	if r, err := f.cli.LatestRoot(f.ctx, f.imageRoot); err != nil || r.Signed.Version != 2 {
		t.Fatalf("after rotation the server's root chain ends at %v (%v), want version 2", r, err)
	}
	r101 := f.publish("1.0.1", 2, image("1.0.1", 80<<10))
	f.update(r101)

	b, err := os.ReadFile(filepath.Join(f.dev.Dir, "state", "image", "root.json"))
	if err != nil {
		t.Fatal(err)
	}
	trusted, err := tuf.ParseRoot(b)
	if err != nil {
		t.Fatal(err)
	}
	if trusted.Signed.Version != 2 {
		t.Fatalf("device trusts image root version %d, want 2", trusted.Signed.Version)
	}
	if ids := trusted.Signed.Roles[tuf.Root].KeyIDs; len(ids) != 1 || ids[0] != newKey.ID {
		t.Errorf("device's trusted root keys %v, want only the new key %s", ids, newKey.ID)
	}
}
