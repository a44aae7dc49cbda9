package cli

// Tests of the bounds on what slow or greedy clients can take from the server: body deadlines
// and per-client shares, enrolment and report limits, event retention, byte ranges
// (docs/SECURITY.md).

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/sim"
	"upkeep.dev/upkeep/wire"
)

// pathCounter is an HTTP transport that records the status of each answer by path.
type pathCounter struct {
	mu     sync.Mutex
	status map[string][]int
}

func (p *pathCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err == nil {
		p.mu.Lock()
		p.status[r.URL.Path] = append(p.status[r.URL.Path], resp.StatusCode)
		p.mu.Unlock()
	}
	return resp, err
}

func (p *pathCounter) take() map[string][]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.status
	p.status = map[string][]int{}
	return s
}

// slowBody opens a connection and sends a request whose body of n bytes arrives one byte every
// tick, until the server answers or closes the connection. The returned channel yields the
// status line the server finally sent ("" if it sent none).
func slowBody(t *testing.T, addr, path, token string, n int, tick time.Duration, stop <-chan struct{}) <-chan string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	hdr := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", path, addr, n)
	if token != "" {
		auth := "Bearer " + token
		if strings.Contains(token, " ") { // a whole Authorization value: "TargetToken ..." of DDI
			auth = token
		}
		hdr += "Authorization: " + auth + "\r\n"
	}
	if _, err := io.WriteString(c, hdr+"\r\n{"); err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	go func() {
		defer c.Close()
		answered := make(chan string, 1)
		go func() {
			line := make([]byte, 12)
			k, _ := io.ReadFull(c, line)
			answered <- string(line[:k])
		}()
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case s := <-answered:
				done <- s
				return
			case <-stop:
				done <- ""
				return
			case <-t.C:
				c.Write([]byte(" ")) //nolint:errcheck // the server may have closed it
			}
		}
	}()
	return done
}

