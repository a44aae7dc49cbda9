package chart

import (
	"html/template"
	"slices"
	"strings"
	"time"
)

// Table renders a time chart's data as an HTML table with a caption: the fallback for readers
// who cannot see the chart, and the numbers behind it for those who can (the console puts it
// in a <details> beside the chart). One row per time, one column per series, downsampled as
// the chart is.
func (c TimeChart) Table() template.HTML {
	p := prepare(TimeChart{Series: c.Series}) // unstacked: the table shows each series' own values
	var b w
	b.WriteString(`<table class="chart-table"><caption>`)
	b.text(c.Title)
	b.WriteString(`</caption><thead><tr><th scope="col">Time (UTC)</th>`)
	for _, s := range p.series {
		b.WriteString(`<th scope="col">`)
		b.text(s.Name)
		b.WriteString(`</th>`)
	}
	b.WriteString(`</tr></thead><tbody>`)
	// Rows by time, across series.
	var times []time.Time
	seen := map[int64]bool{}
	for _, s := range p.series {
		for _, pt := range s.Points {
			if k := pt.T.UnixNano(); !seen[k] {
				seen[k] = true
				times = append(times, pt.T)
			}
		}
	}
	slices.SortFunc(times, time.Time.Compare)
	vals := make([]map[int64]float64, len(p.series))
	for i, s := range p.series {
		vals[i] = map[int64]float64{}
		for _, pt := range s.Points {
			vals[i][pt.T.UnixNano()] = pt.V
		}
	}
	for _, t := range times {
		b.WriteString(`<tr><th scope="row">`)
		b.text(t.UTC().Format("2006-01-02 15:04"))
		b.WriteString(`</th>`)
		for i := range p.series {
			b.WriteString(`<td>`)
			if v, ok := vals[i][t.UnixNano()]; ok {
				b.text(num(v))
			}
			b.WriteString(`</td>`)
		}
		b.WriteString(`</tr>`)
	}
	b.WriteString(`</tbody></table>`)
	return template.HTML(b.String())
}

// Table renders the bars as an HTML table with a caption.
func (c BarChart) Table() template.HTML {
	var b w
	b.WriteString(`<table class="chart-table"><caption>`)
	b.text(c.Title)
	b.WriteString(`</caption><tbody>`)
	bars := c.Bars
	if len(bars) > MaxBars {
		bars = bars[:MaxBars]
	}
	for _, br := range bars {
		b.WriteString(`<tr><th scope="row">`)
		b.text(br.Label)
		b.WriteString(`</th><td>`)
		b.text(strings.TrimSpace(num(br.Value) + " " + c.Unit))
		b.WriteString(`</td></tr>`)
	}
	b.WriteString(`</tbody></table>`)
	return template.HTML(b.String())
}
