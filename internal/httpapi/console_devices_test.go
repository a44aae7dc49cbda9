package httpapi_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/faillog"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/wire"
)

const (
	evilScript = `<script>alert(1)</script>`
	evilImg    = `"><img src=x onerror=alert(1)>`
)

// seedDevices stores n accepted devices d000... directly, every third with hostile attributes.
func (s *stack) seedDevices(n int) {
	s.t.Helper()
	for i := range n {
		d := &fleet.Device{ID: fmt.Sprintf("d%03d", i), PublicKey: []byte{byte(i)}, Serial: fmt.Sprintf("SN%03d", i), Product: "cam", HardwareID: "h1",
			Attributes: map[string]string{"region": []string{"eu", "us", "ap"}[i%3]}, Status: fleet.StatusAccepted, InstalledVer: "1.0", State: "idle",
			EnrolledAt: time.Now(), LastSeen: time.Now()}
		if i%3 == 2 {
			d.Attributes["label"] = evilScript
			d.Serial = evilImg
			d.LastError = evilScript
		}
		if err := s.db.CreateDevice(context.Background(), d); err != nil {
			s.t.Fatal(err)
		}
	}
}

var deviceLink = regexp.MustCompile(`href="/devices/(d[0-9]+)"`)

// TestConsoleDevicesList: the list filters by attribute, product, status and free text, and
// walks every device once through its keyset pages; device-sourced strings are escaped.
func TestConsoleDevicesList(t *testing.T) {
	s := newStack(t)
	s.addUser("vic", auth.RoleViewer, testPassword)
	s.seedDevices(120)
	srv := s.serve()
	b := newBrowser(t, srv, "/")
	b.login("vic", testPassword)
	seen := map[string]bool{}
	next := "devices"
	for pages := 0; next != ""; pages++ {
		p := b.get(next)
		wantPage(t, p, http.StatusOK)
		if strings.Contains(p.body, evilScript) || strings.Contains(p.body, `<img src=x`) {
			t.Fatalf("unescaped device string in:\n%s", p.body)
		}
		for _, m := range deviceLink.FindAllStringSubmatch(p.body, -1) {
			if seen[m[1]] {
				t.Fatalf("device %s on two pages", m[1])
			}
			seen[m[1]] = true
		}
		next = ""
		if m := regexp.MustCompile(`href="/(devices\?[^"]+)" rel="next"`).FindStringSubmatch(p.body); m != nil {
			next = strings.ReplaceAll(m[1], "&amp;", "&")
		}
		if pages > 5 {
			t.Fatal("too many pages")
		}
	}
	if len(seen) != 120 {
		t.Fatalf("pages showed %d devices, want 120", len(seen))
	}
	p := b.get("devices?attr=" + url.QueryEscape("region=ap") + "&sort=serial&desc=true")
	wantPage(t, p, http.StatusOK, "&lt;img src=x onerror=alert(1)&gt;")
	if n := len(deviceLink.FindAllString(p.body, -1)); n != 40 {
		t.Errorf("region=ap: %d devices, want 40", n)
	}
	p = b.get("devices?q=sn010")
	if ids := deviceLink.FindAllStringSubmatch(p.body, -1); len(ids) != 1 || ids[0][1] != "d010" {
		t.Errorf("search sn010: %v", ids)
	}
	p = b.get("devices?q=" + url.QueryEscape("region=ap"))
	if n := len(deviceLink.FindAllString(p.body, -1)); n != 40 {
		t.Errorf("search region=ap: %d devices, want 40", n)
	}
	p = b.get("devices?q=" + url.QueryEscape("N010")) // a prefix, not a substring
	if ids := deviceLink.FindAllStringSubmatch(p.body, -1); len(ids) != 0 {
		t.Errorf("search N010: %v", ids)
	}
	wantPage(t, b.get("devices?attr=bad%20key%3Dx"), http.StatusBadRequest, "only letters, digits")
	wantPage(t, b.get("devices?sort=nonsense"), http.StatusBadRequest, "sort")
}

