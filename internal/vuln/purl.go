package vuln

import (
	"fmt"
	"net/url"
	"strings"

	packageurl "github.com/package-url/packageurl-go"
)

// purlEcosystems maps a purl type to its OSV ecosystem name. Types missing
// here keep their purl type as ecosystem, which has no ordering, so their
// range matches are reported "unmatched".
var purlEcosystems = map[string]string{
	"golang":   "Go",
	"npm":      "npm",
	"pypi":     "PyPI",
	"maven":    "Maven",
	"deb":      "Debian",
	"apk":      "Alpine",
	"cargo":    "crates.io",
	"gem":      "RubyGems",
	"nuget":    "NuGet",
	"composer": "Packagist",
	"hex":      "Hex",
	"pub":      "Pub",
	"hackage":  "Hackage",
	"cran":     "CRAN",
	"swift":    "SwiftURL",
	"conan":    "ConanCenter",
	"generic":  "",
}

// distroEcosystems refines deb, apk and rpm purls by their namespace.
var distroEcosystems = map[string]string{
	"deb/debian":      "Debian",
	"deb/ubuntu":      "Ubuntu",
	"apk/alpine":      "Alpine",
	"apk/wolfi":       "Wolfi",
	"apk/chainguard":  "Chainguard",
	"rpm/redhat":      "Red Hat",
	"rpm/almalinux":   "AlmaLinux",
	"rpm/rocky-linux": "Rocky Linux",
	"rpm/opensuse":    "openSUSE",
	"rpm/suse":        "SUSE",
}

// ComponentFromPURL parses a package URL into a Component: the ecosystem in
// OSV spelling and the package name as OSV advisories write it (Go module
// path, "@scope/name" for npm, "group:artifact" for Maven, "namespace/name"
// for Packagist and generic purls). The Go standard library
// (pkg:golang/std@go1.26.8) becomes Go "stdlib" at version "1.26.8", as in
// the Go vulnerability database.
func ComponentFromPURL(purl string) (Component, error) {
	p, err := packageurl.FromString(strings.TrimSpace(purl))
	if err != nil {
		return Component{}, fmt.Errorf("parse purl %q: %w", purl, err)
	}
	if p.Name == "" {
		return Component{}, fmt.Errorf("parse purl %q: no name", purl)
	}
	c := Component{PURL: strings.TrimSpace(purl), Version: p.Version}
	typ := strings.ToLower(p.Type)
	eco, known := purlEcosystems[typ]
	if d, ok := distroEcosystems[typ+"/"+strings.ToLower(p.Namespace)]; ok {
		eco, known = d, true
	}
	if !known {
		eco = typ
	}
	c.Ecosystem = eco
	switch typ {
	case "golang":
		// packageurl-go lower-cases golang namespaces, but Go module paths
		// are case sensitive (github.com/Azure/...): take the path as written.
		c.Name = goPURLPath(purl, joinNS(p.Namespace, p.Name, "/"))
		if c.Name == "std" || c.Name == "stdlib" {
			c.Name = "stdlib"
			c.Version = goToolchainVersion(c.Version)
		}
	case "npm":
		c.Name = joinNS(p.Namespace, p.Name, "/")
	case "maven":
		c.Name = joinNS(p.Namespace, p.Name, ":")
	case "composer", "generic", "swift":
		c.Name = joinNS(p.Namespace, p.Name, "/")
	default:
		c.Name = p.Name
	}
	if typ == "deb" || typ == "apk" {
		c.Ecosystem = withDistroRelease(c.Ecosystem, p.Qualifiers.Map()["distro"])
	}
	return c, nil
}

