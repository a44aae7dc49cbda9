package client

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/delta"
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
	out := filepath.Join(dir, "from-"+src.Version+".upkdlt1")
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

// target is the signed entry of a delta: the image's custom fields plus the binding.
func (d *deltaFile) target(c uptane.TargetCustom) (*metadata.TargetFiles, error) {
	tf, err := uptane.NewTargetFile(d.blob.Length, d.blob.SHA256, d.blob.SHA512, c)
	if err != nil {
		return nil, err
	}
	custom, err := delta.WithBinding(*tf.Custom, &d.binding)
	if err != nil {
		return nil, err
	}
	raw := json.RawMessage(custom)
	tf.Custom = &raw
	return tf, nil
}