// TestConsoleDevicePage: the device page escapes what the device sent; support sees the
// actions and takes them after a confirmation, with the CSRF token; a viewer sees none, and
// the server refuses the action when a viewer forces it.
func TestConsoleDevicePage(t *testing.T) {
	s := newStack(t)
	s.addUser("vic", auth.RoleViewer, testPassword)
	s.addUser("sue", auth.RoleSupport, testPassword)
	s.seedDevices(3)
	// A failure log bundle whose text is hostile, and an event.
	logs := &faillog.Service{Store: s.db, Logger: quietLogger()}
	s.api.Logs = logs
	s.handler = s.api.Handler()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	json.NewEncoder(zw).Encode(wire.LogBundle{Time: time.Now(), Target: "cam-2.0.img", Step: wire.StepInstall, Message: evilScript,
		Output: "line one\n" + evilImg, AgentLog: []string{"agent: " + evilScript}})
	zw.Close()
	if _, err := logs.Upload(context.Background(), "d002", gz.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := s.db.AddEvents(context.Background(), []fleet.Event{{DeviceID: "d002", Time: time.Now(), Target: "cam-2.0.img", Step: wire.StepInstall, Status: wire.StatusFailed, Fatal: true, Message: evilImg}}); err != nil {
		t.Fatal(err)
	}
	srv := s.serve()
	viewer := newBrowser(t, srv, "/")
	vcsrf := viewer.login("vic", testPassword)
	p := viewer.get("devices/d002")
	wantPage(t, p, http.StatusOK, "&lt;script&gt;alert(1)&lt;/script&gt;", "region", "Timeline", "Failure logs", "line one", "agent: &lt;script&gt;", "(fatal)")
	if strings.Contains(p.body, evilScript) || strings.Contains(p.body, "<img src=x") {
		t.Fatalf("unescaped:\n%s", p.body)
	}
	if strings.Contains(p.body, "Decommission") {
		t.Error("a viewer sees the decommission button")
	}
	wantPage(t, viewer.get("devices/d002/decommission"), http.StatusForbidden, "role viewer does not grant devices:admit")
	wantPage(t, viewer.post("devices/d002/decommission", url.Values{"csrf": {vcsrf}}), http.StatusForbidden, "role viewer does not grant devices:admit")
	wantPage(t, viewer.get("devices/nosuch"), http.StatusNotFound, "nosuch")

	support := newBrowser(t, srv, "/")
	support.login("sue", testPassword)
	p = support.get("devices/d002")
	wantPage(t, p, http.StatusOK, `href="/devices/d002/decommission"`)
	c := support.get("devices/d002/decommission")
	wantPage(t, c, http.StatusOK, "Decommission device d002?", `action="/devices/d002/decommission"`)
	wantPage(t, support.post("devices/d002/decommission", url.Values{}), http.StatusForbidden, "CSRF")
	wantPage(t, support.post("devices/d002/decommission", url.Values{"csrf": {"guess"}}), http.StatusForbidden, "CSRF")
	r := support.post("devices/d002/decommission", url.Values{"csrf": {c.csrf(t)}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/devices/d002" {
		t.Fatalf("decommission: %d %v %s", r.status, r.header, r.body)
	}
	d, err := s.db.FindDevice(context.Background(), "d002")
	if err != nil || d.Status != fleet.StatusDecommissioned {
		t.Fatalf("device after decommission: %+v %v", d, err)
	}
	wantPage(t, support.get("devices/d002"), http.StatusOK, `href="/devices/d002/readmit"`)
	// The token is taken from the X-CSRF-Token header too (htmx sends it so).
	if r := support.do(http.MethodPost, "devices/d002/readmit", url.Values{}, map[string]string{"X-CSRF-Token": c.csrf(t)}); r.status != http.StatusSeeOther {
		t.Fatalf("readmit with the token in the header: %d %s", r.status, r.body)
	}
	if r := support.post("devices/d002/decommission", url.Values{"csrf": {c.csrf(t)}}); r.status != http.StatusSeeOther {
		t.Fatalf("decommission again: %d %s", r.status, r.body)
	}
	// Accepting a decommissioned device needs readmit: the refusal is a page that says why.
	if r := support.post("devices/d002/accept", url.Values{"csrf": {c.csrf(t)}}); r.status < 400 || !strings.Contains(r.body, "Not done") {
		t.Errorf("accept a decommissioned device: %d %s", r.status, r.body)
	}
	recs := auditRecords(t, s)
	found := false
	for _, rec := range recs {
		if rec.Action == "device.decommission" && rec.Target == "d002" && rec.Actor == "sue" && rec.Outcome == http.StatusSeeOther {
			found = true
		}
	}
	if !found {
		t.Errorf("no audit record of the decommission in %+v", recs)
	}
}
