package auth

import (
	"errors"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)

func TestDeviceTokens(t *testing.T) {
	tokens := DeviceTokens{Key: []byte("server key"), TTL: time.Hour}
	good, exp := tokens.Issue("dev1", t0)
	if !exp.Equal(t0.Add(time.Hour)) {
		t.Fatalf("expires %s", exp)
	}
	for range 3 { // pooled MAC states must not carry anything from one check to the next
		if id, err := tokens.Check(good, t0.Add(59*time.Minute)); err != nil || id != "dev1" {
			t.Fatalf("Check(good) = %q, %v", id, err)
		}
	}
	other := DeviceTokens{Key: []byte("another key"), TTL: time.Hour}
	forged, _ := other.Issue("dev1", t0)
	parts := strings.Split(strings.TrimPrefix(good, devicePrefix), ".") // id, expiry, MAC
	// The MAC's last character carries 4 of its bits and 2 unused ones; the next character of
	// the alphabet spells the same bytes with an unused bit set.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	twin := string(alphabet[strings.IndexByte(alphabet, parts[2][len(parts[2])-1])+1])
	bad := map[string]string{
		"expired":           good,
		"other key":         forged,
		"other device":      strings.Replace(good, "dev1", "dev2", 1),
		"no prefix":         strings.TrimPrefix(good, devicePrefix),
		"no mac":            devicePrefix + parts[0] + "." + parts[1],
		"short mac":         good[:len(good)-1],
		"long mac":          good + "A",
		"mac not base64":    good[:len(good)-1] + "*",
		"empty":             "",
		"prefix only":       devicePrefix,
		"later expiry":      devicePrefix + parts[0] + ".9" + parts[1] + "." + parts[2],
		"non-canonical mac": good[:len(good)-1] + twin,
		"operator's token":  "upk_op_0123",
	}
	for name, tok := range bad {
		at := t0
		if name == "expired" {
			at = t0.Add(time.Hour)
		}
		if id, err := tokens.Check(tok, at); !errors.Is(err, ErrBadToken) {
			t.Errorf("%s: Check(%q) = %q, %v; want ErrBadToken", name, tok, id, err)
		}
	}
	// Another key's pool is its own.
	if id, err := other.Check(forged, t0); err != nil || id != "dev1" {
		t.Fatalf("other.Check(forged) = %q, %v", id, err)
	}
}

// FuzzDeviceToken: any bearer string is either a token this key issued for an unexpired device
// or ErrBadToken; Check never panics.
func FuzzDeviceToken(f *testing.F) {
	tokens := DeviceTokens{Key: []byte("server key"), TTL: time.Hour}
	good, _ := tokens.Issue("dev1", t0)
	f.Add(good)
	f.Add("")
	f.Add(devicePrefix)
	f.Add(devicePrefix + "a.b.c")
	f.Add(devicePrefix + "dev1.99999999999999999999." + strings.Repeat("A", 43))
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := tokens.Check(tok, t0)
		if err != nil {
			if !errors.Is(err, ErrBadToken) || id != "" {
				t.Fatalf("Check(%q) = %q, %v", tok, id, err)
			}
			return
		}
		// Only the one spelling Issue gives is accepted.
		body := tok[len(devicePrefix):strings.LastIndexByte(tok, '.')]
		if tok != devicePrefix+body+"."+tokens.mac(body) || !strings.HasPrefix(body, id+".") {
			t.Fatalf("Check(%q) = %q: accepted a token Issue would not give", tok, id)
		}
	})
}

// TestCheckRefusesLongLivedToken: a well-signed token that expires further than TTL+TokenSkew
// from now (one minted with the key for ten years) is refused.
func TestCheckRefusesLongLivedToken(t *testing.T) {
	now := time.Now()
	key := []byte("server key")
	long, _ := DeviceTokens{Key: key, TTL: 10 * 365 * 24 * time.Hour}.Issue("dev", now)
	tokens := DeviceTokens{Key: key, TTL: time.Hour}
	if _, err := tokens.Check(long, now); err != ErrBadToken {
		t.Fatalf("ten-year token: %v, want ErrBadToken", err)
	}
	skewed, _ := DeviceTokens{Key: key, TTL: time.Hour + TokenSkew/2}.Issue("dev", now)
	if id, err := tokens.Check(skewed, now); err != nil || id != "dev" {
		t.Fatalf("a token within the skew: %q %v", id, err)
	}
}
