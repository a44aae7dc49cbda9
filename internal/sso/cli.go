package sso

import (
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
)

// CLI is the command line waiting for a token at the end of a login (`upkeep login --sso`): its
// loopback port, and the X25519 public key the token is sealed to, so that the browser, its
// history and the redirect carry it only encrypted (RFC 8252 §7.3's loopback redirect, with HPKE,
// RFC 9180). Zero: a browser login.
type CLI struct {
	Port int
	Key  string // base64url X25519 public key, 32 bytes
}

// hpkeInfo binds a sealed token to this use.
const hpkeInfo = "upkeep login --sso v1"

func hpkeSuite() (hpke.KDF, hpke.AEAD) { return hpke.HKDFSHA256(), hpke.ChaCha20Poly1305() }

// NewCLIKey draws the key pair of one `upkeep login --sso`; the public half goes in CLI.Key.
func NewCLIKey() (*ecdh.PrivateKey, string) {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return k, base64.RawURLEncoding.EncodeToString(k.PublicKey().Bytes())
}

// Check validates what a login request says of its CLI: an unprivileged port and a key.
func (c CLI) Check() error {
	if c.Port < 1024 || c.Port > 65535 {
		return errors.New("cli_port: want 1024-65535")
	}
	b, err := base64.RawURLEncoding.DecodeString(c.Key)
	if err != nil || len(b) != 32 {
		return errors.New("cli_key: want a base64url X25519 public key")
	}
	if _, err := ecdh.X25519().NewPublicKey(b); err != nil {
		return fmt.Errorf("cli_key: %w", err)
	}
	return nil
}

// RedirectURL is where the browser takes the sealed token: this machine's loopback, on the
// CLI's port.
func (c CLI) RedirectURL(sealed string) string {
	return "http://127.0.0.1:" + strconv.Itoa(c.Port) + "/upkeep-login?sealed=" + sealed
}

// Seal encrypts plaintext (the token's JSON) to the CLI's key.
func (c CLI) Seal(plaintext []byte) (string, error) {
	if err := c.Check(); err != nil {
		return "", err
	}
	b, _ := base64.RawURLEncoding.DecodeString(c.Key)
	pub, err := ecdh.X25519().NewPublicKey(b)
	if err != nil {
		return "", err
	}
	pk, err := hpke.NewDHKEMPublicKey(pub)
	if err != nil {
		return "", err
	}
	kdf, aead := hpkeSuite()
	ct, err := hpke.Seal(pk, kdf, aead, []byte(hpkeInfo), plaintext)
	if err != nil {
		return "", fmt.Errorf("seal for the cli: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(ct), nil
}

// OpenSealed decrypts what Seal made for the key pair priv.
func OpenSealed(priv *ecdh.PrivateKey, sealed string) ([]byte, error) {
	ct, err := base64.RawURLEncoding.DecodeString(sealed)
	if err != nil || len(ct) > 16<<10 {
		return nil, errors.New("sealed token: not base64url")
	}
	k, err := hpke.NewDHKEMPrivateKey(priv)
	if err != nil {
		return nil, err
	}
	kdf, aead := hpkeSuite()
	pt, err := hpke.Open(k, kdf, aead, []byte(hpkeInfo), ct)
	if err != nil {
		return nil, fmt.Errorf("sealed token does not open with this login's key: %w", err)
	}
	return pt, nil
}
