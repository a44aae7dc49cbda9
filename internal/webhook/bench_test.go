package webhook_test

import (
	"net/http"
	"testing"

	"upkeep.dev/upkeep/internal/event"
	"upkeep.dev/upkeep/internal/webhook"
)

// BenchmarkEmit is what an event costs its caller (a device report with a failure, a campaign
// step) on SQLite: with no webhook (one read), and with one subscribed webhook (a read and an
// outbox insert).
func BenchmarkEmit(b *testing.B) {
	for _, n := range []int{0, 1} {
		b.Run(map[int]string{0: "no-webhook", 1: "one-webhook"}[n], func(b *testing.B) {
			s := newService(b, webhook.Config{})
			if n == 1 {
				if _, _, err := s.Create(ctx, webhook.Spec{URL: "https://10.0.0.1/x", AllowPrivate: true}, "admin"); err != nil {
					b.Fatal(err)
				}
			}
			e := event.Event{Type: event.DeviceFailed, Subject: "device/d1", Data: map[string]string{"device": "d1", "step": "install"}}
			b.ResetTimer()
			for range b.N {
				s.Emit(ctx, e)
			}
		})
	}
}

// BenchmarkDeliver is the delivery job's throughput to a receiver on loopback: per delivery,
// claim, sign, POST, record.
func BenchmarkDeliver(b *testing.B) {
	s := newService(b, webhook.Config{})
	rcv := newReceiver(b, func(int) int { return http.StatusNoContent })
	if _, _, err := s.Create(ctx, webhook.Spec{URL: rcv.URL, AllowPrivate: true, AllowHTTP: true}, "admin"); err != nil {
		b.Fatal(err)
	}
	e := event.Event{Type: event.DeviceFailed, Subject: "device/d1", Data: map[string]string{"device": "d1"}}
	for range b.N {
		s.Emit(ctx, e)
	}
	b.ResetTimer()
	n, err := s.Deliver(ctx)
	if err != nil || n != b.N {
		b.Fatalf("delivered %d of %d: %v", n, b.N, err)
	}
}
