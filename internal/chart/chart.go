// Package chart renders charts as SVG on the server, for the web console: lines and areas over
// time (stacked, for a campaign's members by state), horizontal bars, and a progress bar. The
// output needs no JavaScript and no stylesheet (colours are SVG presentation attributes, never a
// style attribute, so a page under `style-src 'self'` shows it as it is; classes are hooks for
// the console's CSS), prints as it shows, is an image with a name (`role="img"`, `<title>`,
// `<desc>`) and has a data-table fallback (Table). Every label is escaped and stripped of what
// XML cannot hold; the size is bounded whatever the input (long series are downsampled, labels
// cut, bars and series capped).
//
// Pure: no I/O. Safe for concurrent use.
package chart

import (
	"fmt"
	"hash/fnv"
	"html/template"
	"math"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits on what a chart draws, which bound its size.
const (
	MaxPoints = 240 // per series; longer ones are downsampled
	MaxSeries = 12  // further series are left out (named in the description)
	MaxBars   = 40  // further bars are left out (named in the description)
	MaxLabel  = 80  // runes of a label; longer ones are cut with an ellipsis
)

// Palette is the fill of series and bars by index: Okabe–Ito, distinguishable with the common
// colour-vision deficiencies, each dark enough for text beside it on white.
var Palette = []string{"#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#999933", "#882255"}

// Point is one value at one time.
type Point struct {
	T time.Time
	V float64
}

// Series is a named line (or, stacked, a band).
type Series struct {
	Name   string
	Points []Point // in time order
	// Color overrides the palette (a CSS colour such as "#b00020"); anything else than
	// #rgb/#rrggbb is ignored.
	Color string
}

// TimeChart is values over time: lines, or areas, stacked or not.
type TimeChart struct {
	Title, Desc string
	Series      []Series
	Area        bool // fill under each line
	Stacked     bool // each series on top of the previous ones (the points must share times)
	Unit        string
	// ID prefixes the ids of the title and description, unique within a page; derived from
	// the content when empty.
	ID            string
	Width, Height int // of the view box; 640×240 when zero
}

// Bar is one horizontal bar.
type Bar struct {
	Label string
	Value float64
	Color string // as Series.Color
	Href  string // optional link (relative or http(s) only; others are dropped)
}

// BarChart is labelled horizontal bars.
type BarChart struct {
	Title, Desc string
	Bars        []Bar
	Unit        string
	ID          string
	Width       int // of the view box; 640 when zero
}

// Part is one segment of a progress bar.
type Part struct {
	Label string
	Value float64
	Color string
}

// Progress is a bar split in parts of a whole (a wave's members: succeeded, failed, pending).
type Progress struct {
	Title string
	Parts []Part
	// Total is the whole; the sum of the parts when zero (or smaller).
	Total float64
	ID    string
	Width int // of the view box; 320 when zero
}

// w is an SVG being written; every text goes through text or attr.
type w struct{ strings.Builder }

func (b *w) f(format string, args ...any) { fmt.Fprintf(&b.Builder, format, args...) }

// clean makes s safe and bounded for XML: invalid UTF-8 and characters XML 1.0 cannot hold
// become U+FFFD, line breaks and tabs become spaces (a label is one line, and an XML parser
// would read a carriage return as a line feed), then it is cut at MaxLabel runes.
func clean(s string) string {
	var out strings.Builder
	n := 0
	for i, r := range s {
		if n == MaxLabel {
			out.WriteString("…")
			break
		}
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				r = '\uFFFD'
			}
		}
		switch {
		case r == '\t' || r == '\n' || r == '\r':
			r = ' '
		case !xmlChar(r):
			r = '\uFFFD'
		}
		out.WriteRune(r)
		n++
	}
	return out.String()
}

// xmlChar is XML 1.0's Char production (section 2.2).
func xmlChar(r rune) bool {
	return r == 0x9 || r == 0xA || r == 0xD ||
		(r >= 0x20 && r <= 0xD7FF) || (r >= 0xE000 && r <= 0xFFFD) || (r >= 0x10000 && r <= 0x10FFFF)
}

// esc escapes s for XML text and attribute values.
func esc(s string) string {
	return template.HTMLEscapeString(clean(s))
}

func (b *w) text(s string) { b.WriteString(esc(s)) }

// color returns c if it is a hex colour, else the palette's i-th.
func color(c string, i int) string {
	if len(c) == 4 || len(c) == 7 {
		if c[0] == '#' && strings.Trim(c[1:], "0123456789abcdefABCDEF") == "" {
			return c
		}
	}
	return Palette[i%len(Palette)]
}

// safeHref keeps relative links and http(s) ones; anything else (javascript:, data:) is dropped.
func safeHref(h string) string {
	l := strings.ToLower(strings.TrimSpace(h))
	if strings.HasPrefix(l, "//") || strings.HasPrefix(l, "/\\") { // another host, relative to the scheme
		return ""
	}
	if strings.HasPrefix(l, "http://") || strings.HasPrefix(l, "https://") || strings.HasPrefix(l, "/") ||
		strings.HasPrefix(l, "?") || strings.HasPrefix(l, "#") || (!strings.Contains(l, ":") && l != "") {
		return h
	}
	return ""
}

func chartID(id string, parts ...string) string {
	if id != "" {
		var b strings.Builder
		for _, r := range id {
			if r < 128 && (r == '-' || r == '_' || ('0' <= r && r <= '9') || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z')) {
				b.WriteRune(r)
			}
		}
		if b.Len() > 0 {
			return "c-" + b.String()
		}
	}
	h := fnv.New32a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return fmt.Sprintf("c%08x", h.Sum32())
}

// open writes the svg element with its name and description.
func (b *w) open(class, id, title, desc string, width, height int) {
	b.f(`<svg xmlns="http://www.w3.org/2000/svg" class="chart %s" role="img" viewBox="0 0 %d %d" width="100%%" preserveAspectRatio="xMinYMin meet" aria-labelledby="%s-t %s-d" font-family="sans-serif" font-size="12">`,
		class, width, height, id, id)
	b.f(`<title id="%s-t">`, id)
	b.text(title)
	b.f(`</title><desc id="%s-d">`, id)
	b.text(desc)
	b.WriteString(`</desc>`)
}

// num formats a value for a label: integers plainly, others with up to two decimals.
func num(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return fmt.Sprintf("%.0f", v)
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".")
}

// finite replaces NaN and infinities by zero, so that no coordinate is unprintable.
func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// niceStep is a step of 1, 2 or 5 times a power of ten giving about n ticks up to max.
func niceStep(max float64, n int) float64 {
	if max <= 0 {
		return 1
	}
	raw := max / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}
