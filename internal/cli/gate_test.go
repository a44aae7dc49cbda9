package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/wire"
)

const kevTerrapinCatalog = `{"catalogVersion":"2025.06.03","dateReleased":"2025-06-03T17:00:00.000Z","count":1,"vulnerabilities":[{"cveID":"CVE-2023-48795",
"vendorProject":"OpenSSH","product":"SSH","vulnerabilityName":"Terrapin","dateAdded":"2024-01-10","shortDescription":"x","requiredAction":"Apply updates.",
"dueDate":"2024-01-31","knownRansomwareCampaignUse":"Unknown","notes":"","cwes":[]}]}`

// TestReleaseGateCLI: with `product set --gate-kev`, `release check` lists the known exploited
// finding and fails; `release publish --sbom` refuses before signing; a publish without an
// SBOM, or straight to the API with an SBOM the gate never saw, is refused by the server; a
// campaign of a release whose attached SBOM has a KEV entry is refused; `vex set` lets it all
// through, and `vex list` shows the statement.
func TestReleaseGateCLI(t *testing.T) {
	e := newEnv(t)
	g := []string{"--server", e.srv.URL, "--token", e.srv.AdminToken}
	dir := t.TempDir()
	sbom := writeFile(t, dir, "fw.cdx.json", firmwareSBOM)
	// A release published before the gate, with the vulnerable SBOM attached.
	old := e.publishSBOM("0.9.0", 1, sbom)
	cli(t, append(g, "advisories", "import", filepath.Join(osvFixtures, "GO-2023-2402.json"), writeFile(t, dir, "kev.json", kevTerrapinCatalog))...)
	cli(t, append(g, "product", "set", testProduct, "--support-end", "2031-12-31", "--gate-kev")...)

	out, err := cliErr(append(g, "release", "check", "--product", testProduct, "--version", "1.0.0", "--sbom", sbom)...)
	if err == nil || !strings.Contains(out, "GO-2023-2402") || !strings.Contains(out, "2024-01-10") || !strings.Contains(out, "REFUSED") {
		t.Errorf("release check: %v\n%s", err, out)
	}
	fw := filepath.Join(dir, "fw.img")
	os.WriteFile(fw, image("1.0.0", 4<<10), 0o644)
	opts := client.PublishOptions{File: fw, TargetsKey: e.targetsKey, TrustedRoot: e.imageRoot, Expires: 30 * 24 * time.Hour, SBOM: sbom,
		Custom: uptane.TargetCustom{Product: testProduct, HardwareIDs: []string{testHardware}, Version: "1.0.0", SecurityVersion: 2, Class: uptane.ClassSecurity}}
	if _, err := e.cli.Publish(context.Background(), opts); !apperr.Is(err, apperr.Forbidden) {
		t.Errorf("publish --sbom: %v", err)
	}
	// The server refuses too: without an SBOM…
	noSBOM := opts
	noSBOM.SBOM = ""
	if _, err := e.cli.Publish(context.Background(), noSBOM); !apperr.Is(err, apperr.Forbidden) || !strings.Contains(err.Error(), "needs the release's SBOM") {
		t.Errorf("publish without an SBOM: %v", err)
	}
	// …and with a signed SBOM digest it never checked.
	unseen := noSBOM
	unseen.Custom.SBOM = strings.Repeat("ab", 32)
	if _, err := e.cli.Publish(context.Background(), unseen); !apperr.Is(err, apperr.Forbidden) || !strings.Contains(err.Error(), "has not seen the SBOM") {
		t.Errorf("publish with an unchecked SBOM digest: %v", err)
	}
	// Campaigns of the old release are refused.
	if _, err := e.cli.CreateRollout(context.Background(), wire.CampaignSpec{Release: old.Product + "@" + old.Version, Target: "product=" + testProduct}); !apperr.Is(err, apperr.Forbidden) {
		t.Errorf("campaign: %v", err)
	}
	cli(t, append(g, "vex", "set", testProduct, "CVE-2023-48795", "not_affected", "--justification", "vulnerable_code_not_in_execute_path",
		"--impact", "The firmware never starts an SSH server.", "--analyst", "Ada")...)
	if out := cli(t, append(g, "vex", "list", testProduct)...); !strings.Contains(out, "CVE-2023-48795") || !strings.Contains(out, "Ada") {
		t.Errorf("vex list:\n%s", out)
	}
	if out := cli(t, append(g, "release", "check", "--product", testProduct, "--version", "1.0.0", "--sbom", sbom)...); !strings.Contains(out, "passed") {
		t.Errorf("release check after VEX:\n%s", out)
	}
	if _, err := e.cli.Publish(context.Background(), opts); err != nil {
		t.Errorf("publish after VEX: %v", err)
	}

	// The statements are published without login: CSAF provider, ROLIE feed, the signed VEX
	// document with its hashes, and OpenVEX.
	get := func(p string) []byte {
		t.Helper()
		resp, err := http.Get(e.srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", p, resp.StatusCode, b)
		}
		return b
	}
	var pm struct {
		Keys []struct{ Fingerprint, URL string } `json:"public_openpgp_keys"`
	}
	if err := json.Unmarshal(get("/.well-known/csaf/provider-metadata.json"), &pm); err != nil || len(pm.Keys) != 1 {
		t.Fatalf("provider metadata: %v %+v", err, pm)
	}
	feed := string(get("/.well-known/csaf/feed-tlp-white.json"))
	i := strings.Index(feed, "/.well-known/csaf/white/")
	if i < 0 {
		t.Fatalf("feed lists no document:\n%s", feed)
	}
	docPath := feed[i : i+strings.Index(feed[i:], `"`)]
	doc := get(docPath)
	if !strings.Contains(string(doc), "vulnerable_code_not_in_execute_path") {
		t.Errorf("VEX document:\n%s", doc)
	}
	ring, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(get(strings.TrimPrefix(pm.Keys[0].URL, e.srv.URL))))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openpgp.CheckArmoredDetachedSignature(ring, bytes.NewReader(doc), bytes.NewReader(get(docPath+".asc")), nil); err != nil {
		t.Errorf("signature: %v", err)
	}
	sum := sha256.Sum256(doc)
	if !strings.HasPrefix(string(get(docPath+".sha256")), hex.EncodeToString(sum[:])) {
		t.Error("sha256 file does not match")
	}
	if ov := string(get("/p/" + testProduct + "/openvex.json")); !strings.Contains(ov, "https://openvex.dev/ns/v0.2.0") || !strings.Contains(ov, "CVE-2023-48795") {
		t.Errorf("OpenVEX:\n%s", ov)
	}
}
