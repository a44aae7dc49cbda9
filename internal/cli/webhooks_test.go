package cli

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/bench"
	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/sim"
	"upkeep.dev/upkeep/internal/store/storetest"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/wire"
)

// hookReceiver is a webhook receiver on 127.0.0.1:0 that checks every delivery as a receiver
// following the Standard Webhooks and CloudEvents specifications would (written from them, not
// from internal/webhook) and keeps the events by type and by webhook-id.
type hookReceiver struct {
	*httptest.Server
	t      *testing.T
	mu     sync.Mutex
	secret string
	byType map[string][]map[string]any
	byID   map[string]int
	// hold, if set, runs before each delivery is taken; false drops it unrecorded (the
	// receiver did not finish with it, as when its answer cannot reach the sender).
	hold func() bool
}

func newHookReceiver(t *testing.T) *hookReceiver {
	h := &hookReceiver{t: t, byType: map[string][]map[string]any{}, byID: map[string]int{}}
	h.Server = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.Close)
	return h
}

func (h *hookReceiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	h.mu.Lock()
	secret, hold := h.secret, h.hold
	h.mu.Unlock()
	if err := checkStandardWebhook(secret, r.Header, body, time.Now(), 5*time.Minute); err != nil {
		h.t.Errorf("delivery %s: %v", r.Header.Get("webhook-id"), err)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var ce map[string]any
	if err := json.Unmarshal(body, &ce); err != nil {
		h.t.Errorf("delivery body: %v", err)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/cloudevents+json" {
		h.t.Errorf("content type %q", ct)
	}
	for _, k := range []string{"specversion", "id", "source", "type", "time", "subject", "datacontenttype"} {
		if s, _ := ce[k].(string); s == "" {
			h.t.Errorf("CloudEvent attribute %s missing in %s", k, body)
		}
	}
	if ce["specversion"] != "1.0" || ce["id"] != r.Header.Get("webhook-id") || ce["data"] == nil {
		h.t.Errorf("CloudEvent %s (webhook-id %s)", body, r.Header.Get("webhook-id"))
	}
	if s, _ := ce["time"].(string); s != "" {
		if _, err := time.Parse(time.RFC3339, s); err != nil {
			h.t.Errorf("CloudEvent time %q", s)
		}
	}
	if hold != nil && !hold() {
		return
	}
	h.mu.Lock()
	typ, _ := ce["type"].(string)
	h.byType[typ] = append(h.byType[typ], ce)
	h.byID[r.Header.Get("webhook-id")]++
	h.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// checkStandardWebhook is the Standard Webhooks receiver's check: whsec_ base64 secret, HMAC-
// SHA256 over "id.timestamp.body", any of the space-separated v1 signatures, timestamp within
// tolerance.
func checkStandardWebhook(secret string, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil || len(key) == 0 {
		return fmt.Errorf("secret %q", secret)
	}
	ts, err := strconv.ParseInt(h.Get("webhook-timestamp"), 10, 64)
	if err != nil {
		return fmt.Errorf("timestamp %q", h.Get("webhook-timestamp"))
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("timestamp outside the tolerance")
	}
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%d.%s", h.Get("webhook-id"), ts, body)
	want := mac.Sum(nil)
	for _, s := range strings.Fields(h.Get("webhook-signature")) {
		if v, sig, ok := strings.Cut(s, ","); ok && v == "v1" {
			if got, err := base64.StdEncoding.DecodeString(sig); err == nil && hmac.Equal(got, want) {
				return nil
			}
		}
	}
	return fmt.Errorf("no valid signature in %q", h.Get("webhook-signature"))
}

func (h *hookReceiver) events(typ string) []map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]map[string]any(nil), h.byType[typ]...)
}

