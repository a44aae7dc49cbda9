package delta

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestChoose(t *testing.T) {
	a, b, c := strings.Repeat("a", 64), strings.Repeat("b", 64), strings.Repeat("c", 64)
	targets := []Target{
		{Name: "p/2/img.from-1.upkdlt2", Length: 900, Binding: Binding{Format: FormatPatch, Image: "p/2/img", SourceSHA256: a}},
		{Name: "p/2/img.from-1b.upkdlt2", Length: 500, Binding: Binding{Format: FormatPatch, Image: "p/2/img", SourceSHA256: a}},
		{Name: "p/3/img.from-1.upkdlt2", Length: 10, Binding: Binding{Format: FormatPatch, Image: "p/3/img", SourceSHA256: a}},
		{Name: "p/2/img.caibx", Binding: Binding{Format: FormatCaibx, Image: "p/2/img", ImageSHA256: c}},
		{Name: "p/0/img.caibx", Binding: Binding{Format: FormatCaibx, Image: "p/0/img", ImageSHA256: b}},
	}
	for _, tc := range []struct {
		name, installed, image string
		want                   *Hint
	}{
		{"smallest patch from the installed image", a, "p/2/img", &Hint{Format: FormatPatch, Target: "p/2/img.from-1b.upkdlt2"}},
		{"no patch from this source: chunk index", b, "p/2/img", &Hint{Format: FormatCaibx, Target: "p/2/img.caibx", SourceIndex: "p/0/img.caibx"}},
		{"installed image has no index: full image", strings.Repeat("d", 64), "p/2/img", nil},
		{"nothing for this image", b, "p/4/img", nil},
		{"installed unknown", "", "p/2/img", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, Choose(tc.installed, tc.image, targets)); d != "" {
				t.Error(d)
			}
		})
	}
}
