package client

import (
	"bufio"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/delta"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/wire"
)

// DeltaSource is an earlier release's image file, from which `release publish --delta-from`
// makes a per-pair delta to the new image on the release engineer's machine, where the offline
// key signs it with the release (docs/DECISIONS.md).
type DeltaSource struct {
	Version string
	File    string
}

// deltaFile is a delta made for a publication: a local file, uploaded and signed as a target.
type deltaFile struct {
	name    string
	path    string
	blob    *wire.BlobInfo
	binding delta.Binding
}

// makeIndex writes the chunk index of the image at path into dir.
func makeIndex(path, dir, image string, blob *wire.BlobInfo) (*deltaFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	x, err := delta.MakeIndex(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("chunk index: %w", err)
	}
	out := filepath.Join(dir, "index.caibx")
	w, err := os.Create(out)
	if err != nil {
		return nil, err
	}
	if _, err := x.WriteTo(w); err != nil {
		w.Close()
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return hashDelta(delta.IndexName(image), out, delta.Binding{Format: delta.FormatCaibx, Image: image, ImageSHA256: blob.SHA256, ImageLength: blob.Length})
}

func hashDelta(name, path string, b delta.Binding) (*deltaFile, error) {
	blob, err := hashFile(path, nil)
	if err != nil {
		return nil, err
	}
	return &deltaFile{name: name, path: path, blob: blob, binding: b}, nil
}

// makePatch makes the per-pair delta from src (an earlier release, which the verified targets
// must sign with exactly the file's length and SHA-256) to the new image.
func makePatch(ctx context.Context, targets map[string]*metadata.TargetFiles, product string, src DeltaSource, newPath, dir, image string, blob *wire.BlobInfo) (*deltaFile, error) {
	var srcName string
	var srcTF *metadata.TargetFiles
	for n, tf := range targets {
		c, err := uptane.ParseTargetCustom(tf)
		if err != nil || c.Product != product || c.Version != src.Version {
			continue
		}
		if tf.Custom != nil {
			if b, _ := delta.ParseBinding(*tf.Custom); b != nil {
				continue
			}
		}
		srcName, srcTF = n, tf
	}
	if srcTF == nil {
		return nil, fmt.Errorf("delta from %s@%s: no such release in the image repository", product, src.Version)
	}
	sb, err := hashFile(src.File, nil)
	if err != nil {
		return nil, err
	}
	if sb.Length != srcTF.Length || sb.SHA256 != hex.EncodeToString(srcTF.Hashes["sha256"]) {
		return nil, fmt.Errorf("delta from %s@%s: %s is not the signed image (length or sha256 differs)", product, src.Version, src.File)
	}
	old, err := os.Open(src.File)
	if err != nil {
		return nil, err
	}
	defer old.Close()
	nf, err := os.Open(newPath)
	if err != nil {
		return nil, err
	}
	defer nf.Close()
	out := filepath.Join(dir, "from-"+src.Version+"."+delta.FormatPatch)
	w, err := os.Create(out)
	if err != nil {
		return nil, err
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	if _, err := delta.Generate(ctx, old, sb.Length, nf, blob.Length, bw, delta.GenOptions{}); err != nil {
		w.Close()
		return nil, fmt.Errorf("delta from %s: %w", src.Version, err)
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return hashDelta(delta.PatchName(image, src.Version), out, delta.Binding{Format: delta.FormatPatch, Image: image, ImageSHA256: blob.SHA256, ImageLength: blob.Length,
		Source: srcName, SourceSHA256: sb.SHA256, SourceLength: sb.Length})
}

// target is the signed entry of a delta: its length, SHA-256 and binding.
func (d *deltaFile) target() (*metadata.TargetFiles, error) {
	return uptane.NewDeltaTargetFile(d.blob.Length, d.blob.SHA256, &d.binding)
}

// DeltasOptions configure PublishDeltas: per-pair deltas to a published release from the
// releases most of its product's devices run, generated on the server (or here, with Local),
// checked and signed where the offline key is.
type DeltasOptions struct {
	Product, Version string
	TargetsKey       *tuf.Key
	ProductKeys      []*tuf.Key // the product's role's keys, when it is delegated
	TrustedRoot      []byte
	Expires          time.Duration // of the new targets metadata
	// Top is how many source releases get a delta at most (default 3); MinDevices how many
	// devices must run a source for it to count (default 1).
	Top, MinDevices int
	// Local makes here the deltas the server has not generated (yet), as it would.
	Local bool
	// DryRun only reports what would be signed.
	DryRun bool
}

// DeltaMade is one per-pair delta of PublishDeltas.
type DeltaMade struct {
	From    string // source version
	Devices int    // devices running it
	Target  string // the delta's target name
	Length  int64  // patch bytes (0 when made here in a dry run)
	Local   bool   // made here, not on the server

	source     *metadata.TargetFiles // the source image's signed target
	sourceName string
	job        *wire.DeltaJob // the server's generated patch, unless Local
}

// DeltaJobs lists a release's per-pair deltas generated on the server.
func (c *Client) DeltaJobs(ctx context.Context, product, version string) ([]wire.DeltaJob, error) {
	var out wire.DeltaJobs
	err := c.Do(ctx, http.MethodGet, "/api/v1/deltas?product="+url.QueryEscape(product)+"&version="+url.QueryEscape(version), nil, &out)
	return out.Jobs, err
}

// PlanDeltas asks the server to plan per-pair deltas to a release now.
func (c *Client) PlanDeltas(ctx context.Context, req wire.DeltaPlanRequest) ([]wire.DeltaJob, error) {
	var out wire.DeltaJobs
	err := c.Do(ctx, http.MethodPost, "/api/v1/deltas/generate", req, &out)
	return out.Jobs, err
}

// PublishDeltas signs per-pair deltas to product@version from the releases most of the
// product's devices run, as the server counts them, skipping sources that already have a signed
// one. A patch the server generated is downloaded with both images (each checked against the
// offline-signed targets) and applied here: only a patch that rebuilds the signed image exactly
// is signed. With Local, a source the server has no finished patch for gets one made here. The
// targets with the deltas added are signed and published (POST /api/v1/deltas); devices
// assigned the release use a delta from their next view.
func (c *Client) PublishDeltas(ctx context.Context, o DeltasOptions) ([]DeltaMade, error) {
	o.Top, o.MinDevices = cmp.Or(o.Top, 3), cmp.Or(o.MinDevices, 1)
	rels, err := c.Releases(ctx, o.Product)
	if err != nil {
		return nil, err
	}
	var dest *wire.Release
	for i := range rels {
		if rels[i].Version == o.Version {
			dest = &rels[i]
		}
	}
	if dest == nil {
		return nil, apperr.E(apperr.NotFound, "release %s@%s is not published", o.Product, o.Version)
	}
	base, err := c.baseFor(ctx, o.TrustedRoot, dest.Target)
	if err != nil {
		return nil, err
	}
	t := base.T
	destTF := t.Signed.Targets[dest.Target]
	if destTF == nil || hex.EncodeToString(destTF.Hashes["sha256"]) != dest.SHA256 {
		return nil, fmt.Errorf("release %s@%s: the signed targets do not name its image %s", o.Product, o.Version, dest.Target)
	}
	jobs, err := c.DeltaJobs(ctx, o.Product, o.Version)
	if err != nil {
		return nil, err
	}
	generated := map[string]*wire.DeltaJob{}
	for i, j := range jobs {
		if j.State == "done" && j.Image == dest.Target {
			generated[j.Target] = &jobs[i]
		}
	}
	var plan []DeltaMade
	srcs := slices.SortedFunc(slices.Values(rels), func(a, b wire.Release) int { return cmp.Or(b.Running-a.Running, strings.Compare(a.Version, b.Version)) })
	for _, r := range srcs {
		name := delta.PatchName(dest.Target, r.Version)
		if r.Version == o.Version || r.Running < o.MinDevices || t.Signed.Targets[name] != nil || t.Signed.Targets[r.Target] == nil {
			continue
		}
		if len(plan) == o.Top {
			break
		}
		j := generated[name]
		if j == nil && !o.Local {
			continue
		}
		d := DeltaMade{From: r.Version, Devices: r.Running, Target: name, Local: j == nil, source: t.Signed.Targets[r.Target], sourceName: r.Target, job: j}
		if j != nil {
			d.Length = j.PatchLength
		}
		plan = append(plan, d)
	}
	if o.DryRun || len(plan) == 0 {
		return plan, nil
	}
	tmp, err := os.MkdirTemp("", "upkeep-deltas")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	newPath := filepath.Join(tmp, "image")
	blob, err := c.fetchSigned(ctx, destTF, newPath)
	if err != nil {
		return nil, fmt.Errorf("image of %s@%s: %w", o.Product, o.Version, err)
	}
	if _, err := uptane.ParseTargetCustom(destTF); err != nil {
		return nil, err
	}
	var made []*deltaFile
	for i, p := range plan {
		src := filepath.Join(tmp, "from-"+p.From)
		sb, err := c.fetchSigned(ctx, p.source, src)
		if err != nil {
			return nil, fmt.Errorf("image of %s@%s: %w", o.Product, p.From, err)
		}
		var d *deltaFile
		if p.job != nil {
			d, err = c.checkGenerated(ctx, p.job, src, p.sourceName, sb, tmp, dest.Target, blob)
		} else {
			d, err = makePatch(ctx, t.Signed.Targets, o.Product, DeltaSource{Version: p.From, File: src}, newPath, tmp, dest.Target, blob)
			if err == nil {
				err = c.uploadBlob(ctx, PublishOptions{File: d.path}, d.blob)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("delta from %s@%s: %w", o.Product, p.From, err)
		}
		os.Remove(src)
		plan[i].Length = d.blob.Length
		made = append(made, d)
	}
	for attempt := 0; ; attempt++ {
		for _, d := range made {
			dt, err := d.target()
			if err != nil {
				return nil, err
			}
			t.Signed.Targets[d.name] = dt
		}
		t.Signed.Version++
		t.Signed.Expires = time.Now().Add(o.Expires).UTC().Truncate(time.Second)
		signed, err := base.sign(o.TargetsKey, o.ProductKeys)
		if err != nil {
			return nil, err
		}
		err = c.Do(ctx, http.MethodPost, "/api/v1/deltas", wire.DeltasRequest{Targets: signed}, nil)
		if apperr.Is(err, apperr.Conflict) && attempt < 3 {
			if base, err = c.baseFor(ctx, o.TrustedRoot, dest.Target); err != nil { // published meanwhile: sign on top
				return nil, err
			}
			t = base.T
			continue
		}
		if err != nil {
			return nil, err
		}
		return plan, nil
	}
}

// checkGenerated downloads the patch the server generated for job (at most its stated length,
// hashed as it streams) and applies it to the source image at src (already checked against its
// signed target): the result must be the signed destination image (blob), byte for byte, or
// the patch is refused. The patch is not trusted for anything else: what is signed is its
// length and hashes, bound to both images.
func (c *Client) checkGenerated(ctx context.Context, job *wire.DeltaJob, src, srcName string, sb *wire.BlobInfo, dir, image string, dest *wire.BlobInfo) (*deltaFile, error) {
	if job.PatchLength <= 0 || job.PatchLength > dest.Length+dest.Length/2+1<<20 {
		return nil, fmt.Errorf("the server's patch states %d bytes for an image of %d", job.PatchLength, dest.Length)
	}
	want, err := hex.DecodeString(job.PatchSHA256)
	if err != nil || len(want) != sha256.Size {
		return nil, fmt.Errorf("the server's patch has no valid SHA-256")
	}
	want512, err := hex.DecodeString(job.PatchSHA512)
	if err != nil || len(want512) != sha512.Size {
		return nil, fmt.Errorf("the server's patch has no valid SHA-512")
	}
	path := filepath.Join(dir, "generated-from-"+job.From)
	pb, err := c.fetchSigned(ctx, &metadata.TargetFiles{Length: job.PatchLength, Hashes: metadata.Hashes{"sha256": want, "sha512": want512}}, path)
	if err != nil {
		return nil, fmt.Errorf("the server's patch: %w", err)
	}
	old, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer old.Close()
	pf, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer pf.Close()
	a, err := delta.NewApplier()
	if err != nil {
		return nil, err
	}
	defer a.Close()
	h := sha256.New()
	lw := &limitedWriter{w: h, n: dest.Length}
	if _, err := a.Apply(ctx, old, sb.Length, dest.Length, bufio.NewReaderSize(pf, 1<<20), lw, delta.ApplyState{}, nil); err != nil {
		return nil, fmt.Errorf("the server's patch does not apply: %w", err)
	}
	if lw.n != 0 || hex.EncodeToString(h.Sum(nil)) != dest.SHA256 {
		return nil, fmt.Errorf("the server's patch does not rebuild the signed image %s: refused", image)
	}
	return &deltaFile{name: job.Target, path: path, blob: pb, binding: delta.Binding{Format: delta.FormatPatch, Image: image, ImageSHA256: dest.SHA256, ImageLength: dest.Length,
		Source: srcName, SourceSHA256: sb.SHA256, SourceLength: sb.Length}}, nil
}

// fetchSigned downloads the artifact of a signed target into path, at most its signed length,
// and checks its hashes (SHA-256, and SHA-512 where the target signs one) as it streams; it
// returns what a publication needs of the file, without reading it again.
func (c *Client) fetchSigned(ctx context.Context, tf *metadata.TargetFiles, path string) (*wire.BlobInfo, error) {
	sum := hex.EncodeToString(tf.Hashes["sha256"])
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h256, h512 := sha256.New(), sha512.New()
	lw := &limitedWriter{w: io.MultiWriter(f, h256, h512), n: tf.Length}
	if err := c.Do(ctx, http.MethodGet, "/api/v1/blobs/"+sum, nil, lw); err != nil {
		return nil, err
	}
	b := &wire.BlobInfo{SHA256: hex.EncodeToString(h256.Sum(nil)), SHA512: hex.EncodeToString(h512.Sum(nil)), Length: tf.Length}
	if want := tf.Hashes["sha512"]; lw.n != 0 || b.SHA256 != sum || len(want) > 0 && b.SHA512 != hex.EncodeToString(want) {
		return nil, fmt.Errorf("artifact %s from the server is not the signed one (length or hashes differ)", sum)
	}
	return b, f.Close()
}

// limitedWriter fails past n bytes.
type limitedWriter struct {
	w io.Writer
	n int64
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.n {
		return 0, errors.New("artifact longer than its signed length")
	}
	l.n -= int64(len(p))
	return l.w.Write(p)
}
