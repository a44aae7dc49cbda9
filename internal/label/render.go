package label

import (
	"bytes"
	"errors"
	"fmt"
	"html"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/gobold"
	"golang.org/x/image/font/gofont/goregular"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/math/fixed"
	"rsc.io/qr"
)

// Label geometry, in SVG user units; the PNG is drawn at pngScale pixels per unit.
const (
	labelW, labelH = 400, 220
	margin         = 14
	qrSide         = 130 // the QR code's square, quiet zone included
	qrLeft, qrTop  = labelW - 8 - qrSide, 40
	textMaxW       = qrLeft - margin - 8
	pngScale       = 2
	quietModules   = 4
)

// Label colours, as 0xRRGGBB.
const (
	ink   = 0x142233
	grey  = 0x555f6b
	alert = 0xb01c1c
	paper = 0xffffff
)

// rect and text are the primitives of a label, shared by the SVG and the PNG renderer.
type rect struct {
	x, y, w, h float64
	fill       uint32
}

type text struct {
	x, y   float64 // baseline start, or centre when centred
	size   float64
	bold   bool
	centre bool
	fill   uint32
	s      string
}

type layout struct {
	rects []rect
	texts []text
	qr    *qr.Code // nil when the URL does not fit in a QR code
}

// fonts measures text in the Go fonts the PNG is drawn with.
type fonts struct{ regular, bold *opentype.Font }

func loadFonts() (fonts, error) {
	r, err := opentype.Parse(goregular.TTF)
	if err != nil {
		return fonts{}, fmt.Errorf("parse Go regular font: %w", err)
	}
	b, err := opentype.Parse(gobold.TTF)
	if err != nil {
		return fonts{}, fmt.Errorf("parse Go bold font: %w", err)
	}
	return fonts{regular: r, bold: b}, nil
}

func (f fonts) face(size float64, bold bool) (font.Face, error) {
	ft := f.regular
	if bold {
		ft = f.bold
	}
	if ft == nil {
		return nil, errors.New("no font loaded")
	}
	return opentype.NewFace(ft, &opentype.FaceOptions{Size: size, DPI: 72, Hinting: font.HintingFull})
}

// width returns the advance of s at size, in units.
func (f fonts) width(s string, size float64, bold bool) float64 {
	face, err := f.face(size, bold)
	if err != nil {
		return float64(len(s)) * size * 0.6
	}
	defer face.Close()
	return float64(font.MeasureString(face, s)) / 64
}

// truncate returns s, cut and ended with an ellipsis if it is wider than maxW.
func (f fonts) truncate(s string, size float64, bold bool, maxW float64) string {
	for r := []rune(s); f.width(s, size, bold) > maxW && len(r) > 1; {
		r = r[:len(r)-1]
		s = strings.TrimSpace(string(r)) + "…"
	}
	return s
}

// build lays the primary-layer label out.
func build(d Declaration, detailURL string, f fonts) layout {
	var l layout
	l.rects = append(l.rects, rect{0, 0, labelW, labelH, ink}, rect{2, 2, labelW - 4, labelH - 4, paper}, rect{0, 0, labelW, 34, ink})
	l.texts = append(l.texts, text{x: margin, y: 23, size: 15, bold: true, fill: paper, s: "SECURITY UPDATES"})
	y := 54.0
	l.texts = append(l.texts, text{x: margin, y: y, size: 15, bold: true, fill: ink, s: f.truncate(d.Product.Name, 15, true, textMaxW)})
	if m := d.Product.ModelDesignation; m != "" && !strings.EqualFold(m, d.Product.Name) {
		y += 14
		l.texts = append(l.texts, text{x: margin, y: y, size: 11, fill: grey, s: f.truncate("Model "+d.Product.ModelDesignation, 11, false, textMaxW)})
	} else {
		y += 4
	}
	// row adds a grey caption and below it the value, one line per element of lines.
	row := func(caption string, colour uint32, size float64, lines ...string) {
		y += 20
		l.texts = append(l.texts, text{x: margin, y: y, size: 11, fill: grey, s: f.truncate(caption, 11, false, textMaxW)})
		for _, line := range lines {
			y += size + 3
			l.texts = append(l.texts, text{x: margin, y: y, size: size, bold: true, fill: colour, s: f.truncate(line, size, true, textMaxW)})
		}
	}
	end := parseDate(d.Support.EndDate)
	if d.Status == StatusEndOfSupport {
		// Once support has ended, how updates used to arrive no longer matters to a buyer.
		row("Security updates", alert, 14, "No longer receives", "security updates")
		if !end.IsZero() {
			row("Support ended on", ink, 15, words(end))
		}
	} else if !receivesUpdates(d) {
		// Nothing is guaranteed to a product that receives no updates.
		row("Security updates", alert, 17, "None")
	} else {
		row("Security updates", ink, 17, deliveryWords(d))
		row("Guaranteed until", ink, 17, words(end))
	}
	last := "None yet"
	if t := parseDate(d.Evidence.LastSecurityUpdate.Date); !t.IsZero() {
		last = words(t)
	}
	row("Last security update", ink, 15, last)

	if c, err := qr.Encode(detailURL, qr.M); err == nil {
		l.qr = c
		l.texts = append(l.texts, text{x: qrLeft + qrSide/2, y: qrTop + qrSide + 8, size: 10, centre: true, fill: grey, s: "Scan for details"})
	} else {
		l.texts = append(l.texts, text{x: qrLeft + qrSide/2, y: qrTop + qrSide/2, size: 10, centre: true, fill: grey, s: "Details online"})
	}
	return l
}

