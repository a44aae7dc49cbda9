package httpapi_test

import (
	"net/http"
	"strings"
	"testing"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/wire"
)

// TestWebhookRoutes: an admin creates a webhook and gets its secret once; listing never shows
// it; a bad URL, a private address without allow_private and unknown fields are 400; test and
// delete of an unknown webhook are 404; deliveries list the ping a test queued, and filter by
// state (an unknown state is 400).
func TestWebhookRoutes(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	adm := bearer(s.admin)
	wantError(t, call(t, srv, http.MethodPost, "/api/v1/webhooks", mustJSON(t, wire.WebhookRequest{URL: "http://hooks.example.com/"}), adm), http.StatusBadRequest, apperr.Invalid, "https")
	wantError(t, call(t, srv, http.MethodPost, "/api/v1/webhooks", mustJSON(t, wire.WebhookRequest{URL: "https://10.0.0.7/"}), adm), http.StatusBadRequest, apperr.Invalid, "--allow-private")
	wantError(t, call(t, srv, http.MethodPost, "/api/v1/webhooks", []byte(`{"url":"https://10.0.0.7/","secret":"mine"}`), adm), http.StatusBadRequest, apperr.Invalid, "unknown field")
	r := call(t, srv, http.MethodPost, "/api/v1/webhooks", mustJSON(t, wire.WebhookRequest{URL: "https://10.0.0.7/hook", AllowPrivate: true, Events: []string{"dev.upkeep.campaign.paused"}}), adm)
	if r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	h := decodeJSON[wire.Webhook](t, r.body)
	if !strings.HasPrefix(h.Secret, "whsec_") || h.ID == "" || !h.AllowPrivate || h.CreatedBy != "admin" {
		t.Fatalf("created %+v", h)
	}
	r = call(t, srv, http.MethodGet, "/api/v1/webhooks", nil, adm)
	if r.status != http.StatusOK || strings.Contains(string(r.body), "whsec_") || !strings.Contains(string(r.body), h.ID) {
		t.Fatalf("list: %d %s", r.status, r.body)
	}
	wantError(t, call(t, srv, http.MethodPost, "/api/v1/webhooks/wh_nope/test", nil, adm), http.StatusNotFound, apperr.NotFound, "")
	wantError(t, call(t, srv, http.MethodDelete, "/api/v1/webhooks/wh_nope", nil, adm), http.StatusNotFound, apperr.NotFound, "")
	if r := call(t, srv, http.MethodPost, "/api/v1/webhooks/"+h.ID+"/test", nil, adm); r.status != http.StatusAccepted {
		t.Fatalf("test: %d %s", r.status, r.body)
	}
	r = call(t, srv, http.MethodGet, "/api/v1/webhooks/deliveries?state=pending&webhook="+h.ID, nil, adm)
	ds := decodeJSON[[]wire.WebhookDelivery](t, r.body)
	if r.status != http.StatusOK || len(ds) != 1 || ds[0].Type != "dev.upkeep.webhook.ping" || ds[0].State != "pending" {
		t.Fatalf("deliveries: %d %s", r.status, r.body)
	}
	wantError(t, call(t, srv, http.MethodGet, "/api/v1/webhooks/deliveries?state=lost", nil, adm), http.StatusBadRequest, apperr.Invalid, "state")
	if r := call(t, srv, http.MethodDelete, "/api/v1/webhooks/"+h.ID, nil, adm); r.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
}