func (h *hookReceiver) waitType(typ string, within time.Duration) map[string]any {
	h.t.Helper()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if es := h.events(typ); len(es) > 0 {
			return es[0]
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.t.Fatalf("no %s event within %s; got %v", typ, within, keys(h.byType))
	return nil
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestWebhookEvents runs the operator's commands against a real server and a real receiver:
// `webhooks create` (a private address is refused without --allow-private), `list`, `test`,
// and then campaigns started, paused (by the engine), cancelled and completed, devices that
// fail and roll back a bad release, and an advisory that newly affects the release the fleet
// runs each reach the receiver as a signed CloudEvent; `webhooks deliveries` lists them
// delivered.
func TestWebhookEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("runs simulated devices through two campaigns")
	}
	e := newEnvWith(t, func(c *server.Config) {
		c.PollSeconds, c.RolloutEvery = 1, 200*time.Millisecond
		c.Webhooks.RetryBase = 100 * time.Millisecond
	})
	ctx := context.Background()
	g := []string{"--server", e.srv.URL, "--token", e.srv.AdminToken}
	rcv := newHookReceiver(t)

	if err := runCLI(append(g, "webhooks", "create", "--url", rcv.URL+"/hook", "--allow-http")...); err == nil || !strings.Contains(userMessage(err), "--allow-private") {
		t.Fatalf("create to 127.0.0.1 without --allow-private: %v", err)
	}
	out := cli(t, append(g, "webhooks", "create", "--url", rcv.URL+"/hook", "--allow-private", "--allow-http", "--description", "ops")...)
	secret, _, _ := strings.Cut(out, "\n") // the secret alone on the first line; what it is on stderr
	if !strings.HasPrefix(secret, "whsec_") {
		t.Fatalf("create printed %q, want the secret", secret)
	}
	rcv.mu.Lock()
	rcv.secret = secret
	rcv.mu.Unlock()
	hooks, err := e.cli.Webhooks(ctx)
	if err != nil || len(hooks) != 1 || hooks[0].Secret != "" || !hooks[0].AllowPrivate {
		t.Fatalf("webhooks %+v, %v", hooks, err)
	}
	if out := cli(t, append(g, "webhooks", "list")...); !strings.Contains(out, hooks[0].ID) || !strings.Contains(out, "private,http") || strings.Contains(out, "whsec_") {
		t.Fatalf("webhooks list: %s", out)
	}
	if out := cli(t, append(g, "webhooks", "test", hooks[0].ID)...); !strings.Contains(out, "ping evt_") {
		t.Fatalf("webhooks test: %s", out)
	}
	rcv.waitType("dev.upkeep.webhook.ping", 20*time.Second)

	// The fleet runs 1.0.0, whose SBOM links golang.org/x/crypto v0.16.0.
	r100 := e.publishSBOM("1.0.0", 1, writeFile(t, t.TempDir(), "thermostat-1.0.0.cdx.json", firmwareSBOM))
	bad := e.publish("1.1.0", 2, image("1.1.0", 16<<10))
	f := e.simFleet(6, r100, func(o *sim.FleetOptions) {
		o.Fail = func(i int, target string) string {
			if target != bad.Target {
				return ""
			}
			if i%2 == 0 {
				return "boot"
			}
			return "health"
		}
	})
	f.Start(ctx)

	camp, err := e.cli.CreateRollout(ctx, wire.CampaignSpec{Release: "thermostat@1.1.0", Target: "product=thermostat", Waves: "100%", HealthGate: "0s", Start: true})
	if err != nil {
		t.Fatal(err)
	}
	started := rcv.waitType("dev.upkeep.campaign.started", 20*time.Second)
	if started["subject"] != "campaign/"+camp.ID {
		t.Errorf("started: %v", started)
	}
	paused := rcv.waitType("dev.upkeep.campaign.paused", 60*time.Second)
	if d, _ := paused["data"].(map[string]any); d["actor"] != "engine" || d["reason"] == "" || d["release"] != "thermostat@1.1.0" {
		t.Errorf("paused: %v", paused)
	}
	failed := rcv.waitType("dev.upkeep.device.failed", 20*time.Second)
	if d, _ := failed["data"].(map[string]any); d["target"] != bad.Target || !strings.HasPrefix(failed["subject"].(string), "device/") {
		t.Errorf("device failed: %v", failed)
	}
	rolled := rcv.waitType("dev.upkeep.device.rolled_back", 20*time.Second)
	if d, _ := rolled["data"].(map[string]any); d["target"] != bad.Target || d["step"] != "rollback" {
		t.Errorf("device rolled back: %v", rolled)
	}
	if _, err := e.cli.RolloutAction(ctx, camp.ID, "cancel"); err != nil {
		t.Fatal(err)
	}
	rcv.waitType("dev.upkeep.campaign.cancelled", 20*time.Second)

	good := e.publish("1.2.0", 3, image("1.2.0", 16<<10))
	camp2, err := e.cli.CreateRollout(ctx, wire.CampaignSpec{Release: "thermostat@" + good.Version, Target: "product=thermostat", Waves: "100%", HealthGate: "0s", Start: true})
	if err != nil {
		t.Fatal(err)
	}
	done := rcv.waitType("dev.upkeep.campaign.completed", 90*time.Second)
	if done["subject"] != "campaign/"+camp2.ID {
		t.Errorf("completed: %v", done)
	}
	f.Stop()

	// Devices still on 1.0.0? None: all moved to 1.2.0. A new device on 1.0.0 makes the
	// advisory an exposure of a deployed release.
	e.device("SN-OLD", image("1.0.0", 4<<10), r100)
	if _, err := e.cli.ImportAdvisories(ctx, filepath.Join(osvFixtures, "GO-2023-2402.json")); err != nil {
		t.Fatal(err)
	}
	exposed := rcv.waitType("dev.upkeep.exposure.new", 20*time.Second)
	if d, _ := exposed["data"].(map[string]any); d["product"] != testProduct || d["release"] != "1.0.0" || d["devices"] != float64(1) {
		t.Errorf("exposure: %v", exposed)
	}
	// Importing it again is no new exposure.
	if _, err := e.cli.ImportAdvisories(ctx, filepath.Join(osvFixtures, "GO-2023-2402.json")); err != nil {
		t.Fatal(err)
	}

	out = cli(t, append(g, "webhooks", "deliveries", "--state", "delivered", "--limit", "1000")...)
	for _, typ := range []string{"webhook.ping", "campaign.started", "campaign.paused", "campaign.cancelled", "campaign.completed", "device.failed", "device.rolled_back", "exposure.new"} {
		if !strings.Contains(out, "dev.upkeep."+typ) {
			t.Errorf("deliveries list has no delivered %s:\n%s", typ, out)
		}
	}
	time.Sleep(500 * time.Millisecond)
	if n := len(rcv.events("dev.upkeep.exposure.new")); n != 1 {
		t.Errorf("%d exposure events, want 1 (the second import changed nothing)", n)
	}
	if err := runCLI(append(g, "webhooks", "delete", hooks[0].ID)...); err != nil {
		t.Fatal(err)
	}
	if hs, _ := e.cli.Webhooks(ctx); len(hs) != 0 {
		t.Fatalf("after delete: %+v", hs)
	}
}

