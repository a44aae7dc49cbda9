package transparency_test

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"upkeep.dev/upkeep/internal/agent"
	"upkeep.dev/upkeep/internal/transparency"
	"upkeep.dev/upkeep/internal/uptane"
)

// TestDeclaredHashIsVerified: the declaration's hash_alg names exactly the digests the agent
// checks a downloaded image against. For a target entry as the server publishes it (SHA-256 and
// SHA-512, uptane.NewTargetFile), each signed digest in turn is made wrong and the image streamed
// through the agent's download loop (agent.StreamTarget: the fetchRange loop and digests that
// Agent.Update's download runs too): the digests whose corruption fails the download are the
// ones the agent verifies.
func TestDeclaredHashIsVerified(t *testing.T) {
	img := []byte(strings.Repeat("UPKEEP-IMAGE 1.0.1 ", 4096))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(img) }))
	defer srv.Close()
	s256, s512 := sha256.Sum256(img), sha512.Sum512(img)
	good := map[string]string{"sha256": hex.EncodeToString(s256[:]), "sha512": hex.EncodeToString(s512[:])}
	custom := uptane.TargetCustom{Product: "thermo", HardwareIDs: []string{"hw-1"}, Version: "1.0.1", SecurityVersion: 1, Class: "security"}

	var verified []string
	for _, alg := range []string{"sha256", "sha512"} {
		sums := map[string]string{"sha256": good["sha256"], "sha512": good["sha512"]}
		sums[alg] = strings.Repeat("00", len(sums[alg])/2) // a signed digest the bytes do not have
		tf, err := uptane.NewTargetFile(int64(len(img)), sums["sha256"], sums["sha512"], custom)
		if err != nil {
			t.Fatal(err)
		}
		err = agent.StreamTarget(context.Background(), srv.Client(), srv.URL+"/image", tf, io.Discard)
		var ve *uptane.VerificationError
		switch {
		case err == nil:
		case errors.As(err, &ve) && ve.Reason == uptane.ReasonHashMismatch:
			verified = append(verified, alg)
		default:
			t.Fatalf("%s wrong: %v", alg, err)
		}
	}
	declared := strings.Split(transparency.PlatformMechanism(true).HashAlgorithms, "+")
	slices.Sort(declared)
	if !slices.Equal(declared, verified) {
		t.Errorf("the declaration's hash_alg is %q; the agent verifies %q", strings.Join(declared, "+"), strings.Join(verified, "+"))
	}
}
