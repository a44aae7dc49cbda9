package webhook_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/event"
	"upkeep.dev/upkeep/internal/store/sqlite"
	"upkeep.dev/upkeep/internal/webhook"
)

var ctx = context.Background()

// VerifyStandardWebhook checks a delivery as a receiver following the Standard Webhooks
// specification would, written from the specification and not from the package's code: the
// secret is base64 after "whsec_"; the signed content is "id.timestamp.body"; the header holds
// space-separated "v1,<base64>" signatures, any of which may match; the timestamp must be
// within tolerance of now (replay protection).
func VerifyStandardWebhook(secret string, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return fmt.Errorf("secret: %w", err)
	}
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return fmt.Errorf("missing headers")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("timestamp %q", ts)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("timestamp %s outside the tolerance", ts)
	}
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%s.%s", id, ts, body)
	want := mac.Sum(nil)
	for _, s := range strings.Fields(sigs) {
		version, sig, ok := strings.Cut(s, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return fmt.Errorf("no valid signature")
}

// receiver is a real HTTP endpoint on 127.0.0.1:0 that records what it gets.
type receiver struct {
	*httptest.Server
	mu      sync.Mutex
	got     []delivered
	answer  func(n int) int // status for the n-th request (from 1)
	n       atomic.Int64
	headers []http.Header
}

type delivered struct {
	header http.Header
	body   []byte
}

func newReceiver(t testing.TB, answer func(n int) int) *receiver {
	r := &receiver{answer: answer}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		n := int(r.n.Add(1))
		r.mu.Lock()
		r.got = append(r.got, delivered{req.Header.Clone(), body})
		r.mu.Unlock()
		status := http.StatusNoContent
		if r.answer != nil {
			status = r.answer(n)
		}
		if status >= 300 && status < 400 {
			w.Header().Set("Location", "http://127.0.0.1:1/elsewhere")
		}
		w.WriteHeader(status)
		io.WriteString(w, strings.Repeat("x", 64<<10)) // more than MaxAnswer: read no further
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) deliveries() []delivered {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivered(nil), r.got...)
}

func newService(t testing.TB, cfg webhook.Config) *webhook.Service {
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "upkeep.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &webhook.Service{Store: db, Config: cfg, Source: "https://updates.example.com", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func create(t *testing.T, s *webhook.Service, spec webhook.Spec) (*webhook.Webhook, string) {
	t.Helper()
	w, secret, err := s.Create(ctx, spec, "admin")
	if err != nil {
		t.Fatal(err)
	}
	return w, secret
}

