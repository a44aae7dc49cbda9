package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/delta"
	"upkeep.dev/upkeep/internal/deltagen"
	"upkeep.dev/upkeep/internal/rollout"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/show"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/wire"
)

// fsImage is a file-system-like image: runs of random and of repetitive bytes.
func fsImage(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := 0; i < n; {
		k := min(n-i, 1+r.IntN(16384))
		if r.IntN(2) == 0 {
			for j := range k {
				b[i+j] = byte(r.Uint32())
			}
		} else {
			for j := range k {
				b[i+j] = byte(j % 13)
			}
		}
		i += k
	}
	return b
}

// nextImage is img with a few packages changed: some bytes replaced in two places and a block
// inserted.
func nextImage(img []byte) []byte {
	out := bytes.Clone(img)
	copy(out[len(out)/3:], bytes.Repeat([]byte("NEW PACKAGE"), 2000))
	copy(out[2*len(out)/3:], "patched")
	return append(out[:len(out)/2], append(bytes.Repeat([]byte{0xAB}, 30000), out[len(out)/2:]...)...)
}

func (e *env) publishDelta(version string, secVer int64, content []byte, from map[string][]byte) *wire.Release {
	e.t.Helper()
	dir := e.t.TempDir()
	f := filepath.Join(dir, "firmware-"+version+".img")
	if err := os.WriteFile(f, content, 0o644); err != nil {
		e.t.Fatal(err)
	}
	o := client.PublishOptions{
		File: f, TargetsKey: e.targetsKey, ProductKeys: e.productKeys(testProduct), TrustedRoot: e.imageRoot, Expires: 30 * 24 * time.Hour,
		Custom: uptane.TargetCustom{Product: testProduct, HardwareIDs: []string{testHardware}, Version: version, SecurityVersion: secVer, Class: uptane.ClassSecurity},
	}
	for v, b := range from {
		p := filepath.Join(dir, "src-"+v)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			e.t.Fatal(err)
		}
		o.DeltaFrom = append(o.DeltaFrom, client.DeltaSource{Version: v, File: p})
	}
	rel, err := e.cli.Publish(context.Background(), o)
	if err != nil {
		e.t.Fatalf("publish %s: %v", version, err)
	}
	return rel
}

// downloadEvents returns the messages of a device's download events, oldest first.
func (e *env) downloadEvents(id string) []string {
	e.t.Helper()
	evs, err := e.srv.DB.FindEvents(context.Background(), id, 100)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Step == wire.StepDownload {
			out = append(out, evs[i].Status+": "+evs[i].Message)
		}
	}
	return out
}

// signedTargets returns the server's current image targets, checked against the trusted root,
// for a test that signs a publication of its own.
func (e *env) signedTargets() *metadata.Metadata[metadata.TargetsType] {
	e.t.Helper()
	root, err := e.cli.LatestRoot(context.Background(), e.imageRoot)
	if err != nil {
		e.t.Fatal(err)
	}
	var cur []byte
	if err := e.cli.Do(context.Background(), http.MethodGet, "/api/v1/image/targets", nil, &cur); err != nil {
		e.t.Fatal(err)
	}
	tm, err := uptane.VerifyImageTargetsSigned(root, cur)
	if err != nil {
		e.t.Fatal(err)
	}
	return tm
}

