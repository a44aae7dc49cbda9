package client

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/wire"
)

// PublishOptions describe a release to publish.
type PublishOptions struct {
	File       string
	Custom     uptane.TargetCustom
	TargetsKey *tuf.Key
	// ProductKeys sign the product's own role when the top-level targets delegate the product
	// to it (`upkeep keys delegate`); TargetsKey is then not used.
	ProductKeys []*tuf.Key
	// TrustedRoot is the release engineer's copy of the image root (keys/root.json). Newer roots
	// are fetched from the server and accepted only along a verified rotation chain.
	TrustedRoot []byte
	Expires     time.Duration // lifetime of the new targets metadata
	// Progress, if set, wraps the artifact's reads while it is hashed (phase "hashing") and
	// uploaded ("uploading"): a progress bar.
	Progress func(phase string, r io.Reader, size int64) io.Reader
	// SBOM, if set, is the release's SBOM file: its SHA-256 is signed into the target's custom
	// (sbom_sha256) and it is uploaded after the release.
	SBOM string
	// NoIndex leaves out the chunk index (a caibx target signed with the image), which lets
	// devices running any indexed release fetch only the chunks they lack.
	NoIndex bool
	// DeltaFrom are earlier releases' image files: a per-pair delta from each is made here and
	// signed with the release.
	DeltaFrom []DeltaSource
	// Checked, if set, receives the release check of the SBOM, made before anything is signed.
	Checked func(*ReleaseCheck)
}

