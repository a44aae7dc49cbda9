package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/webhook"
)

var _ webhook.Store = (*DB)(nil)

const webhookCols = `id, url, events, description, allow_private, allow_http, secret, created_at, created_by`

// CreateWebhook implements webhook.Store.
func (s *DB) CreateWebhook(ctx context.Context, w *webhook.Webhook) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO webhooks (`+webhookCols+`) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)`,
		w.ID, w.URL, strings.Join(w.Events, ","), w.Description, w.AllowPrivate, w.AllowHTTP, w.Secret, w.CreatedAt.UTC(), w.CreatedBy)
	if s.dialect.IsUnique(err) {
		return apperr.E(apperr.Conflict, "webhook %s exists", w.ID)
	}
	if err != nil {
		return fmt.Errorf("create webhook: %w", err)
	}
	return nil
}

// FindWebhooks implements webhook.Store.
func (s *DB) FindWebhooks(ctx context.Context) ([]*webhook.Webhook, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+webhookCols+` FROM webhooks ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("find webhooks: %w", err)
	}
	defer rows.Close()
	var out []*webhook.Webhook
	for rows.Next() {
		var w webhook.Webhook
		var events string
		if err := rows.Scan(&w.ID, &w.URL, &events, &w.Description, &w.AllowPrivate, &w.AllowHTTP, &w.Secret, &w.CreatedAt, &w.CreatedBy); err != nil {
			return nil, fmt.Errorf("find webhooks: %w", err)
		}
		if events != "" {
			w.Events = strings.Split(events, ",")
		}
		out = append(out, &w)
	}
	return out, rows.Err()
}

// DeleteWebhook implements webhook.Store.
func (s *DB) DeleteWebhook(ctx context.Context, id string) error {
	return s.inTx(ctx, "delete webhook "+id, func(tx *Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM webhook_deliveries WHERE webhook_id = $1`, id); err != nil {
			return fmt.Errorf("delete webhook %s: %w", id, err)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM webhooks WHERE id = $1`, id)
		if err != nil {
			return fmt.Errorf("delete webhook %s: %w", id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return apperr.E(apperr.NotFound, "no webhook %s", id)
		}
		return nil
	})
}

// Enqueue implements webhook.Store.
func (s *DB) Enqueue(ctx context.Context, webhooks []string, eventID, typ string, body []byte, now time.Time) (int, error) {
	added := 0
	err := s.inTx(ctx, "queue webhook event", func(tx *Tx) error {
		added = 0
		for _, id := range webhooks {
			res, err := tx.ExecContext(ctx, `INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, body, state, attempts, next_at, created_at)
VALUES ($1,$2,$3,$4,$5,0,$6,$6) ON CONFLICT (webhook_id, event_id) DO NOTHING`, id, eventID, typ, body, webhook.StatePending, now.UTC())
			if err != nil {
				return fmt.Errorf("queue event %s for webhook %s: %w", eventID, id, err)
			}
			n, _ := res.RowsAffected()
			added += int(n)
		}
		return nil
	})
	return added, err
}