// deliverUntil runs Deliver until cond holds or the deadline passes.
func deliverUntil(t *testing.T, s *webhook.Service, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		if _, err := s.Deliver(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDeliverSignedCloudEvent: an emitted event reaches a real receiver once per subscribed
// webhook, as a CloudEvents 1.0 structured JSON body whose Standard Webhooks signature verifies
// with the secret shown at creation; a webhook not subscribed to the type gets nothing.
func TestDeliverSignedCloudEvent(t *testing.T) {
	s := newService(t, webhook.Config{})
	rcv := newReceiver(t, nil)
	other := newReceiver(t, nil)
	w, secret := create(t, s, webhook.Spec{URL: rcv.URL + "/hook?team=ops", AllowPrivate: true, AllowHTTP: true, Events: []string{event.CampaignPaused}})
	create(t, s, webhook.Spec{URL: other.URL, AllowPrivate: true, AllowHTTP: true, Events: []string{event.DeviceFailed}})
	if !strings.HasPrefix(secret, webhook.SecretPrefix) {
		t.Fatalf("secret %q", secret)
	}
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	s.Emit(ctx, event.Event{Type: event.CampaignPaused, Subject: "campaign/c1", Time: at, Data: map[string]string{"campaign": "c1", "reason": "too many failures"}})
	deliverUntil(t, s, func() bool { return len(rcv.deliveries()) == 1 })
	if n := len(other.deliveries()); n != 0 {
		t.Errorf("a webhook not subscribed to the type got %d deliveries", n)
	}
	d := rcv.deliveries()[0]
	if err := VerifyStandardWebhook(secret, d.header, d.body, time.Now(), 5*time.Minute); err != nil {
		t.Fatalf("signature: %v", err)
	}
	if err := VerifyStandardWebhook(webhook.FormatSecret([]byte("another key of thirty-two bytes!")), d.header, d.body, time.Now(), 5*time.Minute); err == nil {
		t.Fatal("a wrong secret verified")
	}
	tampered := append([]byte(nil), d.body...)
	tampered[len(tampered)-2] ^= 1
	if err := VerifyStandardWebhook(secret, d.header, tampered, time.Now(), 5*time.Minute); err == nil {
		t.Fatal("a changed body verified")
	}
	if err := VerifyStandardWebhook(secret, d.header, d.body, time.Now().Add(10*time.Minute), 5*time.Minute); err == nil {
		t.Fatal("a replay outside the tolerance verified")
	}
	if ct := d.header.Get("Content-Type"); ct != "application/cloudevents+json" {
		t.Errorf("content type %q", ct)
	}
	checkCloudEvent(t, d.body, d.header.Get("webhook-id"), event.CampaignPaused, "campaign/c1")
	var ce struct {
		Time time.Time         `json:"time"`
		Data map[string]string `json:"data"`
	}
	json.Unmarshal(d.body, &ce)
	if !ce.Time.Equal(at) || ce.Data["reason"] != "too many failures" {
		t.Errorf("time %s, data %v", ce.Time, ce.Data)
	}
	ds, err := s.Deliveries(ctx, webhook.DeliveryFilter{Webhook: w.ID})
	if err != nil || len(ds) != 1 || ds[0].State != webhook.StateDelivered || ds[0].Attempts != 1 || ds[0].LastStatus != http.StatusNoContent {
		t.Fatalf("deliveries = %+v, %v", ds, err)
	}
	// An event with a key is queued once per webhook, however often it is emitted.
	for range 3 {
		s.Emit(ctx, event.Event{Key: "k1", Type: event.CampaignPaused, Subject: "campaign/c2"})
	}
	deliverUntil(t, s, func() bool { return len(rcv.deliveries()) == 2 })
	s.Deliver(ctx)
	if n := len(rcv.deliveries()); n != 2 {
		t.Errorf("a keyed event emitted three times was delivered %d times", n-1)
	}
}

// checkCloudEvent checks the CloudEvents 1.0 required attributes and the ones Upkeep sets.
func checkCloudEvent(t *testing.T, body []byte, id, typ, subject string) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("body is not JSON: %v", err)
	}
	for _, k := range []string{"specversion", "id", "source", "type", "time", "datacontenttype"} {
		if s, _ := m[k].(string); s == "" {
			t.Errorf("CloudEvent attribute %s missing or not a string in %s", k, body)
		}
	}
	if m["specversion"] != "1.0" || m["id"] != id || m["type"] != typ || m["subject"] != subject || m["datacontenttype"] != "application/json" {
		t.Errorf("CloudEvent %s: want id %s, type %s, subject %s", body, id, typ, subject)
	}
	if _, err := time.Parse(time.RFC3339, m["time"].(string)); err != nil {
		t.Errorf("time: %v", err)
	}
	if _, ok := m["data"]; !ok {
		t.Error("no data")
	}
}

// TestRetriesUntilReceiverRecovers: a receiver that fails for a while (503, then a redirect,
// which is not followed) gets the event after retries with backoff; a receiver that never
// recovers ends failed after MaxAttempts.
func TestRetriesUntilReceiverRecovers(t *testing.T) {
	s := newService(t, webhook.Config{RetryBase: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond, MaxAttempts: 4})
	flaky := newReceiver(t, func(n int) int {
		switch {
		case n <= 2:
			return http.StatusServiceUnavailable
		case n == 3:
			return http.StatusFound
		}
		return http.StatusOK
	})
	down := newReceiver(t, func(int) int { return http.StatusInternalServerError })
	wf, secret := create(t, s, webhook.Spec{URL: flaky.URL, AllowPrivate: true, AllowHTTP: true})
	wd, _ := create(t, s, webhook.Spec{URL: down.URL, AllowPrivate: true, AllowHTTP: true})
	s.Emit(ctx, event.Event{Type: event.DeviceFailed, Subject: "device/d1", Data: map[string]string{"device": "d1"}})
	deliverUntil(t, s, func() bool {
		ds, _ := s.Deliveries(ctx, webhook.DeliveryFilter{State: webhook.StatePending})
		return len(ds) == 0
	})
	got := flaky.deliveries()
	if len(got) != 4 {
		t.Fatalf("flaky receiver got %d requests, want 4", len(got))
	}
	id := got[0].header.Get("webhook-id")
	for _, d := range got {
		if d.header.Get("webhook-id") != id {
			t.Error("the webhook-id changed between retries")
		}
		if err := VerifyStandardWebhook(secret, d.header, d.body, time.Now(), 5*time.Minute); err != nil {
			t.Error(err)
		}
	}
	ds, _ := s.Deliveries(ctx, webhook.DeliveryFilter{Webhook: wf.ID})
	if len(ds) != 1 || ds[0].State != webhook.StateDelivered || ds[0].Attempts != 4 || ds[0].LastStatus != 200 {
		t.Errorf("flaky delivery %+v", ds[0])
	}
	ds, _ = s.Deliveries(ctx, webhook.DeliveryFilter{Webhook: wd.ID})
	if len(ds) != 1 || ds[0].State != webhook.StateFailed || ds[0].Attempts != 4 || ds[0].LastStatus != 500 || len(down.deliveries()) != 4 {
		t.Errorf("down delivery %+v after %d requests; want failed after 4 attempts", ds[0], len(down.deliveries()))
	}
}

