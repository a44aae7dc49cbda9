package httpapi

import (
	"bytes"
	"context"
	"html/template"
	"io"
	"net/http"
	"strings"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/transparency"
)

// Publisher builds what the public routes serve; *transparency.Service implements it.
type Publisher interface {
	// Publication returns apperr.Invalid for a bad product name and apperr.NotFound for a
	// product without a support policy.
	Publication(ctx context.Context, product string) (*transparency.Publication, error)
}

// PublicMaxAge is how long browsers and caches may keep a public file before revalidating it
// with its ETag.
const PublicMaxAge = "public, max-age=300"

// publicFile is one file of a product's public pages.
type publicFile struct {
	ctype string
	body  func(*transparency.Publication) []byte
	csp   string
}

// pageCSP lets the page show its inline style and the label (a data: image), and nothing else.
const pageCSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

var publicFiles = map[string]publicFile{
	"":                 {"text/html; charset=utf-8", func(p *transparency.Publication) []byte { return p.Page }, pageCSP},
	"conformance.html": {"text/html; charset=utf-8", func(p *transparency.Publication) []byte { return p.ReportHTML }, pageCSP},
	"label.svg":        {"image/svg+xml", func(p *transparency.Publication) []byte { return p.LabelSVG }, "default-src 'none'; style-src 'unsafe-inline'"},
	"label.png":        {"image/png", func(p *transparency.Publication) []byte { return p.LabelPNG }, ""},
	"declaration.json": {"application/json", func(p *transparency.Publication) []byte { return p.Envelope }, ""},
	"declaration.pub":  {"application/x-pem-file", func(p *transparency.Publication) []byte { return p.PublicKeyPEM }, ""},
	"conformance.json": {"application/json", func(p *transparency.Publication) []byte { return p.ReportJSON }, ""},
}

// publicRoutes registers the public transparency pages: no login, stable URLs, cacheable.
//
//	GET /p/{product}                   the detailed layer (HTML)
//	GET /p/{product}/label.svg|png     the consumer label; its QR code links to /p/{product}
//	GET /p/{product}/declaration.json  the signed declaration (DSSE envelope)
//	GET /p/{product}/declaration.pub   the PEM public key that verifies it
//	GET /p/{product}/conformance.json  the conformance report
//	GET /p/{product}/conformance.html  the conformance report alone, HTML
//	GET /p/                            an index of the products' public pages
//	GET /p/{product}/openvex.json      the product's VEX statements, OpenVEX v0.2.0
//	GET /.well-known/csaf/...          the CSAF 2.0 provider: provider-metadata.json, the ROLIE
//	                                   feed, the documents with .asc, .sha256 and .sha512, the key
func (s *Server) publicRoutes(mux *router) {
	mux.HandleFunc("GET /p/{$}", s.index)
	mux.HandleFunc("GET /.well-known/csaf/{path...}", s.csafFile)
	mux.HandleFunc("GET /p/{product}", s.public)
	mux.HandleFunc("GET /p/{product}/{file}", s.public)
}

