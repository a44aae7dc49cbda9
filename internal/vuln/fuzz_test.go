package vuln

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// seed adds every fixture under testdata/dir as a seed corpus entry.
func seed(f *testing.F, dir string) {
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*.json"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seeds in %s: %v", dir, err)
	}
	for _, p := range files {
		raw, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
}

func FuzzParseSBOM(f *testing.F) {
	seed(f, "sbom")
	f.Add([]byte(`{"bomFormat":"CycloneDX","specVersion":"1.4","components":[{"type":"library","name":"a","version":"1","components":[{"name":"b"}]}]}`))
	f.Add([]byte(`{"spdxVersion":"SPDX-2.2","packages":[{"name":"x","versionInfo":"1"}]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		sb, err := ParseSBOM(raw)
		if err != nil {
			return
		}
		for _, c := range sb.Components {
			if c.PURL == "" || c.Name == "" {
				t.Fatalf("component without purl or name: %+v", c)
			}
		}
		// Whatever parses must also match without panicking.
		NewIndex().Match(sb.Components)
	})
}

func FuzzParseOSV(f *testing.F) {
	seed(f, "osv")
	f.Fuzz(func(t *testing.T, raw []byte) {
		a, err := ParseOSV(raw)
		if err != nil {
			return
		}
		if a.ID == "" {
			t.Fatal("advisory without ID")
		}
		ix := NewIndex()
		ix.Add(a)
		var comps []Component
		for _, af := range a.Affected {
			for _, v := range []string{"0", "1.0.0", "v2.3.4-rc.1", "1:1.0-1", ""} {
				comps = append(comps, Component{Ecosystem: af.Ecosystem, Name: af.Name, Version: v})
			}
		}
		ix.Match(comps)
	})
}

func FuzzParseCSAF(f *testing.F) {
	seed(f, "csaf")
	f.Add([]byte(csafShapes))
	f.Fuzz(func(t *testing.T, raw []byte) {
		advs, vexs, err := ParseCSAF(raw)
		if err != nil {
			return
		}
		ix := NewIndex()
		var comps []Component
		for _, a := range advs {
			ix.Add(a)
			for _, af := range a.Affected {
				comps = append(comps, Component{Ecosystem: af.Ecosystem, Name: af.Name, Version: "1.0"})
			}
		}
		for _, v := range vexs {
			ix.AddVEX(v)
		}
		ix.Match(comps)
	})
}

func FuzzParseOSVYAML(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "osvyaml", "*.yaml"))
	for _, p := range files {
		raw, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Add([]byte("id: X\naffected:\n- package: {name: a, ecosystem: PyPI}\n  ranges:\n  - type: ECOSYSTEM\n    events: [{introduced: '0'}, {fixed: 1.0}]\n"))
	f.Add([]byte("a: &a [x, *a]"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		a, err := ParseOSV(raw)
		if err != nil {
			return
		}
		if a.ID == "" {
			t.Fatal("record without id")
		}
		NewIndex().Add(a)
	})
}

// seedFiles adds every file matching glob under testdata as a seed.
func seedFiles(f *testing.F, glob string) {
	files, _ := filepath.Glob(filepath.Join("testdata", glob))
	if len(files) == 0 {
		f.Fatalf("no seeds for %s", glob)
	}
	for _, p := range files {
		raw, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
}

func FuzzParseKEV(f *testing.F) {
	seedFiles(f, "kev/*.json")
	f.Add([]byte(`{"catalogVersion":"1","count":1,"vulnerabilities":[{"cveID":"CVE-2024-0001","dateAdded":"2024-01-01","dueDate":""}]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := ParseKEV(raw)
		if err != nil {
			return
		}
		for _, k := range c.Entries {
			if !ValidCVE(k.CVE) || k.DateAdded.IsZero() {
				t.Fatalf("bad entry accepted: %+v", k)
			}
		}
	})
}

func FuzzParseEPSS(f *testing.F) {
	seedFiles(f, "epss/*.csv")
	f.Add([]byte("cve,epss,percentile\nCVE-2024-0001,0.5,0.5\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		es, err := ParseEPSS(bytes.NewReader(raw))
		if err != nil {
			return
		}
		for _, e := range es {
			if !ValidCVE(e.CVE) || !unit(e.Score) || !unit(e.Percentile) {
				t.Fatalf("bad row accepted: %+v", e)
			}
		}
	})
}

func FuzzParseNVD(f *testing.F) {
	seedFiles(f, "nvd/*.json")
	f.Fuzz(func(t *testing.T, raw []byte) {
		cs, err := ParseNVD(raw)
		if err != nil {
			return
		}
		for _, c := range cs {
			if !ValidCVE(c.CVE) || severityRank(c.Severity) == 0 {
				t.Fatalf("bad CVE accepted: %+v", c)
			}
		}
	})
}
