package cli

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"upkeep.dev/upkeep/internal/ddi"
	"upkeep.dev/upkeep/internal/rollout"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/wire"
)

// ddiClient speaks DDI as a device would and checks every request and answer against the DDI
// OpenAPI document in testdata (kin-openapi).
type ddiClient struct {
	t      *testing.T
	base   string
	router routers.Router
}

func newDDIClient(t *testing.T, base string) *ddiClient {
	t.Helper()
	openapi3filter.RegisterBodyDecoder("application/hal+json", openapi3filter.JSONBodyDecoder)
	doc, err := openapi3.NewLoader().LoadFromFile("testdata/ddi-openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc.Servers = openapi3.Servers{{URL: base}}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatal(err)
	}
	r, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return &ddiClient{t: t, base: base, router: r}
}

// do sends a request with an Authorization header ("" for none) and returns the status and
// body, having validated both against the document.
func (c *ddiClient) do(method, path, auth string, body any, hdr ...string) (int, []byte, http.Header) {
	c.t.Helper()
	var raw []byte
	crafted := false // raw bytes: a deliberately malformed request, not checked against the document
	if body != nil {
		if b, ok := body.([]byte); ok {
			raw, crafted = b, true
		} else {
			raw, _ = json.Marshal(body)
		}
	}
	url := path
	if !strings.HasPrefix(path, "http") {
		url = c.base + path
	}
	req, _ := http.NewRequest(method, url, bytes.NewReader(raw))
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		c.t.Fatalf("%s %s: not in the DDI document: %v", method, path, err)
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	if body != nil && !crafted {
		if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
			c.t.Fatalf("%s %s: request does not match the DDI document: %v", method, path, err)
		}
		req.Body = io.NopCloser(bytes.NewReader(raw))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode < 300 && resp.Header.Get("Content-Type") != "application/octet-stream" && len(got) > 0 || resp.StatusCode >= 400 {
		out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
			Body: io.NopCloser(bytes.NewReader(got)), Options: &openapi3filter.Options{IncludeResponseStatus: true}}
		if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
			c.t.Fatalf("%s %s: answer %d does not match the DDI document: %v\n%s", method, path, resp.StatusCode, err, got)
		}
	}
	return resp.StatusCode, got, resp.Header
}

func (c *ddiClient) want(status int, method, path, auth string, body any) []byte {
	c.t.Helper()
	got, b, _ := c.do(method, path, auth, body)
	if got != status {
		c.t.Fatalf("%s %s: %d, want %d: %s", method, path, got, status, b)
	}
	return b
}

type ddiRoot struct {
	Config struct {
		Polling struct{ Sleep string } `json:"polling"`
	} `json:"config"`
	Links map[string]struct{ Href string } `json:"_links"`
}

func (c *ddiClient) root(id, auth string) ddiRoot {
	c.t.Helper()
	var r ddiRoot
	json.Unmarshal(c.want(200, "GET", "/DEFAULT/controller/v1/"+id, auth, nil), &r)
	return r
}

// waitLink polls the base resource until it links rel, and returns the link.
func (c *ddiClient) waitLink(id, auth, rel string) string {
	c.t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if l, ok := c.root(id, auth).Links[rel]; ok {
			return l.Href
		}
	}
	c.t.Fatalf("no %s link for %s: %+v", rel, id, c.root(id, auth))
	return ""
}

func feedback(exec, finished string, details ...string) map[string]any {
	if details == nil {
		details = []string{}
	}
	return map[string]any{"id": 1, "time": "20261206T024700", "status": map[string]any{
		"execution": exec, "result": map[string]any{"finished": finished, "progress": map[string]int{"cnt": 1, "of": 2}}, "details": details}}
}

