package chart

import (
	"fmt"
	"html/template"
	"math"
	"strings"
)

// Bars renders c as labelled horizontal bars, the value written after each.
func Bars(c BarChart) template.HTML {
	W := c.Width
	if W <= 0 {
		W = 640
	}
	bars := c.Bars
	desc := c.Desc
	if len(bars) > MaxBars {
		desc += fmt.Sprintf(" (%d more bars not drawn)", len(bars)-MaxBars)
		bars = bars[:MaxBars]
	}
	const row, labelW, valueW = 22, 180, 70
	H := max(row*len(bars)+8, 30)
	var vmax float64
	for _, br := range bars {
		vmax = math.Max(vmax, finite(br.Value))
	}
	var b w
	id := chartID(c.ID, c.Title, c.Desc)
	b.open("chart-bars", id, c.Title, desc, W, H)
	if len(bars) == 0 {
		b.f(`<text class="chart-empty" x="%d" y="20" text-anchor="middle" fill="#444">No data</text></svg>`, W/2)
		return template.HTML(b.String())
	}
	pw := float64(W - labelW - valueW)
	for i, br := range bars {
		y := 4 + i*row
		v := math.Max(0, finite(br.Value))
		bw := 0.0
		if vmax > 0 {
			bw = pw * v / vmax
		}
		href := safeHref(br.Href)
		if href != "" {
			b.f(`<a href="%s">`, esc(href))
		}
		b.f(`<g class="chart-bar"><text x="%d" y="%d" text-anchor="end" dominant-baseline="middle" fill="#222">`, labelW-6, y+row/2-1)
		b.text(br.Label)
		b.f(`</text><rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`, labelW, y+2, bw, row-6, color(br.Color, 0))
		b.f(`<text x="%.1f" y="%d" dominant-baseline="middle" fill="#222">%s`, float64(labelW)+bw+4, y+row/2-1, esc(num(br.Value)))
		if c.Unit != "" {
			b.WriteString(" ")
			b.text(c.Unit)
		}
		b.WriteString(`</text></g>`)
		if href != "" {
			b.WriteString(`</a>`)
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// SVG renders p as one bar split in its parts, the counts in words below it.
func (p Progress) SVG() template.HTML {
	W := p.Width
	if W <= 0 {
		W = 320
	}
	parts := p.Parts
	if len(parts) > MaxSeries {
		parts = parts[:MaxSeries]
	}
	var sum float64
	for _, pt := range parts {
		sum += math.Max(0, finite(pt.Value))
	}
	total := math.Max(finite(p.Total), sum)
	var words []string
	for _, pt := range parts {
		words = append(words, clean(pt.Label)+" "+num(pt.Value))
	}
	desc := strings.Join(words, ", ")
	if total > 0 {
		desc += fmt.Sprintf(" of %s", num(total))
	}
	const barH = 14
	H := barH + 22
	var b w
	id := chartID(p.ID, p.Title, desc)
	b.open("chart-progress", id, p.Title, desc, W, H)
	b.f(`<rect class="chart-track" x="0" y="2" width="%d" height="%d" fill="#e6e6e6"/>`, W, barH)
	x := 0.0
	for i, pt := range parts {
		v := math.Max(0, finite(pt.Value))
		if total <= 0 || v == 0 {
			continue
		}
		wd := float64(W) * v / total
		b.f(`<rect class="chart-part chart-s%d" x="%.1f" y="2" width="%.1f" height="%d" fill="%s"/>`, i, x, wd, barH, color(pt.Color, i))
		x += wd
	}
	b.f(`<text x="0" y="%d" fill="#222">`, barH+16)
	pct := 0.0
	if total > 0 {
		pct = 100 * sum / total
	}
	b.text(fmt.Sprintf("%s%% — %s", num(math.Round(pct)), desc))
	b.WriteString(`</text></svg>`)
	return template.HTML(b.String())
}
