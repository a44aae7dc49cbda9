package storetest

import (
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/webhook"
)

// testWebhooks: webhooks keep their settings and secret; an event is queued once per webhook
// and event id; a claim is exclusive until it lapses, and adds an attempt; outcomes are
// recorded; retention removes done deliveries and the queue bound drops the oldest pending
// ones; deleting a webhook removes its deliveries.
func testWebhooks(t *testing.T, s Store) {
	a := &webhook.Webhook{ID: "wh_a", URL: "https://a.example/hook", Events: []string{"dev.upkeep.campaign.paused", "dev.upkeep.device.failed"},
		Description: "ops", AllowHTTP: true, Secret: []byte("0123456789abcdef0123456789abcdef"), CreatedAt: t0, CreatedBy: "admin"}
	b := &webhook.Webhook{ID: "wh_b", URL: "http://10.0.0.1/x", AllowPrivate: true, Secret: []byte("k"), CreatedAt: t0.Add(time.Second)}
	for _, w := range []*webhook.Webhook{a, b} {
		if err := s.CreateWebhook(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	wantCode(t, s.CreateWebhook(ctx, a), apperr.Conflict)
	ws, err := s.FindWebhooks(ctx)
	if err != nil || len(ws) != 2 || ws[0].ID != "wh_a" || len(ws[0].Events) != 2 || ws[0].Events[1] != "dev.upkeep.device.failed" ||
		!ws[0].AllowHTTP || ws[0].AllowPrivate || string(ws[0].Secret) != string(a.Secret) || ws[0].CreatedBy != "admin" || !ws[0].CreatedAt.Equal(t0) ||
		!ws[1].AllowPrivate || ws[1].Events != nil {
		t.Fatalf("FindWebhooks = %+v, %v", ws, err)
	}

	body := []byte(`{"specversion":"1.0"}`)
	if n, err := s.Enqueue(ctx, []string{"wh_a", "wh_b"}, "evt_1", "dev.upkeep.device.failed", body, t0); err != nil || n != 2 {
		t.Fatalf("Enqueue = %d, %v", n, err)
	}
	if n, err := s.Enqueue(ctx, []string{"wh_a", "wh_b"}, "evt_1", "dev.upkeep.device.failed", body, t0); err != nil || n != 0 {
		t.Fatalf("Enqueue again = %d, %v; want 0 (same event id)", n, err)
	}
	if n, err := s.Enqueue(ctx, []string{"wh_a"}, "evt_2", "dev.upkeep.campaign.paused", body, t0.Add(time.Second)); err != nil || n != 1 {
		t.Fatalf("Enqueue = %d, %v", n, err)
	}
	// Not due yet: nothing.
	if ds, err := s.ClaimDeliveries(ctx, t0.Add(-time.Second), time.Minute, 10); err != nil || len(ds) != 0 {
		t.Fatalf("claim before due = %d, %v", len(ds), err)
	}
	ds, err := s.ClaimDeliveries(ctx, t0.Add(2*time.Second), time.Minute, 2)
	if err != nil || len(ds) != 2 || ds[0].EventID != "evt_1" || ds[0].Attempts != 1 || string(ds[0].Body) != string(body) {
		t.Fatalf("claim = %+v, %v", ds, err)
	}
	// Claimed: not claimed again until the claim lapses.
	rest, err := s.ClaimDeliveries(ctx, t0.Add(3*time.Second), time.Minute, 10)
	if err != nil || len(rest) != 1 || rest[0].EventID != "evt_2" {
		t.Fatalf("second claim = %+v, %v", rest, err)
	}
	if again, err := s.ClaimDeliveries(ctx, t0.Add(4*time.Second), time.Minute, 10); err != nil || len(again) != 0 {
		t.Fatalf("claim while claimed = %d, %v", len(again), err)
	}
	// A claim that lapsed (its job died) is claimed again, with one more attempt.
	lapsed, err := s.ClaimDeliveries(ctx, t0.Add(2*time.Minute), time.Minute, 10)
	if err != nil || len(lapsed) != 3 || lapsed[0].Attempts != 2 {
		t.Fatalf("claim after lapse = %+v, %v", lapsed, err)
	}
	at := t0.Add(2 * time.Minute)
	if err := s.FinishAttempt(ctx, lapsed[0].ID, webhook.Outcome{State: webhook.StateDelivered, Status: 204, At: at}); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishAttempt(ctx, lapsed[1].ID, webhook.Outcome{State: webhook.StatePending, Status: 503, Error: "answer 503", NextAt: at.Add(time.Hour), At: at}); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishAttempt(ctx, lapsed[2].ID, webhook.Outcome{State: webhook.StateFailed, Error: "dial: refused", At: at}); err != nil {
		t.Fatal(err)
	}
	if ds, err := s.ClaimDeliveries(ctx, at.Add(time.Minute), time.Minute, 10); err != nil || len(ds) != 0 {
		t.Fatalf("claim before the retry is due = %d, %v", len(ds), err)
	}
	all, err := s.FindDeliveries(ctx, webhook.DeliveryFilter{Limit: 10})
	if err != nil || len(all) != 3 {
		t.Fatalf("FindDeliveries = %d, %v", len(all), err)
	}
	byID := map[int64]*webhook.Delivery{}
	for _, d := range all {
		byID[d.ID] = d
	}
	if d := byID[lapsed[0].ID]; d.State != webhook.StateDelivered || d.LastStatus != 204 || !d.DoneAt.Equal(at) || !d.ClaimedUntil.IsZero() {
		t.Errorf("delivered = %+v", d)
	}
	if d := byID[lapsed[1].ID]; d.State != webhook.StatePending || d.LastStatus != 503 || d.Attempts != 2 || !d.NextAt.Equal(at.Add(time.Hour)) || !d.DoneAt.IsZero() {
		t.Errorf("retrying = %+v", d)
	}
	if d := byID[lapsed[2].ID]; d.State != webhook.StateFailed || d.LastError != "dial: refused" {
		t.Errorf("failed = %+v", d)
	}
	if ds, err := s.FindDeliveries(ctx, webhook.DeliveryFilter{Webhook: "wh_b", Limit: 10}); err != nil || len(ds) != 1 {
		t.Errorf("deliveries of wh_b = %d, %v", len(ds), err)
	}
	if ds, err := s.FindDeliveries(ctx, webhook.DeliveryFilter{State: webhook.StatePending, Limit: 10}); err != nil || len(ds) != 1 {
		t.Errorf("pending deliveries = %d, %v", len(ds), err)
	}

	// Queue bound: wh_b gets 5 more pending (6 in all); with a bound of 2, the 4 oldest go.
	for i := range 5 {
		if _, err := s.Enqueue(ctx, []string{"wh_b"}, "evt_q"+string(rune('a'+i)), "x", body, at); err != nil {
			t.Fatal(err)
		}
	}
	removed, dropped, err := s.PruneDeliveries(ctx, at.Add(time.Second), 2, at)
	if err != nil || removed != 2 || dropped != 4 {
		t.Fatalf("PruneDeliveries = %d removed, %d dropped, %v; want 2, 4", removed, dropped, err)
	}
	if ds, err := s.FindDeliveries(ctx, webhook.DeliveryFilter{Webhook: "wh_b", State: webhook.StatePending, Limit: 10}); err != nil || len(ds) != 2 || ds[0].EventID != "evt_qe" {
		t.Fatalf("pending after the bound = %+v, %v", ds, err)
	}

	wantCode(t, s.DeleteWebhook(ctx, "wh_nope"), apperr.NotFound)
	if err := s.DeleteWebhook(ctx, "wh_b"); err != nil {
		t.Fatal(err)
	}
	if ds, err := s.FindDeliveries(ctx, webhook.DeliveryFilter{Webhook: "wh_b", Limit: 10}); err != nil || len(ds) != 0 {
		t.Fatalf("deliveries of a deleted webhook = %d, %v", len(ds), err)
	}
}
