package vuln

import (
	"archive/zip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ossf/osv-schema/bindings/go/osvschema"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Advisory is one vulnerability record, from OSV or from a CSAF document.
type Advisory struct {
	ID        string
	Aliases   []string
	Summary   string
	Severity  string // critical|high|medium|low|unknown
	Published time.Time
	Modified  time.Time
	Affected  []Affected
	Source    string // "osv" | "csaf"
	Withdrawn *time.Time
	// SeveritySource says where Severity came from: "severity (CVSS v3)" or "database_specific"
	// in an OSV record, "cvss_v3", "cvss_v2" or "aggregate_severity" in a CSAF document; "" when
	// the record has none.
	SeveritySource string `json:",omitempty"`
}

// Affected names one package and the versions of it that are affected.
type Affected struct {
	Ecosystem, Name string
	Ranges          []Range
	Versions        []string
}

// Range is an OSV range.
type Range struct {
	Type   string // SEMVER|ECOSYSTEM|GIT
	Events []Event
}

// Event is one OSV range event; exactly one field is set.
type Event struct {
	Introduced, Fixed, LastAffected, Limit string
}

// Severity levels.
const (
	SeverityCritical = "critical"
	SeverityHigh     = "high"
	SeverityMedium   = "medium"
	SeverityLow      = "low"
	SeverityUnknown  = "unknown"
)

// Sources of advisories.
const (
	SourceOSV  = "osv"
	SourceCSAF = "csaf"
)

// MaxOSVBytes bounds one OSV record, in ParseOSV and per file in ReadOSV.
// The largest records on osv.dev (Linux kernel, with long version lists)
// are a few MiB.
const MaxOSVBytes = 16 << 20

// ParseOSV reads one OSV record (schema 1.x), in JSON or in YAML as
// pypa/advisory-database writes them (osvYAMLToJSON). Unknown fields are
// ignored. The record must have an id. Severity is the highest of the CVSS
// v2/v3 base scores computed from the record's vectors (top level and per
// affected package), of an Ubuntu priority, and of database_specific.severity
// (as GitHub writes it); "unknown" when none is present (CVSS v4 vectors are
// not scored here).
//
// ParseOSV is safe for concurrent use and for untrusted input.
func ParseOSV(raw []byte) (*Advisory, error) {
	if len(raw) > MaxOSVBytes {
		return nil, fmt.Errorf("OSV record of %d bytes is over the %d byte limit", len(raw), MaxOSVBytes)
	}
	if isYAML(raw) {
		j, err := osvYAMLToJSON(raw)
		if err != nil {
			return nil, err
		}
		raw = j
	}
	var v osvschema.Vulnerability
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("decode OSV: %w", err)
	}
	if strings.TrimSpace(v.GetId()) == "" {
		return nil, errors.New("decode OSV: no id")
	}
	a := &Advisory{
		ID:        v.GetId(),
		Aliases:   v.GetAliases(),
		Summary:   v.GetSummary(),
		Published: osvTime(v.GetPublished()),
		Modified:  osvTime(v.GetModified()),
		Source:    SourceOSV,
	}
	if v.GetWithdrawn() != nil {
		t := osvTime(v.GetWithdrawn())
		a.Withdrawn = &t
	}
	scored, db := osvSeverity(v.GetSeverity()), dbSeverity(v.GetDatabaseSpecific())
	for _, aff := range v.GetAffected() {
		scored, db = max(scored, osvSeverity(aff.GetSeverity())), max(db, dbSeverity(aff.GetDatabaseSpecific()))
		pkg := aff.GetPackage()
		if pkg.GetName() == "" || pkg.GetEcosystem() == "" {
			continue
		}
		out := Affected{Ecosystem: pkg.GetEcosystem(), Name: pkg.GetName(), Versions: aff.GetVersions()}
		for _, r := range aff.GetRanges() {
			rr := Range{Type: r.GetType().String()}
			for _, e := range r.GetEvents() {
				ev := Event{Introduced: e.GetIntroduced(), Fixed: e.GetFixed(), LastAffected: e.GetLastAffected(), Limit: e.GetLimit()}
				if ev != (Event{}) {
					rr.Events = append(rr.Events, ev)
				}
			}
			out.Ranges = append(out.Ranges, rr)
		}
		a.Affected = append(a.Affected, out)
	}
	a.Severity = severityName(max(scored, db))
	switch {
	case scored > 0 && scored >= db:
		a.SeveritySource = "severity (CVSS)"
	case db > 0:
		a.SeveritySource = "database_specific"
	}
	return a, nil
}

func osvTime(ts *timestamppb.Timestamp) time.Time {
	if ts == nil || !ts.IsValid() {
		return time.Time{}
	}
	t := ts.AsTime().UTC()
	if t.Year() <= 1 {
		// The golang/vulndb repository writes 0001-01-01 before publication.
		return time.Time{}
	}
	return t
}

