package agent

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/delta"
	"upkeep.dev/upkeep/internal/uptane"
)

// TestPlanDeltaRefuses: a hint from the director (online key) is used only when the
// offline-signed binding of the delta names the assigned image and the installed one; a delta
// for another source, another destination or of another form is not used.
func TestPlanDeltaRefuses(t *testing.T) {
	installed, other, img := strings.Repeat("1", 64), strings.Repeat("2", 64), strings.Repeat("3", 64)
	h := func(s string) metadata.HexBytes { b, _ := hex.DecodeString(s); return b }
	target := func(b delta.Binding) *metadata.TargetFiles {
		raw, _ := delta.WithBinding([]byte(`{"product":"p"}`), &b)
		m := json.RawMessage(raw)
		return &metadata.TargetFiles{Length: 100, Hashes: metadata.Hashes{"sha256": h(strings.Repeat("9", 64))}, Custom: &m}
	}
	good := delta.Binding{Format: delta.FormatPatch, Image: "p/2/img", ImageSHA256: img, ImageLength: 1000, Source: "p/1/img", SourceSHA256: installed, SourceLength: 1000}
	otherSource := good
	otherSource.SourceSHA256 = other
	otherImage := good
	otherImage.ImageSHA256 = other
	idx := delta.Binding{Format: delta.FormatCaibx, Image: "p/2/img", ImageSHA256: img, ImageLength: 1000}
	idxOther := delta.Binding{Format: delta.FormatCaibx, Image: "p/0/img", ImageSHA256: other, ImageLength: 1000}
	targets := map[string]*metadata.TargetFiles{
		"good": target(good), "other-source": target(otherSource), "other-image": target(otherImage),
		"idx": target(idx), "idx-other": target(idxOther),
		"image": {Length: 1000, Hashes: metadata.Hashes{"sha256": h(img)}},
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
