package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/ddi"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/wire"
)

// ddiDo sends one DDI request and returns its status and Retry-After.
func ddiDo(t *testing.T, method, url, auth string, body []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body) //nolint:errcheck
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// TestDDIFloodsDoNotLockOut: one DDI device that sends hundreds of feedback bodies a byte at a
// time, then floods feedback as fast as it can, takes neither another DDI device's place nor an
// agent's: both are served within a second while it does. The slow bodies are cut off with 408
// at the body deadline; the flood gets 429 with Retry-After past the device's write allowance
// (the reports' rate), and the events it left are pruned to MaxDeviceEvents. Gateway
// registration is held to the address's rate and to MaxPending.
func TestDDIFloodsDoNotLockOut(t *testing.T) {
	if testing.Short() {
		t.Skip("hundreds of connections")
	}
	e := newEnvWith(t, func(c *server.Config) {
		c.PollSeconds, c.RolloutEvery = 1, 200*time.Millisecond
		c.BodyTimeout = 3 * time.Second
		c.ReportsPerMinute, c.MaxDeviceEvents, c.HousekeepingEvery = 10, 40, 50*time.Millisecond
		c.EnrollPerMinute, c.MaxPending = 1000, 5
		c.DDI.MaxInFlight = 64 // fewer than the slow bodies: they must not hold places
		c.DDI.GatewayToken, c.DDI.Product, c.DDI.HardwareID = "gw-secret", testProduct, testHardware
	})
	ctx := context.Background()
	swu := filepath.Join(t.TempDir(), "bundle-2.0.0.swu")
	os.WriteFile(swu, image("2.0.0", 4<<10), 0o644)
	rel := e.publishSWU("2.0.0", 1, swu)
	flood, good := "TargetToken "+e.ddiDevice("flood"), "TargetToken "+e.ddiDevice("good")
	agentRel := e.publish("1.0.0", 1, image("1.0.0", 64))
	agent := e.device("agent", image("1.0.0", 64), agentRel)
	if err := agent.Agent.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	c := newDDIClient(t, e.srv.URL)
	e.campaignFor(rel, wire.CampaignSpec{Devices: []string{"flood"}, Mode: "forced"})
	c.waitLink("flood", flood, "deploymentBase")
	act := e.lastAction("flood")
	fbURL := fmt.Sprintf("%s/DEFAULT/controller/v1/flood/deploymentBase/%d/feedback", e.srv.URL, act.ID)
	goodBase := e.srv.URL + "/DEFAULT/controller/v1/good"

	// The others are served while the flood runs: a DDI poll and configData, an agent's cycle.
	served := func(when string) {
		t.Helper()
		start := time.Now()
		if st, _ := ddiDo(t, "GET", goodBase, good, nil); st != 200 {
			t.Errorf("%s: the other DDI device's poll: %d", when, st)
		}
		if st, _ := ddiDo(t, "PUT", goodBase+"/configData", good, []byte(`{"data":{"n":"`+strconv.Itoa(int(start.UnixNano()%1000))+`"}}`)); st != 200 {
			t.Errorf("%s: the other DDI device's configData: %d", when, st)
		}
		if err := agent.Agent.Cycle(ctx); err != nil {
			t.Errorf("%s: the agent's cycle: %v", when, err)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("%s: the others took %s, want under 1s", when, took)
		}
	}

	// Slow bodies.
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	stop := make(chan struct{})
	var answers []<-chan string
	for range 200 {
		answers = append(answers, slowBody(t, addr, strings.TrimPrefix(fbURL, e.srv.URL), flood, 1000, 300*time.Millisecond, stop))
	}
	time.Sleep(500 * time.Millisecond)
	served("slow bodies")
	timeout := time.After(10 * time.Second)
	var cut int
	for _, a := range answers {
		select {
		case s := <-a:
			if strings.Contains(s, "408") {
				cut++
			}
		case <-timeout:
			t.Fatal("slow DDI bodies still connected 10 s after they began (body deadline 3 s)")
		}
	}
	close(stop)
	if cut < len(answers)*9/10 {
		t.Errorf("%d of %d slow DDI bodies were answered 408", cut, len(answers))
	}

	// A feedback flood: the largest feedback allowed, as fast as four connections go.
	details := make([]string, 256)
	for i := range details {
		details[i] = strings.Repeat("y", 400)
	}
	body, _ := json.Marshal(feedback("proceeding", "none", details...))
	var ok, limited atomic.Int32
	var badRetry atomic.Value
	var wg sync.WaitGroup
	deadline := time.Now().Add(2 * time.Second)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				switch st, ra := ddiDo(t, "POST", fbURL, flood, body); st {
				case 200:
					ok.Add(1)
				case 429:
					limited.Add(1)
					if n, err := strconv.Atoi(ra); err != nil || n < 1 || n > 60 {
						badRetry.Store(ra)
					}
				}
			}
		}()
	}
	time.Sleep(time.Second)
	served("feedback flood")
	wg.Wait()
	if ra := badRetry.Load(); ra != nil {
		t.Errorf("429 with Retry-After %q, want 1-60 s", ra)
	}
	if n := ok.Load(); n > 12 || limited.Load() == 0 {
		t.Errorf("feedback flood: %d stored, %d refused with 429; want at most the allowance (10) stored", n, limited.Load())
	}
	// The events the flood left are pruned to MaxDeviceEvents.
	events := func() int {
		var n int
		if err := e.srv.DB.SQL().QueryRow(`SELECT COUNT(*) FROM device_events WHERE device_id = 'flood'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for end := time.Now().Add(5 * time.Second); events() > 40; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%d events of the flooding device, want at most 40", events())
		}
	}

	// Gateway registration: MaxPending (5) controllers at most await approval.
	gw := "GatewayToken gw-secret"
	var refused int
	for i := range 8 {
		st, ra := ddiDo(t, "GET", fmt.Sprintf("%s/DEFAULT/controller/v1/gw-%d", e.srv.URL, i), gw, nil)
		if st == 429 && ra != "" {
			refused++
		} else if st != 200 {
			t.Fatalf("registration %d: %d", i, st)
		}
	}
	if refused != 3 {
		t.Errorf("%d of 8 gateway registrations refused with MaxPending 5, want 3", refused)
	}
}

// TestDDIRegistrationRate: one address registers at most RegisterPerMinute controllers a minute
// with the gateway token (the enrolments' rate); past it 429 with Retry-After, and controllers
// already registered still poll.
func TestDDIRegistrationRate(t *testing.T) {
	e := newEnvWith(t, func(c *server.Config) {
		c.EnrollPerMinute = 3
		c.DDI.GatewayToken, c.DDI.Product, c.DDI.HardwareID = "gw-secret", testProduct, testHardware
	})
	gw := "GatewayToken gw-secret"
	for i := range 3 {
		if st, _ := ddiDo(t, "GET", fmt.Sprintf("%s/DEFAULT/controller/v1/r-%d", e.srv.URL, i), gw, nil); st != 200 {
			t.Fatalf("registration %d: %d", i, st)
		}
	}
	if st, ra := ddiDo(t, "GET", e.srv.URL+"/DEFAULT/controller/v1/r-3", gw, nil); st != 429 || ra == "" {
		t.Fatalf("4th registration in a minute: %d, Retry-After %q; want 429 with one", st, ra)
	}
	if st, _ := ddiDo(t, "GET", e.srv.URL+"/DEFAULT/controller/v1/r-0", gw, nil); st != 200 {
		t.Fatalf("a registered controller's poll: %d", st)
	}
}

// TestDDITokenRotationAndRevocation: `devices ddi-token ID --rotate` issues a new target token
// and the old one stops working at once on the replica that rotated and within a second on
// another (which caches DDI answers for a minute here: the revocation generation, not the cache
// time, bounds it); a rejected or decommissioned device's token stops working likewise.
func TestDDITokenRotationAndRevocation(t *testing.T) {
	e := newEnvWith(t, func(c *server.Config) { c.DDI.CacheFor = time.Minute })
	cfg := e.srv.Config
	b, err := server.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	ctx := context.Background()
	old := e.ddiDevice("rot-1")
	poll := func(base, id, tok string) int {
		st, _ := ddiDo(t, "GET", base+"/DEFAULT/controller/v1/"+id, "TargetToken "+tok, nil)
		return st
	}
	for _, base := range []string{e.srv.URL, b.URL} {
		if st := poll(base, "rot-1", old); st != 200 {
			t.Fatalf("poll before rotation: %d", st)
		}
	}
	if got := strings.TrimSpace(cli(t, "--server", e.srv.URL, "--token", e.srv.AdminToken, "devices", "ddi-token", "rot-1")); got != old {
		t.Fatalf("ddi-token printed %q, want the current token", got)
	}
	out := cli(t, "--server", e.srv.URL, "--token", e.srv.AdminToken, "devices", "ddi-token", "rot-1", "--rotate")
	nu := strings.TrimSpace(strings.SplitN(out, "\n", 2)[0])
	if nu == old || len(nu) != 40 {
		t.Fatalf("rotated token %q (old %q)", nu, old)
	}
	if st := poll(e.srv.URL, "rot-1", old); st != 401 {
		t.Fatalf("old token on the replica that rotated: %d, want 401", st)
	}
	waitStatus := func(what, base, id, tok string, want int) {
		t.Helper()
		end := time.Now().Add(time.Second)
		for {
			st := poll(base, id, tok)
			if st == want {
				return
			}
			if time.Now().After(end) {
				t.Fatalf("%s: %d a second on, want %d", what, st, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitStatus("old token on the other replica", b.URL, "rot-1", old, 401)
	for _, base := range []string{e.srv.URL, b.URL} {
		if st := poll(base, "rot-1", nu); st != 200 {
			t.Fatalf("new token: %d", st)
		}
	}

	// Decommission (accepted) and reject (pending, registered with the gateway token's help:
	// here created pending through the store's status) stop the token on both replicas.
	tok2 := e.ddiDevice("rot-2")
	for _, base := range []string{e.srv.URL, b.URL} {
		if st := poll(base, "rot-2", tok2); st != 200 {
			t.Fatalf("rot-2 poll: %d", st)
		}
	}
	cli(t, "--server", e.srv.URL, "--token", e.srv.AdminToken, "devices", "decommission", "rot-2")
	waitStatus("decommissioned device's token", e.srv.URL, "rot-2", tok2, 401)
	waitStatus("decommissioned device's token on the other replica", b.URL, "rot-2", tok2, 401)

	e2 := newEnvWith(t, func(c *server.Config) {
		c.DDI.GatewayToken, c.DDI.Product, c.DDI.HardwareID, c.DDI.CacheFor = "gw", testProduct, testHardware, time.Minute
	})
	if st, _ := ddiDo(t, "GET", e2.srv.URL+"/DEFAULT/controller/v1/pend-1", "GatewayToken gw", nil); st != 200 {
		t.Fatalf("registration: %d", st)
	}
	tok3 := strings.TrimSpace(cli(t, "--server", e2.srv.URL, "--token", e2.srv.AdminToken, "devices", "ddi-token", "pend-1"))
	if st := poll(e2.srv.URL, "pend-1", tok3); st != 200 {
		t.Fatalf("pending device's target token: %d", st)
	}
	if err := e2.cli.Reject(ctx, "pend-1"); err != nil {
		t.Fatal(err)
	}
	waitStatus("rejected device's token", e2.srv.URL, "pend-1", tok3, 401)
	// A device created again under a removed one's id does not get the removed one's token.
	if _, err := e.srv.DB.SQL().Exec(`DELETE FROM devices WHERE id = 'rot-1'`); err != nil {
		t.Fatal(err)
	}
	again := e.ddiDevice("rot-1")
	if again == nu || again == old {
		t.Fatal("a device created again under a removed one's id got a token the removed one had")
	}
}

// TestDDIActionsRetention: the housekeeping job keeps a device's DDI actions bounded: those of
// removed devices go, and of each device at most ddi.MaxActionsKept beyond its open one and its
// last installed one.
func TestDDIActionsRetention(t *testing.T) {
	e := newEnvWith(t, func(c *server.Config) { c.HousekeepingEvery = 50 * time.Millisecond })
	e.ddiDevice("ret-1")
	ctx := context.Background()
	now := time.Now()
	mk := func(dev, status, result string) *ddi.Action {
		a := &ddi.Action{DeviceID: dev, Target: "t", Status: status, Result: result, CreatedAt: now, UpdatedAt: now}
		if err := e.srv.DB.CreateAction(ctx, a); err != nil {
			t.Fatal(err)
		}
		return a
	}
	installed := mk("ret-1", ddi.ActionClosed, ddi.ResultSuccess)
	for range 150 {
		mk("ret-1", ddi.ActionClosed, ddi.ResultCanceled)
	}
	open := mk("ret-1", ddi.ActionOpen, "")
	for range 20 {
		mk("gone-device", ddi.ActionClosed, ddi.ResultFailure)
	}
	count := func(dev string) int {
		var n int
		e.srv.DB.SQL().QueryRow(`SELECT COUNT(*) FROM ddi_actions WHERE device_id = $1`, dev).Scan(&n) //nolint:errcheck
		return n
	}
	for end := time.Now().Add(5 * time.Second); count("ret-1") > ddi.MaxActionsKept+1 || count("gone-device") > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%d actions of ret-1 (keep %d), %d of a removed device", count("ret-1"), ddi.MaxActionsKept, count("gone-device"))
		}
	}
	for _, a := range []*ddi.Action{installed, open} {
		if _, err := e.srv.DB.FindAction(ctx, "ret-1", a.ID); err != nil {
			t.Errorf("action %d (%s %s) pruned: %v", a.ID, a.Status, a.Result, err)
		}
	}
}