func (s *Server) public(w http.ResponseWriter, r *http.Request) {
	if s.Transparency == nil {
		s.publicFail(w, r, apperr.E(apperr.NotFound, "this server publishes no product pages"))
		return
	}
	if r.PathValue("file") == "openvex.json" {
		s.openVEX(w, r)
		return
	}
	f, ok := publicFiles[r.PathValue("file")]
	if !ok {
		s.publicFail(w, r, apperr.E(apperr.NotFound, "no such file: a product publishes label.svg, label.png, declaration.json, declaration.pub, conformance.json and conformance.html"))
		return
	}
	pub, err := s.Transparency.Publication(r.Context(), r.PathValue("product"))
	if err != nil {
		s.publicFail(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", f.ctype)
	h.Set("Cache-Control", PublicMaxAge)
	h.Set("ETag", pub.ETag)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Access-Control-Allow-Origin", "*") // public data: other sites and tools may fetch it
	if f.csp != "" {
		h.Set("Content-Security-Policy", f.csp)
	}
	// ServeContent answers If-None-Match and If-Modified-Since with 304, and HEAD and Range.
	http.ServeContent(w, r, "", pub.Modified, bytes.NewReader(f.body(pub)))
}

// CSAF serves the CSAF provider and OpenVEX documents; *csafpub.Service implements it.
type CSAF interface {
	File(ctx context.Context, path string) ([]byte, string, error)
	OpenVEX(ctx context.Context, product string) ([]byte, error)
}

// csafFile serves the CSAF provider's files (CSAF 2.0 §7.1.7–7.1.20), publicly, as aggregators
// and scanners fetch them.
func (s *Server) csafFile(w http.ResponseWriter, r *http.Request) {
	if s.CSAF == nil {
		s.publicFail(w, r, apperr.E(apperr.NotFound, "this server publishes no CSAF documents"))
		return
	}
	b, ct, err := s.CSAF.File(r.Context(), r.PathValue("path"))
	if err != nil {
		s.publicFail(w, r, err)
		return
	}
	s.publicBytes(w, r, ct, b)
}

func (s *Server) openVEX(w http.ResponseWriter, r *http.Request) {
	if s.CSAF == nil {
		s.publicFail(w, r, apperr.E(apperr.NotFound, "this server publishes no VEX documents"))
		return
	}
	b, err := s.CSAF.OpenVEX(r.Context(), r.PathValue("product"))
	if err != nil {
		s.publicFail(w, r, err)
		return
	}
	s.publicBytes(w, r, "application/json", b)
}

func (s *Server) publicBytes(w http.ResponseWriter, r *http.Request, ct string, b []byte) {
	h := w.Header()
	h.Set("Content-Type", ct)
	h.Set("Cache-Control", PublicMaxAge)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Access-Control-Allow-Origin", "*")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
}

// publicFail answers a browser in plain text and a program in the API's JSON error form.
func (s *Server) publicFail(w http.ResponseWriter, r *http.Request, err error) {
	w.Header().Set("Cache-Control", "no-store")
	if !strings.Contains(r.Header.Get("Accept"), "text/html") {
		s.fail(w, r, err)
		return
	}
	code := apperr.CodeOf(err)
	if code == apperr.Internal {
		s.logger().Error("request failed", LogPath, r.URL.Path, LogErr, err)
	}
	msg := apperr.Message(err)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(apperr.HTTPStatus(code))
	io.WriteString(w, msg+"\n")
}

var indexPage = template.Must(template.New("index").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Upkeep</title><style>body{font-family:system-ui,sans-serif;max-width:40em;margin:2em auto;padding:0 1em;line-height:1.5}</style></head>
<body><h1>Upkeep</h1>
<p>Security updates and their support periods, published by this server.</p>
{{if .}}<h2>Products</h2><ul>{{range .}}<li><a href="/p/{{.}}">{{.}}</a> (<a href="/p/{{.}}/label.svg">label</a>, <a href="/p/{{.}}/declaration.json">signed declaration</a>, <a href="/p/{{.}}/conformance.html">conformance report</a>, <a href="/p/{{.}}/openvex.json">OpenVEX</a>)</li>{{end}}</ul>
<p>Security advisories and VEX documents: <a href="/.well-known/csaf/provider-metadata.json">CSAF 2.0 provider</a>.</p>
{{else}}<p>No product has a published support policy yet (<code>upkeep product set NAME --support-end YYYY-MM-DD</code>).</p>{{end}}
<p>Operators sign in to the <a href="../">console</a>, or use the <code>upkeep</code> command against this server's <code>/api/v1</code>.</p>
</body></html>
`))

// index lists the products that have public pages. It is public, as those pages are.
func (s *Server) index(w http.ResponseWriter, r *http.Request) {
	var names []string
	if s.Products != nil && s.Transparency != nil {
		ps, err := s.Products.Products(r.Context())
		if err != nil {
			s.publicFail(w, r, err)
			return
		}
		for _, p := range ps {
			names = append(names, p.Name)
		}
	}
	var buf bytes.Buffer
	if err := indexPage.Execute(&buf, names); err != nil {
		s.publicFail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", pageCSP)
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(buf.Bytes()) //nolint:errcheck // the client went away
}