func goPURLPath(purl, fallback string) string {
	rest, ok := strings.CutPrefix(strings.TrimSpace(purl), "pkg:")
	if !ok {
		return fallback
	}
	rest = strings.TrimLeft(rest, "/")
	_, rest, ok = strings.Cut(rest, "/")
	if !ok {
		return fallback
	}
	if i := strings.IndexAny(rest, "@?#"); i >= 0 {
		rest = rest[:i]
	}
	path, err := url.PathUnescape(strings.Trim(rest, "/"))
	if err != nil || !strings.EqualFold(path, fallback) {
		return fallback
	}
	return path
}

func joinNS(ns, name, sep string) string {
	if ns == "" {
		return name
	}
	return ns + sep + name
}

// goToolchainVersion turns "go1.21", "go1.21.3", "go1.22rc1" into the
// SemVer spelling of the Go vulnerability database ("1.21.0", "1.21.3",
// "1.22.0-rc.1").
func goToolchainVersion(v string) string {
	v = strings.TrimPrefix(strings.TrimPrefix(v, "v"), "go")
	pre := ""
	for _, tag := range []string{"rc", "beta", "alpha"} {
		if i := strings.Index(v, tag); i > 0 {
			pre = "-" + tag + "." + v[i+len(tag):]
			v = v[:i]
			break
		}
	}
	if strings.Count(v, ".") == 1 {
		v += ".0"
	}
	return v + pre
}

// withDistroRelease turns a purl "distro" qualifier into the OSV release
// suffix: "debian-12" → "Debian:12", "alpine-3.19" → "Alpine:v3.19".
// Unknown spellings leave the ecosystem unqualified.
func withDistroRelease(eco, distro string) string {
	if distro == "" {
		return eco
	}
	_, rel, ok := strings.Cut(distro, "-")
	if !ok || rel == "" || rel[0] < '0' || rel[0] > '9' {
		return eco
	}
	switch eco {
	case "Debian":
		if i := strings.IndexByte(rel, '.'); i > 0 {
			rel = rel[:i]
		}
		return eco + ":" + rel
	case "Alpine":
		parts := strings.SplitN(rel, ".", 3)
		if len(parts) >= 2 {
			return eco + ":v" + parts[0] + "." + parts[1]
		}
	}
	return eco
}

// baseEcosystem strips an OSV release suffix: "Debian:12" → "Debian".
func baseEcosystem(eco string) string {
	if i := strings.IndexByte(eco, ':'); i >= 0 {
		return eco[:i]
	}
	return eco
}

// NormalizeName returns the key under which a package name is compared in an
// ecosystem: PyPI names per PEP 503 (lower case, runs of "-", "_", "." become
// "-"); npm, NuGet, Packagist, Maven, Debian, Alpine and generic names lower
// case; Go module paths and everything else unchanged (Go paths are case
// sensitive).
func NormalizeName(ecosystem, name string) string {
	switch baseEcosystem(ecosystem) {
	case "PyPI":
		var b strings.Builder
		b.Grow(len(name))
		dash := false
		for i := 0; i < len(name); i++ {
			ch := name[i]
			if ch == '-' || ch == '_' || ch == '.' {
				if !dash {
					b.WriteByte('-')
				}
				dash = true
				continue
			}
			dash = false
			if 'A' <= ch && ch <= 'Z' {
				ch += 'a' - 'A'
			}
			b.WriteByte(ch)
		}
		return b.String()
	case "npm", "NuGet", "Packagist", "Maven", "Debian", "Ubuntu", "Alpine", "Wolfi", "Chainguard", "", "generic":
		return strings.ToLower(name)
	}
	return name
}

// genericPURL builds pkg:generic/name@version for a component that has no
// purl of its own, or "" when there is no name.
func genericPURL(name, version string) string {
	name = strings.TrimSpace(name)
	if name == "" {
		return ""
	}
	return packageurl.NewPackageURL("generic", "", name, strings.TrimSpace(version), nil, "").ToString()
}

// GenericPURL is pkg:generic/name@version ("" when name is empty): how a
// product without a purl of its own is named, in SBOM subjects and in the
// product of VEX statements.
func GenericPURL(name, version string) string { return genericPURL(name, version) }
