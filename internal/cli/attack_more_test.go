package cli

// More attacks by a compromised server: fast-forwarding the image repository's metadata versions,
// director metadata that names more than one image, and targets metadata signed by fewer
// offline targets keys than the root requires.

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/imagerepo"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/wire"
)

// nextImageRoot builds the image root that follows the server's latest one, changed by edit,
// signs it with the offline root key (which stays the root key) and uploads it.
func (f *attackFixture) nextImageRoot(edit func(r *metadata.RootType)) *metadata.Metadata[metadata.RootType] {
	f.t.Helper()
	cur, err := f.cli.LatestRoot(f.ctx, f.imageRoot)
	if err != nil {
		f.t.Fatal(err)
	}
	b, err := cur.ToBytes(false)
	if err != nil {
		f.t.Fatal(err)
	}
	next, err := metadata.Root().FromBytes(b)
	if err != nil {
		f.t.Fatal(err)
	}
	edit(&next.Signed)
	next.Signed.Version = cur.Signed.Version + 1
	next.Signed.Expires = time.Now().Add(365 * 24 * time.Hour).UTC().Truncate(time.Second)
	signed, err := tuf.SignRoot(next, f.key(tuf.RootKeyFile(1)))
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.cli.RotateRoot(f.ctx, signed); err != nil {
		f.t.Fatalf("rotate the image root to version %d: %v", next.Signed.Version, err)
	}
	r, err := tuf.ParseRoot(signed)
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

// replaceRoleKeys makes keys the only keys of role.
func replaceRoleKeys(t *testing.T, r *metadata.RootType, role string, keys ...*tuf.Key) {
	t.Helper()
	for _, id := range slices.Clone(r.Roles[role].KeyIDs) {
		if err := r.RevokeKey(id, role); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range keys {
		if err := r.AddKey(k.Public(), role); err != nil {
			t.Fatal(err)
		}
	}
}

// restartWithOnlineKeys stops the server and starts it again on the same address and data, with
// a keys folder holding the given image snapshot and timestamp keys (and the same director key).
func (f *attackFixture) restartWithOnlineKeys(snapshot, timestamp *tuf.Key) {
	f.t.Helper()
	dir := filepath.Join(f.dir, "keys-online-next")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		f.t.Fatal(err)
	}
	for name, k := range map[string]*tuf.Key{tuf.FileSnapshotKey: snapshot, tuf.FileTimestampKey: timestamp, tuf.FileDirectorKey: f.key(tuf.FileDirectorKey)} {
		if err := tuf.SaveKey(filepath.Join(dir, name), k); err != nil {
			f.t.Fatal(err)
		}
	}
	// The device-token key is an online secret too, and stays the same.
	if b, err := os.ReadFile(filepath.Join(f.keys, server.FileDeviceTokenKey)); err != nil {
		f.t.Fatal(err)
	} else if err := os.WriteFile(filepath.Join(dir, server.FileDeviceTokenKey), b, 0o600); err != nil {
		f.t.Fatal(err)
	}
	old := f.srv
	cfg := old.Config
	cfg.KeysDir = dir
	cfg.Addr = strings.TrimPrefix(old.URL, "http://")
	if err := old.Close(); err != nil {
		f.t.Fatalf("stop the server: %v", err)
	}
	srv, err := server.Open(f.ctx, cfg)
	if err != nil {
		f.t.Fatalf("restart the server with the new online keys: %v", err)
	}
	f.t.Cleanup(func() { srv.Close() })
	if srv.URL != old.URL {
		f.t.Fatalf("server restarted at %s, want %s", srv.URL, old.URL)
	}
	srv.AdminToken = old.AdminToken // the operator's token lives in the database
	f.srv = srv
}

// trustedImageMeta reads the device's trusted copy of an image-repository role.
func (f *attackFixture) trustedImageMeta(role string) []byte {
	f.t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dev.Dir, "state", "image", role+".json"))
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

