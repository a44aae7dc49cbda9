package vuln

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestParseSBOMCycloneDX(t *testing.T) {
	raw := readFixture(t, "sbom/upkeep-agent.cdx.json")
	sb, err := ParseSBOM(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sb.Format, "CycloneDX 1.6"; got != want {
		t.Errorf("Format = %q, want %q", got, want)
	}
	if len(sb.Digest) != 64 {
		t.Errorf("Digest = %q, want sha256 hex", sb.Digest)
	}
	if got, want := len(sb.Components), 14; got != want {
		t.Errorf("%d components, want %d", got, want)
	}
	want := []Component{
		{PURL: "pkg:golang/std@go1.26.8?type=module&goos=linux&goarch=amd64", Ecosystem: "Go", Name: "stdlib", Version: "1.26.8"},
		{PURL: "pkg:golang/golang.org/x/crypto@v0.58.0?type=module&goos=linux&goarch=amd64", Ecosystem: "Go", Name: "golang.org/x/crypto", Version: "v0.58.0"},
		{PURL: "pkg:golang/google.golang.org/protobuf@v1.36.12?type=module&goos=linux&goarch=amd64", Ecosystem: "Go", Name: "google.golang.org/protobuf", Version: "v1.36.12"},
	}
	for _, w := range want {
		if !slices.Contains(sb.Components, w) {
			t.Errorf("missing %+v", w)
		}
	}
	if got := sb.Components[0].Name; got != "upkeep.dev/upkeep" {
		t.Errorf("first component %q, want the SBOM subject upkeep.dev/upkeep", got)
	}
}

func TestParseSBOMSPDXMatchesCycloneDX(t *testing.T) {
	cdx, err := ParseSBOM(readFixture(t, "sbom/upkeep-agent.cdx.json"))
	if err != nil {
		t.Fatal(err)
	}
	spdx, err := ParseSBOM(readFixture(t, "sbom/upkeep-agent.spdx.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := spdx.Format, "SPDX 2.3"; got != want {
		t.Errorf("Format = %q, want %q", got, want)
	}
	if diff := cmp.Diff(cdx.Components, spdx.Components); diff != "" {
		t.Errorf("SPDX components differ from CycloneDX (-cdx +spdx):\n%s", diff)
	}
}

func TestParseSBOMGenericFallback(t *testing.T) {
	raw := []byte(`{"bomFormat":"CycloneDX","specVersion":"1.5","version":1,"components":[
		{"type":"firmware","name":"Bootloader","version":"2023.04-r3"},
		{"type":"library","name":"zlib","version":"1.3","components":[{"type":"library","name":"inner","version":"0.1"}]},
		{"type":"library","name":"bad purl","version":"1","purl":"not-a-purl"},
		{"type":"library","name":""}]}`)
	sb, err := ParseSBOM(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := []Component{
		{PURL: "pkg:generic/Bootloader@2023.04-r3", Name: "Bootloader", Version: "2023.04-r3"},
		{PURL: "pkg:generic/zlib@1.3", Name: "zlib", Version: "1.3"},
		{PURL: "pkg:generic/inner@0.1", Name: "inner", Version: "0.1"},
		{PURL: "pkg:generic/bad%20purl@1", Name: "bad purl", Version: "1"},
	}
	if diff := cmp.Diff(want, sb.Components); diff != "" {
		t.Errorf("components (-want +got):\n%s", diff)
	}
}

func TestParseSBOMErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		raw    []byte
		format bool // wraps ErrSBOMFormat
	}{
		{"xml", []byte(`<?xml version="1.0"?><bom xmlns="http://cyclonedx.org/schema/bom/1.5"/>`), true},
		{"cyclonedx 1.1", []byte(`{"bomFormat":"CycloneDX","specVersion":"1.1"}`), true},
		{"spdx 2.1", []byte(`{"spdxVersion":"SPDX-2.1"}`), true},
		{"other json", []byte(`{"hello":"world"}`), true},
		{"array", []byte(`[1,2]`), true},
		{"empty", nil, true},
		{"too big", bytes.Repeat([]byte(" "), MaxSBOMBytes+1), true},
		{"bad cyclonedx body", []byte(`{"bomFormat":"CycloneDX","specVersion":"1.5","components":{}}`), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSBOM(tc.raw)
			if err == nil {
				t.Fatal("no error")
			}
			if got := errors.Is(err, ErrSBOMFormat); got != tc.format {
				t.Errorf("errors.Is(%v, ErrSBOMFormat) = %v, want %v", err, got, tc.format)
			}
		})
	}
}

