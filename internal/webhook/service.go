package webhook

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/event"
)

// Config bounds webhooks and their delivery. Zero fields take the defaults of DefaultConfig.
type Config struct {
	MaxWebhooks int // webhooks at most (default 50)
	// MaxPayload bounds a CloudEvent's size (default 64 KiB); an event whose data is larger is
	// sent with its data replaced by a note that says so.
	MaxPayload int
	// MaxQueue bounds the pending deliveries of one webhook (default 10,000): Prune marks the
	// oldest beyond it dropped, and logs how many.
	MaxQueue int
	// MaxAttempts is how many attempts a delivery gets before it is marked failed (default 10).
	MaxAttempts int
	// RetryBase is the wait after the first failed attempt, doubled after each (with jitter:
	// between half and one and a half times), up to RetryMax. Defaults 10 s and 1 h.
	RetryBase, RetryMax time.Duration
	// Timeout bounds one attempt whole: connection, TLS, request, answer (default 15 s; the
	// connection and the TLS handshake each get at most 5 s, the answer's headers 10 s).
	Timeout time.Duration
	// Retention is how long delivered, failed and dropped deliveries are kept (default 30 days).
	Retention time.Duration
	// Workers is how many deliveries are sent at once (default 4).
	Workers int
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{MaxWebhooks: 50, MaxPayload: 64 << 10, MaxQueue: 10000, MaxAttempts: 10, RetryBase: 10 * time.Second,
		RetryMax: time.Hour, Timeout: 15 * time.Second, Retention: 30 * 24 * time.Hour, Workers: 4}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	c.MaxWebhooks, c.MaxPayload, c.MaxQueue = cmp.Or(c.MaxWebhooks, d.MaxWebhooks), cmp.Or(c.MaxPayload, d.MaxPayload), cmp.Or(c.MaxQueue, d.MaxQueue)
	c.MaxAttempts, c.RetryBase, c.RetryMax = cmp.Or(c.MaxAttempts, d.MaxAttempts), cmp.Or(c.RetryBase, d.RetryBase), cmp.Or(c.RetryMax, d.RetryMax)
	c.Timeout, c.Retention, c.Workers = cmp.Or(c.Timeout, d.Timeout), cmp.Or(c.Retention, d.Retention), cmp.Or(c.Workers, d.Workers)
	return c
}

// MaxAnswer is how much of a receiver's answer is read (and then dropped).
const MaxAnswer = 4 << 10

// Service creates webhooks, queues events for them (it is an event.Emitter) and delivers them.
// It is safe for concurrent use.
type Service struct {
	Store  Store
	Config Config
	// Source is the CloudEvents source of every event: the server's public URL.
	Source string
	// Resolver resolves host names when a webhook is created; nil: net.DefaultResolver.
	Resolver Resolver
	Now      func() time.Time
	Logger   *slog.Logger

	once    sync.Once
	cfg     Config
	wake    chan struct{}
	strict  *http.Client // for webhooks without AllowPrivate: special addresses refused at dial
	private *http.Client
}

var (
	_ event.Emitter  = (*Service)(nil)
	_ event.Listener = (*Service)(nil)
)

func (s *Service) init() {
	s.once.Do(func() {
		s.cfg = s.Config.withDefaults()
		s.wake = make(chan struct{}, 1)
		s.strict, s.private = s.newClient(dialControl), s.newClient(nil)
	})
}