// 11. Fast-forward: with the online snapshot and timestamp keys the attacker makes the device
// trust a snapshot naming image targets version 9999, so that every legitimate targets version
// after it looks like a rollback. Only rotating the snapshot and timestamp keys recovers the
// device (TUF client workflow 5.3.11).
func TestAttackFastForward(t *testing.T) {
	t.Parallel()
	f := newAttackFixture(t, nil)
	const forgedTargets, forgedSnapshot = 9999, 1_000_000_000
	cur, err := f.srv.DB.LatestMetadata(f.ctx, imagerepo.RepoImage, tuf.Targets)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	snapExp, tsExp := now.Add(7*24*time.Hour), now.Add(24*time.Hour)
	st, err := tuf.SignSnapshotTimestamp(f.key(tuf.FileSnapshotKey), f.key(tuf.FileTimestampKey), forgedSnapshot, forgedTargets, snapExp, tsExp)
	if err != nil {
		t.Fatal(err)
	}
	// The store records a targets version 9999 (holding the real, older targets, as the attacker
	// cannot sign new ones) so that the server serves the forged pair instead of re-signing.
	for _, m := range []*imagerepo.Meta{
		{Repo: imagerepo.RepoImage, Role: tuf.Targets, Version: forgedTargets, Body: cur.Body, Expires: cur.Expires},
		{Repo: imagerepo.RepoImage, Role: tuf.Snapshot, Version: forgedSnapshot, Body: st.Snapshot, Expires: snapExp},
		{Repo: imagerepo.RepoImage, Role: tuf.Timestamp, Version: forgedSnapshot, Body: st.Timestamp, Expires: tsExp},
	} {
		if err := f.srv.DB.PutMetadata(f.ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	f.srv.Images.ForgetCache() // the compromised server serves what it stored
	if served, err := f.srv.Images.Metadata(f.ctx, "timestamp.json"); err != nil || !bytes.Equal(served, st.Timestamp) {
		t.Fatalf("the forged timestamp is not served: %v", err)
	}
	// A fresh director view (same image) makes the device run a full verification.
	f.signDirector(f.r100.Target, f.imageEntry(f.r100.Target))
	err = f.dev.Agent.Cycle(f.ctx)
	f.requireRefused(err, uptane.ReasonVersionRollback, wire.StepVerify, f.r100)
	if st := f.dev.Agent.State(); !strings.Contains(st.LastError, "9999") {
		t.Errorf("last error %q does not name targets version 9999", st.LastError)
	}
	sn, err := metadata.Snapshot().FromBytes(f.trustedImageMeta(tuf.Snapshot))
	if err != nil {
		t.Fatal(err)
	}
	if got := sn.Signed.Meta["targets.json"].Version; got != forgedTargets {
		t.Fatalf("device's trusted snapshot names targets version %d, want the forged %d", got, forgedTargets)
	}
	tg, err := metadata.Targets().FromBytes(f.trustedImageMeta(tuf.Targets))
	if err != nil {
		t.Fatal(err)
	}
	if tg.Signed.Version != cur.Version {
		t.Fatalf("device trusts image targets version %d, want %d", tg.Signed.Version, cur.Version)
	}

	// The operator removes the planted targets record and publishes a legitimate release. The
	// device now refuses it: its trusted snapshot says targets version 9999 was already out.
	if _, err := f.srv.DB.SQL().ExecContext(f.ctx, `DELETE FROM metadata WHERE repo = $1 AND role = $2 AND version = $3`, imagerepo.RepoImage, tuf.Targets, forgedTargets); err != nil {
		t.Fatal(err)
	}
	r101 := f.publish("1.0.1", 2, image("1.0.1", 80<<10))
	f.deploy(r101, f.id)
	err = f.dev.Agent.Cycle(f.ctx)
	f.requireRefused(err, uptane.ReasonVersionRollback, wire.StepVerify, f.r100)
	if st := f.dev.Agent.State(); !strings.Contains(st.LastError, "9999") {
		t.Errorf("last error %q does not name targets version 9999", st.LastError)
	}

	// Recovery: the next image root names new snapshot and timestamp keys (same root and targets
	// keys), and the server restarts with them.
	newSnap, err := tuf.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	newTS, err := tuf.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	root2 := f.nextImageRoot(func(r *metadata.RootType) {
		replaceRoleKeys(t, r, tuf.Snapshot, newSnap)
		replaceRoleKeys(t, r, tuf.Timestamp, newTS)
	})
	if root2.Signed.Version != 2 {
		t.Fatalf("rotated root version %d, want 2", root2.Signed.Version)
	}
	f.restartWithOnlineKeys(newSnap, newTS)

	// Right after the restart the server must serve image metadata that the current root trusts.
	status, body := f.call(http.MethodGet, "/repo/image/timestamp.json", "", nil)
	if status != http.StatusOK {
		t.Fatalf("GET image timestamp after the restart: %d %s", status, body)
	}
	if ts, err := metadata.Timestamp().FromBytes(body); err != nil {
		t.Errorf("image timestamp served after the restart does not parse: %v", err)
	} else if err := root2.VerifyDelegate(tuf.Timestamp, ts); err != nil {
		t.Errorf("after restarting with the rotated online keys, the server serves image timestamp version %d that root version 2 does not trust (%v): it signed it with the retired key and does not re-sign at start-up", ts.Signed.Version, err)
	}

	// A fresh release, signed with the unchanged offline targets key, reaches the device.
	r102 := f.publish("1.0.2", 3, image("1.0.2", 88<<10))
	f.update(r102)

	trustedRoot, err := tuf.ParseRoot(f.trustedImageMeta(tuf.Root))
	if err != nil {
		t.Fatal(err)
	}
	if trustedRoot.Signed.Version != 2 {
		t.Errorf("device trusts image root version %d, want 2", trustedRoot.Signed.Version)
	}
	ts, err := metadata.Timestamp().FromBytes(f.trustedImageMeta(tuf.Timestamp))
	if err != nil {
		t.Fatal(err)
	}
	if err := root2.VerifyDelegate(tuf.Timestamp, ts); err != nil {
		t.Errorf("device's trusted timestamp is not signed by the new timestamp key: %v", err)
	}
	latest, err := f.srv.DB.LatestMetadata(f.ctx, imagerepo.RepoImage, tuf.Targets)
	if err != nil {
		t.Fatal(err)
	}
	sn, err = metadata.Snapshot().FromBytes(f.trustedImageMeta(tuf.Snapshot))
	if err != nil {
		t.Fatal(err)
	}
	if got := sn.Signed.Meta["targets.json"].Version; got != latest.Version || got >= forgedTargets {
		t.Errorf("device's trusted snapshot names targets version %d, want %d", got, latest.Version)
	}
}

// putDirectorTargets stores a view for the device, signed with the online director key, naming
// every entry in entries (each bound to the device), valid for a week.
func (f *attackFixture) putDirectorTargets(entries map[string]*metadata.TargetFiles) {
	f.t.Helper()
	expires := time.Now().Add(7 * 24 * time.Hour)
	f.putDirectorViewOf(entries, expires, expires)
}

// 12. Extraneous dependencies: the director names a second image besides the assigned one.
func TestAttackExtraneousDependencies(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// extra publishes (or picks) the second release the director names.
		extra func(f *attackFixture) *wire.Release
	}{
		{"another published release", func(f *attackFixture) *wire.Release { return f.publish("1.0.2", 3, image("1.0.2", 88<<10)) }},
		{"the installed release", func(f *attackFixture) *wire.Release { return f.r100 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newAttackFixture(t, nil)
			r101 := f.publish("1.0.1", 2, image("1.0.1", 80<<10))
			extra := tc.extra(f)
			f.deploy(r101, f.id)
			f.putDirectorTargets(map[string]*metadata.TargetFiles{
				r101.Target:  f.imageEntry(r101.Target),
				extra.Target: f.imageEntry(extra.Target),
			})
			status, served := f.call(http.MethodGet, "/device/v1/director/timestamp.json", f.dev.Agent.State().Token, nil)
			if status != http.StatusOK {
				t.Fatalf("director timestamp: %d %s", status, served)
			}
			err := f.dev.Agent.Cycle(f.ctx)
			f.requireRefused(err, uptane.ReasonTooManyTargets, wire.StepVerify, f.r100)

			// Naming one image again, the director is obeyed.
			f.update(r101)
		})
	}
}

// publishSignedBy publishes a release through the management API with image targets metadata
// signed by every key in keys.
func (f *attackFixture) publishSignedBy(version string, secVer int64, content []byte, keys ...*tuf.Key) *wire.Release {
	f.t.Helper()
	s256, s512 := artifactDigests(content)
	var got wire.BlobInfo
	if err := f.cli.Do(f.ctx, http.MethodPut, "/api/v1/blobs/"+s256, bytes.NewReader(content), &got); err != nil {
		f.t.Fatalf("upload artifact %s: %v", version, err)
	}
	if want := (wire.BlobInfo{SHA256: s256, SHA512: s512, Length: int64(len(content))}); got != want {
		f.t.Fatalf("server stored %+v, want %+v", got, want)
	}
	var cur []byte
	if err := f.cli.Do(f.ctx, http.MethodGet, "/api/v1/image/targets", nil, &cur); err != nil {
		f.t.Fatal(err)
	}
	t, err := metadata.Targets().FromBytes(cur)
	if err != nil {
		f.t.Fatal(err)
	}
	name := tuf.TargetName(testProduct, version, "firmware-"+version+".img")
	tf, err := uptane.NewTargetFile(int64(len(content)), s256, s512, uptane.TargetCustom{
		Product: testProduct, HardwareIDs: []string{testHardware}, Version: version, SecurityVersion: secVer, Class: uptane.ClassSecurity,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	t.Signed.Targets[name] = tf
	t.Signed.Version++
	t.Signed.Expires = time.Now().Add(30 * 24 * time.Hour).UTC().Truncate(time.Second)
	signed, err := tuf.SignTargets(t, keys...)
	if err != nil {
		f.t.Fatal(err)
	}
	var rel wire.Release
	if err := f.cli.Do(f.ctx, http.MethodPost, "/api/v1/releases", wire.PublishRequest{Target: name, Targets: signed}, &rel); err != nil {
		f.t.Fatalf("publish %s signed by %d keys: %v", version, len(keys), err)
	}
	return &rel
}

// 13. Key compromise below the threshold: the image targets role needs 2 of 2 keys; the attacker
// holds one of them and every online key.
func TestAttackKeyCompromiseBelowThreshold(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// signers picks the keys the attacker signs with, from the two targets keys.
		signers func(f *attackFixture, first, second *tuf.Key) []*tuf.Key
		want    uptane.Reason
	}{
		{"first targets key", func(_ *attackFixture, first, _ *tuf.Key) []*tuf.Key { return []*tuf.Key{first} }, uptane.ReasonThreshold},
		{"second targets key", func(_ *attackFixture, _, second *tuf.Key) []*tuf.Key { return []*tuf.Key{second} }, uptane.ReasonThreshold},
		// Two signatures by one key id: go-tuf refuses the metadata while parsing it
		// (*metadata.ErrValue), before counting signatures.
		{"one targets key twice", func(_ *attackFixture, _, second *tuf.Key) []*tuf.Key { return []*tuf.Key{second, second} }, uptane.ReasonMalformed},
		{"one targets key and every online key", func(f *attackFixture, first, _ *tuf.Key) []*tuf.Key {
			return []*tuf.Key{first, f.key(tuf.FileSnapshotKey), f.key(tuf.FileTimestampKey), f.key(tuf.FileDirectorKey)}
		}, uptane.ReasonThreshold},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newAttackFixture(t, nil)
			generated, err := tuf.GenerateKey()
			if err != nil {
				t.Fatal(err)
			}
			secondFile := filepath.Join(t.TempDir(), "targets-2.key")
			if err := tuf.SaveKey(secondFile, generated); err != nil {
				t.Fatal(err)
			}
			first := f.key(tuf.FileTargetsKey)
			second, err := tuf.LoadKey(secondFile)
			if err != nil {
				t.Fatal(err)
			}
			root2 := f.nextImageRoot(func(r *metadata.RootType) {
				if err := r.AddKey(second.Public(), tuf.Targets); err != nil {
					t.Fatal(err)
				}
				r.Roles[tuf.Targets].Threshold = 2
			})
			if role := root2.Signed.Roles[tuf.Targets]; role.Threshold != 2 || len(role.KeyIDs) != 2 {
				t.Fatalf("targets role of root version %d: %+v", root2.Signed.Version, role)
			}

			// A release signed by both targets keys is accepted by the server and the device.
			r101 := f.publishSignedBy("1.0.1", 2, image("1.0.1", 80<<10), first, second)
			f.update(r101)
			if r, err := tuf.ParseRoot(f.trustedImageMeta(tuf.Root)); err != nil || r.Signed.Version != 2 {
				t.Fatalf("device trusts image root %v (%v), want version 2", r, err)
			}

			// The attacker's targets add an evil image.
			keys := tc.signers(f, first, second)
			evil := image("6.6.6", 72<<10)
			name, tf, signed, ver := f.forgeTargets(evil, "6.6.6", keys...)
			s256, _ := artifactDigests(evil)
			var got wire.BlobInfo
			if err := f.cli.Do(f.ctx, http.MethodPut, "/api/v1/blobs/"+s256, bytes.NewReader(evil), &got); err != nil {
				t.Fatal(err)
			}
			status, body := f.call(http.MethodPost, "/api/v1/releases", f.srv.AdminToken, attackJSON(t, wire.PublishRequest{Target: name, Targets: signed}))
			requireAPIRefusal(t, "publish targets below the threshold", status, body, apperr.Verification)
			if _, err := f.srv.DB.FindRelease(f.ctx, testProduct, "6.6.6"); !apperr.Is(err, apperr.NotFound) {
				t.Fatalf("release below the threshold was recorded: %v", err)
			}

			// The compromised server stores them anyway, signs snapshot and timestamp naming them,
			// and has the director assign the evil image.
			if err := f.srv.DB.PutMetadata(f.ctx, &imagerepo.Meta{Repo: imagerepo.RepoImage, Role: tuf.Targets, Version: ver, Body: signed, Expires: time.Now().Add(30 * 24 * time.Hour)}); err != nil {
				t.Fatal(err)
			}
			if err := f.srv.Images.Refresh(f.ctx, false); err != nil {
				t.Fatal(err)
			}
			f.plantArtifact(name, "6.6.6", evil, ver)
			f.signDirector(name, tf)
			if served, err := f.srv.Images.Metadata(f.ctx, "timestamp.json"); err != nil {
				t.Fatal(err)
			} else if ts, err := metadata.Timestamp().FromBytes(served); err != nil {
				t.Fatal(err)
			} else if err := root2.VerifyDelegate(tuf.Timestamp, ts); err != nil {
				t.Fatalf("the served timestamp does not verify, so the attack would not reach the targets check: %v", err)
			}
			if sn, err := f.srv.DB.LatestMetadata(f.ctx, imagerepo.RepoImage, tuf.Snapshot); err != nil {
				t.Fatal(err)
			} else if s, err := metadata.Snapshot().FromBytes(sn.Body); err != nil {
				t.Fatal(err)
			} else if got := s.Signed.Meta["targets.json"].Version; got != ver {
				t.Fatalf("served snapshot names targets version %d, want the forged %d", got, ver)
			}

			err = f.dev.Agent.Cycle(f.ctx)
			f.requireRefused(err, tc.want, wire.StepVerify, r101)
			if st := f.dev.Agent.State(); !strings.Contains(st.LastError, "signature") {
				t.Errorf("last error %q does not name missing signatures", st.LastError)
			}
		})
	}
}
