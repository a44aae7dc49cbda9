package agent

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/delta"
	"upkeep.dev/upkeep/internal/uptane"
)

// hexBytes decodes a hex digest of the tests.
func hexBytes(s string) metadata.HexBytes { b, _ := hex.DecodeString(s); return b }

// bindingTarget is a delta target of 100 bytes with binding b.
func bindingTarget(b delta.Binding) *metadata.TargetFiles {
	raw, _ := delta.WithBinding([]byte(`{"product":"p"}`), &b)
	m := json.RawMessage(raw)
	return &metadata.TargetFiles{Length: 100, Hashes: metadata.Hashes{"sha256": hexBytes(strings.Repeat("9", 64))}, Custom: &m}
}

// TestPlanDeltaRefuses: a hint from the director (online key) is used only when the
// offline-signed binding of the delta names the assigned image and the installed one; a delta
// for another source, another destination or of another form is not used.
func TestPlanDeltaRefuses(t *testing.T) {
	installed, other, img := strings.Repeat("1", 64), strings.Repeat("2", 64), strings.Repeat("3", 64)
	good := delta.Binding{Format: delta.FormatPatch, Image: "p/2/img", ImageSHA256: img, ImageLength: 1000, Source: "p/1/img", SourceSHA256: installed, SourceLength: 1000}
	otherSource := good
	otherSource.SourceSHA256 = other
	otherImage := good
	otherImage.ImageSHA256 = other
	idx := delta.Binding{Format: delta.FormatCaibx, Image: "p/2/img", ImageSHA256: img, ImageLength: 1000}
	idxOther := delta.Binding{Format: delta.FormatCaibx, Image: "p/0/img", ImageSHA256: other, ImageLength: 1000}
	targets := map[string]*metadata.TargetFiles{
		"good": bindingTarget(good), "other-source": bindingTarget(otherSource), "other-image": bindingTarget(otherImage),
		"idx": bindingTarget(idx), "idx-other": bindingTarget(idxOther),
		"image": {Length: 1000, Hashes: metadata.Hashes{"sha256": hexBytes(img)}},
	}
	lookup := func(n string) (*metadata.TargetFiles, error) {
		if tf, ok := targets[n]; ok {
			return tf, nil
		}
		return nil, errors.New("not found")
	}
	a := &Agent{installer: &ABInstaller{}, state: &State{Installed: Image{SHA256: installed}}}
	dec := &uptane.Decision{Name: "p/2/img", Info: targets["image"]}
	for _, c := range []struct {
		name string
		hint delta.Hint
		use  bool
	}{
		{"patch from the installed image", delta.Hint{Format: delta.FormatPatch, Target: "good"}, true},
		{"patch for another source", delta.Hint{Format: delta.FormatPatch, Target: "other-source"}, false},
		{"patch to another image", delta.Hint{Format: delta.FormatPatch, Target: "other-image"}, false},
		{"hint lies about the form", delta.Hint{Format: delta.FormatCaibx, Target: "good", SourceIndex: "idx"}, false},
		{"source index of another image", delta.Hint{Format: delta.FormatCaibx, Target: "idx", SourceIndex: "idx-other"}, false},
		{"an image named as a delta", delta.Hint{Format: delta.FormatPatch, Target: "image"}, false},
		{"unsigned delta", delta.Hint{Format: delta.FormatPatch, Target: "absent"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, why := a.planDelta(context.Background(), &c.hint, dec, lookup)
			if (p != nil) != c.use {
				t.Fatalf("plan %+v (%s), want used=%v", p, why, c.use)
			}
		})
	}
}

// TestPlanDeltaOwnIndex: a hint that starts from another image than the installed one (the
// director had not heard of the last install) falls back on the chunk indexes of the assigned
// image and of the installed one, found by name and used only if their signed bindings say so.
func TestPlanDeltaOwnIndex(t *testing.T) {
	installed, other, img := strings.Repeat("1", 64), strings.Repeat("2", 64), strings.Repeat("3", 64)
	stale := delta.Binding{Format: delta.FormatPatch, Image: "p/2/img", ImageSHA256: img, ImageLength: 1000, Source: "p/0/img", SourceSHA256: other, SourceLength: 1000}
	wrongImage := stale
	wrongImage.ImageSHA256 = other
	dst := delta.Binding{Format: delta.FormatCaibx, Image: "p/2/img", ImageSHA256: img, ImageLength: 1000}
	own := delta.Binding{Format: delta.FormatCaibx, Image: "p/1/img", ImageSHA256: installed, ImageLength: 1000}
	older := delta.Binding{Format: delta.FormatCaibx, Image: "p/0/img", ImageSHA256: other, ImageLength: 1000}
	base := map[string]*metadata.TargetFiles{
		"stale": bindingTarget(stale), "wrong-image": bindingTarget(wrongImage),
		delta.IndexName("p/2/img"): bindingTarget(dst), delta.IndexName("p/0/img"): bindingTarget(older),
		"image": {Length: 1000, Hashes: metadata.Hashes{"sha256": hexBytes(img)}},
	}
	dec := &uptane.Decision{Name: "p/2/img", Info: base["image"]}
	for _, c := range []struct {
		name     string
		hint     delta.Hint
		ownIndex *delta.Binding // the installed image's index in the repository (nil: none)
		want     string         // the source index used ("": the full image)
	}{
		{"patch from an older image", delta.Hint{Format: delta.FormatPatch, Target: "stale"}, &own, delta.IndexName("p/1/img")},
		{"index of an older image", delta.Hint{Format: delta.FormatCaibx, Target: delta.IndexName("p/2/img"), SourceIndex: delta.IndexName("p/0/img")}, &own, delta.IndexName("p/1/img")},
		{"no index of the installed image", delta.Hint{Format: delta.FormatPatch, Target: "stale"}, nil, ""},
		{"the installed image's name indexes another image", delta.Hint{Format: delta.FormatPatch, Target: "stale"}, &older, ""},
		{"a delta to another image is not corrected", delta.Hint{Format: delta.FormatPatch, Target: "wrong-image"}, &own, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			targets := map[string]*metadata.TargetFiles{}
			for k, v := range base {
				targets[k] = v
			}
			if c.ownIndex != nil {
				targets[delta.IndexName("p/1/img")] = bindingTarget(*c.ownIndex)
			}
			lookup := func(n string) (*metadata.TargetFiles, error) {
				if tf, ok := targets[n]; ok {
					return tf, nil
				}
				return nil, errors.New("not found")
			}
			a := &Agent{installer: &ABInstaller{}, log: slog.New(slog.DiscardHandler), state: &State{Installed: Image{Target: "p/1/img", SHA256: installed}}}
			p, why := a.planDelta(context.Background(), &c.hint, dec, lookup)
			got := ""
			if p != nil {
				got = p.SourceIndex
				if p.Format != delta.FormatCaibx || p.Target != delta.IndexName("p/2/img") {
					t.Fatalf("plan %+v: want the chunk index of p/2/img", p)
				}
			}
			if got != c.want {
				t.Fatalf("source index %q (%s), want %q", got, why, c.want)
			}
		})
	}
}
