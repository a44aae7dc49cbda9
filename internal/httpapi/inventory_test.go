package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/httpapi"
	"upkeep.dev/upkeep/wire"
)

// POST /device/v1/inventory replaces the device's attributes at once; an inventory over a
// limit is 413 and a bad key 400, each with a message and nothing changed; a device that sends
// too often gets 429 with Retry-After.
func TestInventoryRoute(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	d, tok := s.enrolled(srv)
	send := func(inv wire.Inventory) reply {
		b, _ := json.Marshal(inv)
		return call(t, srv, http.MethodPost, wire.PathInventory, b, bearer(tok))
	}
	r := send(wire.Inventory{Attributes: map[string][]string{"region": {"eu-west"}, "ipv4": {"10.0.0.2", "10.0.0.3"}}})
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"digest"`) {
		t.Fatalf("inventory: %d %s", r.status, r.body)
	}
	got, err := s.db.FindDevice(context.Background(), d.id)
	if err != nil {
		t.Fatal(err)
	}
	if got.Attributes["region"] != "eu-west" || got.Attributes["ipv4"] != "10.0.0.2\n10.0.0.3" {
		t.Errorf("stored attributes %q", got.Attributes)
	}
	r = send(wire.Inventory{Attributes: map[string][]string{"bad key": {"v"}}})
	if r.status != http.StatusBadRequest || !strings.Contains(string(r.body), "only letters") {
		t.Errorf("bad key: %d %s, want 400 naming the rule", r.status, r.body)
	}
	r = send(wire.Inventory{Attributes: map[string][]string{"region": {"eu-north"}}})
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" {
		t.Errorf("third inventory in a minute: %d %s, want 429 with Retry-After", r.status, r.body)
	}
	s.api.InventoryPerMinute = 60000
	time.Sleep(20 * time.Millisecond)
	many := map[string][]string{}
	for i := range 200 {
		many[fmt.Sprintf("k%d", i)] = []string{"v"}
	}
	r = send(wire.Inventory{Attributes: many})
	if r.status != http.StatusRequestEntityTooLarge || !strings.Contains(string(r.body), "at most 128") {
		t.Errorf("200 attributes: %d %s, want 413 naming the limit", r.status, r.body)
	}
	if got, _ := s.db.FindDevice(context.Background(), d.id); got.Attributes["region"] != "eu-west" {
		t.Errorf("a refused inventory changed the attributes: %q", got.Attributes)
	}
	_ = httpapi.DefaultInventoryPerMinute
}
