package tuf

import (
	"errors"
	"fmt"
	"strings"
)

// ErrBadName is returned for target names with path tricks.
var ErrBadName = errors.New("invalid target name")

// ValidTargetName accepts names made of 1 to 8 segments of [A-Za-z0-9._+-], each not "." or
// "..", separated by single slashes, at most 255 bytes long.
func ValidTargetName(name string) error {
	if name == "" || len(name) > 255 {
		return fmt.Errorf("%w %q: length must be 1-255", ErrBadName, name)
	}
	segs := strings.Split(name, "/")
	if len(segs) > 8 {
		return fmt.Errorf("%w %q: too many segments", ErrBadName, name)
	}
	for _, s := range segs {
		if s == "" || s == "." || s == ".." {
			return fmt.Errorf("%w %q: empty, . or .. segment", ErrBadName, name)
		}
		for _, c := range s {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '+') {
				return fmt.Errorf("%w %q: character %q not allowed", ErrBadName, name, c)
			}
		}
	}
	return nil
}

// ValidIdent checks product names, hardware ids and versions: 1-64 characters of [A-Za-z0-9._+-].
func ValidIdent(kind, s string) error {
	if s == "" || len(s) > 64 || strings.Contains(s, "/") || s == "." || s == ".." || ValidTargetName(s) != nil {
		return fmt.Errorf("invalid %s %q: 1-64 characters of A-Z a-z 0-9 . _ + -", kind, s)
	}
	return nil
}

// TargetName is the image-repository name of a release's artifact.
func TargetName(product, version, file string) string {
	return product + "/" + version + "/" + file
}
