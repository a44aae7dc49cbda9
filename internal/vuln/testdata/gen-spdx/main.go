// Command gen-spdx writes testdata/sbom/upkeep-agent.spdx.json: an SPDX 2.3
// JSON SBOM of the same components as upkeep-agent.cdx.json (no SPDX
// generator for Go binaries is installable here), built with
// spdx/tools-golang. Run from the repository root:
//
//	go run ./internal/vuln/testdata/gen-spdx
package main

import (
	"encoding/json"
	"fmt"
	"log"
	"os"
	"strings"

	spdxjson "github.com/spdx/tools-golang/json"
	"github.com/spdx/tools-golang/spdx"
	"github.com/spdx/tools-golang/spdx/v2/common"
)

const dir = "internal/vuln/testdata/sbom/"

func main() {
	raw, err := os.ReadFile(dir + "upkeep-agent.cdx.json")
	if err != nil {
		log.Fatal(err)
	}
	var bom struct {
		SerialNumber string `json:"serialNumber"`
		Metadata     struct {
			Timestamp string `json:"timestamp"`
			Component struct {
				Name, Version, PURL string
			} `json:"component"`
		} `json:"metadata"`
		Components []struct {
			Name    string `json:"name"`
			Version string `json:"version"`
			PURL    string `json:"purl"`
		} `json:"components"`
	}
	if err := json.Unmarshal(raw, &bom); err != nil {
		log.Fatal(err)
	}
	doc := &spdx.Document{
		SPDXVersion:       spdx.Version,
		DataLicense:       spdx.DataLicense,
		SPDXIdentifier:    "DOCUMENT",
		DocumentName:      "upkeep-agent",
		DocumentNamespace: "https://upkeep.dev/spdx/upkeep-agent-v0.0.0",
		CreationInfo: &spdx.CreationInfo{
			Creators: []common.Creator{{CreatorType: "Tool", Creator: "upkeep-gen-spdx (spdx/tools-golang v0.5.7)"}},
			Created:  bom.Metadata.Timestamp,
		},
	}
	add := func(i int, name, version, purl string) common.ElementID {
		id := common.ElementID(fmt.Sprintf("Package-%d", i))
		p := &spdx.Package{
			PackageName:             name,
			PackageSPDXIdentifier:   id,
			PackageVersion:          version,
			PackageDownloadLocation: "NOASSERTION",
			FilesAnalyzed:           false,
		}
		if purl != "" {
			p.PackageExternalReferences = []*spdx.PackageExternalReference{{Category: "PACKAGE-MANAGER", RefType: "purl", Locator: purl}}
		}
		doc.Packages = append(doc.Packages, p)
		return id
	}
	root := add(0, bom.Metadata.Component.Name, bom.Metadata.Component.Version, bom.Metadata.Component.PURL)
	doc.Relationships = append(doc.Relationships, &spdx.Relationship{
		RefA: common.MakeDocElementID("", "DOCUMENT"), RefB: common.MakeDocElementID("", string(root)), Relationship: "DESCRIBES",
	})
	for i, c := range bom.Components {
		id := add(i+1, c.Name, strings.TrimSpace(c.Version), c.PURL)
		doc.Relationships = append(doc.Relationships, &spdx.Relationship{
			RefA: common.MakeDocElementID("", string(root)), RefB: common.MakeDocElementID("", string(id)), Relationship: "DEPENDS_ON",
		})
	}
	f, err := os.Create(dir + "upkeep-agent.spdx.json")
	if err != nil {
		log.Fatal(err)
	}
	if err := spdxjson.Write(doc, f, spdxjson.Indent("  ")); err != nil {
		log.Fatal(err)
	}
	if err := f.Close(); err != nil {
		log.Fatal(err)
	}
}
