package console_test

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/console"
)

// TestVendoredHashes: the vendored files are those the README names, byte for byte.
func TestVendoredHashes(t *testing.T) {
	readme, err := os.ReadFile("static/vendor/README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := regexp.MustCompile("\\| `([a-z-]+)/` \\| `([a-z.-]+)` ([0-9.]+) \\| `dist/([a-z.]+)` \\| [^|]+\\| `([0-9a-f]{64})` \\|").FindAllStringSubmatch(string(readme), -1)
	if len(rows) != 2 {
		t.Fatalf("README lists %d vendored files, want 2", len(rows))
	}
	for _, m := range rows {
		dir, file, want := m[1], m[4], m[5]
		b, err := os.ReadFile("static/vendor/" + dir + "/" + file)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		if got := hex.EncodeToString(sum[:]); got != want {
			t.Errorf("%s/%s: sha256 %s, README says %s", dir, file, got, want)
		}
		if _, err := os.Stat("static/vendor/" + dir + "/LICENSE"); err != nil {
			t.Errorf("%s: no LICENSE: %v", dir, err)
		}
	}
}

// TestEscaping: a value from a device is escaped wherever a page shows it.
func TestEscaping(t *testing.T) {
	c, err := console.New()
	if err != nil {
		t.Fatal(err)
	}
	evil := `"><img src=x onerror=alert(1)><script>alert(1)</script>`
	var b strings.Builder
	v := &console.View{Layout: console.Layout{Base: "/", Title: evil, User: "u", Role: "viewer", Now: time.Now()},
		Data: console.Device{ID: "d1", Serial: evil, Attributes: []console.Field{{Name: "k", Value: evil}}, LastError: evil,
			Events: []console.Event{{Message: evil}}}}
	if err := c.Render(&b, "device", v); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "<script>alert") || strings.Contains(b.String(), "<img src=x") {
		t.Fatalf("unescaped:\n%s", b.String())
	}
}
