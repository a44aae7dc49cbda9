package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/delta"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/wire"
)

// Delta updates (docs/DECISIONS.md). The director may hint, in its signed target's custom, at a
// delta target of the image repository: a per-pair patch from the installed image, or the chunk
// index of the new image (with the installed image's index). The hint is only a hint: the
// binding that counts is the offline-signed custom of the delta target, which must name the
// image the director assigned (its length and SHA-256) and the image this device runs. The
// rebuilt image streams through the same SHA-256 as a full download, and its digest must equal
// the signed image target's before anything is installed; a delta that fails in any way but
// the network's is reported and the full image downloaded instead.

// ActiveImage is implemented by installers that can read the running image, which a delta
// rebuilds from.
type ActiveImage interface {
	// OpenActive opens the image that runs now (the A/B installer: the booted slot).
	OpenActive(ctx context.Context) (io.ReaderAt, io.Closer, error)
}

// OpenActive implements ActiveImage.
func (a *ABInstaller) OpenActive(ctx context.Context) (io.ReaderAt, io.Closer, error) {
	st, err := a.Boot.State(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("boot state: %w", err)
	}
	r, err := a.Slots.Open(ctx, st.Booted)
	if err != nil {
		return nil, nil, err
	}
	ra, ok := r.(io.ReaderAt)
	if !ok {
		r.Close()
		return nil, nil, fmt.Errorf("slot %s cannot be read at random", st.Booted)
	}
	return ra, r, nil
}

// DeltaPlan is the journaled state of a delta download: which delta, and how far it got.
type DeltaPlan struct {
	Format string `json:"format"`
	Target string `json:"target"` // the patch or the new image's chunk index
	Length int64  `json:"length"`
	SHA256 string `json:"sha256"`
	// SourceIndex is the installed image's chunk index (caibx), with its signed length and hash.
	SourceIndex       string `json:"source_index,omitempty"`
	SourceIndexLength int64  `json:"source_index_length,omitempty"`
	SourceIndexSHA256 string `json:"source_index_sha256,omitempty"`
	SourceLength      int64  `json:"source_length"`

	Patch delta.ApplyState `json:"patch"`
	Chunk delta.ChunkState `json:"chunk"`
	// OutHash and PatchHash are the SHA-256 states over the output and the patch at the last
	// checkpoint, so that a resume continues them without reading back what was done.
	OutHash   []byte `json:"out_hash,omitempty"`
	PatchHash []byte `json:"patch_hash,omitempty"`
	// Failed: the delta did not work; the full image is downloaded instead.
	Failed     bool  `json:"failed,omitempty"`
	Downloaded int64 `json:"downloaded,omitempty"`
}

// directorHint reads the delta hint of the director target the device was given.
func directorHint(tf *metadata.TargetFiles) *delta.Hint {
	if tf == nil || tf.Custom == nil {
		return nil
	}
	var c struct {
		Delta *delta.Hint `json:"delta"`
	}
	if json.Unmarshal(*tf.Custom, &c) != nil {
		return nil
	}
	return c.Delta
}

// planDelta checks the director's hint against the offline-signed bindings and returns the plan,
// or nil (with the reason) when the full image is to be downloaded.
//
// A hint that starts from another image than the one installed (the director chose it before
// it heard of this device's last install) is not the end: the chunk indexes of the named image
// and of the installed one, found by their names in the image repository and checked against
// their signed bindings as a hint's are, still make a delta. The director chose to send a
// delta; only the device knows for sure what it runs.
func (a *Agent) planDelta(ctx context.Context, hint *delta.Hint, dec *uptane.Decision, lookup func(string) (*metadata.TargetFiles, error)) (*DeltaPlan, string) {
	if hint == nil || lookup == nil {
		return nil, ""
	}
	if _, ok := a.installer.(ActiveImage); !ok {
		return nil, "the installer cannot read the running image"
	}
	p, why, otherSource := a.planHint(hint, dec, lookup)
	if !otherSource || a.state.Installed.Target == "" {
		return p, why
	}
	own := &delta.Hint{Format: delta.FormatCaibx, Target: delta.IndexName(dec.Name), SourceIndex: delta.IndexName(a.state.Installed.Target)}
	if *own == *hint {
		return p, why
	}
	if q, _, _ := a.planHint(own, dec, lookup); q != nil {
		a.log.Info("the director's delta starts from another image; using the chunk indexes", "hint", hint.Target, "index", own.SourceIndex)
		return q, ""
	}
	return p, why
}

