package server_test

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
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/event"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/webhook"
)

// TestWebhookWarnings: a product whose support ends within its warning period and offline
// metadata that expires within 30 days reach a real receiver as signed CloudEvents
// (dev.upkeep.product.support_ending, dev.upkeep.metadata.expiring), delivered by the server's
// own job; a second run of the warnings the same day (another replica, a restart) queues
// nothing new.
func TestWebhookWarnings(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	lt := tuf.DefaultLifetimes()
	lt.Root = 10 * 24 * time.Hour // the image and director roots expire within the warning
	if _, err := tuf.InitKeySet(keys, 1, 1, lt, time.Now()); err != nil {
		t.Fatal(err)
	}
	cfg := server.DefaultConfig()
	cfg.Addr, cfg.DataDir, cfg.KeysDir = "127.0.0.1:0", filepath.Join(dir, "data"), keys
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := server.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	var mu sync.Mutex
	got := map[string][]byte{} // event type -> body
	ids := map[string]int{}
	var secret string
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if err := verify(secret, r.Header, body); err != nil {
			t.Errorf("delivery: %v", err)
		}
		var ce struct{ Type string }
		json.Unmarshal(body, &ce)
		got[ce.Type] = body
		ids[r.Header.Get("webhook-id")]++
	}))
	defer rcv.Close()
	mu.Lock()
	_, secret, err = s.Webhooks.Create(ctx, webhook.Spec{URL: rcv.URL, AllowPrivate: true, AllowHTTP: true}, "admin")
	mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	end := time.Now().AddDate(0, 0, 20).Format(time.DateOnly)
	if _, err := s.Products.SetPolicy(ctx, "thermostat", []byte(`{"support_end":"`+end+`"}`), "admin"); err != nil {
		t.Fatal(err)
	}
	s.Warn(ctx, map[string]time.Time{})
	s.Warn(ctx, map[string]time.Time{}) // another replica's warnings, the same day
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("events received: %v", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	var eos struct {
		Subject string
		Data    struct {
			Product    string
			SupportEnd string `json:"support_end"`
		}
	}
	json.Unmarshal(got[event.SupportEnding], &eos)
	if eos.Subject != "product/thermostat" || eos.Data.SupportEnd != end {
		t.Errorf("support ending event %s", got[event.SupportEnding])
	}
	var exp struct {
		Subject string
		Data    struct{ Repo, Role, Command string }
	}
	json.Unmarshal(got[event.MetadataExpiring], &exp)
	if exp.Data.Role != "root" || !strings.HasPrefix(exp.Subject, "metadata/") || exp.Data.Command == "" {
		t.Errorf("metadata expiring event %s", got[event.MetadataExpiring])
	}
	// Two roots (image, director) and one product: three events, each delivered once.
	if len(ids) != 3 {
		t.Errorf("%d distinct events delivered, want 3 (image root, director root, product): %v", len(ids), ids)
	}
	for id, n := range ids {
		if n != 1 {
			t.Errorf("event %s delivered %d times", id, n)
		}
	}
}

// verify is the Standard Webhooks check, as a receiver writes it from the specification.
func verify(secret string, h http.Header, body []byte) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return err
	}
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%s.%s", h.Get("webhook-id"), h.Get("webhook-timestamp"), body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, s := range strings.Fields(h.Get("webhook-signature")) {
		if hmac.Equal([]byte(s), []byte(want)) {
			return nil
		}
	}
	return fmt.Errorf("no valid signature")
}
