package agent

import (
	"crypto/sha256"
	"crypto/sha512"
	"io"
	"testing"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"upkeep.dev/upkeep/internal/uptane"
)

// TestHashesChecksOneSignedDigest: SHA-256 is checked when signed, SHA-512 otherwise, and a
// target with neither is refused.
func TestHashesChecksOneSignedDigest(t *testing.T) {
	data, other := []byte("the image"), []byte("another image")
	s256, s512 := sha256.Sum256(data), sha512.Sum512(data)
	for _, tc := range []struct {
		name  string
		hs    metadata.Hashes
		input []byte
		ok    bool
	}{
		{"sha256 and sha512", metadata.Hashes{"sha256": s256[:], "sha512": s512[:]}, data, true},
		{"sha256 and sha512, other bytes", metadata.Hashes{"sha256": s256[:], "sha512": s512[:]}, other, false},
		{"sha512 only", metadata.Hashes{"sha512": s512[:]}, data, true},
		{"sha512 only, other bytes", metadata.Hashes{"sha512": s512[:]}, other, false},
		{"neither", metadata.Hashes{"md5": []byte{1}}, data, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tf := &metadata.TargetFiles{Length: int64(len(tc.input)), Hashes: tc.hs}
			hs, err := newHashes(tf)
			if err == nil {
				hs.tee(io.Discard).Write(tc.input)
				err = hs.verify(tf)
			}
			if tc.ok != (err == nil) || err != nil && uptane.ReasonOf(err) != uptane.ReasonHashMismatch {
				t.Fatalf("err = %v, want ok=%v (a %q verification error otherwise)", err, tc.ok, uptane.ReasonHashMismatch)
			}
		})
	}
}
