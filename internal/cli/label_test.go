package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/label"
	"upkeep.dev/upkeep/internal/product"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/testenv"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/wire"
)

// labelPolicy is the support policy the label tests publish.
func labelPolicy(end string) product.Policy {
	return product.Policy{SupportEnd: end, Delivery: product.DeliveryAutomatic, SecuritySeparate: true, Notification: []string{"app", "email"},
		VDPURL: "https://example.com/security", VDPContact: "security@example.com", RemediationDays: 30, WarnDays: 90}
}

// get fetches a public path with no credentials.
func (e *env) get(path string, hdr ...string) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp, b
}

// declaration fetches and verifies the product's signed declaration with its served key.
func (e *env) declaration(product string) *label.Declaration {
	e.t.Helper()
	resp, env := e.get("/p/" + product + "/declaration.json")
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("declaration.json: %d %s", resp.StatusCode, env)
	}
	_, pemKey := e.get("/p/" + product + "/declaration.pub")
	pub, err := label.ParsePublicKey(pemKey)
	if err != nil {
		e.t.Fatal(err)
	}
	d, err := label.Verify(env, pub)
	if err != nil {
		e.t.Fatalf("the served declaration does not verify with the served key: %v", err)
	}
	return d
}

// publishLabelRelease publishes a release of testProduct with the given class through the real flow.
func (e *env) publishLabelRelease(version string, secVer int64, class string) *wire.Release {
	e.t.Helper()
	f := filepath.Join(e.t.TempDir(), "fw-"+version+".img")
	if err := os.WriteFile(f, image(version, 16<<10), 0o644); err != nil {
		e.t.Fatal(err)
	}
	rel, err := e.cli.Publish(context.Background(), client.PublishOptions{
		File: f, TargetsKey: e.targetsKey, TrustedRoot: e.imageRoot, Expires: 30 * 24 * time.Hour,
		Custom: uptane.TargetCustom{Product: testProduct, HardwareIDs: []string{testHardware}, Version: version, SecurityVersion: secVer, Class: class},
	})
	if err != nil {
		e.t.Fatalf("publish %s: %v", version, err)
	}
	return rel
}

// TestLabelPublicRoutes checks the public files on the real server: no login, types, caching,
// unknown products, path tricks, and a declaration that verifies and matches the schema.
func TestLabelPublicRoutes(t *testing.T) {
	e := newEnvWith(t, func(c *server.Config) { c.Manufacturer = "Example Devices Ltd" })
	if _, err := e.cli.SetPolicy(context.Background(), testProduct, labelPolicy("2031-12-31")); err != nil {
		t.Fatal(err)
	}
	for path, ctype := range map[string]string{
		"": "text/html", "/label.svg": "image/svg+xml", "/label.png": "image/png", "/declaration.json": "application/json",
		"/declaration.pub": "application/x-pem-file", "/conformance.json": "application/json", "/conformance.html": "text/html",
	} {
		resp, b := e.get("/p/" + testProduct + path)
		ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		if resp.StatusCode != http.StatusOK || ct != ctype || len(b) == 0 {
			t.Errorf("GET /p/%s%s: %d %q, %d bytes", testProduct, path, resp.StatusCode, ct, len(b))
		}
		if !strings.Contains(resp.Header.Get("Cache-Control"), "max-age=300") || resp.Header.Get("ETag") == "" {
			t.Errorf("GET /p/%s%s: Cache-Control %q, ETag %q", testProduct, path, resp.Header.Get("Cache-Control"), resp.Header.Get("ETag"))
		}
	}
	resp, body := e.get("/p/toaster")
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), `no product named \"toaster\"`) {
		t.Errorf("unknown product: %d %s", resp.StatusCode, body)
	}
	for _, p := range []string{"/p/%2e%2e/label.svg", "/p/..%2fkeys%2fsnapshot.key", "/p/thermostat%00/label.png"} {
		if resp, body := e.get(p); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET %s: %d %s, want 400", p, resp.StatusCode, body)
		}
	}
	d := e.declaration(testProduct)
	raw, err := label.CanonicalJSON(*d)
	if err != nil {
		t.Fatal(err)
	}
	if err := label.Validate(raw); err != nil {
		t.Fatal(err)
	}
	if d.Manufacturer.Name != "Example Devices Ltd" || d.Support.EndDate != "2031-12-31" || d.Mechanisms[0].Initiation != "automatic" {
		t.Errorf("declaration %+v", d)
	}
	if fi, err := os.Stat(filepath.Join(e.keys, "declaration", testProduct+".key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("declaration key: %v %v", fi, err)
	}
}