// planHint is planDelta for one hint. otherSource tells that the hint's delta starts from
// another image than the installed one.
func (a *Agent) planHint(hint *delta.Hint, dec *uptane.Decision, lookup func(string) (*metadata.TargetFiles, error)) (_ *DeltaPlan, why string, otherSource bool) {
	inst := a.state.Installed
	binding := func(name string) (*metadata.TargetFiles, *delta.Binding, error) {
		tf, err := lookup(name)
		if err != nil {
			return nil, nil, err
		}
		if tf.Hashes[uptane.ImageHash] == nil {
			return nil, nil, fmt.Errorf("%s has no %s", name, uptane.ImageHash)
		}
		var raw []byte
		if tf.Custom != nil {
			raw = *tf.Custom
		}
		b, err := delta.ParseBinding(raw)
		if err == nil && b == nil {
			err = fmt.Errorf("%s is not a delta target", name)
		}
		return tf, b, err
	}
	tf, b, err := binding(hint.Target)
	if err != nil {
		return nil, err.Error(), false
	}
	imgSHA := dec.Info.Hashes[uptane.ImageHash].String()
	if b.Format != hint.Format || b.Image != dec.Name || b.ImageSHA256 != imgSHA || b.ImageLength != dec.Info.Length {
		return nil, fmt.Sprintf("%s is signed for another image", hint.Target), false
	}
	p := &DeltaPlan{Format: b.Format, Target: hint.Target, Length: tf.Length, SHA256: tf.Hashes[uptane.ImageHash].String()}
	switch b.Format {
	case delta.FormatPatch:
		if b.SourceSHA256 != inst.SHA256 {
			return nil, fmt.Sprintf("%s applies to another source image", hint.Target), true
		}
		p.SourceLength = b.SourceLength
	case delta.FormatCaibx:
		stf, sb, err := binding(hint.SourceIndex)
		if err != nil {
			return nil, err.Error(), false
		}
		if sb.Format != delta.FormatCaibx || sb.ImageSHA256 != inst.SHA256 {
			return nil, fmt.Sprintf("%s indexes another image than the installed one", hint.SourceIndex), true
		}
		p.SourceIndex, p.SourceIndexLength, p.SourceIndexSHA256, p.SourceLength = hint.SourceIndex, stf.Length, stf.Hashes[uptane.ImageHash].String(), sb.ImageLength
	}
	if p.Length > dec.Info.Length+1<<20 {
		return nil, "the delta is larger than the image", false
	}
	return p, "", false
}

// errDelta marks a delta that failed for a reason other than the network: the full image is
// fetched instead.
type errDelta struct{ err error }

func (e *errDelta) Error() string { return "delta failed: " + e.err.Error() }
func (e *errDelta) Unwrap() error { return e.err }

// downloadDelta rebuilds img into its stage from the running image and the delta. Transient
// errors leave the plan journaled for a resume; any other failure is an *errDelta.
func (a *Agent) downloadDelta(ctx context.Context, tf *metadata.TargetFiles, img *Image) error {
	p := img.Delta
	ai := a.installer.(ActiveImage)
	active, closer, err := ai.OpenActive(ctx)
	if err != nil {
		return &errDelta{err}
	}
	defer closer.Close()
	out := sha256.New()
	if p.OutHash != nil {
		if err := out.(encoding.BinaryUnmarshaler).UnmarshalBinary(p.OutHash); err != nil {
			return &errDelta{err}
		}
	}
	var off int64
	if p.Format == delta.FormatPatch {
		off = p.Patch.OutOff
	} else {
		off = p.Chunk.OutOff
	}
	w, err := a.installer.Stage(ctx, img, off)
	if err != nil {
		return fmt.Errorf("stage %s: %w", img.Target, err)
	}
	sink := io.MultiWriter(w, out)
	ckpt := func() error {
		if err := w.Sync(); err != nil {
			return err
		}
		p.OutHash, _ = out.(encoding.BinaryMarshaler).MarshalBinary()
		return a.save()
	}
	if p.Format == delta.FormatPatch {
		err = a.applyPatch(ctx, active, img, sink, ckpt)
	} else {
		err = a.assemble(ctx, active, img, sink, ckpt)
	}
	if err != nil {
		w.Close() //nolint:errcheck // what was checkpointed stays; a resume re-checks
		return err
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("stage %s: %w", img.Target, err)
	}
	if hex.EncodeToString(out.Sum(nil)) != tf.Hashes[uptane.ImageHash].String() {
		return &errDelta{&uptane.VerificationError{Reason: uptane.ReasonHashMismatch, Msg: "the image rebuilt from the delta differs from the signed one"}}
	}
	img.Staged = tf.Length
	return nil
}

