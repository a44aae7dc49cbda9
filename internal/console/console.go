// Package console renders the operator console: server-rendered HTML pages from embedded
// html/template templates, the console's stylesheet and the vendored htmx files (static/vendor,
// with their licences and versions). It is pure rendering: the view models in view.go carry
// everything a page shows, gathered by internal/httpapi through its ports, and nothing here
// reads a store or checks a permission.
//
// Pages run under a strict Content-Security-Policy (CSP): no inline script, no inline style and
// no style attribute anywhere; everything a browser runs comes from the static files, and every
// value from a device or an operator is escaped by html/template.
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Asset is one static file of the console.
type Asset struct {
	Name string // as in its URL: static/NAME
	Type string // Content-Type
	Body []byte
	Hash string // hex of the first 8 bytes of its SHA-256: its ETag, and ?v= in its URL
}

// assetFiles maps the served names to the embedded files.
var assetFiles = map[string]string{
	"console.css": "static/console.css",
	"htmx.min.js": "static/vendor/htmx/htmx.min.js",
	"sse.min.js":  "static/vendor/htmx-ext-sse/sse.min.js",
}

// Console holds the parsed templates and the static files. It is safe for concurrent use.
type Console struct {
	pages  map[string]*template.Template
	assets map[string]*Asset
}

// layoutFiles are parsed with every page.
var layoutFiles = []string{"templates/layout.html", "templates/parts.html"}

// New parses the embedded templates and hashes the static files.
func New() (*Console, error) {
	c := &Console{pages: map[string]*template.Template{}, assets: map[string]*Asset{}}
	for name, file := range assetFiles {
		b, err := staticFS.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("console asset %s: %w", name, err)
		}
		sum := sha256.Sum256(b)
		ctype := "text/css; charset=utf-8"
		if strings.HasSuffix(name, ".js") {
			ctype = "text/javascript; charset=utf-8"
		}
		c.assets[name] = &Asset{Name: name, Type: ctype, Body: b, Hash: hex.EncodeToString(sum[:8])}
	}
	files, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	funcs := c.funcs()
	for _, f := range files {
		if isLayout(f) {
			continue
		}
		name := strings.TrimSuffix(path.Base(f), ".html")
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, append(append([]string{}, layoutFiles...), f)...)
		if err != nil {
			return nil, fmt.Errorf("console template %s: %w", name, err)
		}
		c.pages[name] = t
	}
	return c, nil
}

func isLayout(f string) bool {
	for _, l := range layoutFiles {
		if f == l {
			return true
		}
	}
	return false
}

// Asset returns the static file of a name, as linked by the pages (static/NAME).
func (c *Console) Asset(name string) (*Asset, bool) {
	a, ok := c.assets[name]
	return a, ok
}

// Render writes the page (a template of templates/, without .html) in the layout. The page is
// rendered in full before anything is written, so that a template error leaves w untouched.
func (c *Console) Render(w io.Writer, page string, v *View) error {
	return c.execute(w, page, "layout", v)
}

// Fragment writes one named template of a page alone (an htmx swap, a server-sent event).
func (c *Console) Fragment(w io.Writer, page, name string, v *View) error {
	return c.execute(w, page, name, v)
}

func (c *Console) execute(w io.Writer, page, name string, v *View) error {
	t, ok := c.pages[page]
	if !ok {
		return fmt.Errorf("console: no page %q", page)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, name, v); err != nil {
		return fmt.Errorf("console: render %s/%s: %w", page, name, err)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

func (c *Console) funcs() template.FuncMap {
	return template.FuncMap{
		// asset is a static file's URL below the base: static/NAME?v=HASH.
		"asset": func(name string) (string, error) {
			a, ok := c.assets[name]
			if !ok {
				return "", fmt.Errorf("no asset %q", name)
			}
			return "static/" + a.Name + "?v=" + a.Hash, nil
		},
		"when": When,
		"ago":  Ago,
		"pct":  Percent,
		"size": Size,
		"add":  func(a, b int) int { return a + b },
		// view is the view v showing data instead: a page's fragment rendered inside it.
		"view": func(v *View, data any) *View { w := *v; w.Data = data; return &w },
		// dict hands a shared template the base path and its items.
		"dict": func(base string, items any) Part { return Part{Base: base, Items: items} },
		"join": strings.Join,
		"lines": func(s string) []string {
			return strings.Split(s, "\n")
		},
	}
}

// Part is what a shared template of parts.html gets: the base path and its items.
type Part struct {
	Base  string
	Items any
}

// When formats an instant for a page, in UTC; the zero time is "never".
func When(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

// Ago says how long before now t was, roughly; the zero time is "never".
func Ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	future := d < 0
	if future {
		d = -d
	}
	var s string
	switch {
	case d < time.Minute:
		s = strconv.Itoa(int(d.Seconds())) + " s"
	case d < time.Hour:
		s = strconv.Itoa(int(d.Minutes())) + " min"
	case d < 48*time.Hour:
		s = strconv.Itoa(int(d.Hours())) + " h"
	default:
		s = strconv.Itoa(int(d.Hours()/24)) + " days"
	}
	if future {
		return "in " + s
	}
	return s + " ago"
}

// Percent formats a share of a whole as a whole percentage; 0 of 0 is 0%.
func Percent(part, whole int) string {
	if whole <= 0 {
		return "0%"
	}
	return strconv.Itoa(part*100/whole) + "%"
}

// Size formats a byte count.
func Size(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return strconv.FormatFloat(float64(n)/float64(div), 'f', 1, 64) + " " + string("KMGTPE"[exp]) + "iB"
}