// TestLabelEvidenceFromPlatform publishes releases through the real flow and enrols a device:
// the declaration's figures follow, with nothing typed by hand.
func TestLabelEvidenceFromPlatform(t *testing.T) {
	e := newEnvWith(t, func(c *server.Config) { c.PublicRefresh = time.Nanosecond }) // read the stores on each request
	ctx := context.Background()
	if _, err := e.cli.SetPolicy(ctx, testProduct, labelPolicy("2031-12-31")); err != nil {
		t.Fatal(err)
	}
	d := e.declaration(testProduct)
	if d.Evidence.LastSecurityUpdate.Date != "" || *d.Evidence.SecurityUpdates12m.Value != 0 {
		t.Fatalf("before any release: %+v", d.Evidence)
	}
	resp, _ := e.get("/p/" + testProduct + "/label.svg")
	etag := resp.Header.Get("ETag")

	v100 := image("1.0.0", 32<<10)
	r100 := e.publish("1.0.0", 1, v100)
	dev := e.device("SN-LABEL", v100, r100)
	e.publishLabelRelease("1.0.1", 1, uptane.ClassFeature)
	d = e.declaration(testProduct)
	today := time.Now().UTC().Format(time.DateOnly)
	if got := d.Evidence.LastSecurityUpdate; got.Date != today || got.Version != "1.0.0" || *d.Evidence.SecurityUpdates12m.Value != 1 {
		t.Fatalf("after one security and one feature release: last %+v, count %v", got, *d.Evidence.SecurityUpdates12m.Value)
	}
	if *d.Evidence.Devices.Value != 1 {
		t.Errorf("devices %v, want the enrolled one", *d.Evidence.Devices.Value)
	}
	r102 := e.publishLabelRelease("1.0.2", 2, uptane.ClassSecurity)
	d = e.declaration(testProduct)
	if got := d.Evidence.LastSecurityUpdate; got.Version != "1.0.2" || *d.Evidence.SecurityUpdates12m.Value != 2 {
		t.Fatalf("after a second security release: last %+v, count %v", got, *d.Evidence.SecurityUpdates12m.Value)
	}
	if resp, _ := e.get("/p/"+testProduct+"/label.svg", "If-None-Match", etag); resp.StatusCode != http.StatusOK || resp.Header.Get("ETag") == etag {
		t.Errorf("the label kept its ETag %s after new releases", etag)
	}
	// The device installs the security release; once the server has flushed its check-in, the
	// fleet share counts it on a supported (published) release.
	e.deploy(r102, dev.Agent.State().DeviceID)
	if err := dev.Agent.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		d = e.declaration(testProduct)
		if v := d.Evidence.FleetOnSupported.Value; v != nil && *v == 100 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fleet share %+v", d.Evidence.FleetOnSupported)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// TestLabelEndOfSupport checks a product whose support end date has passed: the label and the
// page say it no longer receives security updates, and the last image is still served.
func TestLabelEndOfSupport(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	v100 := image("1.0.0", 32<<10)
	r100 := e.publish("1.0.0", 1, v100)
	dev := e.device("SN-EOS-LABEL", v100, r100)
	if _, err := e.cli.SetPolicy(ctx, testProduct, labelPolicy("2024-06-30")); err != nil {
		t.Fatal(err)
	}
	d := e.declaration(testProduct)
	if d.Status != label.StatusEndOfSupport {
		t.Fatalf("status %s", d.Status)
	}
	_, svg := e.get("/p/" + testProduct + "/label.svg")
	if !bytes.Contains(svg, []byte("No longer receives security updates")) || !bytes.Contains(svg, []byte("No longer receives")) {
		t.Errorf("label.svg does not say so:\n%s", svg)
	}
	_, page := e.get("/p/" + testProduct)
	if !bytes.Contains(page, []byte("no longer receives security updates")) || !bytes.Contains(page, []byte("30 June 2024")) {
		t.Error("the page does not say support ended on 30 June 2024")
	}
	// Nothing stops serving the last image: a device behind can still install it.
	r101 := e.publish("1.0.1", 2, image("1.0.1", 32<<10))
	e.deploy(r101, dev.Agent.State().DeviceID)
	if err := dev.Agent.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	if st := dev.Agent.State(); st.Installed.Version != "1.0.1" {
		t.Fatalf("after the end of support the device could not install the last image: %+v (%s)", st.Installed, st.LastError)
	}
}

// TestLabelRenderAndVerifyCLI writes the files with `upkeep label render` and checks them offline
// with `upkeep label verify`, which refuses a changed payload byte or a changed signature.
func TestLabelRenderAndVerifyCLI(t *testing.T) {
	e := newEnv(t)
	if _, err := e.cli.SetPolicy(context.Background(), testProduct, labelPolicy("2031-12-31")); err != nil {
		t.Fatal(err)
	}
	e.publish("1.0.0", 1, image("1.0.0", 16<<10))
	out := filepath.Join(t.TempDir(), "print")
	g := []string{"--server", e.srv.URL}
	got := cli(t, append(g, "label", "render", testProduct, "--out", out)...)
	if !strings.Contains(got, "support end:          2031-12-31") || !strings.Contains(got, "SHA256:") {
		t.Errorf("render output:\n%s", got)
	}
	for _, f := range []string{"label.svg", "label.png", "declaration.json", "declaration.pub", "conformance.json", "conformance.html", "index.html"} {
		if fi, err := os.Stat(filepath.Join(out, f)); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	if report := string(mustRead(t, filepath.Join(out, "conformance.html"))); !strings.Contains(report, "conformance report") ||
		!strings.Contains(report, "5.3-16") || strings.Contains(report, "Key facts") {
		t.Errorf("conformance.html is not the report alone:\n%s", report)
	}
	envFile := filepath.Join(out, "declaration.json")
	ok := cli(t, "label", "verify", envFile, "--pub", filepath.Join(out, "declaration.pub"))
	if !strings.Contains(ok, "OK:") || !strings.Contains(ok, "product:              thermostat") || !strings.Contains(ok, "security updates:     automatic") {
		t.Errorf("verify output:\n%s", ok)
	}
	// The key exported from the keys folder is the one the declaration verifies with.
	var keyOut, keyErr bytes.Buffer
	kc := newRoot()
	kc.SetArgs([]string{"label", "key", testProduct, "--keys", e.keys})
	kc.SetOut(&keyOut)
	kc.SetErr(&keyErr)
	if err := kc.Execute(); err != nil {
		t.Fatalf("label key: %v\n%s", err, keyErr.String())
	}
	if !bytes.Equal(keyOut.Bytes(), mustRead(t, filepath.Join(out, "declaration.pub"))) {
		t.Errorf("label key printed %q, the server serves %q", keyOut.String(), mustRead(t, filepath.Join(out, "declaration.pub")))
	}
	if _, err := cliErr("label", "key", "no-such-product", "--keys", e.keys); err == nil {
		t.Error("label key of a product without a key succeeded")
	}

	// Without --pub, the key beside the file or the one the envelope carries came with the
	// declaration: the signature is checked, the signer is not, and the exit is not 0.
	alone := filepath.Join(t.TempDir(), "declaration.json")
	os.WriteFile(alone, mustRead(t, envFile), 0o644)
	for file, source := range map[string]string{envFile: "the declaration.pub beside it", alone: "the key the envelope carries"} {
		cmd := newRoot()
		cmd.SetArgs([]string{"label", "verify", file})
		var sink bytes.Buffer
		cmd.SetOut(&sink)
		cmd.SetErr(&sink)
		err := cmd.ExecuteContext(context.Background())
		if err == nil || !strings.Contains(err.Error(), "--pub") || strings.Contains(sink.String(), "OK:") ||
			!strings.Contains(sink.String(), "signature consistent but signer not checked") || !strings.Contains(sink.String(), source) {
			t.Errorf("verify %s without --pub: %v\n%s", file, err, sink.String())
		}
	}

	var env label.Envelope
	if err := json.Unmarshal(mustRead(t, envFile), &env); err != nil {
		t.Fatal(err)
	}
	payload, _ := base64.StdEncoding.DecodeString(env.Payload)
	sig, _ := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
	i := bytes.Index(payload, []byte("2031-12-31"))
	if i < 0 {
		t.Fatal("no end date in the payload")
	}
	for name, change := range map[string]func(e *label.Envelope){
		"payload byte": func(e *label.Envelope) {
			p := bytes.Clone(payload)
			p[i+3] = '9' // 2031 -> 2039
			e.Payload = base64.StdEncoding.EncodeToString(p)
		},
		"signature": func(e *label.Envelope) {
			s := bytes.Clone(sig)
			s[10] ^= 0x01
			e.Signatures[0].Sig = base64.StdEncoding.EncodeToString(s)
		},
	} {
		t.Run(name, func(t *testing.T) {
			bad := env
			bad.Signatures = append([]label.Signature(nil), env.Signatures...)
			change(&bad)
			b, _ := json.MarshalIndent(bad, "", "  ")
			dir := t.TempDir()
			f := filepath.Join(dir, "declaration.json")
			os.WriteFile(f, b, 0o644)
			os.WriteFile(filepath.Join(dir, "declaration.pub"), mustRead(t, filepath.Join(out, "declaration.pub")), 0o644)
			for _, args := range [][]string{{"label", "verify", f}, {"label", "verify", f, "--pub", filepath.Join(out, "declaration.pub")}} {
				cmd := newRoot()
				cmd.SetArgs(args)
				var sink bytes.Buffer
				cmd.SetOut(&sink)
				cmd.SetErr(&sink)
				err := cmd.ExecuteContext(context.Background())
				if err == nil || !strings.Contains(err.Error(), "does NOT verify") || !strings.Contains(err.Error(), "signature") {
					t.Errorf("upkeep %s: %v, want a refusal naming the signature", strings.Join(args, " "), err)
				}
				if strings.Contains(sink.String(), "OK:") {
					t.Errorf("a tampered declaration printed OK:\n%s", sink.String())
				}
			}
		})
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestLabelPageInChromium renders the public page and the label in headless Chromium, checks
// the key facts in the DOM, keeps the screenshots, and decodes the label's QR code.
func TestLabelPageInChromium(t *testing.T) {
	chromium := testenv.Tool(t, "chromium", "chromium")
	zbar := testenv.Tool(t, "zbarimg", "zbar-tools")
	e := newEnvWith(t, func(c *server.Config) { c.Manufacturer = "Example Devices Ltd" })
	if _, err := e.cli.SetPolicy(context.Background(), testProduct, labelPolicy("2031-12-31")); err != nil {
		t.Fatal(err)
	}
	e.publish("1.0.0", 1, image("1.0.0", 16<<10))
	shots := t.TempDir()
	if d := os.Getenv("UPKEEP_TEST_SCREENSHOTS"); d != "" { // to look at them after the run
		shots = d
	}
	page := e.srv.URL + "/p/" + testProduct
	run := func(args ...string) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run", "--user-data-dir=" + t.TempDir()}
		cmd := exec.CommandContext(ctx, chromium, append(base, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("chromium %v: %v\n%s", args, err, stderr.Bytes())
		}
		return stdout.Bytes()
	}
	dom := string(run("--dump-dom", page))
	for _, want := range []string{testProduct, "Security updates", "security updates", "31 December 2031", "Guaranteed until", "Example Devices Ltd", "Conformance"} {
		if !strings.Contains(dom, want) {
			t.Errorf("the page's DOM lacks %q", want)
		}
	}
	shot := filepath.Join(shots, "page.png")
	run("--screenshot="+shot, "--window-size=1200,2000", page)
	if fi, err := os.Stat(shot); err != nil || fi.Size() < 10<<10 {
		t.Fatalf("page screenshot: %v %v", fi, err)
	}
	labelShot := filepath.Join(shots, "label-in-browser.png")
	run("--screenshot="+labelShot, "--window-size=800,440", page+"/label.png")

	_, png := e.get("/p/" + testProduct + "/label.png")
	labelFile := filepath.Join(shots, "label.png")
	if err := os.WriteFile(labelFile, png, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := exec.Command(zbar, "--raw", "-q", labelFile).Output()
	if err != nil {
		t.Fatalf("zbarimg found no QR code in label.png: %v", err)
	}
	if strings.TrimSpace(string(got)) != page {
		t.Errorf("the QR code holds %q, want the page URL %q", got, page)
	}
}