func (e *env) deltaTarget(name string) delta.Target {
	e.t.Helper()
	ds, err := e.srv.Images.Deltas(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	for _, d := range ds {
		if d.Name == name {
			return d
		}
	}
	e.t.Fatalf("no delta target %s in %v", name, ds)
	return delta.Target{}
}

// deltaFallsBack publishes 1.0.0 and 1.0.1 (with a patch from 1.0.0 if patch), lets spoil break
// the delta on the server, deploys 1.0.1 to a device that runs 1.0.0 and checks that the device
// reported the failed delta and installed the full image.
func (e *env) deltaFallsBack(seed uint64, patch bool, spoil func(r2 *wire.Release)) {
	t := e.t
	t.Helper()
	ctx := context.Background()
	v1 := fsImage(seed, 2<<20)
	r1 := e.publishDelta("1.0.0", 1, v1, nil)
	d := e.device("SN-1", v1, r1)
	from := map[string][]byte{}
	if patch {
		from["1.0.0"] = v1
	}
	r2 := e.publishDelta("1.0.1", 2, nextImage(v1), from)
	spoil(r2)
	e.deploy(r2, d.Agent.State().DeviceID)
	if err := d.Agent.Cycle(ctx); err != nil {
		t.Fatalf("cycle: %v", err)
	}
	if got, _ := d.ActiveImageSHA256(ctx); got != r2.SHA256 {
		t.Fatalf("active slot holds %s, want the full image %s", got, r2.SHA256)
	}
	evs := strings.Join(e.downloadEvents(d.Agent.State().DeviceID), "\n")
	if !strings.Contains(evs, "delta failed") || !strings.Contains(evs, "downloading the full image") {
		t.Fatalf("events %s: want the failed delta reported", evs)
	}
}

// TestDeltaUpdate updates a device with each form of delta, through a campaign: the director
// names the delta because the device runs its source, the device downloads a fraction of the
// image and runs exactly the signed image, and the campaign's status says how many bytes the
// delta saved.
func TestDeltaUpdate(t *testing.T) {
	for _, form := range []string{delta.FormatPatch, delta.FormatCaibx} {
		t.Run(form, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			v1 := fsImage(1, 3<<20)
			r1 := e.publishDelta("1.0.0", 1, v1, nil)
			d := e.device("SN-1", v1, r1)
			v2 := nextImage(v1)
			from := map[string][]byte{}
			if form == delta.FormatPatch {
				from["1.0.0"] = v1
			}
			r2 := e.publishDelta("1.0.1", 2, v2, from)
			camp, err := e.cli.CreateRollout(ctx, wire.CampaignSpec{Release: testProduct + "@1.0.1", Devices: []string{d.Agent.State().DeviceID}, HealthGate: "0s", Start: true})
			if err != nil {
				t.Fatal(err)
			}
			e.waitCampaign(camp.ID, 30*time.Second, "device assigned", func(st *wire.CampaignStatus) bool { return st.Waves[0][rollout.MemberAssigned] == 1 })
			if err := d.Agent.Cycle(ctx); err != nil {
				t.Fatalf("cycle: %v", err)
			}
			got, err := d.ActiveImageSHA256(ctx)
			if err != nil || got != r2.SHA256 {
				t.Fatalf("active slot holds %s (%v), want %s; last error %q", got, err, r2.SHA256, d.Agent.State().LastError)
			}
			evs := e.downloadEvents(d.Agent.State().DeviceID)
			last := evs[len(evs)-1]
			if !strings.Contains(last, "delta "+form+": downloaded") {
				t.Fatalf("download events %q: want the delta named", evs)
			}
			t.Log(last)
			st := e.waitCampaign(camp.ID, 30*time.Second, "download reported", func(st *wire.CampaignStatus) bool { return st.Download != nil })
			if dl := st.Download; dl.Devices != 1 || dl.ImageBytes != int64(len(v2)) || dl.Bytes <= 0 || dl.Bytes >= dl.ImageBytes/2 {
				t.Fatalf("campaign download %+v: want one device, the image's %d bytes, and under half of them fetched", dl, len(v2))
			}
			var out strings.Builder
			show.CampaignStatus(&out, st)
			if !strings.Contains(out.String(), "saved by delta updates") {
				t.Fatalf("rollout status does not show the bytes saved:\n%s", out.String())
			}
		})
	}
}