func TestComponentFromPURL(t *testing.T) {
	for _, tc := range []struct {
		purl string
		want Component
	}{
		{"pkg:pypi/Django_REST.framework@3.14.0", Component{Ecosystem: "PyPI", Name: "django-rest.framework", Version: "3.14.0"}},
		{"pkg:npm/%40babel/core@7.22.0", Component{Ecosystem: "npm", Name: "@babel/core", Version: "7.22.0"}},
		{"pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1", Component{Ecosystem: "Maven", Name: "org.apache.logging.log4j:log4j-core", Version: "2.14.1"}},
		{"pkg:deb/debian/openssl@3.0.11-1~deb12u2?arch=amd64&distro=debian-12", Component{Ecosystem: "Debian:12", Name: "openssl", Version: "3.0.11-1~deb12u2"}},
		{"pkg:apk/alpine/busybox@1.36.1-r5?distro=alpine-3.19.1", Component{Ecosystem: "Alpine:v3.19", Name: "busybox", Version: "1.36.1-r5"}},
		{"pkg:cargo/russh@0.40.1", Component{Ecosystem: "crates.io", Name: "russh", Version: "0.40.1"}},
		{"pkg:golang/github.com/Azure/go-autorest@v14.2.0+incompatible", Component{Ecosystem: "Go", Name: "github.com/Azure/go-autorest", Version: "v14.2.0+incompatible"}},
		{"pkg:golang/std@go1.22rc1", Component{Ecosystem: "Go", Name: "stdlib", Version: "1.22.0-rc.1"}},
		{"pkg:generic/acme/bootrom@4.2", Component{Ecosystem: "", Name: "acme/bootrom", Version: "4.2"}},
		{"pkg:docker/library/alpine@3.19", Component{Ecosystem: "docker", Name: "alpine", Version: "3.19"}},
	} {
		got, err := ComponentFromPURL(tc.purl)
		if err != nil {
			t.Errorf("%s: %v", tc.purl, err)
			continue
		}
		tc.want.PURL = tc.purl
		if got != tc.want {
			t.Errorf("ComponentFromPURL(%q) = %+v, want %+v", tc.purl, got, tc.want)
		}
	}
	if got := NormalizeName("PyPI", "Django_REST..framework"); got != "django-rest-framework" {
		t.Errorf("PEP 503 name = %q", got)
	}
	if NormalizeName("Go", "github.com/Azure/x") == NormalizeName("Go", "github.com/azure/x") {
		t.Error("Go module paths must stay case sensitive")
	}
}

// TestParseSBOMCycloneDXOld reads CycloneDX 1.2 and 1.3 documents, which older generators
// (cyclonedx-gomod v1, syft before 0.60) still write.
func TestParseSBOMCycloneDXOld(t *testing.T) {
	for _, v := range []string{"1.2", "1.3"} {
		sb, err := ParseSBOM(readFixture(t, "sbom/gateway-"+v+".cdx.json"))
		if err != nil {
			t.Fatalf("CycloneDX %s: %v", v, err)
		}
		if sb.Format != "CycloneDX "+v || len(sb.Components) != 3 || sb.Subject == nil || sb.Subject.Name != "gateway" {
			t.Errorf("CycloneDX %s: %+v", v, sb)
		}
		if c := sb.Components[2]; c.Ecosystem != "Alpine:v3.13" || c.Name != "openssl" || c.Version != "1.1.1k-r0" {
			t.Errorf("CycloneDX %s: openssl %+v", v, c)
		}
	}
}