// deliveryWords says in plain words how security updates arrive.
func deliveryWords(d Declaration) string {
	switch {
	case d.UpdateCapable != "yes" || len(d.Mechanisms) == 0:
		return "None"
	case d.Status == StatusEndOfSupport:
		return "Ended"
	case d.Mechanisms[0].Defaults.AutoInstall:
		return "Automatic"
	}
	return "With your consent"
}

// RenderSVG returns the primary layer of the label as a 400×220 SVG: how security updates are
// delivered, the date they are guaranteed until (or that they have ended), the last security
// update, the product name and a QR code linking to detailURL. All text is escaped. A URL too
// long for a QR code gets a "Details online" note instead.
func RenderSVG(d Declaration, detailURL string) []byte {
	f, err := loadFonts()
	if err != nil { // the fonts are compiled in; measuring falls back to an estimate
		f = fonts{}
	}
	l := build(d, detailURL, f)
	var b bytes.Buffer
	summary := fmt.Sprintf("Security updates: %s. %s.", deliveryWords(d), labelEnd(d))
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="%s">`+"\n",
		labelW, labelH, labelW, labelH, html.EscapeString(summary))
	fmt.Fprintf(&b, "<title>%s</title>\n", html.EscapeString(d.Product.Name+": "+summary))
	for _, r := range l.rects {
		fmt.Fprintf(&b, `<rect x="%g" y="%g" width="%g" height="%g" fill="%s"/>`+"\n", r.x, r.y, r.w, r.h, hex(r.fill))
	}
	for _, t := range l.texts {
		anchor, weight := "start", "normal"
		if t.centre {
			anchor = "middle"
		}
		if t.bold {
			weight = "bold"
		}
		fmt.Fprintf(&b, `<text x="%g" y="%g" font-family="Go, Arial, Helvetica, sans-serif" font-size="%g" font-weight="%s" text-anchor="%s" fill="%s">%s</text>`+"\n",
			t.x, t.y, t.size, weight, anchor, hex(t.fill), html.EscapeString(t.s))
	}
	if l.qr != nil {
		mod := float64(qrSide) / float64(l.qr.Size+2*quietModules)
		fmt.Fprintf(&b, `<g fill="%s" shape-rendering="crispEdges">`+"\n", hex(ink))
		for y := range l.qr.Size {
			for x := 0; x < l.qr.Size; x++ {
				if !l.qr.Black(x, y) {
					continue
				}
				run := 1
				for x+run < l.qr.Size && l.qr.Black(x+run, y) {
					run++
				}
				fmt.Fprintf(&b, `<rect x="%.3f" y="%.3f" width="%.3f" height="%.3f"/>`, qrLeft+mod*float64(x+quietModules), qrTop+mod*float64(y+quietModules), mod*float64(run), mod)
				x += run - 1
			}
			b.WriteByte('\n')
		}
		b.WriteString("</g>\n")
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// RenderPNG returns the same label as RenderSVG, rasterised at 800×440 pixels with the Go fonts.
// The QR code is drawn with whole pixels per module so that it scans. It fails if detailURL is
// too long for a QR code.
func RenderPNG(d Declaration, detailURL string) ([]byte, error) {
	f, err := loadFonts()
	if err != nil {
		return nil, fmt.Errorf("render label: %w", err)
	}
	l := build(d, detailURL, f)
	if l.qr == nil {
		return nil, fmt.Errorf("render label: %d-byte URL does not fit in a QR code", len(detailURL))
	}
	img := image.NewRGBA(image.Rect(0, 0, labelW*pngScale, labelH*pngScale))
	sc := func(v float64) int { return int(v * pngScale) }
	for _, r := range l.rects {
		draw.Draw(img, image.Rect(sc(r.x), sc(r.y), sc(r.x+r.w), sc(r.y+r.h)), image.NewUniform(rgba(r.fill)), image.Point{}, draw.Src)
	}
	for _, t := range l.texts {
		face, err := f.face(t.size*pngScale, t.bold)
		if err != nil {
			return nil, fmt.Errorf("render label: %w", err)
		}
		dr := font.Drawer{Dst: img, Src: image.NewUniform(rgba(t.fill)), Face: face}
		x := fixed.I(sc(t.x))
		if t.centre {
			x -= dr.MeasureString(t.s) / 2
		}
		dr.Dot = fixed.Point26_6{X: x, Y: fixed.I(sc(t.y))}
		dr.DrawString(t.s)
		face.Close()
	}
	n := l.qr.Size + 2*quietModules
	mod := qrSide * pngScale / n
	off := (qrSide*pngScale - mod*n) / 2
	x0, y0 := sc(qrLeft)+off+quietModules*mod, sc(qrTop)+off+quietModules*mod
	black := image.NewUniform(rgba(ink))
	for y := range l.qr.Size {
		for x := range l.qr.Size {
			if l.qr.Black(x, y) {
				draw.Draw(img, image.Rect(x0+x*mod, y0+y*mod, x0+(x+1)*mod, y0+(y+1)*mod), black, image.Point{}, draw.Src)
			}
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		return nil, fmt.Errorf("encode label: %w", err)
	}
	return b.Bytes(), nil
}

// labelEnd says in words until when security updates are guaranteed.
func labelEnd(d Declaration) string {
	end := parseDate(d.Support.EndDate)
	switch {
	case d.Status == StatusEndOfSupport || end.IsZero():
		return "No longer receives security updates"
	case !receivesUpdates(d):
		return "Receives no security updates"
	}
	return "Guaranteed until " + words(end)
}

// receivesUpdates says whether the product receives updates at all (delivery is not none).
func receivesUpdates(d Declaration) bool { return d.UpdateCapable == "yes" && len(d.Mechanisms) > 0 }

func hex(c uint32) string { return fmt.Sprintf("#%06x", c) }

func rgba(c uint32) color.RGBA { return color.RGBA{uint8(c >> 16), uint8(c >> 8), uint8(c), 0xff} }
