package vuln

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/osv-scalibr/semantic"
)

// ErrNoOrdering reports an ecosystem for which no version ordering is known.
var ErrNoOrdering = errors.New("no version ordering for ecosystem")

// version is a parsed version that can be compared with another of the same
// ordering.
type version interface {
	compare(other version) (int, error)
}

type semanticVersion struct{ v semantic.Version }

func (s semanticVersion) compare(o version) (int, error) {
	ov, ok := o.(semanticVersion)
	if !ok {
		return 0, semantic.ErrNotSameEcosystem
	}
	return s.v.Compare(ov.v)
}

// parseVersion parses v under an ecosystem's ordering. The pseudo-ecosystem
// "SEMVER" selects SemVer 2.0 as OSV SEMVER ranges require.
func parseVersion(ecosystem, v string) (version, error) {
	if v == "" {
		return nil, fmt.Errorf("empty version")
	}
	switch eco := baseEcosystem(ecosystem); eco {
	case "", "generic":
		return parseGeneric(v)
	case "SEMVER":
		return semanticVersion{semantic.ParseSemverVersion(v)}, nil
	case "Go":
		return semanticVersion{semantic.ParseSemverVersion(strings.TrimPrefix(v, "go"))}, nil
	default:
		sv, err := semantic.Parse(v, eco)
		if err != nil {
			if errors.Is(err, semantic.ErrUnsupportedEcosystem) {
				return nil, fmt.Errorf("%w %q", ErrNoOrdering, eco)
			}
			return nil, fmt.Errorf("parse %s version %q: %w", eco, v, err)
		}
		return semanticVersion{sv}, nil
	}
}

// Compare orders two versions of one ecosystem: -1 if a < b, 0 if equal, +1
// if a > b. Ecosystems are ordered by osv-scalibr's semantic package (Go,
// npm, crates.io and SEMVER by SemVer 2.0; PyPI by PEP 440; Maven by the
// Maven ComparableVersion rules; Debian and Ubuntu by dpkg; Alpine by apk;
// RubyGems, NuGet, Packagist, Pub, Hex, CRAN, Hackage, Red Hat and SUSE by
// their own rules). An OSV release suffix ("Debian:12") is ignored.
//
// The ecosystem "" (or "generic"), for firmware components, uses this
// ordering: a leading "v" and anything from "+" on are ignored; the rest is
// split into runs of digits and runs of letters, every other character being
// a separator; runs are compared left to right, digits numerically (any
// length), letters case-insensitively as ASCII, and a number is greater than
// letters. When one version runs out of runs first, it is greater than a
// version that goes on with letters (1.2 > 1.2-rc1 > 1.2-beta) and less than
// one that goes on with a number (1.2 < 1.2.1). Separators do not count:
// 1.2-3 equals 1.2.3.
//
// Compare returns an error wrapping ErrNoOrdering for other ecosystems, or a
// parse error for a version the ecosystem rejects.
func Compare(ecosystem, a, b string) (int, error) {
	va, err := parseVersion(ecosystem, a)
	if err != nil {
		return 0, err
	}
	vb, err := parseVersion(ecosystem, b)
	if err != nil {
		return 0, err
	}
	return va.compare(vb)
}

// genericVersion is a version under the generic firmware ordering.
type genericVersion []genericToken

type genericToken struct {
	num  bool
	text string // digits without leading zeros, or lower-case letters
}

const maxGenericTokens = 64

func parseGeneric(v string) (genericVersion, error) {
	s := strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(v), "v"), "V")
	if i := strings.IndexByte(s, '+'); i >= 0 {
		s = s[:i]
	}
	var out genericVersion
	for i := 0; i < len(s); {
		ch := s[i]
		switch {
		case isDigit(ch):
			j := i
			for j < len(s) && isDigit(s[j]) {
				j++
			}
			n := strings.TrimLeft(s[i:j], "0")
			if n == "" {
				n = "0"
			}
			out = append(out, genericToken{num: true, text: n})
			i = j
		case isLetter(ch):
			j := i
			for j < len(s) && isLetter(s[j]) {
				j++
			}
			out = append(out, genericToken{text: strings.ToLower(s[i:j])})
			i = j
		default:
			i++
		}
		if len(out) > maxGenericTokens {
			return nil, fmt.Errorf("generic version %q has more than %d parts", v, maxGenericTokens)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("generic version %q has no digits or letters", v)
	}
	return out, nil
}

func isDigit(c byte) bool  { return '0' <= c && c <= '9' }
func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

func (g genericVersion) compare(o version) (int, error) {
	h, ok := o.(genericVersion)
	if !ok {
		return 0, semantic.ErrNotSameEcosystem
	}
	for i := 0; ; i++ {
		// rank: letters 0 < end 1 < number 2.
		ra, rb := rank(g, i), rank(h, i)
		if ra != rb {
			return cmpInt(ra, rb), nil
		}
		if ra == 1 {
			return 0, nil
		}
		a, b := g[i].text, h[i].text
		if ra == 2 && len(a) != len(b) {
			return cmpInt(len(a), len(b)), nil
		}
		if c := strings.Compare(a, b); c != 0 {
			return c, nil
		}
	}
}

func rank(g genericVersion, i int) int {
	if i >= len(g) {
		return 1
	}
	if g[i].num {
		return 2
	}
	return 0
}

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