// TestSlowBodiesDoNotLockOut: 300 clients on each of token, check-in (with another device's
// token), report and enrol that send their bodies a byte at a time take no place among the
// server's in-flight bounds (the bodies are read, within a deadline, before a request takes
// one), so a real agent still renews its token and checks in, within a second; the slow
// clients are answered 408 when the body deadline passes.
func TestSlowBodiesDoNotLockOut(t *testing.T) {
	if testing.Short() {
		t.Skip("1,200 connections")
	}
	const slow = 300
	e := newEnvWith(t, func(c *server.Config) {
		c.BodyTimeout = 4 * time.Second
		c.MaxCheckins, c.MaxTokenRequests = 256, 256 // fewer than the slow clients of each route
		c.TokenTTL = time.Minute                     // the agent asks for a new token at every cycle
	})
	rel := e.publish("1.0.0", 1, image("1.0.0", 4096))
	counter := &pathCounter{status: map[string][]int{}}
	good, err := sim.NewDevice(context.Background(), filepath.Join(e.dir, "devices", "good"), sim.Options{
		Server: e.srv.URL, EnrollToken: e.enrollToken, ImageRoot: e.imageRoot, DirectorRoot: e.directorRoot,
		Identity: wire.Identity{Serial: "good", Product: testProduct, HardwareID: testHardware},
		Factory:  image("1.0.0", 4096), FactoryTarget: rel.Target, FactoryVersion: rel.Version, FactorySecVer: rel.SecurityVersion,
		HTTP: &http.Client{Transport: counter, Timeout: 30 * time.Second}, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := good.Agent.Cycle(ctx); err != nil { // the first full verification, before the attack
		t.Fatal(err)
	}
	bad := e.device("bad", image("1.0.0", 4096), rel)
	badToken := bad.Agent.State().Token

	addr := strings.TrimPrefix(e.srv.URL, "http://")
	stop := make(chan struct{})
	defer close(stop)
	var answers []<-chan string
	for _, route := range []struct{ path, token string }{
		{"/device/v1/token", ""}, {"/device/v1/checkin", badToken}, {"/device/v1/report", badToken}, {"/device/v1/enroll", ""},
	} {
		for range slow {
			answers = append(answers, slowBody(t, addr, route.path, route.token, 1000, 300*time.Millisecond, stop))
		}
	}
	time.Sleep(500 * time.Millisecond) // every slow request is in its handler
	counter.take()
	start := time.Now()
	if err := good.Agent.Cycle(ctx); err != nil {
		t.Fatalf("the real agent's cycle during the attack: %v", err)
	}
	took := time.Since(start)
	got := counter.take()
	if s := got["/device/v1/token"]; len(s) != 1 || s[0] != http.StatusOK {
		t.Errorf("token renewal answered %v, want [200]", s)
	}
	if s := got["/device/v1/checkin"]; len(s) != 1 || (s[0] != http.StatusOK && s[0] != http.StatusNotModified) {
		t.Errorf("check-in answered %v, want 200 or 304", s)
	}
	if took > time.Second {
		t.Errorf("token renewal and check-in took %s during the attack, want under 1s", took)
	}
	// The slow clients are cut off at the body deadline with 408.
	timeout := time.After(10 * time.Second)
	var cut int
	for _, a := range answers {
		select {
		case s := <-a:
			if strings.Contains(s, "408") {
				cut++
			}
		case <-timeout:
			t.Fatalf("slow clients still connected 10 s after the attack began (body deadline 4 s)")
		}
	}
	if cut < len(answers)*9/10 {
		t.Errorf("%d of %d slow clients were answered 408", cut, len(answers))
	}
}

// TestManyRangesServeWholeFile: a request for thousands of one-byte ranges of an artifact is
// answered with the file itself (200), not a multipart answer many times its size; a request
// with a few ranges is still served as ranges.
func TestManyRangesServeWholeFile(t *testing.T) {
	e := newEnv(t)
	factory := image("1.0.0", 16<<10)
	d := e.device("dev", factory, e.publish("1.0.0", 1, factory))
	// A device fetches only what its director view names: assign it the image to fetch.
	img := image("1.0.1", 64<<10)
	rel := e.publish("1.0.1", 2, img)
	e.deploy(rel, d.Agent.State().DeviceID)
	get := func(rng string) (int, []byte) {
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/device/v1/targets/"+rel.Target, nil)
		req.Header.Set("Authorization", "Bearer "+d.Agent.State().Token)
		req.Header.Set("Range", rng)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	var many []string
	for i := range 4000 {
		many = append(many, fmt.Sprintf("%d-%d", i*16, i*16))
	}
	status, body := get("bytes=" + strings.Join(many, ","))
	if status != http.StatusOK || !bytes.Equal(body, img) {
		t.Errorf("4,000 ranges: %d with %d bytes, want 200 with the file (%d bytes)", status, len(body), len(img))
	}
	if status, body = get("bytes=0-9,100-109"); status != http.StatusPartialContent || len(body) > 1024 {
		t.Errorf("2 ranges: %d with %d bytes, want 206 multipart", status, len(body))
	}
	if status, body = get("bytes=10-19"); status != http.StatusPartialContent || !bytes.Equal(body, img[10:20]) {
		t.Errorf("1 range: %d with %d bytes, want 206 with bytes 10-19", status, len(body))
	}
}

// enrolPending sends an enrolment without an enrolment token for a new key, signed at now.
func enrolPending(t *testing.T, url string, serial string, now time.Time) *http.Response {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(nil)
	p, _ := json.Marshal(wire.EnrollPayload{PublicKey: hex.EncodeToString(pub), Time: now,
		Identity: wire.Identity{Serial: serial, Product: testProduct, HardwareID: testHardware}})
	b, _ := json.Marshal(wire.SignedRequest{Payload: p, Signature: hex.EncodeToString(ed25519.Sign(priv, p))})
	resp, err := http.Post(url+"/device/v1/enroll", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body) //nolint:errcheck
	resp.Body.Close()
	return resp
}

// TestEnrolmentLimits: enrolments without an enrolment token are limited per source address
// (429 with Retry-After), the pending queue is bounded, and pending entries expire, removed by
// the housekeeping job, after which the queue takes new ones again.
func TestEnrolmentLimits(t *testing.T) {
	t.Run("per address", func(t *testing.T) {
		e := newEnvWith(t, func(c *server.Config) { c.EnrollPerMinute = 5 })
		for i := range 5 {
			if resp := enrolPending(t, e.srv.URL, fmt.Sprint("p", i), time.Now()); resp.StatusCode != http.StatusAccepted {
				t.Fatalf("enrolment %d: %d, want 202", i, resp.StatusCode)
			}
		}
		resp := enrolPending(t, e.srv.URL, "p5", time.Now())
		if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); resp.StatusCode != http.StatusTooManyRequests || ra < 1 || ra > 60 {
			t.Fatalf("6th enrolment in a minute: %d, Retry-After %q; want 429 with 1-60 s", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		// An enrolment token is not limited by the address's pending allowance.
		e.device("with-token", image("1.0.0", 64), e.publish("1.0.0", 1, image("1.0.0", 64)))
	})
	t.Run("queue and expiry", func(t *testing.T) {
		var clock atomic.Int64
		clock.Store(time.Now().UnixNano())
		now := func() time.Time { return time.Unix(0, clock.Load()) }
		e := newEnvWith(t, func(c *server.Config) {
			c.EnrollPerMinute, c.MaxPending, c.PendingTTL, c.HousekeepingEvery = 1000, 8, time.Hour, 50*time.Millisecond
			c.Now = now
		})
		for i := range 8 {
			if resp := enrolPending(t, e.srv.URL, fmt.Sprint("p", i), now()); resp.StatusCode != http.StatusAccepted {
				t.Fatalf("enrolment %d: %d, want 202", i, resp.StatusCode)
			}
		}
		if resp := enrolPending(t, e.srv.URL, "p8", now()); resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("9th pending enrolment with 8 the bound: %d, want 429 with Retry-After", resp.StatusCode)
		}
		clock.Add(int64(time.Hour + time.Minute))
		pending := func() int {
			n, err := e.srv.DB.CountDevices(context.Background(), fleet.DeviceFilter{Status: fleet.StatusPending})
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		for deadline := time.Now().Add(5 * time.Second); pending() > 0; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d pending enrolments older than the TTL still stored", pending())
			}
		}
		if resp := enrolPending(t, e.srv.URL, "p9", now()); resp.StatusCode != http.StatusAccepted {
			t.Fatalf("enrolment after the queue expired: %d, want 202", resp.StatusCode)
		}
	})
}

// TestReportFloodBounded: one device flooding reports (64 events of 800 bytes each, as fast as it
// can) gets 429 with Retry-After past its allowance, and the event retention keeps its rows
// bounded: the database grows by at most what the allowance and MaxDeviceEvents let through.
func TestReportFloodBounded(t *testing.T) {
	e := newEnvWith(t, func(c *server.Config) {
		c.ReportsPerMinute, c.MaxDeviceEvents, c.HousekeepingEvery = 20, 100, 50*time.Millisecond
	})
	rel := e.publish("1.0.0", 1, image("1.0.0", 64))
	d := e.device("flood", image("1.0.0", 64), rel)
	token := d.Agent.State().Token
	db := e.srv.DB.SQL()
	rows := func() int {
		var n int
		if err := db.QueryRow(`SELECT COUNT(*) FROM device_events`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// What the database holds: its file after the write-ahead log is checkpointed into it and
	// truncated. The log's own file keeps its largest size until then, which says how busy the
	// writes were, not how much is kept.
	size := func() int64 {
		if _, err := db.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
			t.Fatal(err)
		}
		var n int64
		for _, f := range []string{"upkeep.db", "upkeep.db-wal"} {
			if fi, err := os.Stat(filepath.Join(e.dir, "data", f)); err == nil {
				n += fi.Size()
			}
		}
		return n
	}
	rows0, size0 := rows(), size()

	ev := make([]wire.Event, wire.MaxReportEvents)
	for i := range ev {
		ev[i] = wire.Event{Target: rel.Target, Step: wire.StepDownload, Status: wire.StatusFailed, Message: strings.Repeat("x", 800)}
	}
	body, _ := json.Marshal(wire.Report{State: "idle", Events: ev})
	post := func(b []byte) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/device/v1/report", bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body) //nolint:errcheck
		resp.Body.Close()
		return resp
	}
	// More events than a report may carry is refused whole (and costs one report of the allowance).
	tooMany, _ := json.Marshal(wire.Report{State: "idle", Events: append(ev[:wire.MaxReportEvents:wire.MaxReportEvents], wire.Event{Step: wire.StepDownload})})
	if resp := post(tooMany); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("report of %d events: %d, want 400", wire.MaxReportEvents+1, resp.StatusCode)
	}
	var stored, limited atomic.Int32
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				switch resp := post(body); resp.StatusCode {
				case http.StatusNoContent:
					stored.Add(1)
				case http.StatusTooManyRequests:
					if resp.Header.Get("Retry-After") == "" {
						t.Error("429 without Retry-After")
					}
					limited.Add(1)
				default:
					t.Errorf("report: %d", resp.StatusCode)
				}
			}
		}()
	}
	wg.Wait()
	if n := stored.Load(); n > 21 || limited.Load() == 0 {
		t.Errorf("of 200 flooded reports %d stored, %d refused; want at most the allowance of 20 (+1 refilled)", n, limited.Load())
	}
	for deadline := time.Now().Add(5 * time.Second); rows()-rows0 > 100; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d events stored after the flood, want at most MaxDeviceEvents (100) more than the %d before", rows(), rows0)
		}
	}
	if grew := size() - size0; grew > 4<<20 {
		t.Errorf("the database grew by %d bytes under one device's flood, want under 4 MiB (200 reports are 10 MiB)", grew)
	}
}
