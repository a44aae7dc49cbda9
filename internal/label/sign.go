package label

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// PayloadType is the DSSE payload type of a signed declaration.
const PayloadType = "application/vnd.upkeep.declaration+json"

// Envelope is a DSSE JSON envelope (envelope.md v1.0). Each signature also carries the public
// key that made it, as the specification allows added fields: a reader without the key can
// still tell which key signed, and one with it verifies offline.
type Envelope struct {
	PayloadType string      `json:"payloadType"`
	Payload     string      `json:"payload"` // standard base64 of the canonical declaration
	Signatures  []Signature `json:"signatures"`
}

// Signature is one DSSE signature.
type Signature struct {
	KeyID     string `json:"keyid"`                // KeyID of the signing key
	Sig       string `json:"sig"`                  // standard base64 of the Ed25519 signature over PAE
	PublicKey string `json:"public_key,omitempty"` // standard base64 of the raw Ed25519 public key
}

// KeyID returns the identifier of pub: its SHA-256 fingerprint as OpenSSH prints it
// ("SHA256:..."), so that `ssh-keygen -lf` shows the same id for the same key.
func KeyID(pub ed25519.PublicKey) (string, error) {
	if len(pub) != ed25519.PublicKeySize {
		return "", fmt.Errorf("key id: Ed25519 public key has %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	id, err := dsse.SHA256KeyID(pub)
	if err != nil {
		return "", fmt.Errorf("key id: %w", err)
	}
	return id, nil
}

// MarshalPublicKey returns pub as a PEM "PUBLIC KEY" block (PKIX), the form in which a
// declaration's verification key is published.
func MarshalPublicKey(pub ed25519.PublicKey) ([]byte, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("public key: Ed25519 public key has %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParsePublicKey reads an Ed25519 public key written by MarshalPublicKey (or by
// `openssl pkey -pubout`).
func ParsePublicKey(b []byte) (ed25519.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, errors.New("public key: not a PEM PUBLIC KEY block")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key: %T is not an Ed25519 key", k)
	}
	return pub, nil
}

// Sign returns the JSON of a DSSE envelope whose payload is CanonicalJSON(d), signed with
// priv. The envelope names the key by KeyID and carries its public key.
func Sign(d Declaration, priv ed25519.PrivateKey) ([]byte, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("sign declaration: Ed25519 private key has %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	payload, err := CanonicalJSON(d)
	if err != nil {
		return nil, fmt.Errorf("sign declaration: %w", err)
	}
	s := signer{pub: priv.Public().(ed25519.PublicKey), priv: priv}
	es, err := dsse.NewEnvelopeSigner(s)
	if err != nil {
		return nil, fmt.Errorf("sign declaration: %w", err)
	}
	env, err := es.SignPayload(context.Background(), PayloadType, payload)
	if err != nil {
		return nil, fmt.Errorf("sign declaration: %w", err)
	}
	out := Envelope{PayloadType: env.PayloadType, Payload: env.Payload}
	for _, sig := range env.Signatures {
		out.Signatures = append(out.Signatures, Signature{KeyID: sig.KeyID, Sig: sig.Sig, PublicKey: base64.StdEncoding.EncodeToString(s.pub)})
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode envelope: %w", err)
	}
	return b, nil
}

// Verify checks that envelope holds a declaration signed with pub and returns it. It fails if
// the payload type is not PayloadType, if no signature verifies under pub (an altered payload,
// an altered signature or another key), or if the payload does not match Schema. The public
// key carried in the envelope plays no part.
func Verify(envelope []byte, pub ed25519.PublicKey) (*Declaration, error) {
	var env Envelope
	if err := json.Unmarshal(envelope, &env); err != nil {
		return nil, fmt.Errorf("read envelope: %w", err)
	}
	// DSSE protocol.md: the verifier rejects a payload type it does not expect before parsing.
	if env.PayloadType != PayloadType {
		return nil, fmt.Errorf("verify declaration: payload type %q, want %q", env.PayloadType, PayloadType)
	}
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("verify declaration: Ed25519 public key has %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	id, err := KeyID(pub)
	if err != nil {
		return nil, fmt.Errorf("verify declaration: %w", err)
	}
	de := &dsse.Envelope{PayloadType: env.PayloadType, Payload: env.Payload}
	for _, s := range env.Signatures {
		de.Signatures = append(de.Signatures, dsse.Signature{KeyID: s.KeyID, Sig: s.Sig})
	}
	ev, err := dsse.NewEnvelopeVerifier(verifier{pub: pub, id: id})
	if err != nil {
		return nil, fmt.Errorf("verify declaration: %w", err)
	}
	// VerifyAndDecode computes PAE(payloadType, payload) and checks each signature over it
	// (DSSE protocol.md, "Verification"), returning the payload only if one verifies.
	_, payload, err := ev.VerifyAndDecode(context.Background(), de)
	if err != nil {
		return nil, fmt.Errorf("verify declaration with key %s: %w", id, err)
	}
	if err := Validate(payload); err != nil {
		return nil, fmt.Errorf("verify declaration: %w", err)
	}
	var d Declaration
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("read declaration: %w", err)
	}
	return &d, nil
}

// Inspect verifies envelope with the public key it carries and returns the declaration and
// that key's id. It shows who signed, not that the signer is trusted: compare the id with a
// key you trust, or call Verify with that key.
func Inspect(envelope []byte) (*Declaration, string, error) {
	var env Envelope
	if err := json.Unmarshal(envelope, &env); err != nil {
		return nil, "", fmt.Errorf("read envelope: %w", err)
	}
	if len(env.Signatures) == 0 || env.Signatures[0].PublicKey == "" {
		return nil, "", errors.New("inspect declaration: the envelope carries no public key")
	}
	pub, err := base64.StdEncoding.DecodeString(env.Signatures[0].PublicKey)
	if err != nil {
		return nil, "", fmt.Errorf("inspect declaration: public key: %w", err)
	}
	d, err := Verify(envelope, ed25519.PublicKey(pub))
	if err != nil {
		return nil, "", err
	}
	id, err := KeyID(pub)
	if err != nil {
		return nil, "", fmt.Errorf("inspect declaration: %w", err)
	}
	return d, id, nil
}

// signer is a dsse.Signer over an Ed25519 key.
type signer struct {
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
}

func (s signer) Sign(_ context.Context, data []byte) ([]byte, error) {
	return ed25519.Sign(s.priv, data), nil
}

func (s signer) KeyID() (string, error) { return KeyID(s.pub) }

// verifier is a dsse.Verifier over an Ed25519 public key.
type verifier struct {
	pub ed25519.PublicKey
	id  string
}

func (v verifier) Verify(_ context.Context, data, sig []byte) error {
	if !ed25519.Verify(v.pub, data, sig) {
		return errors.New("ed25519 signature does not verify")
	}
	return nil
}

func (v verifier) KeyID() (string, error)   { return v.id, nil }
func (v verifier) Public() crypto.PublicKey { return v.pub }
