package server_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestGracefulShutdown: a request in flight when the server is told to stop is answered before
// Close returns; new connections are refused meanwhile.
func TestGracefulShutdown(t *testing.T) {
	s := open(t)
	// A raw connection, so that the request's head is surely on the wire before shutdown
	// starts; its body arrives slowly, so the handler is reading it when shutdown starts.
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"payload":{}, "signature": ""}`
	fmt.Fprintf(conn, "POST /device/v1/enroll HTTP/1.1\r\nHost: upkeep\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:11])
	time.Sleep(200 * time.Millisecond) // the server reads the head and starts the handler
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) with a request in flight", err)
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := io.WriteString(conn, body[11:]); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("in-flight request failed: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest { // answered by the handler: the payload is not an enrolment
		t.Errorf("in-flight request: %d, want 400 from the handler", resp.StatusCode)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestServerMetricsWired: the served /metrics carries the rollout gauges (read from the store)
// and database latency of the device store.
func TestServerMetricsWired(t *testing.T) {
	s := open(t)
	defer s.Close()
	http.Post(s.URL+"/device/v1/token", "application/json", strings.NewReader(`{"payload":{"device_id":"nope","time":"2026-01-01T00:00:00Z"},"signature":"00"}`))
	resp, err := http.Get(s.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`upkeep_rollout_campaigns{state="running"} 0`, `upkeep_rollout_members{status="pending"} 0`, `upkeep_db_seconds_count{op="find_device"} 1`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