// applyPatch streams the patch from its journaled offset through its signed SHA-256 into the
// applier.
func (a *Agent) applyPatch(ctx context.Context, active io.ReaderAt, img *Image, sink io.Writer, ckpt func() error) error {
	p := img.Delta
	ph := sha256.New()
	if p.PatchHash != nil && p.Patch.PatchOff > 0 {
		if err := ph.(encoding.BinaryUnmarshaler).UnmarshalBinary(p.PatchHash); err != nil {
			return &errDelta{err}
		}
	} else {
		p.Patch = delta.ApplyState{}
	}
	ap, err := delta.NewApplier()
	if err != nil {
		return err
	}
	defer ap.Close()
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fetchErr := make(chan error, 1)
	url := a.dl.TargetURL(p.Target)
	go func() {
		n, err := fetchRange(ctx, a.dl, a.token, url, `"`+p.SHA256+`"`, p.Patch.PatchOff, p.Length, pw, a.cfg.MinRate, a.cfg.SlowWindow, 0, nil)
		if err == nil && n < p.Length {
			err = io.ErrUnexpectedEOF
		}
		pw.CloseWithError(cmpErr(err, io.EOF))
		fetchErr <- err
	}()
	start := p.Patch.PatchOff
	st, err := ap.Apply(ctx, active, p.SourceLength, img.Length, io.TeeReader(pr, ph), sink, p.Patch, func(s delta.ApplyState) error {
		p.Patch = s
		p.Downloaded += s.PatchOff - start
		start = s.PatchOff
		p.PatchHash, _ = ph.(encoding.BinaryMarshaler).MarshalBinary()
		return ckpt()
	})
	pr.CloseWithError(errors.New("apply finished"))
	cancel()
	ferr := <-fetchErr
	if err != nil {
		var ve *uptane.VerificationError
		if errors.As(ferr, &ve) {
			return &errDelta{ferr}
		}
		if errors.Is(err, delta.ErrCorrupt) {
			return &errDelta{err}
		}
		if ferr != nil && !errors.Is(ferr, context.Canceled) {
			return ferr // the network: resume from the last checkpoint
		}
		return &errDelta{err}
	}
	p.Downloaded += st.PatchOff - start
	p.Patch = st
	if st.PatchOff != p.Length || hex.EncodeToString(ph.Sum(nil)) != p.SHA256 {
		return &errDelta{&uptane.VerificationError{Reason: uptane.ReasonHashMismatch, Msg: fmt.Sprintf("delta %s differs from the signed one", p.Target)}}
	}
	return nil
}

func cmpErr(err, dflt error) error {
	if err == nil {
		return dflt
	}
	return err
}

