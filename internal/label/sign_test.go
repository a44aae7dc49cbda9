package label

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// testKey derives a fixed key so that failures reproduce.
func testKey(seed string) ed25519.PrivateKey {
	s := sha256.Sum256([]byte(seed))
	return ed25519.NewKeyFromSeed(s[:])
}

func TestSignVerify(t *testing.T) {
	d := BuildDeclaration(testPolicy(), testMechanism(), testEvidence(), testNow)
	priv := testKey("declaration key")
	pub := priv.Public().(ed25519.PublicKey)
	env, err := Sign(d, priv)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	got, err := Verify(env, pub)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if diff := cmp.Diff(d, *got); diff != "" {
		t.Errorf("verified declaration (-signed +got):\n%s", diff)
	}

	var e Envelope
	if err := json.Unmarshal(env, &e); err != nil {
		t.Fatal(err)
	}
	id, err := KeyID(pub)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := base64.StdEncoding.DecodeString(e.Payload)
	want := Envelope{PayloadType: PayloadType, Payload: e.Payload, Signatures: []Signature{{KeyID: id, Sig: e.Signatures[0].Sig, PublicKey: base64.StdEncoding.EncodeToString(pub)}}}
	if diff := cmp.Diff(want, e); diff != "" {
		t.Errorf("envelope (-want +got):\n%s", diff)
	}
	if string(payload) != string(mustJSON(t, d)) {
		t.Error("the payload is not the canonical JSON of the declaration")
	}
	if !strings.HasPrefix(id, "SHA256:") {
		t.Errorf("key id %q is not an OpenSSH SHA-256 fingerprint", id)
	}

	gotD, gotID, err := Inspect(env)
	if err != nil || gotID != id || gotD.DeclarationID != d.DeclarationID {
		t.Errorf("Inspect = %v, %q, %v; want the declaration, %q, nil", gotD, gotID, err, id)
	}
}

func TestVerifyRejects(t *testing.T) {
	d := BuildDeclaration(testPolicy(), testMechanism(), testEvidence(), testNow)
	priv := testKey("declaration key")
	pub := priv.Public().(ed25519.PublicKey)
	other := testKey("another key")
	good, err := Sign(d, priv)
	if err != nil {
		t.Fatal(err)
	}
	// edit re-encodes the envelope after change.
	edit := func(change func(e *Envelope)) []byte {
		var e Envelope
		if err := json.Unmarshal(good, &e); err != nil {
			t.Fatal(err)
		}
		change(&e)
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	payload := func(mutate func(string) string) func(e *Envelope) {
		return func(e *Envelope) {
			p, _ := base64.StdEncoding.DecodeString(e.Payload)
			e.Payload = base64.StdEncoding.EncodeToString([]byte(mutate(string(p))))
		}
	}
	signedByOther, err := Sign(d, other)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		envelope []byte
		key      ed25519.PublicKey
		wantErr  string
	}{
		{"altered payload", edit(payload(func(p string) string { return strings.Replace(p, "2031-03-31", "2036-03-31", 1) })), pub, "signature"},
		{"altered status", edit(payload(func(p string) string {
			return strings.Replace(p, `"status":"supported"`, `"status":"end_of_support"`, 1)
		})), pub, "signature"},
		{"altered signature", edit(func(e *Envelope) {
			s, _ := base64.StdEncoding.DecodeString(e.Signatures[0].Sig)
			s[0] ^= 1
			e.Signatures[0].Sig = base64.StdEncoding.EncodeToString(s)
		}), pub, "signature"},
		{"wrong key", good, other.Public().(ed25519.PublicKey), "signature"},
		{"signed by another key", signedByOther, pub, "signature"},
		{"other key carried in the envelope", edit(func(e *Envelope) {
			e.Signatures[0].PublicKey = base64.StdEncoding.EncodeToString(other.Public().(ed25519.PublicKey))
		}), pub, ""},
		{"wrong payload type", edit(func(e *Envelope) { e.PayloadType = "application/vnd.in-toto+json" }), pub, "payload type"},
		{"no signature", edit(func(e *Envelope) { e.Signatures = nil }), pub, "signature"},
		{"not JSON", []byte("not an envelope"), pub, "read envelope"},
		{"short key", good, pub[:16], "public key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Verify(tt.envelope, tt.key)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Verify: %v; the carried key must play no part", err)
			case tt.wantErr != "" && err == nil:
				t.Error("Verify accepted a bad envelope")
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("Verify error %q, want it to mention %q", err, tt.wantErr)
			}
		})
	}
}

func TestInspectRejectsMismatchedCarriedKey(t *testing.T) {
	d := BuildDeclaration(testPolicy(), testMechanism(), testEvidence(), testNow)
	env, err := Sign(d, testKey("declaration key"))
	if err != nil {
		t.Fatal(err)
	}
	var e Envelope
	if err := json.Unmarshal(env, &e); err != nil {
		t.Fatal(err)
	}
	e.Signatures[0].PublicKey = base64.StdEncoding.EncodeToString(testKey("another key").Public().(ed25519.PublicKey))
	b, _ := json.Marshal(e)
	if _, _, err := Inspect(b); err == nil {
		t.Error("Inspect accepted an envelope whose carried key did not sign it")
	}
}

// FuzzVerify feeds arbitrary envelopes to Verify and Inspect: they must not panic, and whatever
// Verify accepts must be a declaration signed with the key and valid under the schema. Inputs
// are bounded (a real envelope is about 4 KiB) so that every execution, and the minimisation
// of a new input, stays fast: CI runs each fuzz target for 10 s.
func FuzzVerify(f *testing.F) {
	priv := testKey("declaration key")
	pub := priv.Public().(ed25519.PublicKey)
	good, err := Sign(BuildDeclaration(testPolicy(), testMechanism(), testEvidence(), testNow), priv)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"payloadType":"application/vnd.upkeep.declaration+json","payload":"e30=","signatures":[{"keyid":"","sig":"AAAA"}]}`))
	f.Add([]byte(`{"payloadType":"application/vnd.upkeep.declaration+json","payload":null,"signatures":[null]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, envelope []byte) {
		if len(envelope) > 16<<10 {
			t.Skip("larger than any declaration envelope")
		}
		d, err := Verify(envelope, pub)
		if err == nil {
			b, err := CanonicalJSON(*d)
			if err != nil {
				t.Fatalf("accepted declaration does not encode: %v", err)
			}
			if err := Validate(b); err != nil {
				t.Fatalf("accepted declaration does not match the schema: %v", err)
			}
		}
		_, _, _ = Inspect(envelope)
	})
}