// TestWebhooksSurviveKill queues events on a real `upkeep serve` process, kills it with
// SIGKILL while a delivery is in flight, and checks that every event reaches the receiver at
// least once (the receiver dedupes by webhook-id) and ends marked delivered: on SQLite the
// server is started again on the same data; on PostgreSQL a second replica, running all along,
// takes the delivery lease over.
func TestWebhooksSurviveKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs server processes")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "upkeep")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/upkeep").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	t.Run("sqlite", func(t *testing.T) { webhooksSurviveKill(t, bin, nil) })
	t.Run("postgres", func(t *testing.T) { webhooksSurviveKill(t, bin, []string{"--db", storetest.PostgresDSN(t)}) })
}

func webhooksSurviveKill(t *testing.T, bin string, db []string) {
	ctx := context.Background()
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	if _, err := tuf.InitKeySet(keys, 1, 1, tuf.DefaultLifetimes(), time.Now()); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--webhook-timeout", "2s", "--webhook-retry-base", "200ms"}, db...)
	data := filepath.Join(dir, "data")
	p1, err := bench.StartServerProcess(ctx, bin, data, keys, filepath.Join(dir, "server-1.log"), args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p1.Stop)
	rcv := newHookReceiver(t)
	inflight := make(chan struct{}, 1)
	release := make(chan struct{})
	var once sync.Once
	rcv.hold = func() bool {
		first := false
		once.Do(func() {
			first = true
			inflight <- struct{}{}
			<-release // the first delivery hangs until its server is killed
		})
		return !first // and its answer reaches no one: it must be sent again
	}
	c := &client.Client{Base: p1.URL, Token: p1.Token}
	h, err := c.CreateWebhook(ctx, wire.WebhookRequest{URL: rcv.URL, AllowPrivate: true, AllowHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	rcv.mu.Lock()
	rcv.secret = h.Secret
	rcv.mu.Unlock()
	var p2 *bench.ServerProcess
	if db != nil { // a second replica on the same database, waiting for the lease
		if p2, err = bench.StartServerProcess(ctx, bin, data, keys, filepath.Join(dir, "server-2.log"), args...); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p2.Stop)
	}
	const events = 20
	var ids []string
	for range events {
		id, err := c.TestWebhook(ctx, h.ID)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	select {
	case <-inflight:
	case <-time.After(30 * time.Second):
		t.Fatal("no delivery started")
	}
	if err := p1.Process().Kill(); err != nil {
		t.Fatal(err)
	}
	p1.Process().Wait() //nolint:errcheck // killed
	close(release)

	if p2 == nil {
		if p2, err = bench.StartServerProcess(ctx, bin, data, keys, filepath.Join(dir, "server-2.log"), args...); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p2.Stop)
	}
	missing := func() []string {
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		var out []string
		for _, id := range ids {
			if rcv.byID[id] == 0 {
				out = append(out, id)
			}
		}
		return out
	}
	deadline := time.Now().Add(90 * time.Second)
	for len(missing()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events never arrived after the kill: %v", len(missing()), events, missing())
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Every delivery ends marked delivered (the answer to the first is recorded by the
	// second server, which sent it again once the dead server's claim lapsed).
	c2 := &client.Client{Base: p2.URL, Token: p1.Token}
	for {
		ds, err := c2.WebhookDeliveries(ctx, h.ID, "delivered", 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == events {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries marked delivered, want %d", len(ds), events)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
