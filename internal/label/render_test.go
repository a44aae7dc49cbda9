package label

import (
	"bytes"
	"encoding/xml"
	"errors"
	"image/png"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"upkeep.dev/upkeep/internal/testenv"
)

const testURL = "https://updates.acme.example/p/thermo-2"

// wellFormed fails t unless b parses as XML.
func wellFormed(t *testing.T, b []byte) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(b))
	for {
		_, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, b)
		}
	}
}

func TestRenderSVG(t *testing.T) {
	tests := []struct {
		name   string
		policy func(p *Policy)
		ev     Evidence
		want   []string
		absent []string
	}{
		{name: "automatic, supported", want: []string{">Automatic<", ">Guaranteed until<", ">31 March 2031<", ">Last security update<", ">12 March 2026<", ">Thermo 2 Smart Thermostat<", "Scan for details"},
			absent: []string{"No longer"}},
		{name: "consent", policy: func(p *Policy) { p.Delivery = DeliveryConsent }, want: []string{">With your consent<"}},
		{name: "none", policy: func(p *Policy) { p.Delivery = DeliveryNone }, want: []string{">None<", "Receives no security updates"},
			absent: []string{"Guaranteed until", ">31 March 2031<"}},
		{name: "ended", policy: func(p *Policy) { p.SupportEnd = day(2025, 12, 31) },
			want: []string{">Support ended on<", ">31 December 2025<", "No longer receives", "security updates"}, absent: []string{"Guaranteed until", ">Automatic<"}},
		{name: "no security update yet", ev: ComputeEvidence(testNow, nil, nil, nil, nil), want: []string{">None yet<"}},
		{name: "hostile product name", policy: func(p *Policy) { p.ProductName = `<script>alert("x")</script> & Co` },
			want: []string{"&lt;script&gt;alert(&#34;x&#34;)"}, absent: []string{"<script>"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, e := testPolicy(), tt.ev
			if tt.policy != nil {
				tt.policy(&p)
			}
			if e.ComputedAt.IsZero() {
				e = testEvidence()
			}
			svg := RenderSVG(BuildDeclaration(p, testMechanism(), e, testNow), testURL)
			wellFormed(t, svg)
			for _, w := range tt.want {
				if !bytes.Contains(svg, []byte(w)) {
					t.Errorf("SVG lacks %q", w)
				}
			}
			for _, a := range tt.absent {
				if bytes.Contains(svg, []byte(a)) {
					t.Errorf("SVG contains %q", a)
				}
			}
			if !bytes.Contains(svg, []byte(`width="400" height="220"`)) {
				t.Error("SVG is not 400×220")
			}
		})
	}
}

func TestRenderSVGLongURL(t *testing.T) {
	svg := RenderSVG(BuildDeclaration(testPolicy(), testMechanism(), testEvidence(), testNow), "https://x.example/"+strings.Repeat("a", 4000))
	wellFormed(t, svg)
	if !bytes.Contains(svg, []byte("Details online")) {
		t.Error("a URL too long for a QR code should give a note")
	}
}

// TestRenderPNGQR decodes the PNG's QR code with zbarimg (Debian package zbar-tools; without it
// the test skips, and fails in CI).
func TestRenderPNGQR(t *testing.T) {
	zbar := testenv.Tool(t, "zbarimg", "zbar-tools")
	tests := []struct{ name, url string }{
		{"short", testURL},
		{"query and fragment", "https://updates.acme.example/label?product=thermo-2&lang=en#facts"},
		{"long", "https://updates.acme.example/products/" + strings.Repeat("thermostat-", 18) + "details"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := RenderPNG(BuildDeclaration(testPolicy(), testMechanism(), testEvidence(), testNow), tt.url)
			if err != nil {
				t.Fatalf("RenderPNG: %v", err)
			}
			img, err := png.Decode(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("not a PNG: %v", err)
			}
			if got := img.Bounds().Size(); got.X != 800 || got.Y != 440 {
				t.Errorf("PNG is %v, want 800×440", got)
			}
			path := filepath.Join(t.TempDir(), "label.png")
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(zbar, "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", path).Output()
			if err != nil {
				t.Fatalf("zbarimg found no QR code: %v", err)
			}
			if got := strings.TrimRight(string(out), "\n"); got != tt.url {
				t.Errorf("QR code decodes to %q, want %q", got, tt.url)
			}
		})
	}
}

func TestRenderPNGRejectsLongURL(t *testing.T) {
	if _, err := RenderPNG(BuildDeclaration(testPolicy(), testMechanism(), testEvidence(), testNow), "https://x.example/"+strings.Repeat("a", 4000)); err == nil {
		t.Error("RenderPNG accepted a URL that no QR code holds")
	}
}