// TestDeltaHintFollowsReport: a device assigned a release before the server heard of its last
// install (it was offline) gets its view re-signed with the delta from the image it reports:
// the patch from 1.0.1 once it reports 1.0.1, the chunk index again once it reports 1.0.0.
func TestDeltaHintFollowsReport(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	v1 := fsImage(5, 1<<20)
	r1 := e.publishDelta("1.0.0", 1, v1, nil)
	d := e.device("SN-1", v1, r1)
	id := d.Agent.State().DeviceID
	v2 := nextImage(v1)
	r2 := e.publishDelta("1.0.1", 2, v2, nil)
	r3 := e.publishDelta("1.0.2", 3, nextImage(v2), map[string][]byte{"1.0.1": v2})
	patch, index := delta.PatchName(r3.Target, "1.0.1"), delta.IndexName(r3.Target)
	hint := func() (int64, string) {
		t.Helper()
		v, err := e.srv.DB.FindDirectorView(ctx, id, 0)
		if err != nil {
			t.Fatal(err)
		}
		md, err := metadata.Targets().FromBytes(v.Targets)
		if err != nil {
			t.Fatal(err)
		}
		tf := md.Signed.Targets[r3.Target]
		if tf == nil {
			t.Fatalf("view %d does not name %s", v.Version, r3.Target)
		}
		var c uptane.DirectorCustom
		if err := json.Unmarshal(*tf.Custom, &c); err != nil {
			t.Fatal(err)
		}
		var h delta.Hint
		if c.Delta != nil {
			if err := json.Unmarshal(c.Delta, &h); err != nil {
				t.Fatal(err)
			}
		}
		return v.Version, h.Target
	}
	e.deploy(r3, id)
	if _, h := hint(); h != index {
		t.Fatalf("hint %q for a device that runs 1.0.0: want the chunk index %s", h, index)
	}
	report := func(r *wire.Release) {
		t.Helper()
		err := e.srv.Fleet.Report(ctx, id, wire.Report{State: "idle",
			Installed: wire.Installed{Target: r.Target, Version: r.Version, SecurityVersion: r.SecurityVersion, SHA256: r.SHA256},
			Events:    []wire.Event{{Target: r.Target, Step: wire.StepCommit, Status: wire.StatusOK}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	report(r2)
	v, h := hint()
	if h != patch {
		t.Fatalf("after a report of 1.0.1, hint %q: want %s", h, patch)
	}
	report(r2) // the same image again: nothing to re-sign
	if again, _ := hint(); again != v {
		t.Fatalf("view re-signed (version %d to %d) for a report of the image it already starts from", v, again)
	}
	report(r1)
	if _, h := hint(); h != index {
		t.Fatalf("after a report of 1.0.0 again, hint %q: want the chunk index %s", h, index)
	}
}

// TestDeltaStaleHint: a device whose view hints at a delta from an image it no longer runs (the
// server last heard of an older one) still downloads a delta, from the chunk indexes of the
// assigned image and of the one it runs, which the server lets it fetch because an earlier view
// named that image.
func TestDeltaStaleHint(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	v1 := fsImage(6, 2<<20)
	r1 := e.publishDelta("1.0.0", 1, v1, nil)
	d := e.device("SN-1", v1, r1)
	id := d.Agent.State().DeviceID
	v2 := nextImage(v1)
	r2 := e.publishDelta("1.0.1", 2, v2, nil)
	e.deploy(r2, id)
	if err := d.Agent.Cycle(ctx); err != nil {
		t.Fatalf("cycle: %v", err)
	}
	if got, _ := d.ActiveImageSHA256(ctx); got != r2.SHA256 {
		t.Fatalf("active slot holds %s, want 1.0.1", got)
	}
	// The server loses the news: it believes the device runs 1.0.0 again.
	if err := e.srv.Fleet.Report(ctx, id, wire.Report{State: "idle", Installed: wire.Installed{Target: r1.Target, Version: r1.Version, SecurityVersion: r1.SecurityVersion, SHA256: r1.SHA256}}); err != nil {
		t.Fatal(err)
	}
	r3 := e.publishDelta("1.0.2", 3, nextImage(v2), map[string][]byte{"1.0.0": v1})
	e.deploy(r3, id) // hints at the patch from 1.0.0
	if err := d.Agent.Cycle(ctx); err != nil {
		t.Fatalf("cycle: %v", err)
	}
	if got, _ := d.ActiveImageSHA256(ctx); got != r3.SHA256 {
		t.Fatalf("active slot holds %s (last error %q), want 1.0.2", got, d.Agent.State().LastError)
	}
	evs := e.downloadEvents(id)
	if last := evs[len(evs)-1]; !strings.Contains(last, "delta caibx: downloaded") {
		t.Fatalf("download events %q: want the chunk indexes used", evs)
	}
}

// TestDeltaTamperedFallsBack: a delta whose bytes were replaced on the server (same length), or
// that the server no longer serves, is reported and the device downloads the full image, which
// it installs; a tampered chunk of the
// image itself makes the delta fail and then the full image, which is refused.
func TestDeltaTamperedFallsBack(t *testing.T) {
	t.Run("patch", func(t *testing.T) {
		e := newEnv(t)
		e.deltaFallsBack(2, true, func(r2 *wire.Release) {
			p := e.deltaTarget(delta.PatchName(r2.Target, "1.0.0"))
			evil := fsImage(3, int(p.Length))
			copy(evil, "UPKDLT2\n")
			if err := os.WriteFile(e.blobPath(p.SHA256), evil, 0o600); err != nil {
				t.Fatal(err)
			}
		})
	})
	t.Run("chunk index refused", func(t *testing.T) {
		// A delta the server will not serve (its blob is gone): the device downloads the full
		// image rather than ask for the delta again at every cycle.
		e := newEnv(t)
		e.deltaFallsBack(7, false, func(r2 *wire.Release) {
			if err := os.Remove(e.blobPath(e.deltaTarget(delta.IndexName(r2.Target)).SHA256)); err != nil {
				t.Fatal(err)
			}
		})
	})
	t.Run("tampered chunk", func(t *testing.T) {
		e := newEnv(t)
		ctx := context.Background()
		v1 := fsImage(4, 2<<20)
		r1 := e.publishDelta("1.0.0", 1, v1, nil)
		d := e.device("SN-1", v1, r1)
		v2 := nextImage(v1)
		r2 := e.publishDelta("1.0.1", 2, v2, nil)
		evil := bytes.Clone(v2)
		copy(evil[len(evil)/3+10:], "EVIL CHUNK") // inside a changed chunk, which is downloaded
		if err := os.WriteFile(e.blobPath(r2.SHA256), evil, 0o600); err != nil {
			t.Fatal(err)
		}
		e.deploy(r2, d.Agent.State().DeviceID)
		err := d.Agent.Cycle(ctx)
		if err == nil {
			t.Fatal("a tampered image was accepted")
		}
		if got, _ := d.ActiveImageSHA256(ctx); got != r1.SHA256 {
			t.Fatalf("active slot holds %s, want the old image", got)
		}
		evs := strings.Join(e.downloadEvents(d.Agent.State().DeviceID), "\n")
		if !strings.Contains(evs, "chunk does not match its id") {
			t.Fatalf("events %s: want the tampered chunk reported", evs)
		}
	})
}

// TestDeltaIndexOutsideImage: a chunk index that the offline key signed, bound to the image,
// yet naming a chunk past the image's end (a faulty or malicious build) is refused by the
// agent before it writes anything; the failure is reported and the full image installed.
func TestDeltaIndexOutsideImage(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	v1 := fsImage(5, 2<<20)
	r1 := e.publishDelta("1.0.0", 1, v1, nil)
	d := e.device("SN-1", v1, r1)
	v2 := nextImage(v1)

	x, err := delta.MakeIndex(bytes.NewReader(v2))
	if err != nil {
		t.Fatal(err)
	}
	x.Chunks = append(x.Chunks, delta.Chunk{ID: x.Chunks[0].ID, Start: uint64(len(v2)), Size: 4096})
	var evil bytes.Buffer
	if _, err := x.WriteTo(&evil); err != nil {
		t.Fatal(err)
	}
	name := tuf.TargetName(testProduct, "1.0.1", "firmware-1.0.1.img")
	upload := func(b []byte) (sha256Hex, sha512Hex string) {
		s256, s512 := sha256.Sum256(b), sha512.Sum512(b)
		sha256Hex, sha512Hex = hex.EncodeToString(s256[:]), hex.EncodeToString(s512[:])
		if err := e.cli.Do(ctx, http.MethodPut, "/api/v1/blobs/"+sha256Hex, bytes.NewReader(b), nil); err != nil {
			t.Fatal(err)
		}
		return sha256Hex, sha512Hex
	}
	img256, img512 := upload(v2)
	idx256, idx512 := upload(evil.Bytes())
	custom := uptane.TargetCustom{Product: testProduct, HardwareIDs: []string{testHardware}, Version: "1.0.1", SecurityVersion: 2, Class: uptane.ClassSecurity}
	imgTarget, err := uptane.NewTargetFile(int64(len(v2)), img256, img512, custom)
	if err != nil {
		t.Fatal(err)
	}
	idxTarget, err := uptane.NewTargetFile(int64(evil.Len()), idx256, idx512, custom)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := delta.WithBinding(*idxTarget.Custom, &delta.Binding{Format: delta.FormatCaibx, Image: name, ImageSHA256: img256, ImageLength: int64(len(v2))})
	if err != nil {
		t.Fatal(err)
	}
	rawMsg := json.RawMessage(raw)
	idxTarget.Custom = &rawMsg
	tm := e.signedTargets()
	tm.Signed.Targets[name], tm.Signed.Targets[delta.IndexName(name)] = imgTarget, idxTarget
	tm.Signed.Version++
	tm.Signed.Expires = time.Now().Add(30 * 24 * time.Hour).UTC().Truncate(time.Second)
	signed, err := tuf.SignTargets(tm, e.targetsKey)
	if err != nil {
		t.Fatal(err)
	}
	var r2 wire.Release
	if err := e.cli.Do(ctx, http.MethodPost, "/api/v1/releases", wire.PublishRequest{Target: name, Targets: signed}, &r2); err != nil {
		t.Fatalf("publish with the faulty index: %v", err)
	}

	e.deploy(&r2, d.Agent.State().DeviceID)
	if err := d.Agent.Cycle(ctx); err != nil {
		t.Fatalf("cycle: %v", err)
	}
	if got, _ := d.ActiveImageSHA256(ctx); got != img256 {
		t.Fatalf("active slot holds %s, want the full image %s", got, img256)
	}
	evs := strings.Join(e.downloadEvents(d.Agent.State().DeviceID), "\n")
	if !strings.Contains(evs, "delta failed") || !strings.Contains(evs, "past the image") || !strings.Contains(evs, "downloading the full image") {
		t.Fatalf("events %s: want the faulty index reported and the full image downloaded", evs)
	}
}

// TestReleaseDeltas: the server generates a patch to a published release from the release most
// devices run (`release deltas --generate`, or by itself after the publication), `release deltas`
// lists it, and `--sign` downloads it with both images, applies it, and signs it; a device running
// that source then updates through the patch. A generated patch that does not rebuild the signed
// image is refused, and `--local` makes one where the key is.
func TestReleaseDeltas(t *testing.T) {
	e := newEnvWith(t, func(c *server.Config) { c.DeltaEvery = 200 * time.Millisecond })
	ctx := context.Background()
	g := []string{"--server", e.srv.URL, "--token", e.srv.AdminToken}
	v1 := fsImage(8, 2<<20)
	r1 := e.publishDelta("1.0.0", 1, v1, nil)
	v2 := nextImage(v1)
	r2 := e.publishDelta("1.0.1", 2, v2, nil)
	d1 := e.device("SN-1", v1, r1)
	e.device("SN-2", v1, r1)
	e.device("SN-3", v2, r2)
	v3 := nextImage(v2)
	r3 := e.publishDelta("1.0.2", 3, v3, nil)
	rels, err := e.cli.Releases(ctx, testProduct)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rels {
		if want := map[string]int{"1.0.0": 2, "1.0.1": 1}[r.Version]; r.Running != want {
			t.Errorf("release %s: running %d, want %d", r.Version, r.Running, want)
		}
	}
	key := filepath.Join(e.keys, "targets.key")
	ref := testProduct + "@1.0.2"
	from1, from2 := delta.PatchName(r3.Target, "1.0.0"), delta.PatchName(r3.Target, "1.0.1")

	// The planner queues both sources of the newest release by itself; the generator makes them.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if jobs, err := e.cli.DeltaJobs(ctx, testProduct, "1.0.2"); err != nil || len(jobs) == 2 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("no deltas planned by themselves: %+v", jobs)
		}
	}
	list := cli(t, append(g, "release", "deltas", ref, "--wait", "60s")...)
	for _, want := range []string{"FROM", "1.0.0  2", "1.0.1  1", "done", "100%", from1, from2} {
		if !strings.Contains(list, want) {
			t.Fatalf("deltas list lacks %q:\n%s", want, list)
		}
	}
	if strings.Contains(list, "yes") {
		t.Fatalf("a delta listed as signed before signing:\n%s", list)
	}
	// Planning again adds nothing; an older release gets its own on request.
	if jobs, err := e.cli.PlanDeltas(ctx, wire.DeltaPlanRequest{Product: testProduct, Version: "1.0.2"}); err != nil || len(jobs) != 2 {
		t.Fatalf("plan again: %d jobs, %v", len(jobs), err)
	}
	older := cli(t, append(g, "release", "deltas", testProduct+"@1.0.1", "--generate", "--wait", "60s")...)
	if !strings.Contains(older, delta.PatchName(r2.Target, "1.0.0")) || !strings.Contains(older, "done") {
		t.Fatalf("deltas to 1.0.1: %s", older)
	}

	dry := cli(t, append(g, "release", "deltas", ref, "--sign", "--key", key, "--top", "1", "--dry-run")...)
	if !strings.Contains(dry, "would sign "+from1+" from "+testProduct+"@1.0.0, run by 2 devices (generated by the server") {
		t.Fatalf("dry run: %s", dry)
	}
	out := cli(t, append(g, "release", "deltas", ref, "--sign", "--key", key, "--top", "1")...)
	if !strings.Contains(out, "signed "+from1) {
		t.Fatalf("deltas: %s", out)
	}
	e.deltaTarget(from1)
	if again := cli(t, append(g, "release", "deltas", ref, "--sign", "--key", key, "--top", "1", "--min-devices", "2")...); !strings.Contains(again, "no delta to sign") {
		t.Fatalf("second run signed another delta: %s", again)
	}
	if list := cli(t, append(g, "release", "deltas", ref)...); !strings.Contains(list, "yes") {
		t.Fatalf("the signed delta is not listed as signed:\n%s", list)
	}

	// A server that hands out a patch that does not rebuild the image (here: the patch to 1.0.1,
	// named as the one to 1.0.2) gets nothing signed.
	jobs, err := e.srv.DeltaJobs.Jobs(ctx, testProduct, "")
	if err != nil {
		t.Fatal(err)
	}
	var wrong, victim *deltagen.Job
	for _, j := range jobs {
		switch {
		case j.Version == "1.0.1":
			wrong = j
		case j.Version == "1.0.2" && j.From == "1.0.1":
			victim = j
		}
	}
	if wrong == nil || victim == nil {
		t.Fatalf("jobs: %+v", jobs)
	}
	victim.PatchSHA256, victim.PatchSHA512, victim.PatchLength, victim.State, victim.UpdatedAt = wrong.PatchSHA256, wrong.PatchSHA512, wrong.PatchLength, deltagen.Done, time.Now()
	if err := e.srv.DB.FinishDeltaJob(ctx, victim); err != nil {
		t.Fatal(err)
	}
	if err := runCLI(append(g, "release", "deltas", ref, "--sign", "--key", key)...); err == nil || !strings.Contains(err.Error(), "patch does not") {
		t.Fatalf("a wrong generated patch: %v", err)
	}
	if tm := e.signedTargets(); tm.Signed.Targets[from2] != nil {
		t.Fatal("the wrong patch was signed")
	}
	// --local makes it here instead, when the server has none finished.
	victim.State = deltagen.Failed
	if err := e.srv.DB.FinishDeltaJob(ctx, victim); err != nil {
		t.Fatal(err)
	}
	if local := cli(t, append(g, "release", "deltas", ref, "--sign", "--local", "--key", key)...); !strings.Contains(local, "signed "+from2) || !strings.Contains(local, "made here") {
		t.Fatalf("--local: %s", local)
	}

	e.deploy(r3, d1.Agent.State().DeviceID)
	if err := d1.Agent.Cycle(ctx); err != nil {
		t.Fatalf("cycle: %v", err)
	}
	if got, _ := d1.ActiveImageSHA256(ctx); got != r3.SHA256 {
		t.Fatalf("active slot holds %s, want %s", got, r3.SHA256)
	}
	evs := e.downloadEvents(d1.Agent.State().DeviceID)
	if last := evs[len(evs)-1]; !strings.Contains(last, "delta "+delta.FormatPatch+": downloaded") {
		t.Fatalf("download events %q: want the patch used", evs)
	}
	if err := runCLI(append(g, "release", "deltas", testProduct+"@9.9.9")...); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("deltas to an unknown release: %v", err)
	}

	// The route adds deltas only: an image, or nothing, is refused.
	tm := e.signedTargets()
	tm.Signed.Version++
	same, err := tuf.SignTargets(tm, e.targetsKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.cli.Do(ctx, http.MethodPost, "/api/v1/deltas", wire.DeltasRequest{Targets: same}, nil); err == nil || !strings.Contains(err.Error(), "adds no delta target") {
		t.Fatalf("deltas that add nothing: %v", err)
	}
	img, err := uptane.NewTargetFile(r3.Length, r3.SHA256, strings.Repeat("0", 128), uptane.TargetCustom{Product: testProduct, HardwareIDs: []string{testHardware}, Version: "1.0.3", SecurityVersion: 4, Class: uptane.ClassSecurity})
	if err != nil {
		t.Fatal(err)
	}
	tm.Signed.Targets[tuf.TargetName(testProduct, "1.0.3", "firmware-1.0.3.img")] = img
	withImage, err := tuf.SignTargets(tm, e.targetsKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.cli.Do(ctx, http.MethodPost, "/api/v1/deltas", wire.DeltasRequest{Targets: withImage}, nil); err == nil || !strings.Contains(err.Error(), "is not a delta") {
		t.Fatalf("an image added as a delta: %v", err)
	}
}
