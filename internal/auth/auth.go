// Package auth makes and checks Upkeep's credentials: short-lived device tokens (HMAC-signed,
// checked without touching the database, so the check-in path stays cheap), random operator
// and enrolment secrets stored only as hashes, and device request signatures.
//
// The device token format is written here by hand: it is a two-field HMAC token and a JWT
// library would add parsing surface without adding anything the device path needs.
package auth

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Secret prefixes make leaked tokens recognisable.
const (
	AdminPrefix  = "upk_admin_"
	EnrollPrefix = "upk_enroll_"
	devicePrefix = "upk_dev."
)

// NewSecret returns a random secret with prefix, and its SHA-256 for storage.
func NewSecret(prefix string) (secret string, hash []byte) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	secret = prefix + base64.RawURLEncoding.EncodeToString(b)
	return secret, HashSecret(secret)
}

// HashSecret is the stored form of a secret.
func HashSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// DeviceTokens signs and checks device tokens with a server-wide HMAC key.
type DeviceTokens struct {
	Key []byte
	TTL time.Duration
}

// ErrBadToken is returned for any token that does not verify.
var ErrBadToken = errors.New("invalid or expired device token")

// Issue returns a token for deviceID valid until now+TTL.
func (t DeviceTokens) Issue(deviceID string, now time.Time) (string, time.Time) {
	exp := now.Add(t.TTL).UTC().Truncate(time.Second)
	body := deviceID + "." + strconv.FormatInt(exp.Unix(), 10)
	return devicePrefix + body + "." + t.mac(body), exp
}

// Check returns the device id of a valid, unexpired token.
func (t DeviceTokens) Check(token string, now time.Time) (string, error) {
	rest, ok := strings.CutPrefix(token, devicePrefix)
	if !ok {
		return "", ErrBadToken
	}
	i := strings.LastIndexByte(rest, '.')
	if i < 0 {
		return "", ErrBadToken
	}
	body, mac := rest[:i], rest[i+1:]
	var got, want [sha256.Size]byte
	if base64.RawURLEncoding.EncodedLen(len(got)) != len(mac) {
		return "", ErrBadToken
	}
	// Strict: a MAC has one spelling, so a token cannot be varied in its unused trailing bits.
	if n, err := base64.RawURLEncoding.Strict().Decode(got[:], []byte(mac)); err != nil || n != len(got) {
		return "", ErrBadToken
	}
	if !hmac.Equal(got[:], t.sum(want[:0], body)) {
		return "", ErrBadToken
	}
	id, expStr, ok := strings.Cut(body, ".")
	exp, err := strconv.ParseInt(expStr, 10, 64)
	if !ok || err != nil || now.Unix() >= exp {
		return "", ErrBadToken
	}
	return id, nil
}

func (t DeviceTokens) mac(body string) string {
	return base64.RawURLEncoding.EncodeToString(t.sum(nil, body))
}

// macs holds HMAC states per key, ready to use: every device request checks a token, and
// setting up an HMAC (two hashes and the padded key) cost more than computing it.
var macs sync.Map // string(key) -> *sync.Pool of *macState

type macState struct {
	h   hash.Hash
	buf []byte // the body, as bytes to hash
}

// sum appends the HMAC-SHA256 of body under t.Key to b.
func (t DeviceTokens) sum(b []byte, body string) []byte {
	p, ok := macs.Load(string(t.Key))
	if !ok {
		key := bytes.Clone(t.Key)
		p, _ = macs.LoadOrStore(string(key), &sync.Pool{New: func() any { return &macState{h: hmac.New(sha256.New, key)} }})
	}
	pool := p.(*sync.Pool)
	m := pool.Get().(*macState)
	defer pool.Put(m)
	m.h.Reset()
	m.buf = append(m.buf[:0], body...)
	m.h.Write(m.buf)
	return m.h.Sum(b)
}

// DeviceID derives a device id from its Ed25519 public key.
func DeviceID(pub ed25519.PublicKey) string {
	h := sha256.Sum256(pub)
	return hex.EncodeToString(h[:16])
}

// MaxClockSkew bounds how far a signed device request's time may be from the server's.
const MaxClockSkew = 15 * time.Minute

// VerifyDeviceSignature checks an Ed25519 signature (hex) over payload and the request time.
func VerifyDeviceSignature(pub ed25519.PublicKey, payload []byte, sigHex string, at, now time.Time) error {
	if len(pub) != ed25519.PublicKeySize {
		return errors.New("bad public key length")
	}
	sig, err := hex.DecodeString(sigHex)
	if err != nil || !ed25519.Verify(pub, payload, sig) {
		return errors.New("device signature does not verify")
	}
	if d := now.Sub(at); d > MaxClockSkew || d < -MaxClockSkew {
		return fmt.Errorf("request time %s is more than %s from server time", at.Format(time.RFC3339), MaxClockSkew)
	}
	return nil
}

// Store persists operator tokens and server-wide secrets. Implementations are safe for
// concurrent use.
type Store interface {
	// CreateAdminToken stores the hash of an operator token.
	CreateAdminToken(ctx context.Context, name string, hash []byte) error
	// FindAdminToken returns the token's name, or apperr.NotFound.
	FindAdminToken(ctx context.Context, hash []byte) (string, error)
	// CountAdminTokens counts operator tokens.
	CountAdminTokens(ctx context.Context) (int, error)
	// Setting returns a server-wide value, storing init() first if it is absent. When several
	// replicas race, the first stored value wins and all of them return it.
	Setting(ctx context.Context, key string, init func() []byte) ([]byte, error)
}
