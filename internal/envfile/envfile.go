// Package envfile reads configuration files of KEY=VALUE lines with UPKEEP_* names: the format
// systemd's EnvironmentFile= reads, used by /etc/upkeep/server.env and /etc/upkeep/agent.env.
// Blank lines and lines starting with # are skipped; a value may be quoted and may end in an
// inline " # comment". Hand-written: the format is a dozen lines, and no maintained library
// reads exactly systemd's subset.
package envfile

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// MaxSize is the largest configuration file read.
const MaxSize = 1 << 20

// Parse reads b. It returns an error naming the line for anything but UPKEEP_NAME=value.
func Parse(name string, b []byte) (map[string]string, error) {
	out := map[string]string{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(k)
		if !ok || !strings.HasPrefix(k, "UPKEEP_") || strings.ContainsAny(k, " \t") {
			return nil, fmt.Errorf("config %s line %d: want UPKEEP_NAME=value", name, i+1)
		}
		if i := strings.Index(v, " #"); i >= 0 {
			v = v[:i]
		}
		out[k] = strings.Trim(strings.TrimSpace(v), `"'`)
	}
	return out, nil
}

// Read reads and parses the file at path. A missing file is an error only if required.
func Read(path string, required bool) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if !required && errors.Is(err, os.ErrNotExist) {
			return map[string]string{}, nil
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("config %s: larger than %d bytes", path, MaxSize)
	}
	return Parse(path, b)
}

// Lookup returns the value of key: from the environment if set there and not empty, else from
// file.
func Lookup(file map[string]string, key string) (string, bool) {
	if v := os.Getenv(key); v != "" {
		return v, true
	}
	v, ok := file[key]
	return v, ok
}