// TestDDIAPIShapes drives the DDI API with a Go client following the DDI OpenAPI document, every
// answer validated against it: configData in its three modes, the confirmation (consent) flow
// (which Debian's SWUpdate 2022.12 does not implement), the deployment with its hashes, the
// artifact with Range, ETag and .MD5SUM, feedback of every execution status, 410 for a closed
// action, installedBase, cancelAction, the gateway token with auto-registration (pending until
// accepted), one device's token against another's actions, and a product policy that forbids
// DDI.
func TestDDIAPIShapes(t *testing.T) {
	e := newEnvWith(t, func(c *server.Config) {
		c.PollSeconds, c.RolloutEvery = 1, 200*time.Millisecond
		c.DDI.GatewayToken, c.DDI.Product, c.DDI.HardwareID, c.DDI.CacheFor = "gw-secret", testProduct, testHardware, 100*time.Millisecond
	})
	ctx := context.Background()
	c := newDDIClient(t, e.srv.URL)
	payload := image("3.0.0", 20<<10)
	swu := filepath.Join(t.TempDir(), "bundle-3.0.0.swu")
	os.WriteFile(swu, payload, 0o644)
	rel := e.publishSWU("3.0.0", 1, swu)
	tokA, tokB := e.ddiDevice("ctrl-a"), e.ddiDevice("ctrl-b")
	a, b := "TargetToken "+tokA, "TargetToken "+tokB
	base := "/DEFAULT/controller/v1/ctrl-a"

	// Authentication, tenant, unknown devices.
	c.want(401, "GET", base, "", nil)
	c.want(401, "GET", base, "TargetToken "+tokB, nil)
	c.want(401, "GET", base, "GatewayToken wrong", nil)
	c.want(404, "GET", "/other/controller/v1/ctrl-a", a, nil)
	c.want(200, "GET", "/default/controller/v1/ctrl-a", a, nil) // tenants are case-insensitive

	// configData: asked for, stored in the three modes, then no longer asked for.
	r := c.root("ctrl-a", a)
	if r.Config.Polling.Sleep != "00:00:01" || r.Links["configData"].Href != e.srv.URL+base+"/configData" {
		t.Fatalf("root %+v", r)
	}
	c.want(200, "PUT", base+"/configData", a, map[string]any{"mode": "merge", "data": map[string]string{"region": "eu", "hwRevision": "2"}})
	c.want(200, "PUT", base+"/configData", a, map[string]any{"mode": "remove", "data": map[string]string{"hwRevision": ""}})
	c.want(200, "PUT", base+"/configData", a, map[string]any{"data": map[string]string{"serialNo": "42"}})
	d, _ := e.cli.Device(ctx, "ctrl-a")
	if fmt.Sprint(d.Attributes) != "map[region:eu serialNo:42]" {
		t.Fatalf("attributes after merge, remove, merge: %v", d.Attributes)
	}
	c.want(200, "PUT", base+"/configData", a, map[string]any{"mode": "replace", "data": map[string]string{"region": "us"}})
	d, _ = e.cli.Device(ctx, "ctrl-a")
	if fmt.Sprint(d.Attributes) != "map[region:us]" {
		t.Fatalf("attributes after replace: %v", d.Attributes)
	}
	c.want(400, "PUT", base+"/configData", a, []byte(`{"mode":"append","data":{}}`))
	if _, ok := c.root("ctrl-a", a).Links["configData"]; ok {
		t.Fatal("configData still asked for after the device sent it")
	}

	// A soft campaign (consent), selected by the attribute the device reported.
	camp := e.campaignFor(rel, wire.CampaignSpec{Target: "region=us", Mode: "soft"})
	href := c.waitLink("ctrl-a", a, "confirmationBase")
	if _, ok := c.root("ctrl-a", a).Links["deploymentBase"]; ok {
		t.Fatal("a deployment offered before the owner confirmed it")
	}
	act := e.lastAction("ctrl-a")
	id := fmt.Sprint(act.ID)
	c.want(404, "GET", base+"/deploymentBase/"+id, a, nil)
	var cr struct {
		Links map[string]struct{ Href string } `json:"_links"`
	}
	json.Unmarshal(c.want(200, "GET", base+"/confirmationBase", a, nil), &cr)
	if cr.Links["confirmationBase"].Href != href {
		t.Fatalf("confirmationBase root %+v, want %s", cr, href)
	}
	c.want(200, "GET", href, a, nil)
	e.waitCampaign(camp.ID, 10*time.Second, "the member waiting for consent", func(s *wire.CampaignStatus) bool { return len(s.Waiting) == 1 })
	c.want(200, "POST", base+"/confirmationBase/"+id+"/feedback", a, map[string]any{"confirmation": "denied", "details": []string{"not now"}})
	c.want(200, "GET", href, a, nil) // still waiting
	c.want(200, "POST", base+"/confirmationBase/"+id+"/feedback", a, map[string]any{"confirmation": "confirmed", "code": 0})

	// The deployment, its artifact and hashes.
	href = c.waitLink("ctrl-a", a, "deploymentBase")
	var dep struct {
		ID         string
		Deployment struct {
			Download, Update string
			Chunks           []struct {
				Part, Version, Name string
				Artifacts           []struct {
					Filename string
					Size     int64
					Hashes   struct{ SHA1, MD5, SHA256 string }
					Links    map[string]struct{ Href string } `json:"_links"`
				}
			}
		}
	}
	json.Unmarshal(c.want(200, "GET", href, a, nil), &dep)
	s1, m5 := sha1.Sum(payload), md5.Sum(payload)
	art := dep.Deployment.Chunks[0].Artifacts[0]
	if dep.ID != id || dep.Deployment.Download != "attempt" || dep.Deployment.Update != "attempt" || art.Filename != "bundle-3.0.0.swu" ||
		art.Size != int64(len(payload)) || art.Hashes.SHA1 != hex.EncodeToString(s1[:]) || art.Hashes.MD5 != hex.EncodeToString(m5[:]) ||
		art.Hashes.SHA256 != rel.SHA256 || dep.Deployment.Chunks[0].Version != "3.0.0" {
		t.Fatalf("deployment %+v", dep)
	}
	dl := art.Links["download-http"].Href
	_, got, h := c.do("GET", dl, a, nil)
	if !bytes.Equal(got, payload) || h.Get("ETag") != `"`+art.Hashes.SHA1+`"` {
		t.Fatalf("artifact: %d bytes, ETag %s", len(got), h.Get("ETag"))
	}
	st, got, _ := c.do("GET", dl, a, nil, "Range", "bytes=10-19")
	if st != 206 || !bytes.Equal(got, payload[10:20]) {
		t.Fatalf("range: %d %d bytes", st, len(got))
	}
	if _, got, _ = c.do("GET", art.Links["md5sum-http"].Href, a, nil); string(got) != art.Hashes.MD5+"  bundle-3.0.0.swu" {
		t.Fatalf(".MD5SUM: %q", got)
	}
	// Another device may not see or report on this device's action.
	otherDL := strings.Replace(dl, "/ctrl-a/", "/ctrl-b/", 1)
	c.want(404, "GET", otherDL, b, nil)
	c.want(404, "GET", "/DEFAULT/controller/v1/ctrl-b/deploymentBase/"+id, b, nil)
	c.want(404, "POST", "/DEFAULT/controller/v1/ctrl-b/deploymentBase/"+id+"/feedback", b, feedback("closed", "failure"))
	c.want(401, "GET", href, b, nil)

	// Feedback: every execution status, then the close; an unknown status is refused, a closed
	// action is gone.
	for _, ex := range []string{"download", "downloaded", "scheduled", "resumed", "rejected", "proceeding"} {
		c.want(200, "POST", base+"/deploymentBase/"+id+"/feedback", a, feedback(ex, "none", "step "+ex))
	}
	c.want(400, "POST", base+"/deploymentBase/"+id+"/feedback", a, []byte(`{"status":{"execution":"exploded","result":{"finished":"none"}}}`))
	c.want(413, "POST", base+"/deploymentBase/"+id+"/feedback", a, []byte(`{"status":{"execution":"proceeding","result":{"finished":"none"},"details":["`+strings.Repeat("x", ddi.MaxFeedbackBody)+`"]}}`))
	c.want(404, "POST", base+"/deploymentBase/999999/feedback", a, feedback("closed", "success"))
	c.want(200, "POST", base+"/deploymentBase/"+id+"/feedback", a, feedback("closed", "success", "installed"))
	c.want(410, "POST", base+"/deploymentBase/"+id+"/feedback", a, feedback("closed", "success"))
	ib := c.waitLink("ctrl-a", a, "installedBase")
	// The device goes on polling: its polls after the commit pass the health gate.
	e.waitCampaign(camp.ID, 20*time.Second, "completion", func(s *wire.CampaignStatus) bool {
		c.root("ctrl-a", a)
		return s.Campaign.State == rollout.StateCompleted
	})
	c.want(200, "GET", ib, a, nil)
	d, _ = e.cli.Device(ctx, "ctrl-a")
	if d.Installed.Version != "3.0.0" || d.Installed.SHA256 != rel.SHA256 {
		t.Fatalf("installed %+v", d.Installed)
	}

	// Cancel: a forced campaign is cancelled before the device acts; cancelAction, then its
	// feedback closes the action.
	os.WriteFile(swu, image("3.1.0", 4<<10), 0o644)
	rel2 := e.publishSWU("3.1.0", 2, swu)
	camp2 := e.campaignFor(rel2, wire.CampaignSpec{Devices: []string{"ctrl-a"}, Mode: "forced"})
	c.waitLink("ctrl-a", a, "deploymentBase")
	if _, err := e.cli.RolloutAction(ctx, camp2.ID, "cancel"); err != nil {
		t.Fatal(err)
	}
	ch := c.waitLink("ctrl-a", a, "cancelAction")
	var cb struct {
		ID           string
		CancelAction struct{ StopID string } `json:"cancelAction"`
	}
	json.Unmarshal(c.want(200, "GET", ch, a, nil), &cb)
	cid := fmt.Sprint(e.lastAction("ctrl-a").ID)
	if cb.ID != cid || cb.CancelAction.StopID != cid {
		t.Fatalf("cancel %+v, want id %s", cb, cid)
	}
	c.want(404, "GET", base+"/deploymentBase/"+cid, a, nil)
	c.want(200, "POST", base+"/cancelAction/"+cid+"/feedback", a, feedback("closed", "success"))
	c.want(410, "POST", base+"/cancelAction/"+cid+"/feedback", a, feedback("closed", "success"))
	if got := e.lastAction("ctrl-a"); got.Status != ddi.ActionClosed || got.Result != ddi.ResultCanceled {
		t.Fatalf("cancelled action %+v", got)
	}

	// The gateway token registers an unknown controller, pending until accepted.
	gw := "GatewayToken gw-secret"
	c.want(200, "GET", "/DEFAULT/controller/v1/gw-1", gw, nil)
	d, err := e.cli.Device(ctx, "gw-1")
	if err != nil || d.Kind != "ddi" || d.Status != "pending" {
		t.Fatalf("registered device %+v %v", d, err)
	}
	c.want(404, "GET", "/DEFAULT/controller/v1/gw-1/installedBase/1", gw, nil)
	if err := e.cli.Accept(ctx, "gw-1"); err != nil {
		t.Fatal(err)
	}
	c.want(200, "GET", "/DEFAULT/controller/v1/gw-1", gw, nil)

	// A product whose policy forbids DDI: no new DDI device, and the existing ones are refused.
	if _, err := e.cli.SetPolicy(ctx, testProduct, map[string]any{"support_end": "2031-12-31", "forbid_ddi": true}); err != nil {
		t.Fatal(err)
	}
	c.want(403, "GET", "/DEFAULT/controller/v1/ctrl-b", b, nil)
	// The published declaration and conformance report say which devices speak DDI and what
	// that means.
	for _, f := range []string{"declaration.json", "conformance.json"} {
		resp, err := http.Get(e.srv.URL + "/p/" + testProduct + "/" + f)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if f == "declaration.json" {
			var env struct{ Payload []byte }
			json.Unmarshal(body, &env)
			body = env.Payload
		}
		if !bytes.Contains(body, []byte("hawkBit DDI")) || !bytes.Contains(body, []byte("not the platform")) {
			t.Errorf("%s does not name the DDI devices:\n%.2000s", f, body)
		}
	}
	if _, err := e.cli.CreateDDIDevice(ctx, wire.DDIDeviceRequest{ID: "ctrl-c", Product: testProduct, HardwareID: testHardware}); err == nil {
		t.Fatal("a DDI device was created for a product that forbids them")
	}
}
