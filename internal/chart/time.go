package chart

import (
	"fmt"
	"html/template"
	"math"
	"strings"
	"time"
)

// Downsample returns at most max points of ps, in order, keeping the first and the last. Each
// of the max-2 buckets between them gives the point that makes the largest triangle with the
// previously kept point and the next bucket's mean (Largest-Triangle-Three-Buckets, Steinarsson
// 2013: it keeps a line's peaks and dips). Written here because no maintained Go library of the
// kind is served; it is short.
func Downsample(ps []Point, max int) []Point {
	if max < 3 || len(ps) <= max {
		return ps
	}
	out := make([]Point, 0, max)
	out = append(out, ps[0])
	every := float64(len(ps)-2) / float64(max-2)
	a := 0
	for i := 0; i < max-2; i++ {
		// The next bucket's mean.
		ns, ne := int(float64(i+1)*every)+1, int(float64(i+2)*every)+1
		if ne > len(ps) {
			ne = len(ps)
		}
		var mx, my float64
		for _, p := range ps[ns:ne] {
			mx += float64(p.T.UnixNano())
			my += finite(p.V)
		}
		if n := float64(ne - ns); n > 0 {
			mx, my = mx/n, my/n
		}
		// This bucket's point with the largest triangle.
		s, e := int(float64(i)*every)+1, int(float64(i+1)*every)+1
		ax, ay := float64(ps[a].T.UnixNano()), finite(ps[a].V)
		best, pick := -1.0, s
		for j := s; j < e; j++ {
			area := math.Abs((ax-mx)*(finite(ps[j].V)-ay) - (ax-float64(ps[j].T.UnixNano()))*(my-ay))
			if area > best {
				best, pick = area, j
			}
		}
		out = append(out, ps[pick])
		a = pick
	}
	return append(out, ps[len(ps)-1])
}

// stride keeps at most max of n indices, evenly spread, the first and the last among them: the
// downsampling of stacked series, which must keep the same times in every band.
func stride(n, max int) []int {
	if n <= max {
		idx := make([]int, n)
		for i := range idx {
			idx[i] = i
		}
		return idx
	}
	idx := make([]int, max)
	for i := range idx {
		idx[i] = int(math.Round(float64(i) * float64(n-1) / float64(max-1)))
	}
	return idx
}

// prepared is a time chart's series after capping and downsampling, stacked if asked.
type prepared struct {
	series   []Series
	base     [][]float64 // per series, per point: the band's bottom (stacked), else 0
	left     int         // series left out
	t0, t1   time.Time
	max      float64
	hasPoint bool
}

func prepare(c TimeChart) prepared {
	var p prepared
	ss := c.Series
	if len(ss) > MaxSeries {
		p.left = len(ss) - MaxSeries
		ss = ss[:MaxSeries]
	}
	if c.Stacked && len(ss) > 0 {
		n := len(ss[0].Points)
		for _, s := range ss[1:] {
			n = min(n, len(s.Points))
		}
		idx := stride(n, MaxPoints)
		sum := make([]float64, len(idx))
		for _, s := range ss {
			pts := make([]Point, len(idx))
			base := make([]float64, len(idx))
			for k, i := range idx {
				v := math.Max(0, finite(s.Points[i].V))
				base[k] = sum[k]
				sum[k] += v
				pts[k] = Point{T: ss[0].Points[i].T, V: sum[k]}
			}
			p.series = append(p.series, Series{Name: s.Name, Color: s.Color, Points: pts})
			p.base = append(p.base, base)
		}
	} else {
		for _, s := range ss {
			pts := Downsample(s.Points, MaxPoints)
			p.series = append(p.series, Series{Name: s.Name, Color: s.Color, Points: pts})
			p.base = append(p.base, make([]float64, len(pts)))
		}
	}
	for _, s := range p.series {
		for _, pt := range s.Points {
			if !p.hasPoint || pt.T.Before(p.t0) {
				p.t0 = pt.T
			}
			if !p.hasPoint || pt.T.After(p.t1) {
				p.t1 = pt.T
			}
			p.max = math.Max(p.max, finite(pt.V))
			p.hasPoint = true
		}
	}
	return p
}

// timeFormat picks how the time axis reads for a span.
func timeFormat(span time.Duration) string {
	switch {
	case span <= 36*time.Hour:
		return "15:04"
	case span <= 300*24*time.Hour:
		return "Jan 2"
	default:
		return "Jan 2006"
	}
}

