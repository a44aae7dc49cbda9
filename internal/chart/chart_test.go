package chart

import (
	"encoding/xml"
	"flag"
	"html/template"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

var t0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

func hours(vs ...float64) []Point {
	ps := make([]Point, len(vs))
	for i, v := range vs {
		ps[i] = Point{T: t0.Add(time.Duration(i) * time.Hour), V: v}
	}
	return ps
}

func golden(t *testing.T, name string, got template.HTML) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s differs from the golden file (run with -update after checking it):\n%s", name, got)
	}
}

// wellFormed parses s as XML and returns the text of its <title> and <desc>.
func wellFormed(t testing.TB, s string) (title, desc string) {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(s))
	var in string
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, s)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			in = tok.Name.Local
			for _, a := range tok.Attr {
				if a.Name.Local == "style" || strings.HasPrefix(a.Name.Local, "on") {
					t.Fatalf("attribute %s in the output:\n%s", a.Name.Local, s)
				}
			}
			if in == "script" || in == "foreignObject" {
				t.Fatalf("element %s in the output:\n%s", in, s)
			}
		case xml.CharData:
			switch in {
			case "title":
				title += string(tok)
			case "desc":
				desc += string(tok)
			}
		case xml.EndElement:
			in = ""
		}
	}
}

func TestGolden(t *testing.T) {
	members := TimeChart{
		Title: "Members by state", Desc: "A campaign's 40 members over six hours.", Stacked: true, ID: "members",
		Series: []Series{
			{Name: "succeeded", Points: hours(0, 2, 8, 15, 24, 30, 33), Color: "#1b7a3a"},
			{Name: "failed", Points: hours(0, 0, 1, 1, 2, 2, 3), Color: "#b00020"},
			{Name: "pending", Points: hours(40, 38, 31, 24, 14, 8, 4)},
		},
	}
	golden(t, "stacked.svg", Time(members))
	golden(t, "stacked-table.html", members.Table())
	golden(t, "line.svg", Time(TimeChart{
		Title: "Days to patch", Desc: "Median days from advisory to fix deployed.", Unit: "days", Area: true,
		Series: []Series{{Name: "median", Points: []Point{
			{T: t0, V: 12}, {T: t0.AddDate(0, 1, 0), V: 9.5}, {T: t0.AddDate(0, 2, 0), V: 4}, {T: t0.AddDate(0, 3, 0), V: 6},
		}}},
	}))
	golden(t, "bars.svg", Bars(BarChart{
		Title: "Devices by version", Desc: "Installed versions across the fleet.", Unit: "devices",
		Bars: []Bar{{Label: "1.2.0", Value: 812, Href: "/devices?version=1.2.0"}, {Label: "1.1.4", Value: 140}, {Label: "unknown", Value: 0}},
	}))
	golden(t, "progress.svg", Progress{
		Title: "Wave 1", Total: 50,
		Parts: []Part{{Label: "succeeded", Value: 30, Color: "#1b7a3a"}, {Label: "failed", Value: 2, Color: "#b00020"}},
	}.SVG())
	golden(t, "empty.svg", Time(TimeChart{Title: "Nothing yet"}))
}

// TestAccessible: every chart is an image named by its title and described, its ids unique per
// content, and well-formed XML with no style attribute, script or event handler.
func TestAccessible(t *testing.T) {
	outs := map[string]template.HTML{
		"time":     Time(TimeChart{Title: "A", Desc: "d", Series: []Series{{Name: "s", Points: hours(1, 2)}}}),
		"bars":     Bars(BarChart{Title: "A", Desc: "d", Bars: []Bar{{Label: "x", Value: 1}}}),
		"progress": Progress{Title: "A", Parts: []Part{{Label: "x", Value: 1}}}.SVG(),
	}
	for name, out := range outs {
		s := string(out)
		if !strings.Contains(s, `role="img"`) || !strings.Contains(s, `aria-labelledby=`) {
			t.Errorf("%s: no role or name: %s", name, s)
		}
		title, _ := wellFormed(t, s)
		if title != "A" {
			t.Errorf("%s: title %q", name, title)
		}
	}
	if a, b := Time(TimeChart{Title: "A"}), Time(TimeChart{Title: "B"}); strings.Contains(string(b), idOf(string(a))) {
		t.Errorf("two charts share the id %s", idOf(string(a)))
	}
}

