package envfile

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	got, err := Parse("t", []byte("# comment\n\nUPKEEP_ADDR=0.0.0.0:8443\nUPKEEP_DATA = \"/var/lib/upkeep\" # inline\n UPKEEP_EMPTY=\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"UPKEEP_ADDR": "0.0.0.0:8443", "UPKEEP_DATA": "/var/lib/upkeep", "UPKEEP_EMPTY": ""}
	if d := cmp.Diff(want, got); d != "" {
		t.Error(d)
	}
	for _, bad := range []string{"ADDR=x", "UPKEEP_ADDR", "UPKEEP A=1"} {
		if _, err := Parse("t", []byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("UPKEEP_A=1\n# c\nUPKEEP_B='x' # y"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse("f", b)
		if err == nil {
			for k := range m {
				if len(k) < len("UPKEEP_") {
					t.Fatalf("key %q", k)
				}
			}
		}
	})
}