// Publish hashes the artifact, extends the current image targets with it, signs them locally
// with the offline targets key, uploads the artifact and then the signed metadata. It never
// signs targets metadata it could not verify against the trusted root.
func (c *Client) Publish(ctx context.Context, o PublishOptions) (*wire.Release, error) {
	blob, err := hashFile(o.File, o.Progress)
	if err != nil {
		return nil, err
	}
	name := tuf.TargetName(o.Custom.Product, o.Custom.Version, filepath.Base(o.File))
	if err := tuf.ValidTargetName(name); err != nil {
		return nil, err
	}
	var sbom []byte
	if o.SBOM != "" {
		raw, sb, err := ReadSBOM(o.SBOM)
		if err != nil {
			return nil, err
		}
		sbom, o.Custom.SBOM = raw, sb.Digest
		// The server's release gate reads the SBOM it was sent for a check before publishing.
		chk, err := c.checkRelease(ctx, o.Custom.Product, o.Custom.Version, raw)
		if err != nil {
			return nil, fmt.Errorf("release check: %w", err)
		}
		if o.Checked != nil {
			o.Checked(chk)
		}
		if chk.Gate.Blocked {
			return nil, apperr.E(apperr.Forbidden, "the release gate of %s refuses %s@%s: %s (see `upkeep release check`)", o.Custom.Product, o.Custom.Product, o.Custom.Version, strings.Join(chk.Gate.Blockers, ", "))
		}
	}
	tf, err := uptane.NewTargetFile(blob.Length, blob.SHA256, blob.SHA512, o.Custom)
	if err != nil {
		return nil, err
	}
	if err := c.uploadBlob(ctx, o, blob); err != nil {
		return nil, err
	}
	var deltas []*deltaFile
	var tmp string
	if !o.NoIndex || len(o.DeltaFrom) > 0 {
		if tmp, err = os.MkdirTemp("", "upkeep-delta"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
	}
	if !o.NoIndex {
		d, err := makeIndex(o.File, tmp, name, blob)
		if err != nil {
			return nil, err
		}
		deltas = append(deltas, d)
	}
	madePatches := false
	for attempt := 0; ; attempt++ {
		base, err := c.baseFor(ctx, o.TrustedRoot, name)
		if err != nil {
			return nil, err
		}
		t := base.T
		if _, ok := t.Signed.Targets[name]; ok {
			return nil, apperr.E(apperr.Conflict, "target %s is already published", name)
		}
		if !madePatches {
			for _, src := range o.DeltaFrom {
				d, err := makePatch(ctx, t.Signed.Targets, o.Custom.Product, src, o.File, tmp, name, blob)
				if err != nil {
					return nil, err
				}
				deltas = append(deltas, d)
			}
			for _, d := range deltas {
				if err := c.uploadBlob(ctx, PublishOptions{File: d.path}, d.blob); err != nil {
					return nil, fmt.Errorf("upload delta %s: %w", d.name, err)
				}
			}
			madePatches = true
		}
		t.Signed.Targets[name] = tf
		for _, d := range deltas {
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
		var rel wire.Release
		err = c.Do(ctx, http.MethodPost, "/api/v1/releases", wire.PublishRequest{Target: name, Targets: signed}, &rel)
		if apperr.Is(err, apperr.Conflict) && attempt < 3 {
			continue // another release was published meanwhile: sign on top of it
		}
		if err != nil {
			return nil, err
		}
		if sbom != nil {
			if _, err := c.putSBOM(ctx, rel.Product, rel.Version, sbom); err != nil {
				return &rel, fmt.Errorf("%s@%s is published, but its SBOM upload failed (retry with `upkeep sbom attach`): %w", rel.Product, rel.Version, err)
			}
		}
		return &rel, nil
	}
}

func (c *Client) uploadBlob(ctx context.Context, o PublishOptions, b *wire.BlobInfo) error {
	f, err := os.Open(o.File)
	if err != nil {
		return fmt.Errorf("open artifact: %w", err)
	}
	defer f.Close()
	var r io.Reader = f
	if o.Progress != nil {
		r = o.Progress("uploading", f, b.Length)
	}
	var got wire.BlobInfo
	if err := c.Do(ctx, http.MethodPut, "/api/v1/blobs/"+b.SHA256, sized{r, b.Length}, &got); err != nil {
		return fmt.Errorf("upload artifact: %w", err)
	}
	if got != *b {
		return fmt.Errorf("server stored %+v, expected %+v", got, *b)
	}
	return nil
}

type sized struct {
	io.Reader
	n int64
}

func (s sized) Size() int64 { return s.n }

func hashFile(path string, progress func(string, io.Reader, int64) io.Reader) (*wire.BlobInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open artifact: %w", err)
	}
	defer f.Close()
	var r io.Reader = f
	if progress != nil {
		st, err := f.Stat()
		if err != nil {
			return nil, fmt.Errorf("artifact: %w", err)
		}
		r = progress("hashing", f, st.Size())
	}
	h256, h512 := sha256.New(), sha512.New()
	n, err := io.Copy(io.MultiWriter(h256, h512), r)
	if err != nil {
		return nil, fmt.Errorf("hash artifact: %w", err)
	}
	return &wire.BlobInfo{SHA256: hex.EncodeToString(h256.Sum(nil)), SHA512: hex.EncodeToString(h512.Sum(nil)), Length: n}, nil
}

// verifiedTargets fetches the server's current image targets and checks their signatures
// against the root reached from trusted; the base may have expired (a new signature is what
// renews it), but its signatures must hold.
func (c *Client) verifiedTargets(ctx context.Context, trusted []byte) (*metadata.Metadata[metadata.TargetsType], error) {
	root, err := c.LatestRoot(ctx, trusted)
	if err != nil {
		return nil, err
	}
	var cur []byte
	if err := c.Do(ctx, http.MethodGet, "/api/v1/image/targets", nil, &cur); err != nil {
		return nil, err
	}
	t, err := uptane.VerifyImageTargetsSigned(root, cur)
	if err != nil {
		return nil, fmt.Errorf("the server's current targets do not verify against the trusted root; refusing to sign on top of them: %w", err)
	}
	return t, nil
}

// LatestRoot walks the server's image roots from trusted, accepting each only if the previous
// one's threshold of keys signed it (TUF client workflow 5.3).
func (c *Client) LatestRoot(ctx context.Context, trusted []byte) (*metadata.Metadata[metadata.RootType], error) {
	return c.latestRoot(ctx, "/repo/image/", trusted)
}

// LatestDirectorRoot is LatestRoot for the director's root (the operator's director-root.json).
func (c *Client) LatestDirectorRoot(ctx context.Context, trusted []byte) (*metadata.Metadata[metadata.RootType], error) {
	return c.latestRoot(ctx, "/api/v1/director/", trusted)
}

func (c *Client) latestRoot(ctx context.Context, prefix string, trusted []byte) (*metadata.Metadata[metadata.RootType], error) {
	root, err := tuf.ParseRoot(trusted)
	if err != nil {
		return nil, err
	}
	for range 256 {
		var next []byte
		err := c.Do(ctx, http.MethodGet, prefix+strconv.FormatInt(root.Signed.Version+1, 10)+".root.json", nil, &next)
		if apperr.Is(err, apperr.NotFound) {
			return root, nil
		}
		if err != nil {
			return nil, err
		}
		if root, err = tuf.VerifyRootUpdate(root, next); err != nil {
			return nil, err
		}
	}
	return root, nil
}

// RotateRoot uploads a new root.
func (c *Client) RotateRoot(ctx context.Context, root []byte) error {
	return c.Do(ctx, http.MethodPut, "/api/v1/image/root", root, nil)
}
