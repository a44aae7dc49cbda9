package inventory

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     Attributes
		err      string
		limit    bool
	}{
		{name: "mender script", in: "device_type=raspberrypi4\nmac_eth0=dc:a6:32:01:02:03\n", want: Attributes{"device_type": {"raspberrypi4"}, "mac_eth0": {"dc:a6:32:01:02:03"}}},
		{name: "repeated key gives a list", in: "ipv4=10.0.0.2/24\nipv4=192.168.1.2/24\nipv4=10.0.0.2/24\n", want: Attributes{"ipv4": {"10.0.0.2/24", "192.168.1.2/24"}}},
		{name: "spaces, blank lines and lines without =", in: "  region = eu-west \n\njunk line\r\nos=Debian GNU/Linux 12 (bookworm)\r\n", want: Attributes{"region": {"eu-west"}, "os": {"Debian GNU/Linux 12 (bookworm)"}}},
		{name: "value keeps later =", in: "cmdline=root=/dev/mmcblk0p2 rw\n", want: Attributes{"cmdline": {"root=/dev/mmcblk0p2 rw"}}},
		{name: "empty value", in: "tag=\n", want: Attributes{"tag": {""}}},
		{name: "empty key", in: "=x\n", err: "empty key"},
		{name: "bad key", in: "re gion=x\n", err: "only letters"},
		{name: "long key", in: strings.Repeat("k", MaxKey+1) + "=x\n", err: "longer than 64", limit: true},
		{name: "long value", in: "k=" + strings.Repeat("v", MaxValue+1) + "\n", err: "value longer than 1024", limit: true},
		{name: "invalid UTF-8", in: "k=\xff\n", err: "UTF-8"},
		{name: "too many keys", in: manyKeys(MaxAttributes + 1), err: "more than 128 attributes", limit: true},
		{name: "too many values", in: manyValues(MaxValues + 1), err: "more than 64 values", limit: true},
		{name: "too large", in: strings.Repeat("k="+strings.Repeat("v", 1000)+"\n", 40), err: "more than 32768 bytes", limit: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(strings.NewReader(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one saying %q", err, tc.err)
				}
				if errors.Is(err, ErrLimit) != tc.limit {
					t.Errorf("errors.Is(%v, ErrLimit) = %v, want %v", err, !tc.limit, tc.limit)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func manyKeys(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString("k" + strings.Repeat("x", i%5) + string(rune('a'+i%26)) + string(rune('a'+i/26)) + "=v\n")
	}
	return b.String()
}

func manyValues(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString("k=v" + strings.Repeat("x", i) + "\n")
	}
	return b.String()
}

func TestDigestAndFlatten(t *testing.T) {
	a := Attributes{"region": {"eu-west"}, "ipv4": {"10.0.0.2", "10.0.0.3"}}
	b := Attributes{"ipv4": {"10.0.0.2", "10.0.0.3"}, "region": {"eu-west"}}
	if a.Digest() != b.Digest() {
		t.Error("the digest depends on map order")
	}
	c := Attributes{"ipv4": {"10.0.0.2\n10.0.0.3"}, "region": {"eu-west"}}
	if a.Digest() == c.Digest() {
		t.Error("a list and a joined value have the same digest")
	}
	d := Attributes{"region": {"eu-west="}}
	e := Attributes{"region=": {"eu-west"}}
	if d.Digest() == e.Digest() {
		t.Error("moving = between key and value keeps the digest")
	}
	if got := a.Flatten()["ipv4"]; got != "10.0.0.2\n10.0.0.3" {
		t.Errorf("flattened list %q", got)
	}
	if got := Values(a.Flatten()["ipv4"]); !cmp.Equal(got, []string{"10.0.0.2", "10.0.0.3"}) {
		t.Errorf("values %q", got)
	}
}

// FuzzParse: whatever a script prints, Parse either refuses it or returns attributes that pass
// Validate, with a stable digest.
func FuzzParse(f *testing.F) {
	f.Add("device_type=rpi4\nregion=eu-west\nregion=eu-north\n")
	f.Add("=\n==\nk==v\n\x00=\xff\n")
	f.Add(strings.Repeat("k=v\n", 100))
	f.Fuzz(func(t *testing.T, s string) {
		a, err := Parse(strings.NewReader(s))
		if err != nil {
			return
		}
		if err := a.Validate(); err != nil {
			t.Fatalf("Parse accepted what Validate refuses: %v", err)
		}
		if a.Digest() != a.Digest() {
			t.Fatal("unstable digest")
		}
	})
}