// TestBackoff: the wait doubles from the base up to the maximum, with jitter of ±50%.
func TestBackoff(t *testing.T) {
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 10: time.Minute} {
		for range 50 {
			got := webhook.Backoff(time.Second, time.Minute, n)
			if got < want/2 || got > want*3/2 {
				t.Fatalf("Backoff(n=%d) = %s, want within ±50%% of %s", n, got, want)
			}
		}
	}
}

// staticResolver answers every name with one address, as a DNS server an attacker controls
// might at creation time.
type staticResolver netip.Addr

func (r staticResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return []netip.Addr{netip.Addr(r)}, nil
}

// TestPrivateAddresses: a private or loopback address is refused at creation, literally or
// by name; with allow-private it is accepted. A name that resolved to a public address at
// creation and resolves to 127.0.0.1 when dialled (DNS rebinding; "localhost" here) is refused
// by the dialer on the address actually dialled: the receiver gets nothing.
func TestPrivateAddresses(t *testing.T) {
	s := newService(t, webhook.Config{RetryBase: time.Millisecond, MaxAttempts: 1})
	rcv := newReceiver(t, nil)
	port := rcv.URL[strings.LastIndex(rcv.URL, ":")+1:]
	for _, u := range []string{"https://127.0.0.1/x", "https://10.1.2.3/", "https://[::1]:8443/", "https://169.254.169.254/latest/meta-data",
		"https://[::ffff:192.168.1.1]/", "https://100.64.0.1/", "https://0.0.0.0/", "https://localhost:" + port + "/"} {
		_, _, err := s.Create(ctx, webhook.Spec{URL: u}, "admin")
		if apperr.CodeOf(err) != apperr.Invalid || !strings.Contains(err.Error(), "--allow-private") {
			t.Errorf("create %s: %v, want refused unless --allow-private", u, err)
		}
	}
	if _, _, err := s.Create(ctx, webhook.Spec{URL: "https://10.1.2.3/", AllowPrivate: true}, "admin"); err != nil {
		t.Errorf("allow-private: %v", err)
	}

	rebinding := &webhook.Service{Store: s.Store, Config: s.Config, Resolver: staticResolver(netip.MustParseAddr("93.184.216.34"))}
	w, _, err := rebinding.Create(ctx, webhook.Spec{URL: "http://localhost:" + port + "/hook", AllowHTTP: true}, "admin")
	if err != nil {
		t.Fatalf("create with a name that resolves to a public address: %v", err)
	}
	if _, err := rebinding.Test(ctx, w.ID, "admin"); err != nil {
		t.Fatal(err)
	}
	deliverUntil(t, rebinding, func() bool {
		ds, _ := rebinding.Deliveries(ctx, webhook.DeliveryFilter{Webhook: w.ID, State: webhook.StateFailed})
		return len(ds) == 1
	})
	ds, _ := rebinding.Deliveries(ctx, webhook.DeliveryFilter{Webhook: w.ID})
	if !strings.Contains(ds[0].LastError, "special address") || ds[0].LastStatus != 0 {
		t.Errorf("delivery %+v: want refused at dial", ds[0])
	}
	if n := len(rcv.deliveries()); n != 0 {
		t.Errorf("the receiver on 127.0.0.1 got %d requests", n)
	}
}