func idOf(s string) string {
	i := strings.Index(s, `<title id="`)
	s = s[i+len(`<title id="`):]
	return s[:strings.Index(s, `"`)]
}

// TestBounded: a year of minutes, a hundred series, thousands of bars and huge labels still
// give a chart of bounded size, and NaN or infinite values draw nothing unprintable.
func TestBounded(t *testing.T) {
	long := make([]Point, 525600)
	for i := range long {
		long[i] = Point{T: t0.Add(time.Duration(i) * time.Minute), V: math.Sin(float64(i) / 1000)}
	}
	long[100].V = math.NaN()
	long[200].V = math.Inf(1)
	var many []Series
	for range 100 {
		many = append(many, Series{Name: strings.Repeat("x", 10000), Points: long})
	}
	for _, stacked := range []bool{false, true} {
		out := Time(TimeChart{Title: strings.Repeat("T", 100000), Series: many, Stacked: stacked})
		if len(out) > 400_000 {
			t.Errorf("stacked=%v: %d bytes", stacked, len(out))
		}
		if strings.Contains(string(out), "NaN") || strings.Contains(string(out), "Inf") {
			t.Errorf("stacked=%v: NaN or Inf in the output", stacked)
		}
		wellFormed(t, string(out))
	}
	var bars []Bar
	for range 5000 {
		bars = append(bars, Bar{Label: strings.Repeat("y", 5000), Value: 3})
	}
	if out := Bars(BarChart{Title: "t", Bars: bars}); len(out) > 40_000 {
		t.Errorf("bars: %d bytes", len(out))
	}
	if got := Downsample(long, MaxPoints); len(got) != MaxPoints || got[0] != long[0] || got[len(got)-1] != long[len(long)-1] {
		t.Errorf("Downsample: %d points, ends %v %v", len(got), got[0], got[len(got)-1])
	}
}

// TestHref: bar links keep relative and http(s) targets and drop the others.
func TestHref(t *testing.T) {
	for h, want := range map[string]string{
		"/devices?v=1": "/devices?v=1", "devices": "devices", "https://x.example/": "https://x.example/",
		"javascript:alert(1)": "", " JavaScript:alert(1)": "", "data:text/html,x": "", "": "",
	} {
		if got := safeHref(h); got != want {
			t.Errorf("safeHref(%q) = %q, want %q", h, got, want)
		}
	}
}

// FuzzLabels: whatever the labels hold (markup, quotes, invalid UTF-8, control characters),
// every chart is well-formed XML whose title reads as the label, cleaned and cut, and nothing
// of the label becomes markup.
func FuzzLabels(f *testing.F) {
	for _, s := range []string{
		"<script>alert(1)</script>", `"><img src=x onerror=alert(1)>`, "a&b", "\x00\x01\xff", "]]>", "<!--", "\u202e",
		"'single'", strings.Repeat("é", 100), "\r", "a\r\nb\tc",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		outs := []template.HTML{
			Time(TimeChart{Title: s, Desc: s, Unit: s, Series: []Series{{Name: s, Points: hours(1, 2), Color: s}}}),
			Time(TimeChart{Title: s, Stacked: true, Series: []Series{{Name: s, Points: hours(1, 2)}}}),
			Bars(BarChart{Title: s, Desc: s, Unit: s, Bars: []Bar{{Label: s, Value: 1, Href: s, Color: s}}}),
			Progress{Title: s, Parts: []Part{{Label: s, Value: 1, Color: s}}}.SVG(),
		}
		for _, out := range outs {
			title, _ := wellFormed(t, string(out))
			if title != clean(s) {
				t.Fatalf("title %q, want %q", title, clean(s))
			}
		}
		for _, tbl := range []template.HTML{
			TimeChart{Title: s, Series: []Series{{Name: s, Points: hours(1)}}}.Table(),
			BarChart{Title: s, Bars: []Bar{{Label: s, Value: 1}}}.Table(),
		} {
			wellFormed(t, string(tbl))
		}
	})
}
