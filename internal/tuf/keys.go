// Package tuf is the plain TUF layer of Upkeep's two repositories: Ed25519 keys and key files,
// the key set `upkeep keys init` writes, building and signing roots, targets, snapshot and
// timestamp, verifying offline-signed uploads (a root update, targets), metadata lifetimes, and
// the rules for target names and identifiers.
//
// The metadata model is go-tuf v2's metadata package. Verification failures wrap go-tuf's typed
// errors (metadata.ErrUnsignedMetadata, ErrExpiredMetadata, ErrBadVersionNumber), so callers
// test them with errors.As. What Upkeep signs inside targets (custom fields, director views) and
// the Uptane checks live in package uptane.
package tuf

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Key is an Ed25519 private key with its TUF key id.
type Key struct {
	Private ed25519.PrivateKey
	ID      string
}

// GenerateKey makes a new Ed25519 key.
func GenerateKey() (*Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return NewKey(priv)
}

// NewKey wraps an Ed25519 private key.
func NewKey(priv ed25519.PrivateKey) (*Key, error) {
	tk, err := metadata.KeyFromPublicKey(priv.Public())
	if err != nil {
		return nil, fmt.Errorf("tuf key: %w", err)
	}
	id, err := tk.ID()
	if err != nil {
		return nil, fmt.Errorf("tuf key id: %w", err)
	}
	return &Key{Private: priv, ID: id}, nil
}

// Public returns the key in TUF form.
func (k *Key) Public() *metadata.Key {
	tk, _ := metadata.KeyFromPublicKey(k.Private.Public()) // cannot fail for Ed25519
	return tk
}

// Signer returns a signer for go-tuf.
func (k *Key) Signer() signature.Signer {
	s, _ := signature.LoadED25519Signer(k.Private) // cannot fail for a valid key
	return s
}

// SaveKey writes key to path as a PKCS#8 PEM file with mode 0600. It refuses to overwrite.
func SaveKey(path string, k *Key) error {
	der, err := x509.MarshalPKCS8PrivateKey(k.Private)
	if err != nil {
		return fmt.Errorf("marshal key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("save key: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return fmt.Errorf("save key %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("save key %s: %w", path, err)
	}
	return f.Close()
}

// LoadKey reads a key written by SaveKey.
func LoadKey(path string) (*Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load key: %w", err)
	}
	return ParseKey(b)
}

// ParseKey parses a PKCS#8 PEM Ed25519 private key.
func ParseKey(b []byte) (*Key, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, errors.New("parse key: not a PEM private key")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse key: %w", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("parse key: %T is not an Ed25519 key", k)
	}
	return NewKey(priv)
}
