package push_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/push"
	"upkeep.dev/upkeep/internal/push/brokertest"
)

// BenchmarkCredentials provisions UPKEEP_BENCH_DEVICES (default 1,000) devices' broker
// credentials, 32 at a time, as a fleet coming online asks for them; reports credentials/s.
//
//	go test -run '^$' -bench BenchmarkCredentials -benchtime 1x ./internal/push/
func BenchmarkCredentials(b *testing.B) {
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("UPKEEP_BENCH_DEVICES")); err == nil && v > 0 {
		n = v
	}
	br := brokertest.Start(b)
	s, err := push.Open(context.Background(), push.Config{URL: br.URL, Username: brokertest.AdminUser, Password: brokertest.AdminPassword}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ResetTimer()
	for it := range b.N {
		start := time.Now()
		sem := make(chan struct{}, 32)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var firstErr error
		for i := range n {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				if _, err := s.Credentials(context.Background(), fmt.Sprintf("c%d-%06d", it, i)); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if firstErr != nil {
			b.Fatal(firstErr)
		}
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "credentials/s")
	}
}