// assemble rebuilds the image from the two chunk indexes (downloaded whole, each bounded by its
// signed length and checked against its signed SHA-256), the running image and Range requests
// for the chunks it lacks.
func (a *Agent) assemble(ctx context.Context, active io.ReaderAt, img *Image, sink io.Writer, ckpt func() error) error {
	p := img.Delta
	if p.Chunk.OutOff == 0 {
		p.Chunk = delta.ChunkState{}
	}
	dst, err := a.fetchIndex(ctx, p.Target, p.Length, p.SHA256, img.Length)
	if err != nil {
		return err
	}
	src, err := a.fetchIndex(ctx, p.SourceIndex, p.SourceIndexLength, p.SourceIndexSHA256, p.SourceLength)
	if err != nil {
		return err
	}
	if p.Chunk.OutOff == 0 {
		p.Downloaded = p.Length + p.SourceIndexLength
	}
	as := &delta.Assembler{Dst: dst, Src: src, Active: active, CkptEvery: a.cfg.CheckpointEvery}
	url := a.dl.TargetURL(img.Target)
	fetch := func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
		var buf bytes.Buffer
		buf.Grow(int(n))
		got, err := fetchPart(ctx, a.dl, a.token, url, `"`+img.SHA256+`"`, off, off+n, true, &buf, a.cfg.MinRate, a.cfg.SlowWindow, 0, nil)
		if err != nil {
			return nil, err
		}
		if got != off+n {
			return nil, &TransientError{Err: fmt.Errorf("range %d+%d truncated", off, n)}
		}
		return io.NopCloser(&buf), nil
	}
	prev := p.Chunk.Downloaded
	st, err := as.Assemble(ctx, fetch, sink, p.Chunk, func(s delta.ChunkState) error {
		p.Chunk = s
		p.Downloaded += s.Downloaded - prev
		prev = s.Downloaded
		return ckpt()
	})
	if err != nil {
		if errors.Is(err, delta.ErrChunk) {
			return &errDelta{&uptane.VerificationError{Reason: uptane.ReasonHashMismatch, Msg: err.Error()}}
		}
		var ve *uptane.VerificationError
		if errors.As(err, &ve) {
			return &errDelta{err}
		}
		return err
	}
	p.Downloaded += st.Downloaded - prev
	p.Chunk = st
	return nil
}

// fetchIndex downloads a chunk index target whole (at most 64 MiB: over a million chunks),
// checks its signed SHA-256 and parses it for an image of imageLength bytes.
func (a *Agent) fetchIndex(ctx context.Context, name string, length int64, sha string, imageLength int64) (*delta.Index, error) {
	if length > 64<<20 {
		return nil, &errDelta{fmt.Errorf("chunk index %s of %d bytes", name, length)}
	}
	var buf bytes.Buffer
	h := sha256.New()
	if _, err := fetchRange(ctx, a.dl, a.token, a.dl.TargetURL(name), "", 0, length, io.MultiWriter(&buf, h), a.cfg.MinRate, a.cfg.SlowWindow, 0, nil); err != nil {
		var ve *uptane.VerificationError
		if errors.As(err, &ve) {
			return nil, &errDelta{err}
		}
		return nil, err
	}
	if hex.EncodeToString(h.Sum(nil)) != sha {
		return nil, &errDelta{&uptane.VerificationError{Reason: uptane.ReasonHashMismatch, Msg: fmt.Sprintf("chunk index %s differs from the signed one", name)}}
	}
	x, err := delta.ReadIndex(&buf, imageLength)
	if err != nil {
		return nil, &errDelta{err}
	}
	return x, nil
}

// deltaFallback journals that the delta failed and reports it; the caller downloads the full
// image from byte 0.
func (a *Agent) deltaFallback(img *Image, err error) error {
	img.Delta.Failed = true
	img.Staged = 0
	a.event(img.Target, wire.StepDownload, wire.StatusFailed, false, fmt.Sprintf("%v; downloading the full image", err))
	return a.save()
}

var _ hash.Hash = sha256.New()

// downloaded is what fetching the image cost: the delta's bytes, or the whole image (plus
// what a failed delta fetched before it).
func (i *Image) downloaded() int64 {
	p := i.Delta
	switch {
	case p == nil:
		return i.Length
	case p.Failed:
		return i.Length + p.Downloaded
	}
	return p.Downloaded
}

// downloadSummary says how the image arrived, for the download event: the delta used and the
// bytes downloaded against the image's size.
func (i *Image) downloadSummary() string {
	p := i.Delta
	if p == nil || p.Failed || i.Length == 0 {
		return ""
	}
	return fmt.Sprintf("delta %s: downloaded %d of %d bytes (%.1f%%)", p.Format, p.Downloaded, i.Length, 100*float64(p.Downloaded)/float64(i.Length))
}
