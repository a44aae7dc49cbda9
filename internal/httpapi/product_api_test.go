package httpapi_test

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/product"
	"upkeep.dev/upkeep/internal/transparency"
	"upkeep.dev/upkeep/wire"
)

// TestSetPolicyResignsInBackground checks that a policy change answers at once and that the
// product's devices then get director views carrying the new end-of-support date; and that the
// body changes only the fields it holds, refusing what the declaration schema would refuse.
func TestSetPolicyResignsInBackground(t *testing.T) {
	s := newStack(t)
	tr := &transparency.Service{Products: s.db, Releases: s.db, Devices: s.db, KeysDir: t.TempDir(), PublicURL: "https://labels.example.com", Logger: quietLogger()}
	s.api.Transparency = tr
	products := &product.Service{Store: s.db, Devices: s.db, Check: tr.CheckPolicy, Resign: s.director.Resign, Logger: quietLogger()}
	s.api.Products = products
	s.director.Notice = products.Notice
	srv := s.serve()
	var ids []string
	for range 5 {
		d, _ := s.enrolled(srv)
		ids = append(ids, d.id)
	}
	put := func(body string) reply {
		return call(t, srv, http.MethodPut, "/api/v1/products/"+testProduct+"/policy", []byte(body), bearer(s.admin))
	}
	// A new product's first policy must state its end of support, and the answer says so.
	if r := put(`{"gate_severity":"high"}`); r.status != http.StatusBadRequest || !strings.Contains(string(r.body), "--support-end") {
		t.Errorf("first policy without an end of support: %d %s, want 400 naming --support-end", r.status, r.body)
	}
	if r := put(`{"support_end":"2031-12-31","vdp_url":"https://example.com/vdp","notification":["app"]}`); r.status != http.StatusOK {
		t.Fatalf("set policy: %d %s", r.status, r.body)
	}
	waitViews := func(end string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for _, id := range ids {
			for {
				v, err := s.db.FindDirectorView(context.Background(), id, 0)
				if err == nil && bytes.Contains(v.Targets, []byte(end)) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("device %s has no director view with the end %s: %v", id, end, err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	waitViews("2031-12-31")

	// Only the end changes; the rest is kept.
	if r := put(`{"support_end":"2032-06-30"}`); r.status != http.StatusOK {
		t.Fatalf("extend: %d %s", r.status, r.body)
	}
	waitViews("2032-06-30")
	for _, bad := range []string{`{"vdp_url":"security.example.com"}`, `{"notification":["app",""]}`, `{"support_end":"2030-01-01"}`, `{"colour":"red"}`} {
		if r := put(bad); r.status != http.StatusBadRequest {
			t.Errorf("set %s: %d %s, want 400", bad, r.status, r.body)
		}
	}
	r := call(t, srv, http.MethodGet, "/api/v1/products", nil, bearer(s.admin))
	ps := decodeJSON[[]wire.Product](t, r.body)
	if len(ps) != 1 {
		t.Fatalf("products %s", r.body)
	}
	pol, _ := product.ParsePolicy(ps[0].Policy)
	if pol.SupportEnd != "2032-06-30" || pol.VDPURL != "https://example.com/vdp" || len(pol.Notification) != 1 || pol.Delivery != product.DeliveryAutomatic || !pol.SecuritySeparate {
		t.Errorf("stored policy after the partial changes: %+v", pol)
	}
}
