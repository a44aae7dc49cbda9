package push_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"upkeep.dev/upkeep/internal/push"
	"upkeep.dev/upkeep/internal/push/brokertest"
)

// BenchmarkNudgeFanout: one nudge to each of UPKEEP_BENCH_DEVICES (default 10,000) connected
// simulated devices (in-process paho clients, each subscribed to its own topic on the real
// broker), from the first Nudge call until every device has received its nudge. Target: within
// 10 s. Reports s/fanout and the slowest device's latency.
//
//	go test -run '^$' -bench BenchmarkNudgeFanout -benchtime 2x ./internal/push/
func BenchmarkNudgeFanout(b *testing.B) {
	n := 10000
	if v, err := strconv.Atoi(os.Getenv("UPKEEP_BENCH_DEVICES")); err == nil && v > 0 {
		n = v
	}
	br := brokertest.StartAnonymous(b)
	s, err := push.Open(context.Background(), push.Config{URL: br.URL, Username: brokertest.AdminUser, Password: brokertest.AdminPassword}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var got atomic.Int64
	ids := make([]string, n)
	clients := make([]mqtt.Client, n)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range n {
		ids[i] = fmt.Sprintf("sim-%06d", i)
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(br.AnonURL).SetClientID(ids[i]).SetKeepAlive(5 * time.Minute).
				SetAutoReconnect(false).SetOrderMatters(false).SetCleanSession(true))
			if t := c.Connect(); !t.WaitTimeout(30*time.Second) || t.Error() != nil {
				failed.Add(1)
				return
			}
			t := c.Subscribe(s.Topic(ids[i]), 0, func(mqtt.Client, mqtt.Message) { got.Add(1) })
			if !t.WaitTimeout(30*time.Second) || t.Error() != nil {
				failed.Add(1)
			}
			clients[i] = c
		}(i)
	}
	wg.Wait()
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Disconnect(0)
			}
		}
	}()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d of %d simulated devices did not connect", f, n)
	}
	b.ResetTimer()
	var worst time.Duration
	for it := range b.N {
		want := int64(n) * int64(it+1)
		start := time.Now()
		for _, id := range ids {
			s.Nudge(id)
		}
		for got.Load() < want {
			if time.Since(start) > time.Minute {
				b.Fatalf("%d of %d nudges arrived within a minute (dropped %d)", got.Load()-want+int64(n), n, s.Dropped.Load())
			}
			time.Sleep(time.Millisecond)
		}
		worst = max(worst, time.Since(start))
	}
	b.StopTimer() // not the clients' disconnection
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/fanout")
	b.ReportMetric(worst.Seconds(), "s-worst")
	b.ReportMetric(float64(n), "devices")
}