// ClaimDeliveries implements webhook.Store. The conditions are checked again by the UPDATE
// itself, so that on PostgreSQL a row another transaction claimed meanwhile is skipped.
func (s *DB) ClaimDeliveries(ctx context.Context, now time.Time, claim time.Duration, limit int) ([]*webhook.Delivery, error) {
	var out []*webhook.Delivery
	now = now.UTC()
	err := s.inTx(ctx, "claim webhook deliveries", func(tx *Tx) error {
		out = nil
		rows, err := tx.QueryContext(ctx, `UPDATE webhook_deliveries SET claimed_until = $1, attempts = attempts + 1
WHERE id IN (SELECT id FROM webhook_deliveries WHERE state = $2 AND next_at <= $3 AND (claimed_until IS NULL OR claimed_until <= $3) ORDER BY next_at, id LIMIT $4)
  AND state = $2 AND (claimed_until IS NULL OR claimed_until <= $3)
RETURNING id, webhook_id, event_id, event_type, body, attempts, next_at, created_at`, now.Add(claim), webhook.StatePending, now, limit)
		if err != nil {
			return fmt.Errorf("claim webhook deliveries: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			d := webhook.Delivery{State: webhook.StatePending, ClaimedUntil: now.Add(claim)}
			if err := rows.Scan(&d.ID, &d.WebhookID, &d.EventID, &d.Type, &d.Body, &d.Attempts, &d.NextAt, &d.CreatedAt); err != nil {
				return fmt.Errorf("claim webhook deliveries: %w", err)
			}
			out = append(out, &d)
		}
		return rows.Err()
	})
	return out, err
}

// FinishAttempt implements webhook.Store.
func (s *DB) FinishAttempt(ctx context.Context, id int64, o webhook.Outcome) error {
	var done sql.NullTime
	next := o.NextAt
	if o.State != webhook.StatePending {
		done, next = sql.NullTime{Time: o.At.UTC(), Valid: true}, o.At
	}
	_, err := s.db.ExecContext(ctx, `UPDATE webhook_deliveries SET state = $1, last_status = $2, last_error = $3, next_at = $4, done_at = $5, claimed_until = NULL WHERE id = $6`,
		o.State, o.Status, o.Error, next.UTC(), done, id)
	if err != nil {
		return fmt.Errorf("finish webhook delivery %d: %w", id, err)
	}
	return nil
}

// FindDeliveries implements webhook.Store.
func (s *DB) FindDeliveries(ctx context.Context, f webhook.DeliveryFilter) ([]*webhook.Delivery, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, webhook_id, event_id, event_type, state, attempts, next_at, claimed_until, last_status, last_error, created_at, done_at
FROM webhook_deliveries WHERE ($1 = '' OR webhook_id = $1) AND ($2 = '' OR state = $2) ORDER BY id DESC LIMIT $3`, f.Webhook, f.State, f.Limit)
	if err != nil {
		return nil, fmt.Errorf("find webhook deliveries: %w", err)
	}
	defer rows.Close()
	var out []*webhook.Delivery
	for rows.Next() {
		var d webhook.Delivery
		var claimed, done sql.NullTime
		if err := rows.Scan(&d.ID, &d.WebhookID, &d.EventID, &d.Type, &d.State, &d.Attempts, &d.NextAt, &claimed, &d.LastStatus, &d.LastError, &d.CreatedAt, &done); err != nil {
			return nil, fmt.Errorf("find webhook deliveries: %w", err)
		}
		d.ClaimedUntil, d.DoneAt = claimed.Time, done.Time
		out = append(out, &d)
	}
	return out, rows.Err()
}

// PruneDeliveries implements webhook.Store.
func (s *DB) PruneDeliveries(ctx context.Context, before time.Time, maxPending int, now time.Time) (removed, dropped int64, err error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM webhook_deliveries WHERE state <> $1 AND done_at < $2`, webhook.StatePending, before.UTC())
	if err != nil {
		return 0, 0, fmt.Errorf("prune webhook deliveries: %w", err)
	}
	removed, _ = res.RowsAffected()
	rows, err := s.db.QueryContext(ctx, `SELECT webhook_id, COUNT(*) FROM webhook_deliveries WHERE state = $1 GROUP BY webhook_id`, webhook.StatePending)
	if err != nil {
		return removed, 0, fmt.Errorf("count pending webhook deliveries: %w", err)
	}
	over := map[string]int64{}
	for rows.Next() {
		var id string
		var n int64
		if err := rows.Scan(&id, &n); err != nil {
			rows.Close()
			return removed, 0, fmt.Errorf("count pending webhook deliveries: %w", err)
		}
		if n > int64(maxPending) {
			over[id] = n - int64(maxPending)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return removed, 0, err
	}
	for id, n := range over {
		res, err := s.db.ExecContext(ctx, `UPDATE webhook_deliveries SET state = $1, done_at = $2, last_error = $3
WHERE id IN (SELECT id FROM webhook_deliveries WHERE webhook_id = $4 AND state = $5 AND (claimed_until IS NULL OR claimed_until <= $2) ORDER BY id LIMIT $6)`,
			webhook.StateDropped, now.UTC(), "dropped: the webhook's queue was over its bound", id, webhook.StatePending, n)
		if err != nil {
			return removed, dropped, fmt.Errorf("drop webhook deliveries: %w", err)
		}
		k, _ := res.RowsAffected()
		dropped += k
	}
	return removed, dropped, nil
}
