package browsertest

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// axeSource is axe-core, vendored with its license and version in axe/README.md.
//
//go:embed axe/axe.min.js
var axeSource string

// Violation is one axe-core rule the page breaks, with the elements that break it.
type Violation struct {
	ID          string `json:"id"`
	Impact      string `json:"impact"` // minor, moderate, serious, critical
	Help        string `json:"help"`
	HelpURL     string `json:"helpUrl"`
	Description string `json:"description"`
	Nodes       []struct {
		Target         []any  `json:"target"`
		HTML           string `json:"html"`
		FailureSummary string `json:"failureSummary"`
	} `json:"nodes"`
}

// Serious reports whether the violation's impact is serious or critical.
func (v Violation) Serious() bool { return v.Impact == "serious" || v.Impact == "critical" }

func (v Violation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s [%s]: %s (%s)", v.ID, v.Impact, v.Help, v.HelpURL)
	for _, n := range v.Nodes {
		fmt.Fprintf(&b, "\n    %v %s", n.Target, n.HTML)
	}
	return b.String()
}

// AxeViolations runs axe-core on the page as it is now and returns every violation. axe-core is
// evaluated through the DevTools protocol (Runtime.evaluate), which a page's Content Security
// Policy does not govern, so it runs under the console's `script-src 'self'`.
func (b *Browser) AxeViolations() ([]Violation, error) {
	loaded, err := Eval[bool](b, `typeof window.axe === "object"`)
	if err != nil {
		return nil, fmt.Errorf("axe: %w", err)
	}
	if !loaded {
		// The bundle ends in an expression; evaluate it as a statement list and yield true.
		if _, err := Eval[bool](b, axeSource+"\n;true"); err != nil {
			return nil, fmt.Errorf("axe: inject axe-core: %w", err)
		}
	}
	raw, err := Eval[string](b, `axe.run(document, {resultTypes: ["violations"]}).then(r => JSON.stringify(r.violations))`)
	if err != nil {
		return nil, fmt.Errorf("axe: run: %w", err)
	}
	var vs []Violation
	if err := json.Unmarshal([]byte(raw), &vs); err != nil {
		return nil, fmt.Errorf("axe: results: %w", err)
	}
	return vs, nil
}

// Axe runs axe-core on the page and fails t (the browser's test, or one of its subtests) on
// every serious or critical violation, listing each with the elements concerned; lesser ones
// are logged.
func (b *Browser) Axe(t testing.TB) {
	t.Helper()
	vs, err := b.AxeViolations()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		if v.Serious() {
			t.Errorf("accessibility: %s", v)
		} else {
			t.Logf("accessibility (%s): %s", v.Impact, v.ID)
		}
	}
	b.Check()
}
