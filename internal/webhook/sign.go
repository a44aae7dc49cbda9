package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strconv"
)

// SecretPrefix starts a webhook secret as operators see it: whsec_ and the base64 key, the
// Standard Webhooks form that receivers' libraries take as it is.
const SecretPrefix = "whsec_"

// secretBytes is the size of the HMAC key (Standard Webhooks: between 24 and 64 bytes).
const secretBytes = 32

// newSecret returns a random HMAC key.
func newSecret() []byte {
	b := make([]byte, secretBytes)
	rand.Read(b) //nolint:errcheck // crypto/rand does not fail
	return b
}

// FormatSecret is the secret as shown to the operator, once.
func FormatSecret(key []byte) string { return SecretPrefix + base64.StdEncoding.EncodeToString(key) }

// Headers of a signed delivery (Standard Webhooks, "Signature scheme").
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// Sign is the webhook-signature value of body sent with id at timestamp (Unix seconds):
// "v1," and the base64 HMAC-SHA256, keyed with the secret, of "id.timestamp.body". The
// signature scheme is small enough to write here rather than link a library for it.
func Sign(key []byte, id string, timestamp int64, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(strconv.FormatInt(timestamp, 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// newID returns a random identifier with prefix.
func newID(prefix string) string {
	var b [12]byte
	rand.Read(b[:]) //nolint:errcheck // crypto/rand does not fail
	return prefix + hex.EncodeToString(b[:])
}

// keyedID returns the event id of an occurrence named by (typ, key): the same on every replica.
func keyedID(typ, key string) string {
	h := sha256.Sum256([]byte(typ + "\x00" + key))
	return "evt_" + hex.EncodeToString(h[:12])
}
