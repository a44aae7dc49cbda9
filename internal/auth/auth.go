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

// TokenSkew is how much later than now+TTL a token may expire and still be accepted: replicas
// whose clocks differ a little issue tokens that end a little later.
const TokenSkew = 5 * time.Minute

// MaxTokenTTL caps the device token lifetime a server may be configured with.
const MaxTokenTTL = 24 * time.Hour

// Check returns the device id of a valid, unexpired token. A token whose expiry lies further
// than TTL+TokenSkew from now is refused however well it is signed: no server of this
// configuration issued it, and one who holds the key must not mint tokens that outlive a
// revocation for years.
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
	if !ok || err != nil || now.Unix() >= exp || exp > now.Add(t.TTL+TokenSkew).Unix() {
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

// OperatorToken is an operator's credential: its secret is stored only as Hash.
type OperatorToken struct {
	ID        string // first 8 bytes of Hash, in hex: names the token in lists and revocations
	Name      string
	Role      string
	Hash      []byte
	CreatedAt time.Time
	ExpiresAt time.Time // zero: never (the first token a server prints)
	RevokedAt time.Time // zero: not revoked
	LastUsed  time.Time // zero: never used; written in batches, so up to a minute late
	User      string    // the user who created it (owns it); empty for tokens of no user
	Groups    []string  // group scope (role deployer only); empty: unscoped
}

// Active reports whether the token may be used at now.
func (t *OperatorToken) Active(now time.Time) bool {
	return t.RevokedAt.IsZero() && (t.ExpiresAt.IsZero() || now.Before(t.ExpiresAt))
}

// TokenID is the id of the token whose secret hashes to hash.
func TokenID(hash []byte) string { return hex.EncodeToString(hash[:8]) }

// Store persists operator tokens and server-wide secrets. Implementations are safe for
// concurrent use.
type Store interface {
	UserStore
	// CreateOperatorToken stores a token. Returns apperr.Conflict if its id exists.
	CreateOperatorToken(ctx context.Context, t *OperatorToken) error
	// FindOperatorToken returns the token with this hash, revoked or expired ones included, or
	// apperr.NotFound.
	FindOperatorToken(ctx context.Context, hash []byte) (*OperatorToken, error)
	// FindOperatorTokens lists every token, oldest first.
	FindOperatorTokens(ctx context.Context) ([]*OperatorToken, error)
	// RevokeOperatorToken marks a token revoked at at and moves the revocation generation, in one
	// transaction. Returns apperr.NotFound if there is no such token, and apperr.Conflict if it
	// is the last active admin token (operators would lock themselves out).
	RevokeOperatorToken(ctx context.Context, id string, at time.Time) error
	// TouchOperatorTokens records last-use times by token id; unknown ids are ignored and a time
	// never moves back.
	TouchOperatorTokens(ctx context.Context, used map[string]time.Time) error
	// CountAdminTokens counts operator tokens (any role, revoked ones included).
	CountAdminTokens(ctx context.Context) (int, error)
	// RevocationGeneration returns a number that moves whenever a credential is revoked (an
	// operator token, a decommissioned device). Servers poll it to drop what they cached.
	RevocationGeneration(ctx context.Context) (int64, error)
	// Setting returns a server-wide value, storing init() first if it is absent. When several
	// replicas race, the first stored value wins and all of them return it.
	Setting(ctx context.Context, key string, init func() []byte) ([]byte, error)
	// FindSetting returns a server-wide value, or apperr.NotFound.
	FindSetting(ctx context.Context, key string) ([]byte, error)
	// DeleteSetting removes a server-wide value; absent is not an error.
	DeleteSetting(ctx context.Context, key string) error
}
