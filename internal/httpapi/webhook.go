package httpapi

import (
	"context"
	"net/http"
	"strconv"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/webhook"
	"upkeep.dev/upkeep/wire"
)

// Webhooks creates, lists, deletes and tests webhooks and lists their deliveries;
// *webhook.Service implements it.
type Webhooks interface {
	// Create returns the webhook and its secret (whsec_...), shown once; apperr.Invalid for a
	// bad URL, a refused address or past the bound on webhooks.
	Create(ctx context.Context, spec webhook.Spec, actor string) (*webhook.Webhook, string, error)
	Webhooks(ctx context.Context) ([]*webhook.Webhook, error)
	// Delete returns apperr.NotFound if there is no such webhook.
	Delete(ctx context.Context, id, actor string) error
	// Test queues a ping for the webhook and returns its event id; apperr.NotFound if none.
	Test(ctx context.Context, id, actor string) (string, error)
	Deliveries(ctx context.Context, f webhook.DeliveryFilter) ([]*webhook.Delivery, error)
}

func (s *Server) webhookRoutes(mux *router) {
	mux.api("GET /api/v1/webhooks", auth.PermWebhooksRead, s.listWebhooks)
	mux.api("POST /api/v1/webhooks", auth.PermWebhooksWrite, s.createWebhook)
	mux.api("DELETE /api/v1/webhooks/{id}", auth.PermWebhooksWrite, s.deleteWebhook)
	mux.api("POST /api/v1/webhooks/{id}/test", auth.PermWebhooksWrite, s.testWebhook)
	mux.api("GET /api/v1/webhooks/deliveries", auth.PermWebhooksRead, s.webhookDeliveries)
}

// webhooks returns the service, or answers 503 and returns nil when the server has none.
func (s *Server) webhooks(w http.ResponseWriter, r *http.Request) Webhooks {
	if s.Webhooks == nil {
		s.fail(w, r, apperr.E(apperr.Unavailable, "this server sends no webhooks"))
	}
	return s.Webhooks
}

func webhookToWire(h *webhook.Webhook) wire.Webhook {
	return wire.Webhook{ID: h.ID, URL: h.URL, Events: h.Events, Description: h.Description, AllowPrivate: h.AllowPrivate, AllowHTTP: h.AllowHTTP,
		CreatedAt: h.CreatedAt, CreatedBy: h.CreatedBy}
}

func (s *Server) createWebhook(w http.ResponseWriter, r *http.Request) {
	svc := s.webhooks(w, r)
	if svc == nil {
		return
	}
	var req wire.WebhookRequest
	if err := decode(w, r, wire.MaxAPIBody, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	h, secret, err := svc.Create(r.Context(), webhook.Spec(req), actorOf(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := webhookToWire(h)
	out.Secret = secret
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) listWebhooks(w http.ResponseWriter, r *http.Request) {
	svc := s.webhooks(w, r)
	if svc == nil {
		return
	}
	hs, err := svc.Webhooks(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]wire.Webhook, len(hs))
	for i, h := range hs {
		out[i] = webhookToWire(h)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteWebhook(w http.ResponseWriter, r *http.Request) {
	svc := s.webhooks(w, r)
	if svc == nil {
		return
	}
	if err := svc.Delete(r.Context(), r.PathValue("id"), actorOf(r)); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) testWebhook(w http.ResponseWriter, r *http.Request) {
	svc := s.webhooks(w, r)
	if svc == nil {
		return
	}
	id, err := svc.Test(r.Context(), r.PathValue("id"), actorOf(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, wire.WebhookTest{EventID: id})
}

func (s *Server) webhookDeliveries(w http.ResponseWriter, r *http.Request) {
	svc := s.webhooks(w, r)
	if svc == nil {
		return
	}
	q := r.URL.Query()
	f := webhook.DeliveryFilter{Webhook: q.Get("webhook"), State: q.Get("state")}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 {
			s.fail(w, r, apperr.E(apperr.Invalid, "limit: want a positive number"))
			return
		}
		f.Limit = n
	}
	ds, err := svc.Deliveries(r.Context(), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]wire.WebhookDelivery, len(ds))
	for i, d := range ds {
		out[i] = wire.WebhookDelivery{ID: d.ID, Webhook: d.WebhookID, EventID: d.EventID, Type: d.Type, State: d.State, Attempts: d.Attempts,
			LastStatus: d.LastStatus, LastError: d.LastError, CreatedAt: d.CreatedAt, DoneAt: d.DoneAt}
		if d.State == webhook.StatePending {
			out[i].NextAt = d.NextAt
		}
	}
	writeJSON(w, http.StatusOK, out)
}