// Time renders c as an SVG: axes with ticks, a line (and an area) per series, a legend.
func Time(c TimeChart) template.HTML {
	W, H := c.Width, c.Height
	if W <= 0 || H <= 0 {
		W, H = 640, 240
	}
	p := prepare(c)
	const left, right, legend = 48, 12, 40
	top := 12
	if c.Unit != "" {
		top = 26 // room for the unit above the axis
	}
	bottom := 22
	pw, ph := float64(W-left-right), float64(H-top-bottom-legend)
	desc := c.Desc
	if p.left > 0 {
		desc += fmt.Sprintf(" (%d more series not drawn)", p.left)
	}
	var b w
	id := chartID(c.ID, c.Title, c.Desc)
	b.open("chart-time", id, c.Title, desc, W, H)
	if !p.hasPoint {
		b.f(`<text class="chart-empty" x="%d" y="%d" text-anchor="middle" fill="#444">No data</text></svg>`, W/2, H/2)
		return template.HTML(b.String())
	}
	step := niceStep(p.max, 4)
	ymax := math.Max(step, math.Ceil(p.max/step)*step)
	span := p.t1.Sub(p.t0)
	x := func(t time.Time) float64 {
		if span <= 0 {
			return float64(left) + pw/2
		}
		return float64(left) + pw*float64(t.Sub(p.t0))/float64(span)
	}
	y := func(v float64) float64 { return float64(top) + ph - ph*finite(v)/ymax }
	// Grid and y ticks.
	b.WriteString(`<g class="chart-axis" fill="#333" stroke-width="1">`)
	for v := 0.0; v <= ymax+step/2; v += step {
		b.f(`<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`, left, W-right, y(v), y(v))
		b.f(`<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`, left-4, y(v), esc(num(v)))
	}
	if c.Unit != "" {
		b.f(`<text x="4" y="%d">`, top-14)
		b.text(c.Unit)
		b.WriteString(`</text>`)
	}
	// x ticks: the ends and three between.
	f := timeFormat(span)
	ticks := 4
	if span <= 0 {
		ticks = 0
	}
	for i := 0; i <= ticks; i++ {
		t := p.t0.Add(time.Duration(float64(span) * float64(i) / float64(max(ticks, 1))))
		anchor := "middle"
		if i == 0 {
			anchor = "start"
		} else if i == ticks {
			anchor = "end"
		}
		b.f(`<text x="%.1f" y="%.1f" text-anchor="%s">%s</text>`, x(t), float64(top)+ph+15, anchor, esc(t.UTC().Format(f)))
	}
	b.f(`<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#333"/></g>`, left, W-right, y(0), y(0))
	// Series, the last stacked band first so that lines stay on top.
	for i := len(p.series) - 1; i >= 0; i-- {
		s := p.series[i]
		col := color(s.Color, i)
		var line strings.Builder
		for k, pt := range s.Points {
			cmd := "L"
			if k == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&line, "%s%.1f %.1f", cmd, x(pt.T), y(pt.V))
		}
		b.f(`<g class="chart-series chart-s%d">`, i)
		if c.Area || c.Stacked {
			var area strings.Builder
			area.WriteString(line.String())
			for k := len(s.Points) - 1; k >= 0; k-- {
				fmt.Fprintf(&area, "L%.1f %.1f", x(s.Points[k].T), y(p.base[i][k]))
			}
			area.WriteString("Z")
			b.f(`<path d="%s" fill="%s" fill-opacity="0.35" stroke="none"/>`, area.String(), col)
		}
		if len(s.Points) == 1 {
			b.f(`<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`, x(s.Points[0].T), y(s.Points[0].V), col)
		}
		b.f(`<path d="%s" fill="none" stroke="%s" stroke-width="2"/></g>`, line.String(), col)
	}
	// Legend.
	lx, ly := float64(left), float64(H-legend+14)
	for i, s := range p.series {
		name := clean(s.Name)
		wd := 24 + 7*float64(len([]rune(name)))
		if lx+wd > float64(W) && lx > float64(left) {
			lx, ly = float64(left), ly+16
		}
		b.f(`<g class="chart-legend"><rect x="%.1f" y="%.1f" width="10" height="10" fill="%s"/><text x="%.1f" y="%.1f" fill="#222">`, lx, ly-9, color(s.Color, i), lx+14, ly)
		b.text(s.Name)
		b.WriteString(`</text></g>`)
		lx += wd
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}
