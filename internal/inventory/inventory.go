// Package inventory holds device inventory: attributes a device asserts about itself (OS
// release, kernel, region...) in the format of Mender's inventory scripts, their limits, and
// their digest. The agent parses its scripts' output with it; the server validates what a device
// sends with the same rules, so both sides refuse the same things with the same words.
//
// Inventory is untrusted: a device says what it likes about itself. It selects devices for
// groups, filters and campaigns (targeting); it never widens what a device may fetch or install,
// which the signed Uptane metadata alone decides.
//
// The parser is written here because the format is ten lines of Mender's client and no Go
// library exposes it on its own.
package inventory

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"
)

// Limits of one device's inventory, on the agent and on the server.
const (
	MaxAttributes = 128      // keys
	MaxValues     = 64       // values of one key (a repeated key gives a list)
	MaxKey        = 64       // bytes of a key
	MaxValue      = 1024     // bytes of a value
	MaxTotal      = 32 << 10 // bytes of every key and value together
	// MaxScriptOutput is how much of one script's output is read; the rest is an error.
	MaxScriptOutput = MaxTotal + 1
)

// Attributes maps a key to its values, in the order the device gave them (one value but for
// repeated keys).
type Attributes map[string][]string

// ErrLimit is wrapped by every error about a limit (count, size), so that callers can tell a
// device that sends too much from one that sends garbage.
var ErrLimit = errors.New("limit exceeded")

// ValidKey checks a key: 1 to MaxKey bytes of A-Z a-z 0-9 and . _ : -.
func ValidKey(k string) error {
	if k == "" {
		return errors.New("inventory: empty key")
	}
	if len(k) > MaxKey {
		return fmt.Errorf("inventory key %.20q...: %w: longer than %d bytes", k, ErrLimit, MaxKey)
	}
	for _, c := range []byte(k) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return fmt.Errorf("inventory key %q: only letters, digits and . _ : - are allowed", k)
		}
	}
	return nil
}

// Parse reads key=value lines, Mender's inventory-script format: the key is what comes before
// the first '=', the value the rest; surrounding spaces are trimmed; a repeated key gives a
// list; blank lines and lines without '=' are skipped, as Mender's client skips them. Values
// must be valid UTF-8 without NUL. Parse checks every limit and returns the first broken one.
func Parse(r io.Reader) (Attributes, error) {
	sc := bufio.NewScanner(io.LimitReader(r, MaxScriptOutput))
	sc.Buffer(make([]byte, 0, 4096), MaxKey+MaxValue+16)
	attrs := Attributes{}
	read := 0
	for sc.Scan() {
		line := sc.Bytes()
		read += len(line) + 1
		k, v, ok := bytes.Cut(line, []byte("="))
		if !ok {
			continue
		}
		if err := attrs.Add(string(bytes.TrimSpace(k)), string(bytes.TrimSpace(v))); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("inventory: %w: a line longer than %d bytes", ErrLimit, MaxKey+MaxValue+1)
		}
		return nil, fmt.Errorf("inventory: %w", err)
	}
	if read > MaxTotal {
		return nil, fmt.Errorf("inventory: %w: more than %d bytes", ErrLimit, MaxTotal)
	}
	return attrs, attrs.Validate()
}

// Add appends a value to a key, checking the key, the value and the per-key limits. A value the
// key already has is not repeated.
func (a Attributes) Add(k, v string) error {
	if err := ValidKey(k); err != nil {
		return err
	}
	if err := validValue(k, v); err != nil {
		return err
	}
	if slices.Contains(a[k], v) {
		return nil
	}
	if _, ok := a[k]; !ok && len(a) >= MaxAttributes {
		return fmt.Errorf("inventory: %w: more than %d attributes", ErrLimit, MaxAttributes)
	}
	if len(a[k]) >= MaxValues {
		return fmt.Errorf("inventory key %q: %w: more than %d values", k, ErrLimit, MaxValues)
	}
	a[k] = append(a[k], v)
	return nil
}

func validValue(k, v string) error {
	if len(v) > MaxValue {
		return fmt.Errorf("inventory key %q: %w: value longer than %d bytes", k, ErrLimit, MaxValue)
	}
	if !utf8.ValidString(v) || strings.ContainsAny(v, "\x00\n\r") {
		return fmt.Errorf("inventory key %q: the value must be one line of UTF-8 text without NUL", k)
	}
	return nil
}

// Merge adds b's values to a (a's first), within the limits.
func (a Attributes) Merge(b Attributes) error {
	for _, k := range slices.Sorted(maps.Keys(b)) {
		for _, v := range b[k] {
			if err := a.Add(k, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// Validate checks every limit: what the server applies to an inventory a device sends.
func (a Attributes) Validate() error {
	if len(a) > MaxAttributes {
		return fmt.Errorf("inventory: %w: %d attributes, at most %d", ErrLimit, len(a), MaxAttributes)
	}
	total := 0
	for k, vs := range a {
		if err := ValidKey(k); err != nil {
			return err
		}
		if len(vs) == 0 {
			return fmt.Errorf("inventory key %q: no value", k)
		}
		if len(vs) > MaxValues {
			return fmt.Errorf("inventory key %q: %w: %d values, at most %d", k, ErrLimit, len(vs), MaxValues)
		}
		for _, v := range vs {
			if err := validValue(k, v); err != nil {
				return err
			}
			total += len(k) + len(v) + 2
		}
	}
	if total > MaxTotal {
		return fmt.Errorf("inventory: %w: %d bytes, at most %d", ErrLimit, total, MaxTotal)
	}
	return nil
}

// Digest is the SHA-256 (hex) of the attributes in a canonical form: keys sorted, values in
// their order. Two sets with the same digest are the same set.
func (a Attributes) Digest() string {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(a)) {
		for _, v := range a[k] {
			fmt.Fprintf(h, "%d:%s=%d:%s\n", len(k), k, len(v), v)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ListSeparator joins the values of a repeated key in the device's stored attributes (one
// string per key): values never hold a line break, so the join is unambiguous.
const ListSeparator = "\n"

// Flatten gives the stored form: one string per key, a list's values joined by ListSeparator.
func (a Attributes) Flatten() map[string]string {
	out := make(map[string]string, len(a))
	for k, vs := range a {
		out[k] = strings.Join(vs, ListSeparator)
	}
	return out
}

// Values splits a stored attribute value into its list.
func Values(stored string) []string { return strings.Split(stored, ListSeparator) }