// newClient is the HTTP client of deliveries: no proxy from the environment (it would dial in
// the webhook's stead, past the address check), no redirects followed, every phase timed.
func (s *Service) newClient(control func(network, address string, c syscall.RawConn) error) *http.Client {
	connect := min(5*time.Second, s.cfg.Timeout)
	d := &net.Dialer{Timeout: connect, Control: control}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		TLSClientConfig:       &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   connect,
		ResponseHeaderTimeout: min(10*time.Second, s.cfg.Timeout),
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       30 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	return &http.Client{Transport: tr, Timeout: s.cfg.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

func (s *Service) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// Woken delivers a value when an event was queued: the delivery job need not wait for its tick.
func (s *Service) Woken() <-chan struct{} {
	s.init()
	return s.wake
}

func (s *Service) nudge() {
	s.init()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Create validates spec, refuses a host name that resolves to a special address (unless
// AllowPrivate), and stores a new webhook with a new secret, which it returns in its
// whsec_ form: it is not shown again. apperr.Invalid for a bad spec or past MaxWebhooks.
func (s *Service) Create(ctx context.Context, spec Spec, actor string) (*Webhook, string, error) {
	s.init()
	if err := spec.Validate(); err != nil {
		return nil, "", err
	}
	var r Resolver = net.DefaultResolver
	if s.Resolver != nil {
		r = s.Resolver
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := spec.checkResolved(rctx, r); err != nil {
		return nil, "", err
	}
	ws, err := s.Store.FindWebhooks(ctx)
	if err != nil {
		return nil, "", err
	}
	if len(ws) >= s.cfg.MaxWebhooks {
		return nil, "", apperr.E(apperr.Invalid, "at most %d webhooks: delete one first", s.cfg.MaxWebhooks)
	}
	w := &Webhook{ID: newID("wh_"), URL: spec.URL, Events: spec.Events, Description: spec.Description,
		AllowPrivate: spec.AllowPrivate, AllowHTTP: spec.AllowHTTP, Secret: newSecret(), CreatedAt: s.now().Truncate(time.Second), CreatedBy: actor}
	if err := s.Store.CreateWebhook(ctx, w); err != nil {
		return nil, "", err
	}
	s.logger().Info("webhook created", "webhook", w.ID, "url", w.URL, "allow_private", w.AllowPrivate, "allow_http", w.AllowHTTP, "actor", actor)
	return w, FormatSecret(w.Secret), nil
}

// Webhooks lists the webhooks (their secrets are the caller's to keep from view).
func (s *Service) Webhooks(ctx context.Context) ([]*Webhook, error) { return s.Store.FindWebhooks(ctx) }

// Delete removes a webhook and its deliveries; apperr.NotFound if there is none.
func (s *Service) Delete(ctx context.Context, id, actor string) error {
	if err := s.Store.DeleteWebhook(ctx, id); err != nil {
		return err
	}
	s.logger().Info("webhook deleted", "webhook", id, "actor", actor)
	return nil
}

// Test queues a ping event for the webhook id alone and returns the event's id.
func (s *Service) Test(ctx context.Context, id, actor string) (string, error) {
	ws, err := s.Store.FindWebhooks(ctx)
	if err != nil {
		return "", err
	}
	for _, w := range ws {
		if w.ID == id {
			e := event.Event{Type: event.Ping, Subject: "webhook/" + id, Data: map[string]string{"webhook": id, "by": actor}}
			evID, body, err := s.encode(e)
			if err != nil {
				return "", err
			}
			if _, err := s.Store.Enqueue(ctx, []string{id}, evID, e.Type, body, s.now()); err != nil {
				return "", err
			}
			s.nudge()
			return evID, nil
		}
	}
	return "", apperr.E(apperr.NotFound, "no webhook %s", id)
}

// Deliveries lists deliveries, newest first; Limit defaults to 100, at most 1,000.
func (s *Service) Deliveries(ctx context.Context, f DeliveryFilter) ([]*Delivery, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	f.Limit = min(f.Limit, 1000)
	switch f.State {
	case "", StatePending, StateDelivered, StateFailed, StateDropped:
	default:
		return nil, apperr.E(apperr.Invalid, "state %.32q: want pending, delivered, failed or dropped", f.State)
	}
	return s.Store.FindDeliveries(ctx, f)
}

// CloudEvent is an event in the CloudEvents 1.0 JSON format (structured mode), as delivered.
type CloudEvent struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Subject         string          `json:"subject,omitempty"`
	Time            time.Time       `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	Data            json.RawMessage `json:"data"`
}

// ContentType is the media type of a delivery's body.
const ContentType = "application/cloudevents+json"

// encode makes the CloudEvent of e: its id, and its JSON within MaxPayload.
func (s *Service) encode(e event.Event) (string, []byte, error) {
	s.init()
	id := newID("evt_")
	if e.Key != "" {
		id = keyedID(e.Type, e.Key)
	}
	data, err := json.Marshal(e.Data)
	if err != nil {
		return "", nil, fmt.Errorf("event %s data: %w", e.Type, err)
	}
	t := e.Time
	if t.IsZero() {
		t = s.now()
	}
	ce := CloudEvent{SpecVersion: "1.0", ID: id, Source: cmp.Or(s.Source, "urn:upkeep"), Type: e.Type, Subject: e.Subject,
		Time: t.UTC(), DataContentType: "application/json", Data: data}
	body, err := json.Marshal(ce)
	if err != nil {
		return "", nil, fmt.Errorf("event %s: %w", e.Type, err)
	}
	if len(body) > s.cfg.MaxPayload {
		s.logger().Warn("event data over the payload bound left out", "type", e.Type, "subject", e.Subject, "bytes", len(body), "max", s.cfg.MaxPayload)
		ce.Data, _ = json.Marshal(map[string]any{"truncated": true, "note": fmt.Sprintf("data over %d bytes left out", s.cfg.MaxPayload)})
		ce.Subject = truncate(ce.Subject, 256)
		if body, err = json.Marshal(ce); err != nil {
			return "", nil, err
		}
	}
	return id, body, nil
}

// Listening implements event.Listener: whether a webhook is subscribed to typ (true when the
// webhooks cannot be read, so that no event is skipped for it).
func (s *Service) Listening(ctx context.Context, typ string) bool {
	ws, err := s.Store.FindWebhooks(ctx)
	if err != nil {
		return true
	}
	for _, w := range ws {
		if w.Wants(typ) {
			return true
		}
	}
	return false
}

// Emit queues e for every webhook subscribed to its type. Failures are logged: the caller's
// change is made either way.
func (s *Service) Emit(ctx context.Context, e event.Event) {
	if err := s.emit(ctx, e); err != nil {
		s.logger().Error("queue webhook event", "type", e.Type, "subject", e.Subject, "err", err)
	}
}

func (s *Service) emit(ctx context.Context, e event.Event) error {
	ws, err := s.Store.FindWebhooks(ctx)
	if err != nil {
		return err
	}
	var ids []string
	for _, w := range ws {
		if w.Wants(e.Type) {
			ids = append(ids, w.ID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	evID, body, err := s.encode(e)
	if err != nil {
		return err
	}
	if n, err := s.Store.Enqueue(ctx, ids, evID, e.Type, body, s.now()); err != nil {
		return err
	} else if n > 0 {
		s.nudge()
	}
	return nil
}

// Deliver sends due deliveries until none is left due or ctx ends, Workers at a time, and
// returns how many attempts it made. The server runs it on the replica holding the "webhooks"
// lease; a second caller at the same time would only share the work (claims are exclusive).
func (s *Service) Deliver(ctx context.Context) (int, error) {
	s.init()
	attempts := 0
	for ctx.Err() == nil {
		ds, err := s.Store.ClaimDeliveries(ctx, s.now(), s.claimFor(), 2*s.cfg.Workers)
		if err != nil {
			return attempts, err
		}
		if len(ds) == 0 {
			return attempts, nil
		}
		ws, err := s.Store.FindWebhooks(ctx)
		if err != nil {
			return attempts, err
		}
		byID := map[string]*Webhook{}
		for _, w := range ws {
			byID[w.ID] = w
		}
		sem := make(chan struct{}, s.cfg.Workers)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var errs []error
		for _, d := range ds {
			w := byID[d.WebhookID]
			if w == nil {
				continue // deleted since: its deliveries went with it
			}
			attempts++
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				o := s.attempt(ctx, w, d)
				// The outcome is recorded even if ctx ended meanwhile: the claim would else
				// lapse and the delivery go out again.
				if err := s.Store.FinishAttempt(context.WithoutCancel(ctx), d.ID, o); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return attempts, err
		}
	}
	return attempts, nil
}

// claimFor is how long a claim lasts: longer than the attempts of one round take.
func (s *Service) claimFor() time.Duration { return 3*s.cfg.Timeout + 5*time.Second }

// attempt sends d to w once and says what follows.
func (s *Service) attempt(ctx context.Context, w *Webhook, d *Delivery) Outcome {
	now := s.now()
	ts := now.Unix()
	o := Outcome{At: now}
	status, err := s.send(ctx, w, d, ts)
	o.Status = status
	switch {
	case err == nil && status >= 200 && status < 300:
		o.State = StateDelivered
		return o
	case err != nil:
		o.Error = truncate(err.Error(), 512)
	case status == http.StatusGone:
		o.State, o.Error = StateFailed, "410 Gone: the receiver asked for no more deliveries"
		return o
	default:
		o.Error = "answer " + strconv.Itoa(status)
	}
	if d.Attempts >= s.cfg.MaxAttempts {
		o.State = StateFailed
		s.logger().Warn("webhook delivery failed for good", "webhook", w.ID, "event", d.EventID, "type", d.Type, "attempts", d.Attempts, "err", o.Error)
		return o
	}
	o.State, o.NextAt = StatePending, now.Add(Backoff(s.cfg.RetryBase, s.cfg.RetryMax, d.Attempts))
	return o
}

// Backoff is the wait after the n-th failed attempt (n ≥ 1): base doubled n-1 times, at most
// max, times a random factor between 0.5 and 1.5 so that a receiver that comes back is not met
// by every delivery at once.
func Backoff(base, max time.Duration, n int) time.Duration {
	d := base
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	return d/2 + rand.N(d+1)
}

func (s *Service) send(ctx context.Context, w *Webhook, d *Delivery, ts int64) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	u, err := (Spec{URL: w.URL, AllowHTTP: w.AllowHTTP, AllowPrivate: w.AllowPrivate}).parse()
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(d.Body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", ContentType)
	req.Header.Set("User-Agent", "Upkeep-Webhooks/1")
	req.Header.Set(HeaderID, d.EventID)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderSignature, Sign(w.Secret, d.EventID, ts, d.Body))
	c := s.strict
	if w.AllowPrivate {
		c = s.private
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, MaxAnswer)) //nolint:errcheck // the answer's body is not used
	return resp.StatusCode, nil
}

// Prune applies the retention and the queue bound (Store.PruneDeliveries) and logs what it did.
func (s *Service) Prune(ctx context.Context) error {
	s.init()
	now := s.now()
	removed, dropped, err := s.Store.PruneDeliveries(ctx, now.Add(-s.cfg.Retention), s.cfg.MaxQueue, now)
	if err != nil {
		return err
	}
	if dropped > 0 {
		s.logger().Warn("webhook queue over its bound: oldest pending deliveries dropped", "dropped", dropped, "max_queue", s.cfg.MaxQueue)
	}
	if removed > 0 {
		s.logger().Info("pruned webhook deliveries", "deliveries", removed, "older_than", s.cfg.Retention.String())
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return strings.ToValidUTF8(s, "?")
}