func TestRenderHTML(t *testing.T) {
	p := testPolicy()
	p.ProductName = `Thermo <b>2</b>`
	p.VDPURL = "javascript:alert(1)"
	p.VDPContact = `"><script>alert(2)</script>`
	d := BuildDeclaration(p, testMechanism(), testEvidence(), testNow)
	page, err := RenderHTML(d, Conformance(d, testNow), RenderSVG(d, testURL))
	if err != nil {
		t.Fatalf("RenderHTML: %v", err)
	}
	s := string(page)
	for _, bad := range []string{"<script", "<b>2</b>", `href="javascript:`} {
		if strings.Contains(s, bad) {
			t.Errorf("page contains unescaped %q", bad)
		}
	}
	// The key facts come first, then the evidence, the conformance report and the raw JSON.
	order := []string{"Thermo &lt;b&gt;2&lt;/b&gt;", "data:image/svg&#43;xml;base64,", "Key facts", "Automatic: they install without you doing anything.",
		"Guaranteed until", "31 March 2031", "Last security update", "12 March 2026 (version 1.3)", "After support ends", "No further security updates; the last software version stays available to install. The device keeps working",
		"Report a vulnerability", "<h2>Evidence</h2>", "Median days from advisory to fixed release", `<h2 id="conformance">Conformance</h2>`,
		"5.3-8", `class="met"`, "Changes to the support period", "<details>", "&#34;schema_version&#34;: &#34;1.0&#34;"}
	at := 0
	for _, w := range order {
		i := strings.Index(s[at:], w)
		if i < 0 {
			t.Fatalf("page lacks %q after offset %d", w, at)
		}
		at += i
	}
	if strings.Contains(s, "<script") || strings.Contains(s, "src=\"http") {
		t.Error("page loads script or external resources")
	}

	p = testPolicy()
	p.SupportEnd = day(2025, 12, 31)
	d = BuildDeclaration(p, testMechanism(), testEvidence(), testNow)
	page, err = RenderHTML(d, Conformance(d, testNow), RenderSVG(d, testURL))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(page, []byte("no longer receives security updates. Support ended on 31 December 2025")) {
		t.Error("an ended product's page does not say so")
	}
}

// TestWriteExample writes an example label, page, declaration and envelope into the folder
// UPKEEP_LABEL_EXAMPLE_DIR names, for a person to look at.
func TestWriteExample(t *testing.T) {
	dir := os.Getenv("UPKEEP_LABEL_EXAMPLE_DIR")
	if dir == "" {
		t.Skip("set UPKEEP_LABEL_EXAMPLE_DIR to write example outputs")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]Policy{"": testPolicy(), "-ended": func() Policy {
		p := testPolicy()
		p.SupportStart, p.SupportEnd, p.Delivery = day(2020, 1, 1), day(2025, 12, 31), DeliveryConsent
		return p
	}()} {
		d := BuildDeclaration(p, testMechanism(), testEvidence(), testNow)
		svg := RenderSVG(d, testURL)
		pngBytes, err := RenderPNG(d, testURL)
		if err != nil {
			t.Fatal(err)
		}
		page, err := RenderHTML(d, Conformance(d, testNow), svg)
		if err != nil {
			t.Fatal(err)
		}
		env, err := Sign(d, testKey("declaration key"))
		if err != nil {
			t.Fatal(err)
		}
		for file, b := range map[string][]byte{"label" + name + ".svg": svg, "label" + name + ".png": pngBytes, "index" + name + ".html": page, "declaration" + name + ".dsse.json": env} {
			if err := os.WriteFile(filepath.Join(dir, file), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestRenderPageNoUpdates checks that the page of a product that receives no updates promises
// nothing until a date.
func TestRenderPageNoUpdates(t *testing.T) {
	p := testPolicy()
	p.Delivery = DeliveryNone
	d := BuildDeclaration(p, testMechanism(), testEvidence(), testNow)
	page, err := RenderHTML(d, Conformance(d, testNow), RenderSVG(d, testURL))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(page, []byte("Guaranteed until")) || !bytes.Contains(page, []byte("does not receive updates")) {
		t.Errorf("page of a product without updates:\n%s", page)
	}
}

// TestRenderReport checks the conformance report alone: every provision, none of the page's
// other sections.
func TestRenderReport(t *testing.T) {
	d := BuildDeclaration(testPolicy(), testMechanism(), testEvidence(), testNow)
	r := Conformance(d, testNow)
	b, err := RenderReport(d, r)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range r.Verdicts {
		if !bytes.Contains(b, []byte(v.Provision)) {
			t.Errorf("the report has no row for %s", v.Provision)
		}
	}
	for _, s := range []string{"Key facts", "Evidence</h2>", "machine-readable JSON"} {
		if bytes.Contains(b, []byte(s)) {
			t.Errorf("the report alone contains %q", s)
		}
	}
	if !bytes.Contains(b, []byte("Thermo 2 Smart Thermostat: conformance report")) {
		t.Error("the report does not name the product")
	}
}
