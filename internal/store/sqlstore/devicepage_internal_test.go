package sqlstore

import (
	"strings"
	"testing"
)

func TestPrefixEnd(t *testing.T) {
	for _, c := range []struct {
		in, want string
		ok       bool
	}{
		{"sn00999", "sn0099:", true},
		{"a", "b", true},
		{"z\U0010FFFF", "{", true},
		{"\U0010FFFF", "", false},
		{"x\uD7FF", "x\uE000", true},
		{"é", "ê", true},
	} {
		got, ok := prefixEnd(c.in)
		if got != c.want || ok != c.ok {
			t.Errorf("prefixEnd(%q) = %q, %v; want %q, %v", c.in, got, ok, c.want, c.ok)
		}
		if ok && !(c.in < got && c.in+"\U0010FFFF" < got && strings.HasPrefix(c.in+"\U0010FFFF", c.in)) {
			t.Errorf("prefixEnd(%q) = %q: not past every string with the prefix", c.in, got)
		}
	}
	if got := foldASCII("SN-Ä1x"); got != "sn-Ä1x" {
		t.Errorf("foldASCII = %q", got)
	}
}
