package httpapi_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/exposure"
)

// TestVulnRoutes checks the SBOM, advisory and exposure routes' answers to bad input, and that
// a server without vulnerability data says so.
func TestVulnRoutes(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	wantError(t, call(t, srv, http.MethodGet, "/api/v1/exposure", nil, bearer(s.admin)), http.StatusServiceUnavailable, apperr.Unavailable, "no vulnerability data")

	vulns := &exposure.Service{Store: s.db, Devices: s.db, Releases: s.db, Targets: s.images.CurrentTargets}
	s.api.Exposure = vulns
	if err := vulns.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	if r := call(t, srv, http.MethodGet, "/api/v1/exposure", nil, nil); r.status != http.StatusUnauthorized {
		t.Errorf("exposure without a token: %d", r.status)
	}
	wantError(t, call(t, srv, http.MethodPut, "/api/v1/releases/"+testProduct+"/9.9.9/sbom", []byte(`{}`), bearer(s.admin)), http.StatusNotFound, apperr.NotFound, "")
	name, targets := s.uploadAndSign(srv, "1.0.0", []byte("firmware 1.0.0"), s.targetsKey)
	if r := s.publish(srv, name, targets); r.status != http.StatusCreated {
		t.Fatalf("publish: %d %s", r.status, r.body)
	}
	sbomPath := "/api/v1/releases/" + testProduct + "/1.0.0/sbom"
	wantError(t, call(t, srv, http.MethodPut, sbomPath, []byte(`<bom xmlns="http://cyclonedx.org/schema/bom/1.5"/>`), bearer(s.admin)), http.StatusBadRequest, apperr.Invalid, "want CycloneDX 1.2–1.6 or SPDX 2.2–2.3 JSON")
	wantError(t, call(t, srv, http.MethodGet, sbomPath, nil, bearer(s.admin)), http.StatusNotFound, apperr.NotFound, "has no SBOM")
	cdx := []byte(`{"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1, "components": [{"type": "library", "name": "zlib", "version": "1.3", "purl": "pkg:generic/zlib@1.3"}]}`)
	r := call(t, srv, http.MethodPut, sbomPath, cdx, bearer(s.admin))
	got := decodeJSON[exposure.SBOMSummary](t, r.body)
	if r.status != http.StatusOK || got.Signed || got.Components != 1 || got.Format != "CycloneDX 1.6" {
		t.Errorf("PUT SBOM of an unsigned release: %d %+v", r.status, got)
	}
	if r := call(t, srv, http.MethodGet, sbomPath, nil, bearer(s.admin)); r.status != http.StatusOK || decodeJSON[exposure.SBOMSummary](t, r.body).SHA256 != sha256hex(cdx) {
		t.Errorf("GET SBOM: %d %s", r.status, r.body)
	}

	// A malformed file is reported by the name it was uploaded under, with 200.
	r = call(t, srv, http.MethodPost, "/api/v1/advisories?name=feeds/bad.json", []byte(`{"id": `), bearer(s.admin))
	res := decodeJSON[exposure.ImportResult](t, r.body)
	if r.status != http.StatusOK || res.Skipped != 1 || len(res.Errors) != 1 || res.Errors[0].File != "feeds/bad.json" {
		t.Errorf("malformed upload: %d %+v", r.status, res)
	}
	wantError(t, call(t, srv, http.MethodGet, "/api/v1/exposure?severity=dire", nil, bearer(s.admin)), http.StatusBadRequest, apperr.Invalid, "severity")
	wantError(t, call(t, srv, http.MethodGet, "/api/v1/products/bad%20name/time-to-patch", nil, bearer(s.admin)), http.StatusBadRequest, apperr.Invalid, "")
	big := bytes.Repeat([]byte(" "), 33<<20)
	if r := call(t, srv, http.MethodPut, sbomPath, big, bearer(s.admin)); r.status != http.StatusRequestEntityTooLarge || !strings.Contains(string(r.body), "larger than") {
		t.Errorf("an SBOM over the limit: %d %s", r.status, r.body)
	}
}