// TestTimeout: a receiver that does not answer within Timeout costs one attempt, not more.
func TestTimeout(t *testing.T) {
	s := newService(t, webhook.Config{Timeout: 200 * time.Millisecond, RetryBase: time.Hour})
	block := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
	t.Cleanup(func() { close(block); slow.Close() })
	w, _ := create(t, s, webhook.Spec{URL: slow.URL, AllowPrivate: true, AllowHTTP: true})
	if _, err := s.Test(ctx, w.ID, "admin"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := s.Deliver(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Deliver took %s with a 200ms timeout", d)
	}
	ds, _ := s.Deliveries(ctx, webhook.DeliveryFilter{Webhook: w.ID})
	if len(ds) != 1 || ds[0].State != webhook.StatePending || ds[0].Attempts != 1 || ds[0].LastError == "" {
		t.Fatalf("delivery %+v", ds[0])
	}
}

// TestSpecValidate: the URL and event rules of a webhook to create.
func TestSpecValidate(t *testing.T) {
	for _, c := range []struct {
		spec webhook.Spec
		ok   bool
	}{
		{webhook.Spec{URL: "https://hooks.example.com/upkeep"}, true},
		{webhook.Spec{URL: "https://93.184.216.34:8443/x?token=y"}, true},
		{webhook.Spec{URL: "http://hooks.example.com/"}, false},
		{webhook.Spec{URL: "http://hooks.example.com/", AllowHTTP: true}, true},
		{webhook.Spec{URL: "ftp://hooks.example.com/"}, false},
		{webhook.Spec{URL: "https://user:pw@hooks.example.com/"}, false},
		{webhook.Spec{URL: "https://hooks.example.com/#frag"}, false},
		{webhook.Spec{URL: "https:///path"}, false},
		{webhook.Spec{URL: "https://hooks.example.com:99999/"}, false},
		{webhook.Spec{URL: "https://[fe80::1%25eth0]/"}, false},
		{webhook.Spec{URL: "https://192.168.1.10/"}, false},
		{webhook.Spec{URL: "https://192.168.1.10/", AllowPrivate: true}, true},
		{webhook.Spec{URL: "https://hooks.example.com/", Events: []string{event.CampaignPaused}}, true},
		{webhook.Spec{URL: "https://hooks.example.com/", Events: []string{"dev.upkeep.nope"}}, false},
		{webhook.Spec{URL: "https://hooks.example.com/", Description: strings.Repeat("d", 257)}, false},
		{webhook.Spec{URL: "https://" + strings.Repeat("a", 2048) + ".com/"}, false},
	} {
		err := c.spec.Validate()
		if (err == nil) != c.ok {
			t.Errorf("Validate(%+v) = %v, want ok=%v", c.spec, err, c.ok)
		}
		if err != nil && apperr.CodeOf(err) != apperr.Invalid {
			t.Errorf("Validate(%+v): code %s, want invalid", c.spec, apperr.CodeOf(err))
		}
	}
}

// TestSpecial: the addresses a webhook may not reach without allow-private.
func TestSpecial(t *testing.T) {
	for a, want := range map[string]bool{
		"127.0.0.1": true, "10.0.0.1": true, "172.16.5.4": true, "192.168.0.1": true, "169.254.169.254": true, "0.0.0.0": true,
		"100.64.0.1": true, "224.0.0.1": true, "255.255.255.255": true, "198.18.0.1": true, "::1": true, "::": true, "fe80::1": true,
		"fc00::1": true, "fd12::1": true, "ff02::1": true, "::ffff:127.0.0.1": true, "::ffff:10.0.0.1": true, "64:ff9b::a00:1": true,
		"2001:db8::1": true, "2002:a00:1::": true,
		"93.184.216.34": false, "8.8.8.8": false, "2606:4700::1111": false, "::ffff:8.8.8.8": false,
	} {
		if got := webhook.Special(netip.MustParseAddr(a)); got != want {
			t.Errorf("Special(%s) = %v, want %v", a, got, want)
		}
	}
}

// TestPrune: the queue bound drops a webhook's oldest pending deliveries, and the retention
// removes finished ones, by the service's clock.
func TestPrune(t *testing.T) {
	now := time.Now()
	s := newService(t, webhook.Config{MaxQueue: 2, Retention: time.Hour})
	s.Now = func() time.Time { return now }
	rcv := newReceiver(t, nil)
	w, _ := create(t, s, webhook.Spec{URL: rcv.URL, AllowPrivate: true, AllowHTTP: true})
	if _, err := s.Test(ctx, w.ID, "admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Deliver(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		s.Emit(ctx, event.Event{Type: event.DeviceFailed, Subject: fmt.Sprintf("device/d%d", i)})
	}
	if err := s.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	count := func(state string) int {
		ds, err := s.Deliveries(ctx, webhook.DeliveryFilter{Webhook: w.ID, State: state})
		if err != nil {
			t.Fatal(err)
		}
		return len(ds)
	}
	if p, d, ok := count(webhook.StatePending), count(webhook.StateDropped), count(webhook.StateDelivered); p != 2 || d != 3 || ok != 1 {
		t.Fatalf("pending %d, dropped %d, delivered %d; want 2, 3, 1", p, d, ok)
	}
	now = now.Add(2 * time.Hour)
	if err := s.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	if p, d, ok := count(webhook.StatePending), count(webhook.StateDropped), count(webhook.StateDelivered); p != 2 || d != 0 || ok != 0 {
		t.Fatalf("after the retention: pending %d, dropped %d, delivered %d; want 2, 0, 0", p, d, ok)
	}
}