func osvSeverity(ss []*osvschema.Severity) int {
	best := 0
	for _, s := range ss {
		switch s.GetType() {
		case osvschema.Severity_CVSS_V3:
			if score, ok := cvss3Score(s.GetScore()); ok {
				best = max(best, severityRank(cvssSeverity(score, 3)))
			}
		case osvschema.Severity_CVSS_V2:
			if score, ok := cvss2Score(s.GetScore()); ok {
				best = max(best, severityRank(cvssSeverity(score, 2)))
			}
		case osvschema.Severity_Ubuntu:
			best = max(best, severityRank(textSeverity(s.GetScore())))
		}
	}
	return best
}

func dbSeverity(s *structpb.Struct) int {
	if s == nil {
		return 0
	}
	v, ok := s.GetFields()["severity"]
	if !ok {
		return 0
	}
	return severityRank(textSeverity(v.GetStringValue()))
}

// textSeverity maps vendor words (GitHub's MODERATE, Ubuntu's negligible,
// Red Hat's Important) onto the five levels.
func textSeverity(s string) string {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "critical":
		return SeverityCritical
	case "high", "important":
		return SeverityHigh
	case "medium", "moderate":
		return SeverityMedium
	case "low", "negligible", "none":
		return SeverityLow
	}
	return SeverityUnknown
}

func severityRank(s string) int {
	switch s {
	case SeverityCritical:
		return 4
	case SeverityHigh:
		return 3
	case SeverityMedium:
		return 2
	case SeverityLow:
		return 1
	}
	return 0
}

func severityName(r int) string {
	return [...]string{SeverityUnknown, SeverityLow, SeverityMedium, SeverityHigh, SeverityCritical}[r]
}

// ReadOSV calls fn for every OSV record under path: a single .json file, a
// folder (walked recursively), or a .zip of .json files as osv.dev publishes
// per ecosystem (all.zip). One file is in memory at a time, each at most
// MaxOSVBytes. Files not ending in .json, .yaml or .yml are skipped. A malformed or
// oversized file does not stop the walk: ReadOSV goes on and returns the
// problems at the end, each naming its file. An error from fn stops the walk
// and is returned as is.
func ReadOSV(path string, fn func(*Advisory) error) error {
	info, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("read OSV: %w", err)
	}
	var bad badFiles
	switch {
	case info.IsDir():
		err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || !isJSONName(p) {
				return nil
			}
			f, err := os.Open(p)
			if err != nil {
				bad.add(p, err)
				return nil
			}
			defer f.Close()
			return readOne(p, f, fn, &bad)
		})
	case strings.EqualFold(filepath.Ext(path), ".zip"):
		err = readZip(path, fn, &bad)
	default:
		var f *os.File
		f, err = os.Open(path)
		if err != nil {
			return fmt.Errorf("read OSV: %w", err)
		}
		defer f.Close()
		err = readOne(path, f, fn, &bad)
	}
	if err != nil {
		return err
	}
	return bad.err()
}

func readZip(path string, fn func(*Advisory) error, bad *badFiles) error {
	zr, err := zip.OpenReader(path)
	if err != nil {
		return fmt.Errorf("read OSV zip %s: %w", path, err)
	}
	defer zr.Close()
	for _, zf := range zr.File {
		if zf.FileInfo().IsDir() || !isJSONName(zf.Name) {
			continue
		}
		name := path + "!" + zf.Name
		if zf.UncompressedSize64 > MaxOSVBytes {
			bad.add(name, fmt.Errorf("%d bytes is over the %d byte limit", zf.UncompressedSize64, MaxOSVBytes))
			continue
		}
		rc, err := zf.Open()
		if err != nil {
			bad.add(name, err)
			continue
		}
		err = readOne(name, rc, fn, bad)
		rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// readOne parses one file; only fn's error is returned.
func readOne(name string, r io.Reader, fn func(*Advisory) error, bad *badFiles) error {
	raw, err := io.ReadAll(io.LimitReader(r, MaxOSVBytes+1))
	if err != nil {
		bad.add(name, err)
		return nil
	}
	if len(raw) > MaxOSVBytes {
		bad.add(name, fmt.Errorf("over the %d byte limit", MaxOSVBytes))
		return nil
	}
	a, err := ParseOSV(raw)
	if err != nil {
		bad.add(name, err)
		return nil
	}
	return fn(a)
}

// isJSONName reports whether p names an OSV record file: JSON, or YAML (.yaml, .yml).
func isJSONName(p string) bool {
	switch strings.ToLower(filepath.Ext(p)) {
	case ".json", ".yaml", ".yml":
		return true
	}
	return false
}

// badFiles collects per-file problems, keeping the first few in full.
type badFiles struct {
	errs  []error
	count int
}

const maxBadFiles = 20

func (b *badFiles) add(name string, err error) {
	b.count++
	if len(b.errs) < maxBadFiles {
		b.errs = append(b.errs, fmt.Errorf("%s: %w", name, err))
	}
}

func (b *badFiles) err() error {
	if b.count == 0 {
		return nil
	}
	errs := b.errs
	if b.count > len(errs) {
		errs = append(errs, fmt.Errorf("and %d more malformed files", b.count-len(errs)))
	}
	return fmt.Errorf("read OSV: %d malformed files: %w", b.count, errors.Join(errs...))
}
